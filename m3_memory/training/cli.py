"""Subcommand registration (argparse only; the handler imports the heavy modules)."""

from __future__ import annotations

import argparse


def register(sub: argparse._SubParsersAction) -> None:
    """Add this stage's subcommands to the ``m3`` parser (none yet)."""
