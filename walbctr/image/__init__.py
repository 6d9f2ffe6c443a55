"""The walb-tools image: source, recipe, build and its log, Debian bases, push.

Imports the pure packages and walbctr.docker; never walbctr.commands or walbctr.cli.
"""
