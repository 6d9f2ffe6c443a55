"""The keeper, which runs in its own image: its entry point, its duties and its metrics.

Imports only walbctr.keeper and walbctr.walb (the keeper image holds nothing else).
"""
