"""A restricted unpickler for the CIFAR "python version" batch files.

``pickle`` runs whatever callables a file names, so an untrusted pickle can execute code. This unpickler resolves
only the few numpy globals that rebuild an ndarray (and ``_codecs.encode`` limited to latin-1, which Python 3
writes for byte strings in protocol 2); every other global is refused before anything is called.
"""

from __future__ import annotations

import codecs
import io
import pickle
from pathlib import Path
from typing import Any

import numpy as np

from nas.errors import InvalidInput

_LATIN1 = {"latin1", "latin-1", "iso-8859-1", "iso8859-1", "l1"}


def _latin1_encode(obj: str, encoding: str = "utf-8", errors: str = "strict") -> bytes:
    if encoding.lower() not in _LATIN1 or not isinstance(obj, str):
        raise pickle.UnpicklingError(f"_codecs.encode with {encoding!r} is not allowed")
    return codecs.encode(obj, "latin-1", errors)


def _allowed_globals() -> dict[tuple[str, str], Any]:
    try:  # numpy >= 2
        from numpy._core import multiarray, numeric
    except ImportError:  # pragma: no cover - numpy 1.x
        from numpy.core import multiarray, numeric  # type: ignore[no-redef]
    allowed: dict[tuple[str, str], Any] = {
        ("numpy", "ndarray"): np.ndarray,
        ("numpy", "dtype"): np.dtype,
        ("_codecs", "encode"): _latin1_encode,
    }
    # pickles name the module they were written with: numpy 1 wrote numpy.core, numpy 2 writes numpy._core
    for package in ("numpy.core", "numpy._core"):
        allowed[(f"{package}.multiarray", "_reconstruct")] = multiarray._reconstruct
        allowed[(f"{package}.multiarray", "scalar")] = multiarray.scalar
        allowed[(f"{package}.numeric", "_frombuffer")] = numeric._frombuffer  # type: ignore[attr-defined]
    return allowed


class NumpyOnlyUnpickler(pickle.Unpickler):
    """Unpickles plain containers (dict, list, tuple, str, bytes, numbers) and numpy arrays, nothing else."""

    _allowed = _allowed_globals()

    def find_class(self, module: str, name: str) -> Any:
        try:
            return self._allowed[(module, name)]
        except KeyError:
            raise pickle.UnpicklingError(f"global '{module}.{name}' is not allowed") from None

    def persistent_load(self, pid: Any) -> Any:
        raise pickle.UnpicklingError("persistent ids are not allowed")


def load_numpy_pickle(path: Path, *, shown: str | None = None) -> Any:
    """Read a pickle file of containers and numpy arrays (Python 2 pickles included, as latin-1).

    Anything else (a class, a function, a malformed file) raises InvalidInput('dataset.path') without running it.
    """
    label = shown or path.name
    try:
        data = path.read_bytes()
        result = NumpyOnlyUnpickler(io.BytesIO(data), encoding="latin1").load()
    except pickle.UnpicklingError as exc:
        raise InvalidInput("dataset.path", f"refusing to load {label}: {exc}") from None
    except Exception as exc:  # truncated or corrupt files raise many kinds of errors
        raise InvalidInput("dataset.path", f"{label} is not a readable CIFAR batch file: {exc}") from None
    _refuse_objects(result, label)
    return result


def _refuse_objects(value: Any, label: str, depth: int = 0) -> None:
    """Object arrays could hide anything; the batch format has none."""
    if depth > 4:
        return
    if isinstance(value, np.ndarray) and value.dtype.hasobject:
        raise InvalidInput("dataset.path", f"{label} holds an object array; only numeric arrays are allowed")
    if isinstance(value, dict):
        for v in value.values():
            _refuse_objects(v, label, depth + 1)
