"""'digits': scikit-learn's bundled handwritten digits (1797 grey 8x8 images, 16 grey levels, 10 classes)."""

from __future__ import annotations

from functools import cache

import numpy as np
import torch

from nas.data.assemble import index_split, make_splits
from nas.data.base import DataSplits, Split
from nas.data.imaging import resize_uint8
from nas.data.splitting import three_way
from nas.spec import DatasetSpec

DEFAULT_SIZE = 16
TEST_FRACTION = 0.2


@cache
def _raw() -> tuple[np.ndarray, np.ndarray]:
    from sklearn.datasets import load_digits

    bunch = load_digits()
    images = np.rint(np.asarray(bunch.images, dtype=np.float64) * (255.0 / 16.0)).clip(0, 255).astype(np.uint8)
    return images, np.asarray(bunch.target, dtype=np.int64)


def split_indices(seed: int, val_fraction: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``(train, val, test)`` indices into the 1797 images: the test set (20 %, stratified) never changes; the
    validation set is ``val_fraction`` of the rest, stratified, chosen with ``seed``."""
    _, y = _raw()
    return three_way(y, test_fraction=TEST_FRACTION, val_fraction=val_fraction, seed=seed)


def load_digits_dataset(spec: DatasetSpec) -> DataSplits:
    images, labels = _raw()
    size = spec.image_size or DEFAULT_SIZE
    x = resize_uint8(torch.from_numpy(images).unsqueeze(1), size)
    full = Split(x=x, y=torch.from_numpy(labels))
    train, val, test = split_indices(spec.seed, spec.val_fraction)
    return make_splits(
        "digits",
        train=index_split(full, train),
        val=index_split(full, val),
        test=index_split(full, test),
        num_classes=10,
        class_names=[str(d) for d in range(10)],
        limit=spec.limit,
        seed=spec.seed,
        flip_ok=False,  # a mirrored 2 or 7 is no longer that digit
    )
