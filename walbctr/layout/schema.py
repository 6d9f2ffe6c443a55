"""The layout file's JSON Schema, for editors."""

from __future__ import annotations

import json

from walbctr.layout.spec import LayoutSpec


def layout_schema() -> str:
    schema = LayoutSpec.model_json_schema(mode="validation")
    schema = {
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "$id": "walbctr-layout.schema.json",
        **schema,
        "title": "walbctr layout",
    }
    return json.dumps(schema, indent=2, sort_keys=False) + "\n"
