"""'cifar10' / 'cifar100' from a local copy of the "python version" batch files (no download).

CIFAR-10: ``cifar-10-batches-py/`` with ``data_batch_1`` .. ``data_batch_5``, ``test_batch``, ``batches.meta``.
CIFAR-100: ``cifar-100-python/`` with ``train``, ``test``, ``meta`` (fine labels, 100 classes).
``path`` may name that folder or its parent. Files are read with a restricted unpickler (numpy arrays only).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from nas.data.assemble import make_splits
from nas.data.base import DataSplits, Split
from nas.data.imaging import resize_uint8
from nas.data.paths import FIELD, PathGuard
from nas.data.safe_pickle import load_numpy_pickle
from nas.data.splitting import limit_indices, stratified_split
from nas.errors import InvalidInput
from nas.spec import DatasetSpec

NATIVE_SIZE = 32


@dataclass(frozen=True)
class CifarFormat:
    name: str
    folder: str
    num_classes: int
    label_key: str
    names_key: str
    meta: str
    test: str

    def train_files(self, root: Path) -> list[Path]:
        if self.name == "cifar100":
            return [root / "train"]
        found = [p for p in root.iterdir() if re.fullmatch(r"data_batch_\d+", p.name)]
        return sorted(found, key=lambda p: int(p.name.rsplit("_", 1)[1]))

    def layout(self) -> str:
        if self.name == "cifar100":
            return "a folder 'cifar-100-python' with files train, test, meta"
        return "a folder 'cifar-10-batches-py' with files data_batch_1..data_batch_5, test_batch, batches.meta"

    def is_here(self, folder: Path) -> bool:
        if self.name == "cifar100":
            return (folder / "train").is_file() and (folder / "test").is_file()
        return (folder / "data_batch_1").is_file() and (folder / "test_batch").is_file()


FORMATS = {
    "cifar10": CifarFormat("cifar10", "cifar-10-batches-py", 10, "labels", "label_names", "batches.meta", "test_batch"),
    "cifar100": CifarFormat("cifar100", "cifar-100-python", 100, "fine_labels", "fine_label_names", "meta", "test"),
}


def _key(d: dict[Any, Any], key: str, label: str) -> Any:
    for k in (key, key.encode()):
        if k in d:
            return d[k]
    raise InvalidInput(FIELD, f"{label} has no {key!r} entry; is this a CIFAR batch file?")


def _read_batch(path: Path, fmt: CifarFormat, guard: PathGuard) -> tuple[np.ndarray, np.ndarray]:
    label = f"{fmt.name} file {path.name}"
    batch = load_numpy_pickle(guard.check(path), shown=label)
    if not isinstance(batch, dict):
        raise InvalidInput(FIELD, f"{label} does not hold a dict")
    data = np.asarray(_key(batch, "data", label))
    labels = np.asarray(_key(batch, fmt.label_key, label))
    if data.dtype != np.uint8 or data.ndim != 2 or data.shape[1] != 3 * NATIVE_SIZE * NATIVE_SIZE:
        raise InvalidInput(FIELD, f"{label}: 'data' must be uint8 (N, 3072), got {data.dtype} {data.shape}")
    if labels.ndim != 1 or len(labels) != len(data) or labels.dtype.kind not in "iu":
        raise InvalidInput(FIELD, f"{label}: {fmt.label_key!r} must be {len(data)} integer labels")
    if len(labels) and (labels.min() < 0 or labels.max() >= fmt.num_classes):
        raise InvalidInput(FIELD, f"{label}: labels must lie in 0..{fmt.num_classes - 1}")
    return data.reshape(-1, 3, NATIVE_SIZE, NATIVE_SIZE), labels.astype(np.int64)


def _class_names(root: Path, fmt: CifarFormat, guard: PathGuard) -> list[str]:
    meta_path = root / fmt.meta
    if not meta_path.is_file():
        return [str(i) for i in range(fmt.num_classes)]
    meta = load_numpy_pickle(guard.check(meta_path), shown=f"{fmt.name} file {fmt.meta}")
    names = meta.get(fmt.names_key, meta.get(fmt.names_key.encode())) if isinstance(meta, dict) else None
    if not isinstance(names, list) or len(names) != fmt.num_classes:
        return [str(i) for i in range(fmt.num_classes)]
    return [n.decode() if isinstance(n, bytes) else str(n) for n in names]


def find_root(path: str, fmt: CifarFormat, guard: PathGuard) -> Path:
    folder = guard.existing(path, "folder")
    for candidate in (folder, folder / fmt.folder):
        if candidate.is_dir() and fmt.is_here(candidate):
            return guard.check(candidate)
    raise InvalidInput(FIELD, f"{path!r} holds no {fmt.name} data; expected {fmt.layout()} (the folder or its parent)")


def load_cifar_dataset(spec: DatasetSpec, guard: PathGuard) -> DataSplits:
    fmt = FORMATS[spec.name]
    assert spec.path is not None
    root = find_root(spec.path, fmt, guard)
    parts = [_read_batch(p, fmt, guard) for p in fmt.train_files(root)]
    x_train = np.concatenate([p[0] for p in parts])
    y_train = np.concatenate([p[1] for p in parts])
    x_test, y_test = _read_batch(root / fmt.test, fmt, guard)
    size = spec.image_size or NATIVE_SIZE
    train_idx, val_idx = stratified_split(y_train, spec.val_fraction, spec.seed)
    train_idx = train_idx[limit_indices(y_train[train_idx], spec.limit, spec.seed)]  # before resizing: cheaper

    def part(x: np.ndarray, y: np.ndarray) -> Split:
        return Split(x=resize_uint8(torch.from_numpy(x), size), y=torch.from_numpy(y))

    return make_splits(
        spec.name,
        train=part(x_train[train_idx], y_train[train_idx]),
        val=part(x_train[val_idx], y_train[val_idx]),
        test=part(x_test, y_test),
        num_classes=fmt.num_classes,
        class_names=_class_names(root, fmt, guard),
        limit=None,
        seed=spec.seed,
    )
