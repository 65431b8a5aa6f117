"""tiervault: two-tier backup with a local speed vault and a server."""

__version__ = "0.2.0"
