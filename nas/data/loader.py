"""DeviceLoader: batches straight from uint8 tensors that live on the device, with its own seeded generator."""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator, Sequence
from typing import Any

import torch
from torch import Tensor

from nas.data.augment import crop_flip, crop_pad


class DeviceLoader:
    """Yields ``(x, y)``: x float32 (B, C, H, W) normalised as ``(uint8 / 255 - mean) / std``, y int64, both on the
    device the split's tensors live on (they are moved there once, as uint8).

    Every random draw (the epoch's permutation, crop offsets, flips) comes from the loader's own CPU
    ``torch.Generator`` seeded with ``seed``, never from the global RNG, and is drawn at the start of each epoch.
    So the state after k epochs depends on the seed only, and ``state_dict``/``load_state_dict`` resume exactly.
    Iterating twice gives two epochs with different shuffles.

    ``drop_last`` (default): True for shuffled loaders with more than one batch of data, else False.
    Augmentation (``augment=True``): random crop with zero padding (``image_size // 8``, at least 1) and, when
    ``flip`` is True, a horizontal flip with p = 0.5, applied batched on the device.
    """

    def __init__(
        self,
        x: Tensor,
        y: Tensor,
        batch_size: int,
        *,
        mean: Sequence[float],
        std: Sequence[float],
        shuffle: bool,
        augment: bool,
        flip: bool = True,
        seed: int = 0,
        drop_last: bool | None = None,
        masks: Callable[[], Tensor] | None = None,
    ) -> None:
        if batch_size < 1:
            raise ValueError(f"batch_size must be at least 1, got {batch_size}")
        if len(mean) != x.shape[1] or len(std) != x.shape[1]:
            raise ValueError(f"mean/std need {x.shape[1]} values, one per channel")
        self.x = x
        self.y = y
        self.batch_size = int(batch_size)
        self.num_examples = len(y)
        self.shuffle = shuffle
        self.augment = augment
        self.flip = flip
        self.seed = seed
        self.drop_last = (shuffle and self.num_examples > self.batch_size) if drop_last is None else drop_last
        self.pad = crop_pad(x.shape[-1])
        self.device = x.device
        self._masks = masks
        std_t = torch.tensor([max(float(s), 1e-6) for s in std], dtype=torch.float32, device=x.device)
        mean_t = torch.tensor([float(m) for m in mean], dtype=torch.float32, device=x.device)
        self._scale = (1.0 / (255.0 * std_t)).view(1, -1, 1, 1)
        self._shift = (mean_t / std_t).view(1, -1, 1, 1)
        self.generator = torch.Generator()
        self.generator.manual_seed(seed)
        self.epoch = 0

    def __len__(self) -> int:
        if self.drop_last:
            return self.num_examples // self.batch_size
        return math.ceil(self.num_examples / self.batch_size)

    def state_dict(self) -> dict[str, Any]:
        return {"generator": self.generator.get_state(), "epoch": self.epoch}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.generator.set_state(torch.as_tensor(state["generator"], dtype=torch.uint8).cpu().clone())
        self.epoch = int(state["epoch"])

    def normalise(self, x: Tensor) -> Tensor:
        """uint8 (B, C, H, W) -> float32 normalised with the dataset's mean and std."""
        return x.float().mul_(self._scale).sub_(self._shift)

    def __iter__(self) -> Iterator[tuple[Tensor, Tensor]]:
        for x, y, _ in self._batches(with_masks=False):
            yield x, y

    def with_masks(self) -> Iterator[tuple[Tensor, Tensor, Tensor]]:
        """One epoch of ``(x, y, masks)``: masks int64 (B, H, W) cropped and flipped exactly like their images.
        Only for datasets with masks ('shapes'); it advances the generator like a plain epoch does."""
        if self._masks is None:
            raise ValueError("this dataset has no masks (only 'shapes' has)")
        for x, y, m in self._batches(with_masks=True):
            assert m is not None
            yield x, y, m

    def _draw_epoch(self) -> tuple[Tensor | None, Tensor | None, Tensor | None]:
        """All random numbers of one epoch, drawn up front from the loader's generator."""
        n = self.num_examples
        order = offsets = flips = None
        if self.shuffle:
            order = torch.randperm(n, generator=self.generator)
        if self.augment:
            offsets = torch.randint(0, 2 * self.pad + 1, (n, 2), generator=self.generator)
            flips = torch.rand(n, generator=self.generator) < 0.5
            if not self.flip:
                flips = torch.zeros_like(flips)  # drawn anyway: the generator advances the same either way
        self.epoch += 1
        return tuple(None if t is None else t.to(self.device) for t in (order, offsets, flips))  # type: ignore[return-value]

    def _batches(self, *, with_masks: bool) -> Iterator[tuple[Tensor, Tensor, Tensor | None]]:
        order, offsets, flips = self._draw_epoch()
        masks = self._masks() if (with_masks and self._masks is not None) else None
        for i in range(len(self)):
            start, stop = i * self.batch_size, min((i + 1) * self.batch_size, self.num_examples)
            if order is not None:
                idx = order[start:stop]
                xb, yb = self.x.index_select(0, idx), self.y.index_select(0, idx)
                mb = None if masks is None else masks.index_select(0, idx)
            else:
                xb, yb = self.x[start:stop], self.y[start:stop]
                mb = None if masks is None else masks[start:stop]
            if offsets is not None and flips is not None:
                xb = crop_flip(xb, offsets[start:stop], flips[start:stop], self.pad)
                if mb is not None:
                    mb = crop_flip(mb, offsets[start:stop], flips[start:stop], self.pad)
            yield self.normalise(xb), yb, mb
