"""Checkpoints: atomic writes, safe loads, and capture/restore of every random number generator."""

from __future__ import annotations

import os
import random
import tempfile
from pathlib import Path
from typing import Any

import torch

from nas.errors import CheckpointError


def capture_rng() -> dict[str, Any]:
    state: dict[str, Any] = {"python": random.getstate(), "torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def restore_rng(state: dict[str, Any]) -> None:
    random.setstate(_as_python_state(state["python"]))
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def _as_python_state(value: Any) -> Any:
    """random.setstate needs tuples; a round trip through some loaders gives lists."""
    if isinstance(value, list):
        return tuple(_as_python_state(v) for v in value)
    if isinstance(value, tuple):
        return tuple(_as_python_state(v) for v in value)
    return value


class CheckpointStore:
    """Named checkpoints in a folder: atomic writes (temp file + rename), loads of tensors and plain data only."""

    def __init__(self, root: str | Path) -> None:
        self.root = Path(root)

    def path(self, name: str) -> Path:
        return self.root / f"{name}.pt"

    def exists(self, name: str) -> bool:
        return self.path(name).is_file()

    def save(self, name: str, state: dict[str, Any]) -> Path:
        self.root.mkdir(parents=True, exist_ok=True)
        target = self.path(name)
        fd, tmp = tempfile.mkstemp(dir=self.root, prefix=f".{name}.", suffix=".tmp")
        try:
            with os.fdopen(fd, "wb") as fh:
                torch.save(state, fh)
            os.replace(tmp, target)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
        return target

    def load(self, name: str) -> dict[str, Any] | None:
        target = self.path(name)
        if not target.is_file():
            return None
        try:
            state = torch.load(target, map_location="cpu", weights_only=True)
        except Exception as exc:
            raise CheckpointError(f"checkpoint {target} is unreadable: {exc}") from exc
        if not isinstance(state, dict):
            raise CheckpointError(f"checkpoint {target} does not hold a state dict")
        return state

    def delete(self, name: str) -> None:
        self.path(name).unlink(missing_ok=True)

    def child(self, name: str) -> CheckpointStore:
        return CheckpointStore(self.root / name)
