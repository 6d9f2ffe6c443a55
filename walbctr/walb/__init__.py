"""The walb protocol, pure and standard library only: it ships whole in the keeper image.

walbc argv, readiness, batch queries and their parsers, driver facts. Imports nothing of walbctr
but walbctr.walb.
"""
