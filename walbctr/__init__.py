"""walbctr: build, run and operate WalB backup groups in containers."""

__version__ = "0.1.0"
