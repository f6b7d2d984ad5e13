"""The service commands of ``nas``, through the SDK (``--url``/``NAS_URL`` and ``--token``/``NAS_TOKEN``).

``submit``, ``ls``, ``show``, ``logs``, ``cancel``, ``retry``, ``download``, ``arch-svg``. Wherever a search id is
taken, a unique prefix of it (6+ characters, like git's) works too: the service resolves it among the searches the
token's user may see, and an ambiguous prefix is an error (exit 2) listing the matches. (The administration
commands, ``nas admin ...`` and ``nas db ...``, work on the database directly and live in the service package:
:mod:`service.cli`.)

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
from typing import TYPE_CHECKING, Annotated, Any, Literal, get_args

import typer
from rich import box
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from nas.cli_common import F, JsonOption, age, echo_json, err, fail_text, out, when
from nas.client.errors import AuthError, Conflict, InvalidRequest, NASClientError, NotFound
from nas.errors import InvalidInput

if TYPE_CHECKING:
    from nas.client import Client
    from nas.client.models import EventOut, SearchOut, SearchSummary

PANEL_SERVICE = "Service (through the API)"

SearchIdArg = Annotated[str, typer.Argument(metavar="ID", help="search id, or a unique prefix of it (6+ characters)")]

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


def _progress(info: SearchOut | SearchSummary) -> str:
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


def arch_hash(arch: dict[str, Any] | None) -> str:
    """The hash of an architecture given as a dict: its ``hash`` key, else computed (an Architecture's canonical
    JSON); '' when it is not one."""
    if not arch:
        return ""
    if arch.get("hash"):
        return str(arch["hash"])
    from pydantic import ValidationError

    from nas.arch import Architecture

    try:
        return Architecture.model_validate(arch).hash
    except ValidationError:
        return ""


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
            arch_hash(final.arch),
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
        rows.append(("best", arch_hash(info.result.best)))
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


SHORT_ID = 8  # characters of an id in tables (any unique prefix of 6+ is accepted back)


def _accuracy(value: float | None) -> str:
    return f"{value:.4f}" if value is not None else ""


LIST_COLUMNS = ("id", "name", "space", "strategy", "status", "progress", "best", "age")
WIDE_COLUMNS = ("owner", "dataset", "prio", "attempts", "cands", "created")
SHRINKABLE = ("name", "progress", "space", "strategy", "owner", "dataset")  # shortened with "…" when space is short
COLUMN_GAP = 2


def list_table(rows: list[SearchSummary], *, wide: bool, width: int | None = 80) -> Table:
    """Searches as a table that fits ``width`` columns: short ids, and name, progress, space and strategy
    shortened with an ellipsis (never below their header's width) before anything else is. ``wide`` has whole ids
    and adds owner, dataset, priority, attempts, the number of candidates and the creation time; ``width=None``
    shortens nothing (the table's ``min_width`` is then the width it needs)."""
    cells: list[list[str]] = []
    for r in rows:
        row = [
            r.id if wide else r.id[:SHORT_ID],
            r.name,
            r.space or "",
            r.strategy or "",
            r.status,
            _progress(r),
            _accuracy(r.best_accuracy),
            age(r.created_at),
        ]
        if wide:
            row += [r.owner, r.dataset or "", str(r.priority), f"{r.attempts}/{r.max_attempts}", str(r.candidates),
                    when(r.created_at)[:16]]  # fmt: skip
        cells.append(row)
    names = LIST_COLUMNS + (WIDE_COLUMNS if wide else ())
    natural = [max([len(name)] + [len(row[i]) for row in cells]) for i, name in enumerate(names)]
    minimum = [len(name) if name in SHRINKABLE else natural[i] for i, name in enumerate(names)]
    gaps = COLUMN_GAP * (len(names) - 1)
    widths = natural if width is None else fit_widths(natural, minimum, width - gaps)
    table = Table(title=f"{len(rows)} search{'es' * (len(rows) != 1)}", box=box.SIMPLE_HEAD, show_edge=False,
                  pad_edge=False, padding=(0, COLUMN_GAP - 1, 0, 0), collapse_padding=True,
                  min_width=sum(widths) + gaps)  # fmt: skip
    for name, w in zip(names, widths, strict=True):
        right = name in ("best", "age", "prio", "attempts", "cands")
        table.add_column(name, width=w, no_wrap=True, overflow="ellipsis", justify="right" if right else "left")
    for r, row in zip(rows, cells, strict=True):
        shown = [escape(c) for c in row]
        shown[4] = _status(r.status)
        table.add_row(*shown)
    return table


def fit_widths(natural: list[int], minimum: list[int], budget: int) -> list[int]:
    """Column widths summing to at most ``budget`` (when the minimums allow): the widest shrinkable column loses a
    character at a time, none below its minimum."""
    widths = list(natural)
    while sum(widths) > budget:
        candidates = [i for i, w in enumerate(widths) if w > minimum[i]]
        if not candidates:
            break
        widest = max(candidates, key=lambda i: (widths[i], -i))
        widths[widest] -= 1
    return widths


@remote_errors
def ls(
    status: Annotated[
        list[str] | None, typer.Option("--status", "-s", help="only these statuses (repeatable)", show_default=False)
    ] = None,
    name: Annotated[str | None, typer.Option("--name", help="names containing this text")] = None,
    owner: Annotated[str | None, typer.Option("--owner", help="only this user's (admins)")] = None,
    limit: Annotated[int, typer.Option("--limit", "-n", min=1, max=10_000, help="at most this many")] = 20,
    wide: Annotated[bool, typer.Option("--wide", "-w", help="full ids and more columns")] = False,
    as_json: Annotated[bool, typer.Option("--json", help="the summaries as JSON (full ids; for scripts)")] = False,
    url: UrlOption = None,
    token: TokenOption = None,
) -> None:
    """List searches, newest first: id, name, space, strategy, status, progress, best accuracy and age."""
    from nas.client.models import SearchStatus

    allowed = get_args(SearchStatus)
    for s in status or []:
        if s not in allowed:
            raise InvalidInput("--status", f"{s!r} is not allowed; allowed: {', '.join(allowed)}")
    with connect(url, token) as client:
        rows = client.searches(status=status, name=name, owner=owner, limit=limit)
    if as_json:
        echo_json([r.model_dump(mode="json") for r in rows])
        return
    if wide:  # for scripts too: whole lines, however narrow the terminal
        table = list_table(rows, wide=True, width=None)
        need = max(out.width, table.min_width or 0)
        color: Literal["auto"] | None = "auto" if out.color_system else None
        Console(file=out.file, width=need, color_system=color, force_terminal=out.is_terminal).print(table)
    else:
        out.print(list_table(rows, wide=False, width=out.width))


@remote_errors
def show(
    search_id: SearchIdArg,
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
    search_id: SearchIdArg,
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
    search_id: SearchIdArg,
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
    search_id: SearchIdArg,
    url: UrlOption = None,
    token: TokenOption = None,
) -> None:
    """Queue a failed or cancelled search again (it resumes from its last checkpoint)."""
    with connect(url, token) as client:
        info = client.search(search_id).retry()
    typer.echo(f"search {info.id} {info.status} again")


@remote_errors
def download(
    search_id: SearchIdArg,
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


@remote_errors
def arch_svg(
    search_id: Annotated[
        str | None,
        typer.Argument(metavar="[ID]", help="search id or unique prefix (6+ characters)", show_default=False),
    ] = None,
    candidate: Annotated[
        str | None,
        typer.Argument(help="architecture hash or unique prefix (default: the search's best)", show_default=False),
    ] = None,
    arch: Annotated[
        str | None,
        typer.Option("--arch", help="draw this architecture instead: SPACE:PRESET or an architecture JSON file"),
    ] = None,
    local: Annotated[bool, typer.Option("--local", help="with --arch: draw it here, without the service")] = False,
    output: Annotated[
        Path | None,
        typer.Option(
            "--output", "-o", help="SVG file to write ('-': stdout; default: arch-HASH.svg)", show_default=False
        ),
    ] = None,
    url: UrlOption = None,
    token: TokenOption = None,
) -> None:
    """Save an architecture diagram (SVG): a candidate of a search, or any architecture with --arch."""
    if (search_id is None) == (arch is None):
        raise InvalidInput("ID", "give a search id (and optionally a candidate), or --arch, not both")
    if local and arch is None:
        raise InvalidInput("--local", "only draws an --arch architecture (a search's candidates are on the service)")
    if arch is not None:
        svg, digest = _arch_file_svg(arch, local, url, token)
    else:
        assert search_id is not None
        with connect(url, token) as client:
            search = client.search(search_id)
            digest = candidate or _best_candidate(search.info) or ""
            if not digest:
                top = search.candidates(limit=1)
                if not top:
                    raise InvalidInput("ID", f"search {search.id} has no candidates yet")
                digest = top[0].arch_hash
            svg = search.architecture_svg(digest)
    if output is not None and str(output) == "-":
        typer.echo(svg, nl=False)
        return
    target = output or Path(f"arch-{digest}.svg")
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_text(svg, encoding="utf-8")
    typer.echo(str(target))


def _best_candidate(info: SearchOut) -> str:
    return arch_hash(info.result.best) if info.result and info.result.best else ""


def _arch_file_svg(ref: str, local: bool, url: str | None, token: str | None) -> tuple[str, str]:
    """(SVG, hash) of SPACE:PRESET or an architecture JSON file, drawn here (``local``) or by the service."""
    from nas.space import resolve_arch_ref

    if local:
        from nas.diagram import draw

        space, architecture, _, _ = resolve_arch_ref(ref)
        return draw(space, architecture), architecture.hash
    path = Path(ref)
    if ":" in ref and not path.exists():
        space, architecture, _, _ = resolve_arch_ref(ref)  # a preset: known to the engine installed here
        data: dict[str, Any] = {"architecture": architecture.model_dump(mode="json"),
                                "space_options": space.options.model_dump(mode="json")}  # fmt: skip
    else:
        import json

        from nas.arch import Architecture

        if not path.is_file():
            raise InvalidInput("--arch", f"{ref!r} is neither SPACE:PRESET nor an existing JSON file")
        try:
            data = json.loads(path.read_text())
        except (json.JSONDecodeError, UnicodeDecodeError) as exc:
            raise InvalidInput("--arch", f"{ref!r} is not a JSON file: {exc}") from exc
        architecture = Architecture.from_dict(data)
    with connect(url, token) as client:
        return client.architecture_svg(data), architecture.hash


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
    ("arch-svg", arch_svg),
)


def register(app: typer.Typer) -> None:
    """Add the service commands to the ``nas`` command."""
    for name, fn in SERVICE_COMMANDS:
        app.command(name, rich_help_panel=PANEL_SERVICE)(fn)
