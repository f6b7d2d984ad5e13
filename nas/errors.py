"""Errors of the engine. Every user-facing error names the offending field and what is allowed."""

from __future__ import annotations


class NASError(Exception):
    """Base class of every error the engine raises on purpose."""


class InvalidInput(NASError, ValueError):
    """Bad input from a user: a spec, an architecture, a dataset path, a budget.

    ``field`` is a dotted path to the offending value (``dataset.path``, ``normal.blocks[2].op1``).
    """

    def __init__(self, field: str, message: str) -> None:
        self.field = field
        self.message = message
        super().__init__(f"{field}: {message}")


class SearchCancelled(NASError):
    """Raised inside a strategy when the cancellation flag is set; the last checkpoint stays valid."""


class CheckpointError(NASError):
    """A checkpoint is missing, unreadable or does not belong to this search."""
