"""'npz': arrays from one .npz file, read with ``allow_pickle=False``.

Keys: ``x_train``, ``y_train`` and optionally ``x_val``/``y_val``, ``x_test``/``y_test``, ``class_names`` (strings).
Images: (N, H, W, C) or (N, C, H, W) with C in {1, 3}, or (N, H, W) grey; uint8 0..255 (any integer type in that
range) or float in [0, 1]. Missing val/test sets are split off the training arrays.
"""

from __future__ import annotations

import zipfile
from pathlib import Path

import numpy as np
import torch

from nas.data.assemble import make_splits
from nas.data.base import DataSplits, Split
from nas.data.imaging import resize_uint8
from nas.data.paths import FIELD, PathGuard
from nas.data.splitting import TEST_FRACTION, TEST_SEED, limit_indices, stratified_split
from nas.errors import InvalidInput
from nas.spec import DatasetSpec

CHANNELS = (1, 3)


def to_nchw_uint8(x: np.ndarray, key: str) -> np.ndarray:
    """Images in any accepted layout and type -> uint8 (N, C, H, W)."""
    if x.ndim == 3:
        x = x[:, None]
    elif x.ndim != 4:
        raise InvalidInput(FIELD, f"{key} must have 3 or 4 dimensions (N, H, W[, C]), got shape {x.shape}")
    elif x.shape[-1] in CHANNELS and x.shape[1] not in CHANNELS:
        x = x.transpose(0, 3, 1, 2)
    elif x.shape[1] not in CHANNELS:
        raise InvalidInput(FIELD, f"{key} must be (N, H, W, C) or (N, C, H, W) with C in 1 or 3, got {x.shape}")
    if x.dtype == np.uint8:
        return np.ascontiguousarray(x)
    if x.dtype.kind == "f":
        if x.size and (not np.isfinite(x).all() or x.min() < 0.0 or x.max() > 1.0):
            raise InvalidInput(FIELD, f"{key}: float images must lie in [0, 1]")
        return np.rint(x * 255.0).astype(np.uint8)
    if x.dtype.kind in "iu":
        if x.size and (x.min() < 0 or x.max() > 255):
            raise InvalidInput(FIELD, f"{key}: integer images must lie in 0..255")
        return x.astype(np.uint8)
    raise InvalidInput(FIELD, f"{key}: images must be uint8 or float in [0, 1], got {x.dtype}")


def _labels(y: np.ndarray, key: str, n: int) -> np.ndarray:
    if y.ndim != 1 or len(y) != n or y.dtype.kind not in "iu":
        raise InvalidInput(FIELD, f"{key} must be {n} integer labels, got {y.dtype} {y.shape}")
    if n and y.min() < 0:
        raise InvalidInput(FIELD, f"{key}: labels must not be negative")
    return y.astype(np.int64)


def _read(path: Path, shown: str) -> dict[str, np.ndarray]:
    try:
        loaded = np.load(path, allow_pickle=False)
    except ValueError as exc:  # a pickle file: refused
        raise InvalidInput(FIELD, f"{shown!r}: {exc}") from None
    except (OSError, zipfile.BadZipFile, EOFError) as exc:
        raise InvalidInput(FIELD, f"{shown!r} is not a readable .npz file: {exc}") from None
    if not isinstance(loaded, np.lib.npyio.NpzFile):
        raise InvalidInput(FIELD, f"{shown!r} is a single .npy array; expected a .npz file with x_train, y_train")
    with loaded:
        try:
            return {k: loaded[k] for k in loaded.files}
        except ValueError as exc:  # object arrays need pickle: refused
            raise InvalidInput(FIELD, f"{shown!r}: {exc}") from None
        except (OSError, zipfile.BadZipFile, EOFError) as exc:
            raise InvalidInput(FIELD, f"{shown!r} is not a readable .npz file: {exc}") from None


def load_npz_dataset(spec: DatasetSpec, guard: PathGuard) -> DataSplits:
    assert spec.path is not None
    file = guard.existing(spec.path, "file")
    arrays = _read(file, spec.path)
    if "x_train" not in arrays or "y_train" not in arrays:
        found = ", ".join(sorted(arrays)) or "nothing"
        raise InvalidInput(FIELD, f"{spec.path!r} needs arrays x_train and y_train (found: {found})")
    parts: dict[str, tuple[np.ndarray, np.ndarray]] = {}
    for split in ("train", "val", "test"):
        xk, yk = f"x_{split}", f"y_{split}"
        if (xk in arrays) != (yk in arrays):
            raise InvalidInput(FIELD, f"{spec.path!r} has only one of {xk} and {yk}")
        if xk in arrays:
            x = to_nchw_uint8(arrays[xk], xk)
            parts[split] = (x, _labels(arrays[yk], yk, len(x)))
    shapes = {x.shape[1:] for x, _ in parts.values()}
    if len(shapes) > 1:
        raise InvalidInput(FIELD, f"the splits of {spec.path!r} differ in image shape: {sorted(shapes)}")
    x_train, y_train = parts["train"]
    if len(x_train) == 0:
        raise InvalidInput(FIELD, f"{spec.path!r}: x_train holds no images")
    if "test" not in parts:
        rest, test = stratified_split(y_train, TEST_FRACTION, TEST_SEED)
        parts["test"] = (x_train[test], y_train[test])
        x_train, y_train = x_train[rest], y_train[rest]
    if "val" not in parts:
        rest, val = stratified_split(y_train, spec.val_fraction, spec.seed)
        parts["val"] = (x_train[val], y_train[val])
        x_train, y_train = x_train[rest], y_train[rest]
    keep = limit_indices(y_train, spec.limit, spec.seed)
    parts["train"] = (x_train[keep], y_train[keep])

    num_classes = int(max(int(y.max()) for _, y in parts.values() if len(y)) + 1)
    names = arrays.get("class_names")
    if names is not None and names.ndim == 1 and len(names) >= num_classes and names.dtype.kind in "US":
        num_classes = len(names)
        class_names = [n.decode() if isinstance(n, bytes) else str(n) for n in names.tolist()]
    else:
        class_names = [str(i) for i in range(num_classes)]
    size = spec.image_size or max(x_train.shape[2:])

    def part(name: str) -> Split:
        x, y = parts[name]
        return Split(x=resize_uint8(torch.from_numpy(x), size), y=torch.from_numpy(y))

    return make_splits(
        "npz",
        train=part("train"),
        val=part("val"),
        test=part("test"),
        num_classes=num_classes,
        class_names=class_names,
        limit=None,
        seed=spec.seed,
    )
