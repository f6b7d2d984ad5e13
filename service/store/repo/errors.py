"""What the store refuses: errors the API maps to HTTP statuses, and a runner's lost lease."""

from __future__ import annotations


class StoreError(Exception):
    """A request the store refuses; ``status`` is the HTTP status the API maps it to."""

    status = 409

    def __init__(self, message: str, field: str | None = None) -> None:
        super().__init__(message)
        self.field = field


class Conflict(StoreError):
    status = 409


class NotFound(StoreError):
    status = 404


class Ambiguous(StoreError):
    """An id prefix that names more than one thing; the message lists them."""

    status = 409


class QuotaExceeded(StoreError):
    """The owner already has as many queued searches as allowed; one can be submitted once some of them start."""

    status = 429


class LeaseLost(Exception):
    """The runner's lease on a search is gone (expired and re-queued, or cancelled): it must stop writing."""
