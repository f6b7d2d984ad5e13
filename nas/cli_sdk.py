"""The service commands of ``nas``, through the SDK (``--url``/``NAS_URL`` and ``--token``/``NAS_TOKEN``).

``submit``, ``ls``, ``show``, ``logs``, ``cancel``, ``retry``, ``download``. (The administration commands, ``nas admin
...`` and ``nas db ...``, work on the database directly and live in the service package: :mod:`service.cli`.)

Exit codes: 0 done; 2 the input is wrong (an invalid spec or option, an unknown search or user, a conflicting state,
a missing or rejected token); 1 something else failed (the service is unreachable or failed, the search failed, a
download arrived corrupt, the database is unreachable or not migrated); 130 interrupted.
"""

from __future__ import annotations

import datetime as dt
import functools
import re
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, get_args

import typer
from rich.markup import escape
from rich.table import Table

from nas.cli_common import F, JsonOption, echo_json, err, fail_text, out, when
from nas.client.errors import AuthError, Conflict, InvalidRequest, NASClientError, NotFound
from nas.errors import InvalidInput

if TYPE_CHECKING:
    from nas.client import Client
    from nas.client.models import EventOut, SearchOut

PANEL_SERVICE = "Service (through the API)"

UrlOption = Annotated[
    str | None,
    typer.Option("--url", envvar="NAS_URL", help="URL of the service (default: the local one, http://127.0.0.1:8321)"),
]
TokenOption = Annotated[
    str | None,
    typer.Option("--token", envvar="NAS_TOKEN", help="API token (default: the local admin token)", show_default=False),
]


def default_client(url: str | None, token: str | None) -> Client:
    from nas.client import Client

    return Client(url, token)


client_factory: Callable[[str | None, str | None], Client] = default_client
"""Makes the SDK client of the service commands (tests point it at a test service)."""


def remote_errors(fn: F) -> F:
    """One line on stderr per error: exit 2 for bad input, 1 when the service (or the search) failed."""

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except (InvalidRequest, NotFound, Conflict, AuthError, InvalidInput) as exc:
            fail_text(str(exc), 2)
        except NASClientError as exc:
            fail_text(str(exc), 1)
        except KeyboardInterrupt:
            err.print("\n[yellow]interrupted[/yellow]; the search goes on in the service", highlight=False)
            raise typer.Exit(130) from None

    return wrapper  # type: ignore[return-value]


def connect(url: str | None, token: str | None) -> Client:
    return client_factory(url, token)


# ---------------------------------------------------------------- formatting


def _fmt_metric(key: str, value: float) -> str:
    if key in {"params", "macs"}:
        return f"{key}={value / 1e6:.2f}M"
    if float(value).is_integer() and abs(value) < 1e6:
        return f"{key}={int(value)}"
    return f"{key}={value:.4g}"


def _fmt_metrics(metrics: dict[str, float]) -> str:
    return " ".join(_fmt_metric(k, v) for k, v in metrics.items())


def _progress(info: SearchOut) -> str:
    p = info.progress
    if p is None or p.phase is None:
        return ""
    text = p.phase
    if p.step is not None:
        text += f" {p.step}/{p.total}" if p.total else f" {p.step}"
    return text


STATUS_STYLE = {"queued": "cyan", "running": "yellow", "succeeded": "green", "failed": "red", "cancelled": "magenta"}


def _status(status: str) -> str:
    return f"[{STATUS_STYLE.get(status, 'white')}]{status}[/]"


def event_line(event: EventOut) -> str:
    """One line per event: time, attempt, type, phase, step/total, metrics, message."""
    parts = [dt.datetime.fromtimestamp(event.time).strftime("%Y-%m-%d %H:%M:%S"), f"#{event.attempt}", event.type]
    if event.phase:
        parts.append(event.phase)
    if event.step is not None:
        parts.append(f"{event.step}/{event.total}" if event.total is not None else str(event.step))
    if event.metrics:
        parts.append(_fmt_metrics(event.metrics))
    if event.message:
        parts.append(event.message)
    return "  ".join(parts)


def result_table(info: SearchOut) -> Table:
    """The retrained models of a finished search."""
    result = info.result
    elapsed = f", {result.elapsed_s:.0f} s" if result else ""
    table = Table(title=f"search {info.name!r} {info.status}{elapsed}")
    for col in ("rank", "arch", "test acc", "val acc", "params", "MACs"):
        table.add_column(col, justify="left" if col == "arch" else "right")
    table.add_column("model folder", overflow="fold")
    for i, final in enumerate(result.final if result else [], start=1):
        m = final.metrics
        table.add_row(
            str(i),
            str(final.arch.get("hash", "")),
            f"{m['test_accuracy']:.4f}" if "test_accuracy" in m else "",
            f"{m['val_accuracy']:.4f}" if "val_accuracy" in m else "",
            f"{m['params'] / 1e6:.3f}M" if "params" in m else "",
            f"{m['macs'] / 1e6:.2f}M" if "macs" in m else "",
            final.path,
        )
    return table


def details_table(info: SearchOut) -> Table:
    table = Table(show_header=False, title=f"search {info.id}")
    table.add_column(style="bold")
    table.add_column(overflow="fold")
    rows: list[tuple[str, str]] = [
        ("name", info.name),
        ("owner", info.owner),
        ("status", _status(info.status) + (" (cancel requested)" if info.cancel_requested and not info.done else "")),
        ("priority", str(info.priority)),
        ("attempts", f"{info.attempts} of {info.max_attempts}"),
        ("space", info.spec.space.name),
        ("dataset", info.spec.dataset.name),
        ("strategy", info.spec.strategy.name),
        ("resources", ", ".join(f"{k}={v:g}" for k, v in info.resources.items())),
        ("progress", _progress(info)),
        ("created", when(info.created_at)),
        ("started", when(info.started_at)),
        ("finished", when(info.finished_at)),
    ]
    if info.error:
        rows.append(("error", f"[red]{escape(info.error)}[/red]"))
    if info.result and info.result.best:
        rows.append(("best", str(info.result.best.get("hash", ""))))
    for key, value in rows:
        if value:
            table.add_row(key, value)
    return table


# ---------------------------------------------------------------- service commands


@remote_errors
def submit(
    spec: Annotated[Path, typer.Argument(help="search spec (YAML or JSON)", metavar="SPEC", show_default=False)],
    priority: Annotated[int, typer.Option("--priority", "-p", min=-100, max=100, help="higher runs first")] = 0,
    max_attempts: Annotated[
        int | None,
        typer.Option("--max-attempts", min=1, max=20, help="attempts before failing (default: server's)"),
    ] = None,
    wait: Annotated[bool, typer.Option("--wait", "-w", help="follow it to the end and print the result")] = False,
    as_json: JsonOption = False,
    url: UrlOption = None,
    token: TokenOption = None,
) -> None:
    """Submit a search to the service and print its id (with --wait: follow it and print the result)."""
    with connect(url, token) as client:
        search = client.submit(spec, priority=priority, max_attempts=max_attempts)
        if not wait:
            if as_json:
                echo_json(search.info.model_dump(mode="json"))
            else:
                typer.echo(search.id)
                err.print(f"follow it with: nas logs -f {search.id}", highlight=False)
            return
        if not as_json:
            typer.echo(search.id)
        info = search.wait(progress=not as_json, raise_on_failure=False)
    _report_end(info, as_json)


def _report_end(info: SearchOut, as_json: bool) -> None:
    if as_json:
        echo_json(info.model_dump(mode="json"))
    elif info.status == "succeeded":
        out.print(result_table(info))
        if info.result and info.result.final:
            err.print(f"download the model with: nas download {info.id}", highlight=False)
    if info.status != "succeeded":
        reason = f": {info.error}" if info.error else ""
        fail_text(f"search {info.id} {info.status}{reason}", 1)


@remote_errors
def ls(
    status: Annotated[
        list[str] | None, typer.Option("--status", "-s", help="only these statuses (repeatable)", show_default=False)
    ] = None,
    name: Annotated[str | None, typer.Option("--name", help="names containing this text")] = None,
    limit: Annotated[int, typer.Option("--limit", "-n", min=1, max=10_000, help="at most this many")] = 20,
    as_json: JsonOption = False,
    url: UrlOption = None,
    token: TokenOption = None,
) -> None:
    """List searches, newest first."""
    from nas.client.models import SearchStatus

    allowed = get_args(SearchStatus)
    for s in status or []:
        if s not in allowed:
            raise InvalidInput("--status", f"{s!r} is not allowed; allowed: {', '.join(allowed)}")
    with connect(url, token) as client:
        rows = client.searches(status=status, name=name, limit=limit)
    if as_json:
        echo_json([r.model_dump(mode="json") for r in rows])
        return
    table = Table(title=f"{len(rows)} search{'es' * (len(rows) != 1)}")
    table.add_column("id", no_wrap=True)
    for col in ("name", "status", "prio", "progress", "owner", "created"):
        table.add_column(col, justify="right" if col == "prio" else "left", no_wrap=col in ("status", "created"))
    for r in rows:
        table.add_row(
            r.id, escape(r.name), _status(r.status), str(r.priority), _progress(r), r.owner, when(r.created_at)
        )
    out.print(table)


@remote_errors
def show(
    search_id: Annotated[str, typer.Argument(metavar="ID", help="search id")],
    as_json: JsonOption = False,
    url: UrlOption = None,
    token: TokenOption = None,
) -> None:
    """Show one search: its state, progress, error and result."""
    with connect(url, token) as client:
        info = client.search(search_id).info
    if as_json:
        echo_json(info.model_dump(mode="json"))
        return
    out.print(details_table(info))
    if info.result and info.result.final:
        out.print(result_table(info))


@remote_errors
def logs(
    search_id: Annotated[str, typer.Argument(metavar="ID", help="search id")],
    follow: Annotated[bool, typer.Option("--follow", "-f", help="stream new events until the search ends")] = False,
    as_json: Annotated[bool, typer.Option("--json", help="one JSON object per line")] = False,
    url: UrlOption = None,
    token: TokenOption = None,
) -> None:
    """Print the progress events of a search (with -f: follow them live until it ends)."""
    with connect(url, token) as client:
        search = client.search(search_id)
        for event in search.events(follow=follow):
            typer.echo(event.model_dump_json() if as_json else event_line(event))
        if follow:
            info = search.info
            reason = f": {info.error}" if info.error else ""
            err.print(f"search {info.id} {_status(info.status)}{escape(reason)}", highlight=False)


@remote_errors
def cancel(
    search_id: Annotated[str, typer.Argument(metavar="ID", help="search id")],
    url: UrlOption = None,
    token: TokenOption = None,
) -> None:
    """Cancel a search: a queued one at once, a running one within seconds."""
    with connect(url, token) as client:
        info = client.search(search_id).cancel()
    if info.status == "cancelled":
        typer.echo(f"search {info.id} cancelled")
    else:
        typer.echo(f"cancel requested for search {info.id} ({info.status}); it stops within seconds")


@remote_errors
def retry(
    search_id: Annotated[str, typer.Argument(metavar="ID", help="search id")],
    url: UrlOption = None,
    token: TokenOption = None,
) -> None:
    """Queue a failed or cancelled search again (it resumes from its last checkpoint)."""
    with connect(url, token) as client:
        info = client.search(search_id).retry()
    typer.echo(f"search {info.id} {info.status} again")


@remote_errors
def download(
    search_id: Annotated[str, typer.Argument(metavar="ID", help="search id")],
    output: Annotated[
        Path | None, typer.Option("--output", "-o", help="folder to write (default: runs/NAME-ID8)", show_default=False)
    ] = None,
    everything: Annotated[bool, typer.Option("--all", help="every artifact, not only the exported models")] = False,
    url: UrlOption = None,
    token: TokenOption = None,
) -> None:
    """Download the trained model(s) of a search and print the folder that nas.load() reads."""
    with connect(url, token) as client:
        search = client.search(search_id)
        target = output or Path("runs") / f"{_safe_name(search.name)}-{search.id[:8]}"
        folder = search.download(target, what="all" if everything else "final")
    typer.echo(str(folder))


def _safe_name(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "-", name).strip("-.") or "search"


# ---------------------------------------------------------------- registration

SERVICE_COMMANDS: tuple[tuple[str, Callable[..., Any]], ...] = (
    ("submit", submit),
    ("ls", ls),
    ("show", show),
    ("logs", logs),
    ("cancel", cancel),
    ("retry", retry),
    ("download", download),
)


def register(app: typer.Typer) -> None:
    """Add the service commands to the ``nas`` command."""
    for name, fn in SERVICE_COMMANDS:
        app.command(name, rich_help_panel=PANEL_SERVICE)(fn)
