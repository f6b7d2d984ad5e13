"""Export of a trained network: a manifest (arch.json), safetensors weights, TorchScript, ONNX and a standalone .py.

Every file is written under a temporary name first and moved into place only when all requested formats have been
written and checked, the manifest last; if anything fails, the files of this export are removed again, so an export
folder holding an ``arch.json`` is always complete. See docs/export.md.

This module is the export of a folder (:func:`export_model`: staging, the manifest, commit or clean-up);
:mod:`nas.export.formats` writes and checks the binary formats, :mod:`nas.export.standalone` generates the
standalone ``model.py`` and :mod:`nas.export.checks` holds what they share. The public names of all of them are
importable from here.
"""

from __future__ import annotations

import contextlib
import copy
import json
import logging
import os
import uuid
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from torch import nn

from nas.arch import Architecture
from nas.errors import InvalidInput

# Every name ``nas.export`` had before it became a package stays importable from here (the private helpers too: tests
# use them). The writers are called through this module's namespace, so replacing one here (monkeypatch) takes effect.
from nas.export.checks import ExportError
from nas.export.checks import _assert_close as _assert_close
from nas.export.checks import _first_tensor as _first_tensor
from nas.export.checks import _other_batch as _other_batch
from nas.export.formats import (
    ALLOWED_FORMATS,
    FILE_NAMES,
    FORMAT_VERSION,
    _check_formats,
    _write_onnx,
    _write_safetensors,
    _write_torchscript,
    state_dict_for_safetensors,
)
from nas.export.formats import ONNX_LEGACY_OPSET as ONNX_LEGACY_OPSET
from nas.export.formats import ONNX_OPSET as ONNX_OPSET
from nas.export.formats import _onnx_example as _onnx_example
from nas.export.standalone import _as_module as _as_module
from nas.export.standalone import _check_standalone, standalone_source
from nas.export.standalone import _strip_imports as _strip_imports
from nas.measure import count_macs, count_params
from nas.space import SearchSpace

logger = logging.getLogger(__name__)

__all__ = [
    "ALLOWED_FORMATS",
    "FILE_NAMES",
    "FORMAT_VERSION",
    "ExportError",
    "export_model",
    "standalone_source",
    "state_dict_for_safetensors",
]


def export_model(
    model: nn.Module,
    arch: Architecture,
    macro: dict[str, Any] | Any,
    space: SearchSpace,
    out_dir: Path | str,
    *,
    input_shape: tuple[int, ...],
    formats: Sequence[str] = ALLOWED_FORMATS,
    metrics: dict[str, float] | None = None,
    space_options: dict[str, Any] | None = None,
    preprocessing: dict[str, Any] | None = None,
) -> dict[str, str]:
    """Write ``model`` (built from ``arch`` by ``space`` with ``macro``) into ``out_dir`` in ``formats``.

    Returns ``{format: file name relative to out_dir}``. The manifest ``arch.json`` is always written (it is what
    :func:`nas.load.load` reads). Each binary format is checked before it is kept: TorchScript and the standalone
    Python file must reproduce the model's output, ONNX must pass ``onnx.checker``. A space without standalone
    modules skips "python" with a warning recorded in the manifest's ``warnings``. The caller's model is not
    modified (a CPU copy is exported).
    """
    fmts = _check_formats(formats)
    shape = tuple(int(s) for s in input_shape)
    if len(shape) < 2 or any(s < 1 for s in shape):
        raise InvalidInput("input_shape", f"must be (batch, channels, ...) with positive sizes, got {input_shape!r}")
    space.validate(arch)
    macro_full: dict[str, Any] = space.macro(macro).model_dump(mode="json")
    out = Path(out_dir)
    if out.exists() and not out.is_dir():
        raise InvalidInput("out_dir", f"{str(out)!r} exists and is not a directory")

    net = copy.deepcopy(model).cpu().eval()
    for p in net.parameters():
        p.requires_grad_(False)
    x = torch.randn(shape, generator=torch.Generator().manual_seed(0))

    created_dir = not out.exists()
    out.mkdir(parents=True, exist_ok=True)
    tag = uuid.uuid4().hex[:8]
    staged: dict[str, Path] = {}  # final name -> temporary path
    committed: list[Path] = []
    files: dict[str, str] = {}
    details: dict[str, Any] = {}
    notes: list[str] = []

    def stage(fmt: str) -> Path:
        name = FILE_NAMES[fmt]
        staged[name] = out / f".tmp-{tag}-{name}"
        return staged[name]

    try:
        with torch.no_grad():
            for fmt in fmts:
                if fmt == "json":
                    continue
                logger.info("exporting %s to %s", fmt, out)
                if fmt == "safetensors":
                    details[fmt] = _write_safetensors(net, stage(fmt), arch)
                elif fmt == "torchscript":
                    details[fmt] = _write_torchscript(net, x, stage(fmt))
                elif fmt == "onnx":
                    details[fmt] = _write_onnx(net, x, stage(fmt))
                elif fmt == "python":
                    source = standalone_source(space, arch, macro_full, shape)
                    if source is None:
                        msg = f"python: space {arch.space!r} has no standalone modules; model.py not written"
                        logger.warning(msg)
                        notes.append(msg)
                        continue
                    _check_standalone(source, net, x)
                    stage(fmt).write_text(source, encoding="utf-8")
                files[fmt] = FILE_NAMES[fmt]
            params, macs = count_params(net), count_macs(net, shape)
        files = {"json": FILE_NAMES["json"], **files}
        manifest = {
            "format_version": FORMAT_VERSION,
            "architecture": arch.model_dump(mode="json"),
            "arch_hash": arch.hash,
            "space_options": (
                dict(space_options) if space_options is not None else space.options.model_dump(mode="json")
            ),
            "macro": macro_full,
            "input_size": shape[2] if len(shape) == 4 and shape[2] == shape[3] else list(shape[2:]),
            "input_shape": list(shape),
            "in_channels": macro_full.get("in_channels", shape[1]),
            "num_classes": macro_full.get("num_classes"),
            "metrics": dict(metrics or {}),
            "costs": {"params": params, "macs": macs},
            "preprocessing": dict(preprocessing or {}),
            "files": files,
            "details": details,
            "warnings": notes,
            "created_with": {"torch": torch.__version__},
        }
        stage("json").write_text(json.dumps(manifest, indent=2, sort_keys=False) + "\n", encoding="utf-8")
        # commit: binaries first, the manifest last, so a folder with an arch.json is complete
        for name in sorted(staged, key=lambda n: n == FILE_NAMES["json"]):
            final = out / name
            os.replace(staged[name], final)
            committed.append(final)
    except BaseException:
        for path in [*staged.values(), *committed]:
            path.unlink(missing_ok=True)
        if created_dir:
            with contextlib.suppress(OSError):
                out.rmdir()
        raise
    logger.info("exported %s to %s", ", ".join(files), out)
    return files
