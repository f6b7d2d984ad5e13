"""The export formats: which exist, the file each is written to, and the writers of the binary ones.

safetensors holds the weights; TorchScript (traced) and ONNX (the torch.export-based exporter, the TorchScript-based
one as a fallback) hold the whole network. A writer writes one file and checks it: TorchScript must reproduce the
model's output at two batch sizes, ONNX must pass ``onnx.checker`` and is exported with a dynamic batch axis. The
manifest ("json") is written by :func:`nas.export.export_model`, the standalone Python file ("python") by
:mod:`nas.export.standalone`.
"""

from __future__ import annotations

import logging
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from nas.arch import Architecture
from nas.errors import InvalidInput
from nas.export.checks import ExportError, _assert_close, _other_batch

logger = logging.getLogger(__name__)

__all__ = ["ALLOWED_FORMATS", "FILE_NAMES", "FORMAT_VERSION", "state_dict_for_safetensors"]

FORMAT_VERSION = 1
ALLOWED_FORMATS: tuple[str, ...] = ("json", "safetensors", "torchscript", "onnx", "python")
FILE_NAMES: dict[str, str] = {
    "json": "arch.json",
    "safetensors": "model.safetensors",
    "torchscript": "model.ts",
    "onnx": "model.onnx",
    "python": "model.py",
}
ONNX_OPSET = 18  # the torch.export-based exporter's native opset
ONNX_LEGACY_OPSET = 17


def _check_formats(formats: Sequence[str]) -> list[str]:
    if isinstance(formats, str):
        formats = [formats]
    out: list[str] = []
    for i, fmt in enumerate(formats):
        if fmt not in ALLOWED_FORMATS:
            raise InvalidInput(
                f"final.export[{i}]", f"unknown export format {fmt!r}; allowed: {', '.join(ALLOWED_FORMATS)}"
            )
        if fmt not in out:
            out.append(fmt)
    return out


def state_dict_for_safetensors(model: nn.Module) -> dict[str, Tensor]:
    """The state dict as contiguous CPU tensors that share no memory (tied weights are stored once per name)."""
    out: dict[str, Tensor] = {}
    seen: set[int] = set()
    for name, value in model.state_dict().items():
        t = value.detach().cpu().contiguous()
        storage = t.untyped_storage()
        ptr = storage.data_ptr()
        partial = storage.nbytes() != t.numel() * t.element_size()
        if (ptr in seen and t.numel() > 0) or partial:
            t = t.clone()
        seen.add(t.untyped_storage().data_ptr())
        out[name] = t
    return out


def _write_safetensors(model: nn.Module, path: Path, arch: Architecture) -> dict[str, Any]:
    from safetensors.torch import save_file

    state = state_dict_for_safetensors(model)
    save_file(state, str(path), metadata={"format": "pt", "space": arch.space, "arch_hash": arch.hash})
    return {"tensors": len(state)}


def _write_torchscript(model: nn.Module, x: Tensor, path: Path) -> dict[str, Any]:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        warnings.simplefilter("ignore", torch.jit.TracerWarning)
        traced = torch.jit.trace(model, x, check_trace=False)
        with torch.no_grad():
            for inp in (x, _other_batch(x)):
                _assert_close("torchscript", traced(inp), model(inp))
        torch.jit.save(traced, str(path))
    return {}


def _onnx_example(x: Tensor) -> Tensor:
    # torch.export specialises sizes of 0 and 1, so a dynamic batch axis needs an example batch of at least 2
    return x if x.shape[0] >= 2 else torch.cat([x, _other_batch(x)[:1].expand_as(x)], dim=0)


def _write_onnx(model: nn.Module, x: Tensor, path: Path) -> dict[str, Any]:
    import onnx

    example = _onnx_example(x)
    info: dict[str, Any]
    onnx_log = logging.getLogger("torch.onnx")
    level = onnx_log.level
    onnx_log.setLevel(logging.ERROR)  # it warns that torchvision's ops are not registered: irrelevant here
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            torch.onnx.export(
                model,
                (example,),
                str(path),
                input_names=["input"],
                output_names=["logits"],
                dynamic_shapes=({0: torch.export.Dim("batch")},),
                opset_version=ONNX_OPSET,
                external_data=False,
                dynamo=True,
                verbose=False,
            )
            info = {"exporter": "dynamo", "opset": ONNX_OPSET}
        except Exception as exc:
            logger.warning("torch.export-based ONNX export failed (%s); using the TorchScript exporter", exc)
            path.unlink(missing_ok=True)
            torch.onnx.export(
                model,
                (example,),
                str(path),
                input_names=["input"],
                output_names=["logits"],
                dynamic_axes={"input": {0: "batch"}, "logits": {0: "batch"}},
                opset_version=ONNX_LEGACY_OPSET,
                dynamo=False,
            )
            info = {"exporter": "torchscript", "opset": ONNX_LEGACY_OPSET}
        finally:
            onnx_log.setLevel(level)
    try:
        onnx.checker.check_model(str(path))
    except onnx.checker.ValidationError as exc:
        raise ExportError("onnx", f"onnx.checker rejected the graph: {exc}") from exc
    dim0 = onnx.load(str(path), load_external_data=False).graph.input[0].type.tensor_type.shape.dim[0]
    info["dynamic_batch"] = bool(dim0.dim_param)
    if not info["dynamic_batch"]:
        logger.warning("the ONNX graph has a fixed batch size of %s", dim0.dim_value)
    return info
