"""Loading of an export folder written by :func:`nas.export.export_model`.

``nas.load(path)`` rebuilds the network through its registered space and loads the safetensors weights;
``load_torchscript(path)`` needs neither the space nor this project's model code.
"""

from __future__ import annotations

import json
import sys
import types
import warnings
from pathlib import Path
from typing import Any

import torch
from torch import nn

from nas.arch import Architecture
from nas.errors import InvalidInput
from nas.export import FILE_NAMES, FORMAT_VERSION
from nas.space import get_space

__all__ = ["export_dir", "load", "load_torchscript", "read_manifest"]


def export_dir(path: str | Path) -> Path:
    """The export folder for ``path``: the folder itself or any file inside it (arch.json, model.safetensors)."""
    p = Path(path)
    if not p.exists():
        raise InvalidInput("path", f"{str(p)!r} does not exist; give an export folder or its arch.json")
    return p if p.is_dir() else p.parent


def read_manifest(path: str | Path) -> dict[str, Any]:
    """The parsed ``arch.json`` of an export folder (``path`` as in :func:`export_dir`)."""
    folder = export_dir(path)
    manifest_path = folder / FILE_NAMES["json"]
    if not manifest_path.is_file():
        raise InvalidInput("path", f"{str(folder)!r} has no {FILE_NAMES['json']}; is it an export folder?")
    try:
        data = json.loads(manifest_path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise InvalidInput("arch.json", f"not valid JSON: {exc}") from exc
    if not isinstance(data, dict) or "architecture" not in data:
        raise InvalidInput("arch.json", "must be an object with an 'architecture' entry")
    version = data.get("format_version", FORMAT_VERSION)
    if not isinstance(version, int) or version > FORMAT_VERSION:
        raise InvalidInput(
            "arch.json.format_version", f"is {version!r}; this version of nas reads up to {FORMAT_VERSION}"
        )
    return data


def load(path: str | Path, *, map_location: str | torch.device = "cpu") -> nn.Module:
    """The exported network with its trained weights, in eval mode on ``map_location``.

    ``path`` is the export folder, its ``arch.json`` or its ``model.safetensors``. The space named in the manifest
    must be registered (installed); the weights are loaded strictly.
    """
    folder = export_dir(path)
    manifest = read_manifest(folder)
    arch = Architecture.from_dict(manifest["architecture"])
    options = manifest.get("space_options") or {}
    if not isinstance(options, dict):
        raise InvalidInput("arch.json.space_options", "must be an object")
    space = get_space(arch.space, **options)
    space.validate(arch)
    model = space.build(arch, manifest.get("macro") or {})

    weights = folder / FILE_NAMES["safetensors"]
    if not weights.is_file():
        raise InvalidInput("path", f"{str(folder)!r} has no {FILE_NAMES['safetensors']} (export it with 'safetensors')")
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    try:
        state = load_file(str(weights), device="cpu")
    except (SafetensorError, OSError) as exc:
        raise InvalidInput(FILE_NAMES["safetensors"], f"unreadable weights file: {exc}") from exc
    try:
        model.load_state_dict(state, strict=True)
    except RuntimeError as exc:
        raise InvalidInput(
            FILE_NAMES["safetensors"],
            f"weights do not match the network of space {arch.space!r} built from arch.json: {exc}",
        ) from exc
    return model.to(map_location).eval()


def load_torchscript(path: str | Path, *, map_location: str | torch.device = "cpu") -> torch.jit.ScriptModule:
    """The TorchScript module of an export (``path``: the folder or the ``model.ts`` file), in eval mode."""
    p = Path(path)
    if p.is_dir():
        p = p / FILE_NAMES["torchscript"]
    if not p.is_file():
        raise InvalidInput("path", f"{str(p)!r} does not exist (export it with 'torchscript')")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", DeprecationWarning)  # torch.jit is deprecated but TorchScript lives on
            module = torch.jit.load(str(p), map_location=map_location)
    except RuntimeError as exc:
        raise InvalidInput("path", f"{str(p)!r} is not a TorchScript file: {exc}") from exc
    module.eval()
    return module


class _CallableModule(types.ModuleType):
    """Lets ``nas.load(path)`` work even after ``import nas.load`` has bound the package attribute to this module."""

    def __call__(self, path: str | Path, *, map_location: str | torch.device = "cpu") -> nn.Module:
        return load(path, map_location=map_location)


sys.modules[__name__].__class__ = _CallableModule
