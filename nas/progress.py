"""Renders search events in the terminal: a progress bar per phase and a line per epoch (rich)."""

from __future__ import annotations

from typing import Any

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn
from rich.table import Table

from nas.events import Event, EventType, Reporter
from nas.spec import RunResult


def _fmt(metrics: dict[str, float]) -> str:
    parts = []
    for k, v in metrics.items():
        if k in {"params", "macs"}:
            parts.append(f"{k}={v / 1e6:.2f}M")
        elif isinstance(v, float) and k != "lr":
            parts.append(f"{k}={v:.4f}")
        else:
            parts.append(f"{k}={v:.3g}")
    return " ".join(parts)


class RichReporter(Reporter):
    """Progress bars for the batches of each training phase and the generations/trials of a search phase."""

    def __init__(self, console: Console | None = None, quiet: bool = False) -> None:
        self.console = console or Console(stderr=True)
        self.quiet = quiet
        self.bars = Progress(
            TextColumn("[bold]{task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            TimeElapsedColumn(),
            TimeRemainingColumn(),
            TextColumn("{task.fields[info]}"),
            console=self.console,
            disable=quiet,
        )
        self.tasks: dict[str, Any] = {}
        self.started = False

    def __enter__(self) -> RichReporter:
        self.bars.start()
        self.started = True
        return self

    def __exit__(self, *exc: object) -> None:
        self.bars.stop()

    def _task(self, phase: str, total: int | None) -> Any:
        if phase not in self.tasks:
            self.tasks[phase] = self.bars.add_task(phase, total=total, info="")
        elif total is not None:
            self.bars.update(self.tasks[phase], total=total)
        return self.tasks[phase]

    def emit(self, event: Event) -> None:
        phase = event.phase or "search"
        if event.type == EventType.PROGRESS:
            self.bars.update(
                self._task(phase, event.total), completed=event.step, info=_fmt(event.metrics) if event.metrics else ""
            )
        elif event.type == EventType.EPOCH:
            if not self.quiet:
                self.bars.console.log(f"{phase} epoch {event.step}/{event.total}  {_fmt(event.metrics)}")
        elif event.type == EventType.CANDIDATE:
            task = self._task(phase, None)
            self.bars.update(task, info=f"last {_fmt(event.metrics)}")
        elif event.type == EventType.PHASE_FINISHED and phase in self.tasks:
            task = self.tasks[phase]
            total = self.bars.tasks[task].total if task < len(self.bars.tasks) else None
            if total is not None:
                self.bars.update(task, completed=total)
        elif event.type == EventType.LOG and event.message and not self.quiet:
            self.bars.console.log(event.message)


def summary_table(result: RunResult, top: int = 10) -> Table:
    """The final summary: the best candidates of the search and the retrained models."""
    table = Table(title=f"search {result.spec.name!r}: {result.search.strategy}, {result.elapsed_s:.0f} s")
    table.add_column("rank", justify="right")
    table.add_column("arch")
    best = result.search.best[:top]
    # the search's own rating: accuracy with inherited weights, or a strategy's score (BossNAS: lower is better)
    rating = "accuracy" if any("accuracy" in c.metrics for c in best) or not best else _score_metric(best[0].metrics)
    table.add_column("search acc" if rating == "accuracy" else rating, justify="right")
    table.add_column("params", justify="right")
    table.add_column("MACs", justify="right")
    table.add_column("pareto")
    for i, c in enumerate(best, start=1):
        table.add_row(
            str(i),
            c.arch.hash,
            f"{c.metrics.get(rating, float('nan')):.4f}",
            f"{c.metrics.get('params', 0) / 1e6:.3f}M",
            f"{c.metrics.get('macs', 0) / 1e6:.2f}M",
            "yes" if c.pareto else "",
        )
    return table


def _score_metric(metrics: dict[str, float]) -> str:
    scores = sorted(k for k in metrics if k.endswith("_score"))
    return scores[0] if scores else "accuracy"


def final_table(result: RunResult) -> Table:
    table = Table(title="retrained from scratch")
    for col in ("arch", "test acc", "val acc", "params", "MACs"):
        table.add_column(col)
    table.add_column("exported to", overflow="fold")
    for f in result.final:
        table.add_row(
            f.arch.hash,
            f"{f.metrics.get('test_accuracy', float('nan')):.4f}",
            f"{f.metrics.get('val_accuracy', float('nan')):.4f}",
            f"{f.metrics.get('params', 0) / 1e6:.3f}M",
            f"{f.metrics.get('macs', 0) / 1e6:.2f}M",
            f.directory,
        )
    return table
