"""The standalone source generator: a self-contained ``model.py`` that rebuilds one architecture with PyTorch only.

A space lists the modules that define its networks (``SearchSpace.standalone_modules``); their source is copied
into one file with the imports of the project removed, followed by the architecture's choices and macro settings
and ``build()`` / ``load()`` functions (``load`` reads ``model.safetensors``, with a minimal reader of its own when
the safetensors package is missing). :func:`_check_standalone` runs the generated file in a fresh module and
requires the same state-dict layout and output as the exported model.
"""

from __future__ import annotations

import inspect
import json
import logging
import pprint
import re
import sys
import types
import uuid
from collections.abc import Sequence
from typing import Any

import torch
from torch import Tensor, nn

from nas.arch import Architecture
from nas.export.checks import ExportError, _assert_close
from nas.space import SearchSpace

logger = logging.getLogger(__name__)

__all__ = ["standalone_source"]

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
