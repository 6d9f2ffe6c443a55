"""The only package that talks to Docker (docker-py, python-on-whales).

Engines, fleets, containers and exec, throwaway containers, logs, walbctr's state files.
Imports the pure packages (layout, render, walb), never walbctr.commands or walbctr.cli.
"""
