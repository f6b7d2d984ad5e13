"""Export of a trained network: a manifest (arch.json), safetensors weights, TorchScript, ONNX and a standalone .py.

Every file is written under a temporary name first and moved into place only when all requested formats have been
written and checked, the manifest last; if anything fails, the files of this export are removed again, so an export
folder holding an ``arch.json`` is always complete. See docs/export.md.
"""

from __future__ import annotations

import contextlib
import copy
import json
import logging
import os
import pprint
import re
import sys
import types
import uuid
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from nas.arch import Architecture
from nas.errors import InvalidInput, NASError
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
_RTOL = 1e-4
_ATOL = 1e-5


class ExportError(NASError):
    """A format could not be written or did not reproduce the model's output."""

    def __init__(self, fmt: str, message: str) -> None:
        self.format = fmt
        super().__init__(f"export to {fmt} failed: {message}")


# --- helpers ---------------------------------------------------------------------------------------------------
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


def _first_tensor(output: Any) -> Tensor:
    if isinstance(output, Tensor):
        return output
    if isinstance(output, (tuple, list)) and output and isinstance(output[0], Tensor):
        return output[0]
    if isinstance(output, dict) and output:
        return _first_tensor(next(iter(output.values())))
    raise TypeError(f"model output of type {type(output).__name__} holds no tensor")


def _assert_close(fmt: str, got: Any, want: Any) -> None:
    a, b = _first_tensor(got).float(), _first_tensor(want).float()
    if a.shape != b.shape:
        raise ExportError(fmt, f"output shape {tuple(a.shape)} differs from the model's {tuple(b.shape)}")
    scale = max(1.0, float(b.abs().max())) if b.numel() else 1.0
    if not torch.allclose(a, b, rtol=_RTOL * 10, atol=_ATOL * 10 * scale):
        diff = float((a - b).abs().max())
        raise ExportError(fmt, f"output differs from the model's (max abs difference {diff:.3g})")


def _other_batch(x: Tensor) -> Tensor:
    """An input with a different batch size, to check that an export does not bake the batch size in."""
    n = 2 if x.shape[0] == 1 else 1
    gen = torch.Generator().manual_seed(1)
    return torch.randn((n, *x.shape[1:]), generator=gen)


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


# --- writers ---------------------------------------------------------------------------------------------------
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


# --- standalone python -----------------------------------------------------------------------------------------
_FUTURE = re.compile(r"^from\s+__future__\s+import\s+(.+?)\s*(#.*)?$")

_TAIL = '''

# ---- the exported architecture -------------------------------------------------------------------------------
import json as _json
from pathlib import Path as _Path

import torch as _torch

SPACE = {space!r}
SPACE_VERSION = {version!r}
ARCH_HASH = {arch_hash!r}
CHOICES = {choices}
MACRO = {macro}
INPUT_SHAPE = {input_shape!r}

_HERE = _Path(__file__).resolve().parent if "__file__" in globals() else _Path.cwd()
_ST_DTYPES = {{
    "F64": _torch.float64, "F32": _torch.float32, "F16": _torch.float16, "BF16": _torch.bfloat16,
    "I64": _torch.int64, "I32": _torch.int32, "I16": _torch.int16, "I8": _torch.int8,
    "U8": _torch.uint8, "BOOL": _torch.bool,
}}


def build():
    """The network with freshly initialised weights."""
    return build_network(CHOICES, MACRO)


def _read_safetensors(path):
    """Minimal safetensors reader (8-byte header length, JSON header, raw little-endian data) for when the
    safetensors package is not installed."""
    data = _Path(path).read_bytes()
    n = int.from_bytes(data[:8], "little")
    header = _json.loads(data[8 : 8 + n])
    state = {{}}
    for name, info in header.items():
        if name == "__metadata__":
            continue
        start, end = info["data_offsets"]
        dtype = _ST_DTYPES[info["dtype"]]
        if end > start:
            t = _torch.frombuffer(bytearray(data[8 + n + start : 8 + n + end]), dtype=dtype)
        else:
            t = _torch.empty(0, dtype=dtype)
        state[name] = t.reshape(info["shape"])
    return state


def load(weights_path="model.safetensors", map_location="cpu"):
    """The network with the exported weights, in eval mode. A relative path is looked up next to this file when it
    does not exist in the working directory; ``.safetensors`` files are read with the safetensors package when
    installed (else with the reader above), other files with ``torch.load``."""
    path = _Path(weights_path)
    if not path.is_absolute() and not path.exists():
        path = _HERE / path
    model = build()
    if path.suffix == ".safetensors":
        try:
            from safetensors.torch import load_file
        except ImportError:
            state = _read_safetensors(path)
        else:
            state = load_file(str(path))
    else:
        state = _torch.load(str(path), map_location="cpu", weights_only=True)
    model.load_state_dict(state, strict=True)
    return model.to(map_location).eval()


if __name__ == "__main__":
    _weights = _HERE / "model.safetensors"
    _net = load(_weights) if _weights.exists() else build().eval()
    with _torch.no_grad():
        _out = _net(_torch.zeros(INPUT_SHAPE))
    _out = _out[0] if isinstance(_out, (tuple, list)) else _out
    print(f"{{SPACE}} {{ARCH_HASH}}: input {{tuple(INPUT_SHAPE)}} -> output {{tuple(_out.shape)}}"
          f" (weights {{'loaded' if _weights.exists() else 'random'}})")
'''


def _strip_imports(source: str, module_names: Sequence[str]) -> tuple[list[str], list[str]]:
    """Remove imports of the project (and of the other standalone modules) from ``source``.

    Top-level import lines are dropped; indented ones (inside ``if TYPE_CHECKING:`` or a function) become ``pass``
    so the block stays valid. Returns the remaining lines and the ``__future__`` features found.
    """
    roots = sorted({"nas", "searchspaces", *module_names}, key=len, reverse=True)
    pattern = re.compile(r"^(\s*)(?:from|import)\s+(?:" + "|".join(map(re.escape, roots)) + r")(?=[.\s,]|$)")
    lines: list[str] = []
    features: list[str] = []
    skipping = ""  # the closing token of a multi-line import being skipped
    for line in source.splitlines():
        if skipping:
            if (skipping == ")" and ")" in line) or (skipping == "\\" and not line.rstrip().endswith("\\")):
                skipping = ""
            continue
        future = _FUTURE.match(line)
        if future:
            features += [f.strip() for f in future.group(1).strip("()").split(",") if f.strip()]
            continue
        match = pattern.match(line)
        if match:
            if "(" in line and ")" not in line:
                skipping = ")"
            elif line.rstrip().endswith("\\"):
                skipping = "\\"
            if match.group(1):
                lines.append(f"{match.group(1)}pass")
            continue
        lines.append(line)
    return lines, features


def _as_module(obj: Any, index: int) -> types.ModuleType:
    """``obj`` itself when it is a module, else the module defining it (``import pkg.mod`` can yield a function when
    ``pkg/__init__.py`` re-exports a function named like its submodule)."""
    if isinstance(obj, types.ModuleType):
        return obj
    name = getattr(obj, "__module__", None)
    module = sys.modules.get(name) if isinstance(name, str) else None
    if module is None:
        raise ExportError("python", f"standalone_modules()[{index}] is {obj!r}, not a module")
    logger.warning(
        "standalone_modules()[%d] is %r, not a module; using its module %s (import it with importlib.import_module)",
        index,
        obj,
        name,
    )
    return module


def standalone_source(
    space: SearchSpace, arch: Architecture, macro: dict[str, Any], input_shape: tuple[int, ...]
) -> str | None:
    """The source of a Python file rebuilding ``arch`` with PyTorch only; None when the space has no standalone
    modules. ``macro`` should be complete (defaults filled in)."""
    modules = [_as_module(m, i) for i, m in enumerate(space.standalone_modules())]
    if not modules:
        return None
    import inspect

    names = [m.__name__ for m in modules]
    bodies: list[str] = []
    features: list[str] = []
    for module in modules:
        lines, found = _strip_imports(inspect.getsource(module), names)
        features += [f for f in found if f not in features]
        bodies.append(f"# ---- from {module.__name__} " + "-" * max(4, 100 - len(module.__name__)) + "\n")
        bodies.append("\n".join(lines).strip("\n") + "\n\n")
    header = (
        f'"""Standalone network exported by nas-service: space {arch.space!r} (version {arch.version}),\n'
        f"architecture {arch.hash}. Needs only PyTorch (safetensors optional).\n\n"
        "    from model import load\n"
        "    net = load()  # reads model.safetensors next to this file\n"
        '"""\n\n'
    )
    future = f"from __future__ import {', '.join(features)}\n\n" if features else ""
    tail = _TAIL.format(
        space=arch.space,
        version=arch.version,
        arch_hash=arch.hash,
        choices=pprint.pformat(json.loads(json.dumps(arch.choices)), width=100, sort_dicts=False),
        macro=pprint.pformat(json.loads(json.dumps(macro)), width=100, sort_dicts=False),
        input_shape=tuple(input_shape),
    )
    return re.sub(r"\n{4,}", "\n\n\n", header + future + "".join(bodies) + tail)


def _check_standalone(source: str, model: nn.Module, x: Tensor) -> None:
    """Run the generated source in a fresh module: it must build the same state-dict layout and output."""
    try:
        code = compile(source, "model.py", "exec", dont_inherit=True)  # not this module's __future__ flags
    except SyntaxError as exc:
        raise ExportError("python", f"generated source does not compile: {exc}") from exc
    name = f"_nas_export_check_{uuid.uuid4().hex}"
    module = types.ModuleType(name)
    sys.modules[name] = module  # dataclasses and typing look their module up
    try:
        exec(code, module.__dict__)
        rebuilt = module.build()
        rebuilt.load_state_dict(model.state_dict(), strict=True)
        rebuilt.eval()
        with torch.no_grad():
            _assert_close("python", rebuilt(x), model(x))
    except ExportError:
        raise
    except Exception as exc:
        raise ExportError("python", f"generated model.py does not rebuild the network: {exc!r}") from exc
    finally:
        sys.modules.pop(name, None)


# --- the export ------------------------------------------------------------------------------------------------
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
