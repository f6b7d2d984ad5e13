"""nas-service: neural architecture search over hybrid CNN-Transformer search spaces.

Importing ``nas`` is cheap (no torch); ``nas.load`` and ``nas.load_torchscript`` import it on first use.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from nas.load import load, load_torchscript

__all__ = ["load", "load_torchscript"]


def __getattr__(name: str) -> Any:
    if name in ("load", "load_torchscript"):
        import importlib

        module = importlib.import_module("nas.load")  # also binds the package attribute to the (callable) module
        return getattr(module, name)
    raise AttributeError(f"module 'nas' has no attribute {name!r}")
