"""Progress events and reporters. The CLI renders them as a progress bar, the service stores and streams them."""

from __future__ import annotations

import logging
import time
from enum import StrEnum
from typing import Any

from pydantic import BaseModel, Field

log = logging.getLogger(__name__)


class EventType(StrEnum):
    PHASE_STARTED = "phase_started"
    PHASE_FINISHED = "phase_finished"
    PROGRESS = "progress"
    EPOCH = "epoch"
    CANDIDATE = "candidate"
    CHECKPOINT = "checkpoint"
    LOG = "log"
    FINISHED = "finished"
    FAILED = "failed"
    CANCELLED = "cancelled"


class Event(BaseModel):
    """One typed progress event. ``phase`` names the stage (supernet, evolution, retrain, export, ...)."""

    type: EventType
    phase: str | None = None
    step: int | None = None
    total: int | None = None
    metrics: dict[str, float] = Field(default_factory=dict)
    message: str | None = None
    data: dict[str, Any] = Field(default_factory=dict)
    time: float = Field(default_factory=time.time)


class Reporter:
    """Receives events. Subclasses override :meth:`emit`; the helpers build the events."""

    def emit(self, event: Event) -> None:
        log.debug("%s", event.model_dump_json(exclude_defaults=True))

    def phase_started(self, phase: str, total: int | None = None, message: str | None = None) -> None:
        self.emit(Event(type=EventType.PHASE_STARTED, phase=phase, total=total, message=message))

    def phase_finished(self, phase: str, metrics: dict[str, float] | None = None) -> None:
        self.emit(Event(type=EventType.PHASE_FINISHED, phase=phase, metrics=metrics or {}))

    def progress(self, phase: str, step: int, total: int | None, metrics: dict[str, float] | None = None) -> None:
        self.emit(Event(type=EventType.PROGRESS, phase=phase, step=step, total=total, metrics=metrics or {}))

    def epoch(self, phase: str, epoch: int, total: int, metrics: dict[str, float]) -> None:
        self.emit(Event(type=EventType.EPOCH, phase=phase, step=epoch, total=total, metrics=metrics))

    def candidate(self, phase: str, arch: dict[str, Any], metrics: dict[str, float], index: int) -> None:
        self.emit(Event(type=EventType.CANDIDATE, phase=phase, step=index, metrics=metrics, data={"arch": arch}))

    def checkpoint(self, phase: str, path: str) -> None:
        self.emit(Event(type=EventType.CHECKPOINT, phase=phase, data={"path": path}))

    def log(self, message: str, phase: str | None = None) -> None:
        self.emit(Event(type=EventType.LOG, phase=phase, message=message))


class ListReporter(Reporter):
    """Keeps every event in a list (tests, the service's buffered writer)."""

    def __init__(self) -> None:
        self.events: list[Event] = []

    def emit(self, event: Event) -> None:
        self.events.append(event)

    def of_type(self, kind: EventType) -> list[Event]:
        return [e for e in self.events if e.type == kind]


class MultiReporter(Reporter):
    def __init__(self, *reporters: Reporter) -> None:
        self.reporters = reporters

    def emit(self, event: Event) -> None:
        for r in self.reporters:
            r.emit(event)
