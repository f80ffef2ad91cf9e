"""Subcommands of ``mlsys``; every module here defines ``register(subparsers)``."""
