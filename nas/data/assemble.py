"""Turn loaded splits into DataSplits: apply the training limit, compute the normalisation statistics."""

from __future__ import annotations

import logging

import numpy as np
import torch

from nas.data.base import DataSplits, Split
from nas.data.imaging import channel_stats
from nas.data.splitting import limit_indices
from nas.errors import InvalidInput

log = logging.getLogger(__name__)


def index_split(split: Split, index: np.ndarray) -> Split:
    return split.subset(torch.from_numpy(np.asarray(index, dtype=np.int64)))


def make_splits(
    name: str,
    *,
    train: Split,
    val: Split,
    test: Split,
    num_classes: int,
    class_names: list[str],
    limit: int | None,
    seed: int,
    flip_ok: bool = True,
) -> DataSplits:
    if len(train) == 0:
        raise InvalidInput("dataset.path", f"dataset {name!r} has no training images")
    if limit is not None and limit < len(train):
        train = index_split(train, limit_indices(train.y.numpy(), limit, seed))
    mean, std = channel_stats(train.x)
    data = DataSplits(
        name=name,
        num_classes=num_classes,
        channels=int(train.x.shape[1]),
        image_size=int(train.x.shape[-1]),
        train=train,
        val=val,
        test=test,
        mean=mean,
        std=std,
        class_names=class_names,
        flip_ok=flip_ok,
    )
    log.info("dataset %s: %s", name, data.sizes())
    return data
