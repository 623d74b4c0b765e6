"""What every command line of the project shares: how a refusal is said and with which exit code."""

from __future__ import annotations

import typer


def fail(message: str, code: int = 2) -> typer.Exit:
    """Print `error: message` on stderr and return the Exit to raise: 2 for a refusal, 1 for a failed check."""
    typer.echo(f"error: {message}", err=True)
    return typer.Exit(code)
