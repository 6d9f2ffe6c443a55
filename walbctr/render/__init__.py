"""Pure outputs of a layout: names and labels, command lines, compose files, walblib export.

Imports walbctr.layout, walbctr.walb and walbctr.errors only; no I/O.
"""
