"""The layout file, pure: YAML in, validated servers and hosts out.

Imports the standard library, pydantic, yaml and walbctr.errors only; reads no file itself.
"""
