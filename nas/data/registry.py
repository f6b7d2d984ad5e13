"""The dataset registry: names, descriptions, the labels (hence tasks) each dataset has, and ``load_dataset``."""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, get_args

from nas.data.base import DataSplits
from nas.data.paths import PathGuard
from nas.registry import Registry
from nas.spec import DatasetName, DatasetSpec
from nas.tasks import tasks_with_labels


@dataclass(frozen=True)
class DatasetInfo:
    name: str
    description: str
    needs_path: bool
    num_classes: int | None  # None: read from the data
    image_size: int | None  # default size; None: the data's own size
    channels: int | None
    layout: str = ""
    labels: tuple[str, ...] = ("y",)  # the Split fields every image has besides x

    @property
    def tasks(self) -> tuple[str, ...]:
        """The tasks (nas.tasks) whose labels this dataset holds."""
        return tasks_with_labels(self.labels)


def _digits(spec: DatasetSpec, guard: PathGuard) -> DataSplits:
    from nas.data.digits import load_digits_dataset

    return load_digits_dataset(spec)


def _shapes(spec: DatasetSpec, guard: PathGuard) -> DataSplits:
    from nas.data.shapes import load_shapes_dataset

    return load_shapes_dataset(spec)


def _pathfinder(spec: DatasetSpec, guard: PathGuard) -> DataSplits:
    from nas.data.pathfinder import load_pathfinder_dataset

    return load_pathfinder_dataset(spec)


def _cifar(spec: DatasetSpec, guard: PathGuard) -> DataSplits:
    from nas.data.cifar import load_cifar_dataset

    return load_cifar_dataset(spec, guard)


def _imagefolder(spec: DatasetSpec, guard: PathGuard) -> DataSplits:
    from nas.data.imagefolder import load_imagefolder_dataset

    return load_imagefolder_dataset(spec, guard)


def _npz(spec: DatasetSpec, guard: PathGuard) -> DataSplits:
    from nas.data.npz import load_npz_dataset

    return load_npz_dataset(spec, guard)


Loader = Callable[[DatasetSpec, PathGuard], DataSplits]


@dataclass(frozen=True)
class Dataset:
    """A registered dataset: what it is and how to load it."""

    info: DatasetInfo
    load: Loader


_BUILTIN: dict[str, tuple[DatasetInfo, Loader]] = {
    "digits": (
        DatasetInfo(
            "digits",
            "scikit-learn's bundled handwritten digits: 1797 grey 8x8 images upscaled, fixed 20% test set",
            False,
            10,
            16,
            1,
        ),
        _digits,
    ),
    "shapes": (
        DatasetInfo(
            "shapes",
            "procedural RGB shapes on textured backgrounds (label: kind of the largest shape; masks and boxes too)",
            False,
            6,
            32,
            3,
            labels=("y", "masks", "boxes"),
        ),
        _shapes,
    ),
    "pathfinder": (
        DatasetInfo(
            "pathfinder",
            "procedural grey Pathfinder task: are the two markers the ends of one curve? (long-range connectivity)",
            False,
            2,
            16,
            1,
        ),
        _pathfinder,
    ),
    "cifar10": (
        DatasetInfo(
            "cifar10",
            "CIFAR-10 from a local copy of the python-version batches",
            True,
            10,
            32,
            3,
            "cifar-10-batches-py/ (data_batch_1..5, test_batch, batches.meta) or its parent",
        ),
        _cifar,
    ),
    "cifar100": (
        DatasetInfo(
            "cifar100",
            "CIFAR-100 (fine labels) from a local copy of the python-version files",
            True,
            100,
            32,
            3,
            "cifar-100-python/ (train, test, meta) or its parent",
        ),
        _cifar,
    ),
    "imagefolder": (
        DatasetInfo(
            "imagefolder",
            "images in class folders, read with Pillow, converted to RGB",
            True,
            None,
            32,
            3,
            "path/train/<class>/*.png|jpg (optional path/val/, path/test/) or path/<class>/*.png|jpg",
        ),
        _imagefolder,
    ),
    "npz": (
        DatasetInfo(
            "npz",
            "arrays from a .npz file (x_train, y_train, optional x_val/y_val, x_test/y_test), no pickle",
            True,
            None,
            None,
            None,
            "a .npz file; images NHWC/NCHW uint8 or float in [0, 1]",
        ),
        _npz,
    ),
}

DATASETS: Registry[Dataset] = Registry("dataset", field="dataset.name")
for _name, (_info, _loader) in _BUILTIN.items():
    DATASETS.register(_name, Dataset(_info, _loader))

assert set(DATASETS.names()) == set(get_args(DatasetName)), "the registry must cover DatasetSpec.name"


def dataset_names() -> list[str]:
    return DATASETS.names()


def dataset_info(name: str) -> DatasetInfo:
    """What the dataset ``name`` is; InvalidInput('dataset.name') listing the allowed names if there is none."""
    return DATASETS.get(name).info


def describe_datasets() -> list[dict[str, Any]]:
    """One plain dict per dataset (for ``nas datasets`` and the API)."""
    return [
        {
            "name": info.name,
            "needs_path": info.needs_path,
            "description": info.description,
            "num_classes": info.num_classes,
            "image_size": info.image_size,
            "channels": info.channels,
            "layout": info.layout,
            "tasks": list(info.tasks),
        }
        for info in (dataset_info(n) for n in dataset_names())
    ]


def load_dataset(spec: DatasetSpec, *, roots: Sequence[str | os.PathLike[str]] | None = None) -> DataSplits:
    """Load the dataset ``spec`` names, from built-in data or from ``spec.path``.

    With ``roots``, the real path (symlinks and ``..`` resolved) of the dataset and of every file read must lie
    inside one of them; the server uses this to keep users to their dataset folders.
    """
    return DATASETS.get(spec.name).load(spec, PathGuard(roots))
