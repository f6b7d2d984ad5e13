"""One generic registry for the engine's plug-ins: spaces, strategies, datasets and tasks.

Items are registered in code (built-ins, tests) or come from an entry-point group of installed packages (how
``searchspaces`` plugs its spaces in without ``nas`` importing it by name). Entry points are listed on first use and
loaded only when their item is asked for.
"""

from __future__ import annotations

from importlib.metadata import EntryPoint, entry_points
from typing import Generic, TypeVar

from nas.errors import InvalidInput

T = TypeVar("T")


class Registry(Generic[T]):
    """Named items of one kind (``kind``: 'space', 'strategy', 'dataset', 'task').

    A name registered in code wins over an entry point of the same name. Asking for an unknown name raises
    InvalidInput naming ``field`` (the spec field that holds the name) and listing the allowed names.
    """

    def __init__(self, kind: str, *, field: str, group: str | None = None) -> None:
        self.kind = kind
        self.field = field
        self.group = group
        self._items: dict[str, T] = {}
        self._entry_points: dict[str, EntryPoint] | None = None

    def register(self, name: str, item: T) -> T:
        """Add (or replace) ``name``; returns ``item``."""
        self._items[name] = item
        return item

    def entry_points(self) -> dict[str, EntryPoint]:
        """The entry points of ``group`` by name (listed once, not loaded)."""
        if self._entry_points is None:
            found = entry_points(group=self.group) if self.group else ()
            self._entry_points = {ep.name: ep for ep in found}
        return self._entry_points

    def names(self) -> list[str]:
        return sorted(set(self._items) | set(self.entry_points()))

    def __contains__(self, name: object) -> bool:
        return isinstance(name, str) and (name in self._items or name in self.entry_points())

    def get(self, name: str) -> T:
        """The item called ``name``, loading its entry point on first use."""
        if name in self._items:
            return self._items[name]
        ep = self.entry_points().get(name)
        if ep is None:
            allowed = ", ".join(self.names()) or "none"
            raise InvalidInput(self.field, f"unknown {self.kind} {name!r}; allowed: {allowed}")
        item: T = ep.load()
        return self._items.setdefault(name, item)

    def __repr__(self) -> str:
        return f"Registry({self.kind!r}, names={self.names()})"
