"""The walbctr command line (click): parses, then calls walbctr.commands.

Imports of everything else happen inside each command, to keep `walbctr --help` fast.
"""
