"""Datasets as uint8 tensors, batched on the device with augmentation there too.

Built in: 'digits' (scikit-learn's bundled digits), 'shapes' and 'pathfinder' (procedural). From local files, never
downloaded: 'cifar10', 'cifar100', 'imagefolder', 'npz'. See docs/datasets.md.
"""

from nas.data.base import DataSplits, Split
from nas.data.loader import DeviceLoader
from nas.data.registry import DatasetInfo, dataset_info, dataset_names, describe_datasets, load_dataset

__all__ = [
    "DataSplits",
    "DatasetInfo",
    "DeviceLoader",
    "Split",
    "dataset_info",
    "dataset_names",
    "describe_datasets",
    "load_dataset",
]
