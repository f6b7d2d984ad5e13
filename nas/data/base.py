"""The in-memory form of a dataset: uint8 image tensors per split plus the facts a model needs (classes, size)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor

from nas.data.loader import DeviceLoader

SPLITS = ("train", "val", "test")


@dataclass
class Split:
    """One split. ``x`` holds uint8 images (N, C, H, W) at the final size, ``y`` int64 labels (N,).

    Only the 'shapes' dataset fills ``masks`` (int64 (N, H, W), 0 = background, kind + 1 elsewhere) and ``boxes``
    (per image a float32 (K, 5) tensor: class, x0, y0, x1, y1 in pixels, x1/y1 exclusive).
    """

    x: Tensor
    y: Tensor
    masks: Tensor | None = None
    boxes: list[Tensor] | None = None

    def __post_init__(self) -> None:
        if self.x.dtype != torch.uint8 or self.x.dim() != 4:
            raise ValueError(f"Split.x must be uint8 (N, C, H, W), got {self.x.dtype} {tuple(self.x.shape)}")
        if self.y.dtype != torch.int64 or self.y.dim() != 1 or len(self.y) != len(self.x):
            got = f"{self.y.dtype} {tuple(self.y.shape)}"
            raise ValueError(f"Split.y must be int64 (N,) with N={len(self.x)}, got {got}")
        if self.masks is not None and (self.masks.shape != (len(self.x), *self.x.shape[2:])):
            raise ValueError(f"Split.masks must be (N, H, W), got {tuple(self.masks.shape)}")
        if self.boxes is not None and len(self.boxes) != len(self.x):
            raise ValueError("Split.boxes needs one tensor per image")

    def __len__(self) -> int:
        return len(self.y)

    def subset(self, index: Tensor) -> Split:
        """The examples at ``index`` (a 1-d int64 tensor), in that order."""
        return Split(
            x=self.x[index],
            y=self.y[index],
            masks=None if self.masks is None else self.masks[index],
            boxes=None if self.boxes is None else [self.boxes[int(i)] for i in index],
        )


@dataclass
class DataSplits:
    """A loaded dataset: train/val/test splits, normalisation statistics of the training images, class names."""

    name: str
    num_classes: int
    channels: int
    image_size: int
    train: Split
    val: Split
    test: Split
    mean: tuple[float, ...]
    std: tuple[float, ...]
    class_names: list[str]
    flip_ok: bool = True
    _on_device: dict[tuple[str, str, str], Tensor] = field(default_factory=dict, init=False, repr=False, compare=False)

    def split(self, name: str) -> Split:
        if name not in SPLITS:
            raise ValueError(f"unknown split {name!r}; allowed: {', '.join(SPLITS)}")
        return getattr(self, name)  # type: ignore[no-any-return]

    def sizes(self) -> dict[str, int]:
        return {s: len(self.split(s)) for s in SPLITS}

    def summary(self) -> dict[str, Any]:
        """Plain facts for logs, events and the API (no tensors)."""
        return {
            "name": self.name,
            "num_classes": self.num_classes,
            "channels": self.channels,
            "image_size": self.image_size,
            "sizes": self.sizes(),
            "mean": list(self.mean),
            "std": list(self.std),
            "class_names": list(self.class_names),
            "flip_ok": self.flip_ok,
            "has_masks": self.train.masks is not None,
        }

    def _device_tensor(self, split: str, what: str, device: torch.device) -> Tensor:
        """The split's ``x``/``y``/``masks`` on ``device``, moved there once and shared by every loader."""
        key = (split, what, str(device))
        if key not in self._on_device:
            value = getattr(self.split(split), what)
            if value is None:
                raise ValueError(f"dataset {self.name!r} has no {what} (only 'shapes' has masks)")
            self._on_device[key] = value.to(device)
        return self._on_device[key]

    def loader(
        self,
        split: str,
        batch_size: int,
        *,
        shuffle: bool,
        augment: bool,
        device: torch.device | str = "cpu",
        seed: int = 0,
        drop_last: bool | None = None,
    ) -> DeviceLoader:
        """Batches of (normalised float32 images, int64 labels) on ``device``; see DeviceLoader."""
        device = torch.device(device)
        part = self.split(split)
        has_masks = part.masks is not None
        return DeviceLoader(
            self._device_tensor(split, "x", device),
            self._device_tensor(split, "y", device),
            batch_size,
            mean=self.mean,
            std=self.std,
            shuffle=shuffle,
            augment=augment,
            flip=self.flip_ok,
            seed=seed,
            drop_last=drop_last,
            masks=(lambda: self._device_tensor(split, "masks", device)) if has_masks else None,
        )

    def __getstate__(self) -> dict[str, Any]:
        # device copies are a cache: never pickle them (Ray ships DataSplits between processes)
        state = dict(self.__dict__)
        state["_on_device"] = {}
        return state
