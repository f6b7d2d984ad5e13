"""'imagefolder': class-per-folder images read with Pillow.

Layouts (``path`` is the dataset folder):
  path/train/<class>/*.png|jpg|...  with optional path/val/<class>/... and path/test/<class>/...
  path/<class>/*.png|jpg|...        (class folders only: split into train/val/test here)
Images are converted to RGB and resized to ``image_size`` (default 32).
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

import numpy as np
import torch

from nas.data.assemble import make_splits
from nas.data.base import DataSplits, Split
from nas.data.imaging import to_tensor_uint8
from nas.data.paths import FIELD, PathGuard
from nas.data.splitting import TEST_FRACTION, TEST_SEED, limit_indices, stratified_split
from nas.errors import InvalidInput
from nas.spec import DatasetSpec

log = logging.getLogger(__name__)

DEFAULT_SIZE = 32
IMAGE_SUFFIXES = frozenset({".png", ".jpg", ".jpeg", ".bmp", ".gif", ".webp", ".tif", ".tiff", ".ppm", ".pgm"})
SPLIT_FOLDERS = ("train", "val", "test")
LAYOUT = "path/train/<class>/<images> (optional path/val/<class>/, path/test/<class>/) or path/<class>/<images>"


def _visible_dirs(folder: Path) -> list[Path]:
    return sorted(p for p in folder.iterdir() if p.is_dir() and not p.name.startswith("."))


def _image_files(folder: Path) -> list[Path]:
    """Image files under ``folder`` (its sub-folders included), sorted; hidden files and other files skipped."""
    found: list[Path] = []
    for dirpath, dirnames, filenames in os.walk(folder):
        dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
        found.extend(
            Path(dirpath) / f for f in filenames if not f.startswith(".") and Path(f).suffix.lower() in IMAGE_SUFFIXES
        )
    return sorted(found)


def _scan(folder: Path, classes: list[str] | None) -> tuple[list[Path], np.ndarray, list[str]]:
    """Files and labels of one split folder. ``classes`` None: the class folders found here define the classes."""
    per_class = {d.name: _image_files(d) for d in _visible_dirs(folder)}
    if classes is None:
        empty = sorted(name for name, files in per_class.items() if not files)
        if empty:
            log.warning("imagefolder %s: ignoring class folders without images: %s", folder, ", ".join(empty))
        classes = sorted(name for name, files in per_class.items() if files)
    unknown = sorted(set(per_class) - set(classes))
    if unknown:
        raise InvalidInput(FIELD, f"{folder.name}/ has class folders not in train/: {', '.join(unknown)}")
    files: list[Path] = []
    labels: list[int] = []
    for label, name in enumerate(classes):
        for f in per_class.get(name, []):
            files.append(f)
            labels.append(label)
    return files, np.asarray(labels, dtype=np.int64), classes


def _decode(files: list[Path], size: int, root: Path, guard: PathGuard) -> torch.Tensor:
    from PIL import Image

    out = np.empty((len(files), size, size, 3), dtype=np.uint8)
    for i, f in enumerate(files):
        guard.check(f, shown=str(f.relative_to(root)) if f.is_relative_to(root) else f.name)
        try:
            with Image.open(f) as img:
                rgb = img.convert("RGB")
                if rgb.size != (size, size):
                    rgb = rgb.resize((size, size), Image.Resampling.BILINEAR)
                out[i] = np.asarray(rgb, dtype=np.uint8)
        except (OSError, ValueError, Image.DecompressionBombError) as exc:
            raise InvalidInput(FIELD, f"cannot read image {f.relative_to(root)}: {exc}") from None
    return to_tensor_uint8(out)


def load_imagefolder_dataset(spec: DatasetSpec, guard: PathGuard) -> DataSplits:
    assert spec.path is not None
    root = guard.existing(spec.path, "folder")
    size = spec.image_size or DEFAULT_SIZE
    split_root = root / "train"
    if split_root.is_dir():
        files, labels, classes = _scan(split_root, None)
        extra = {s: _scan(root / s, classes)[:2] for s in ("val", "test") if (root / s).is_dir()}
    else:
        files, labels, classes = _scan(root, None)
        extra = {}
    if not files:
        raise InvalidInput(FIELD, f"{spec.path!r} holds no images; expected {LAYOUT}")
    paths = np.asarray(files, dtype=object)
    if "test" not in extra:
        rest, test = stratified_split(labels, TEST_FRACTION, TEST_SEED)
        extra["test"] = (list(paths[test]), labels[test])
        paths, labels = paths[rest], labels[rest]
    if "val" not in extra:
        rest, val = stratified_split(labels, spec.val_fraction, spec.seed)
        extra["val"] = (list(paths[val]), labels[val])
        paths, labels = paths[rest], labels[rest]
    keep = limit_indices(labels, spec.limit, spec.seed)  # before decoding: cheaper
    paths, labels = paths[keep], labels[keep]

    def part(part_files: list[Path], part_labels: np.ndarray) -> Split:
        return Split(x=_decode(list(part_files), size, root, guard), y=torch.from_numpy(np.asarray(part_labels)))

    return make_splits(
        "imagefolder",
        train=part(list(paths), labels),
        val=part(*extra["val"]),
        test=part(*extra["test"]),
        num_classes=len(classes),
        class_names=classes,
        limit=None,
        seed=spec.seed,
    )
