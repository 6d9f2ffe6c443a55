"""The one pydantic base every layout model shares."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict


class Model(BaseModel):
    """Strict and closed: a typo in a key or a quoted number is an error, never ignored."""

    model_config = ConfigDict(extra="forbid", strict=True, frozen=True)
