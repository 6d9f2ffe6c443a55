"""The live exec-event record that readiness-order assertions read (tests.harness.execevents)."""

from __future__ import annotations

import sys

import pytest

import tests.conftest as imported_conftest
from tests.conftest import engine_problem
from tests.harness import execevents


def test_test_modules_and_pytest_see_one_live_record_of_the_engine() -> None:
    why = engine_problem()
    if why:
        pytest.skip(why)
    loaded = sys.modules["conftest"]  # the copy pytest loaded and ran the fixture of
    assert loaded is not imported_conftest  # why the record cannot live in conftest.py
    assert execevents.RECORDS, "the session fixture started no live record"
    assert imported_conftest.execevents.RECORDS is loaded.execevents.RECORDS
