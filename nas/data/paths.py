"""Resolving user-given dataset paths, and keeping them inside the allowed roots."""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

from nas.errors import InvalidInput

FIELD = "dataset.path"


class PathGuard:
    """Resolves paths (symlinks and ``..``) and, when ``roots`` are given, refuses any real path outside them.

    Every file a dataset reader opens goes through ``check``, so a symlink inside an allowed folder that points
    elsewhere is refused too.
    """

    def __init__(self, roots: Sequence[str | os.PathLike[str]] | None = None) -> None:
        self.roots = None if roots is None else [Path(r).expanduser().resolve() for r in roots]

    def check(self, path: str | os.PathLike[str], *, shown: str | None = None) -> Path:
        real = Path(path).expanduser().resolve()
        if self.roots is not None and not any(real == r or r in real.parents for r in self.roots):
            # the roots are not listed: the message reaches the users of a service, who need not see its layout
            raise InvalidInput(FIELD, f"{shown or str(path)!r} is outside the allowed dataset roots")
        return real

    def existing(self, path: str | os.PathLike[str], kind: str) -> Path:
        """The resolved path, which must exist and be a ``kind`` ('folder' or 'file')."""
        real = self.check(path)
        if not real.exists():
            raise InvalidInput(FIELD, f"{str(path)!r} does not exist; expected {_article(kind)} {kind}")
        if kind == "folder" and not real.is_dir():
            raise InvalidInput(FIELD, f"{str(path)!r} is not a folder")
        if kind == "file" and not real.is_file():
            raise InvalidInput(FIELD, f"{str(path)!r} is not a file")
        return real


def _article(word: str) -> str:
    return "an" if word[:1] in "aeiou" else "a"
