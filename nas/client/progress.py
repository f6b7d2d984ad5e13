"""What ``Search.wait`` shows while it waits: nothing, or rich progress bars (imported only when asked for)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from nas.client.models import EventOut, SearchOut
    from nas.client.search import Search


class NullView:
    """Shows nothing; remembers the last event id so that polling can continue where a stream stopped."""

    enabled = False

    def __init__(self) -> None:
        self.last_id = 0

    def __enter__(self) -> NullView:
        return self

    def __exit__(self, *exc: object) -> None:
        return None

    def emit(self, event: EventOut) -> None:
        self.last_id = max(self.last_id, event.id)

    def status(self, info: SearchOut) -> None:
        return None


class ProgressView(NullView):
    """The terminal view of the local runs (nas.progress.RichReporter) fed with the service's events, on stderr.

    A bar per phase with step/total and the latest metrics, a line per epoch, and a line per status change.
    """

    enabled = True

    def __init__(self, search: Search, console: Any = None) -> None:
        super().__init__()
        from rich.console import Console

        from nas.progress import RichReporter

        self.search = search
        self.reporter = RichReporter(console or Console(stderr=True, log_path=False))
        self._status: str | None = None

    def __enter__(self) -> ProgressView:
        self.reporter.__enter__()
        return self

    def __exit__(self, *exc: object) -> None:
        self.reporter.__exit__(*exc)

    def emit(self, event: EventOut) -> None:
        super().emit(event)
        from pydantic import ValidationError

        from nas.events import Event

        try:
            converted = Event.model_validate(event.model_dump(exclude={"id", "search_id", "attempt"}))
        except ValidationError:
            return  # an event type this version does not draw
        self.reporter.emit(converted)

    def status(self, info: SearchOut) -> None:
        if info.status == self._status:
            return
        self._status = info.status
        line = f"search {info.id} ({info.name}): {info.status}"
        if info.status == "queued" and info.attempts and info.error:
            line += f" (attempt {info.attempts + 1} of {info.max_attempts} after: {info.error})"
        elif info.error and info.done:
            line += f": {info.error}"
        self.reporter.console.log(line, highlight=False)  # the console of the live progress bars
