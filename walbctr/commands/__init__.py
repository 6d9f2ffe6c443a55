"""What each walbctr command does: up, down, upgrade, restart, status, check-host, lab, exec.

Imports the pure packages, walbctr.docker and walbctr.image; never walbctr.cli.
"""
