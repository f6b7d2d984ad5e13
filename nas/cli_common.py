"""Output helpers shared by the ``nas`` command groups (service commands and administration).

Errors go to stderr as one line, ``error: MESSAGE``; the exit codes are documented in :mod:`nas.cli_sdk`.
"""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Callable
from typing import Annotated, Any, NoReturn, TypeVar

import typer
from rich.console import Console
from rich.markup import escape

out = Console()
err = Console(stderr=True, log_path=False)

F = TypeVar("F", bound=Callable[..., Any])

JsonOption = Annotated[bool, typer.Option("--json", help="machine-readable output")]


def fail(message: str, code: int) -> NoReturn:
    """Print ``error: MESSAGE`` (rich markup) on stderr and exit with ``code``."""
    err.print(f"[red]error:[/red] {message}", highlight=False, soft_wrap=True, markup=True)
    raise typer.Exit(code)


def fail_text(message: str, code: int) -> NoReturn:
    """Like :func:`fail`, for plain text (square brackets are printed as they are)."""
    fail(escape(message), code)


def echo_json(data: Any) -> None:
    typer.echo(json.dumps(data, indent=2, default=str))


def when(value: dt.datetime | None) -> str:
    """A timestamp in local time, or '' for none."""
    return value.astimezone().strftime("%Y-%m-%d %H:%M:%S") if value else ""


def age(value: dt.datetime | None, now: dt.datetime | None = None) -> str:
    """How long ago, in at most 4 characters: '45s', '12m', '3h', '5d', '7w', '2y'; '' for none."""
    if value is None:
        return ""
    seconds = max(0, int(((now or dt.datetime.now(dt.UTC)) - value).total_seconds()))
    for unit, size in (("y", 365 * 86400), ("w", 7 * 86400), ("d", 86400), ("h", 3600), ("m", 60)):
        if seconds >= size * (2 if unit in ("y", "w") else 1):
            return f"{seconds // size}{unit}"
    return f"{seconds}s"
