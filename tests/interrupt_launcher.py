"""Runs the real ``nas`` CLI and sends it a Ctrl-C (SIGINT) at a defined point of the run.

Usage: ``python tests/interrupt_launcher.py N nas-arguments...``. The run interrupts itself right after its N-th
``checkpoint`` event has been written to events.jsonl: the hook sends SIGINT to this very process, so Python's own
SIGINT handling raises KeyboardInterrupt in the main thread, exactly as a Ctrl-C from the terminal would, at a point
that does not depend on timing (a test that polls events.jsonl and signals from outside races the run's end).

If the run ends before the N-th checkpoint, the launcher exits with status 3 (so a test cannot mistake it for 0).
"""

from __future__ import annotations

import os
import signal
import sys
import threading

from nas.events import Event, EventType
from nas.runner import JsonlReporter

EXIT_NOT_INTERRUPTED = 3


def install(after_checkpoints: int) -> None:
    """Wrap the events.jsonl writer: once it has written the ``after_checkpoints``-th checkpoint, Ctrl-C."""
    if after_checkpoints < 1:
        raise ValueError(f"after_checkpoints must be >= 1, got {after_checkpoints}")
    original = JsonlReporter.emit
    seen = 0

    def emit(self: JsonlReporter, event: Event) -> None:
        nonlocal seen
        original(self, event)
        if event.type != EventType.CHECKPOINT:
            return
        seen += 1
        if seen == after_checkpoints:
            # the signal is handled in the main thread: emitting from another one would make the point vague
            assert threading.current_thread() is threading.main_thread(), "checkpoint emitted off the main thread"
            os.kill(os.getpid(), signal.SIGINT)  # the handler runs before the next bytecode: KeyboardInterrupt here

    JsonlReporter.emit = emit  # type: ignore[method-assign]


def main(argv: list[str]) -> int:
    install(int(argv[0]))
    from nas.cli import app

    try:
        app(args=argv[1:], prog_name="nas")
    except SystemExit as exc:  # typer ends with SystemExit in standalone mode
        code = exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
        return EXIT_NOT_INTERRUPTED if code == 0 else code
    return EXIT_NOT_INTERRUPTED


if __name__ == "__main__":
    signal.signal(signal.SIGINT, signal.default_int_handler)  # Python's Ctrl-C handling, even if started ignoring it
    sys.exit(main(sys.argv[1:]))
