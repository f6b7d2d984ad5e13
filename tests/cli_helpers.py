"""Running the `nas` command in-process in tests, and reading its one-line errors."""

from __future__ import annotations

from typing import Any

from typer.testing import CliRunner

from nas.cli import app

runner = CliRunner()


def invoke(*args: str, **kwargs: Any) -> Any:
    return runner.invoke(app, list(args), **kwargs)


def one_error_line(result: Any) -> str:
    """The only non-empty line on stderr, which must be `error: ...`."""
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: "), result.stderr
    return lines[0]
