"""Image tensor helpers: resizing uint8 batches and per-channel statistics."""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

_CHUNK = 2048


def resize_uint8(x: Tensor, size: int) -> Tensor:
    """Resize uint8 (N, C, H, W) images to (size, size): bilinear, antialiased where shrinking, in chunks."""
    if x.shape[-2:] == (size, size):
        return x
    shrinking = size < max(x.shape[-2:])
    out = torch.empty((x.shape[0], x.shape[1], size, size), dtype=torch.uint8)
    for start in range(0, x.shape[0], _CHUNK):
        chunk = x[start : start + _CHUNK].float()
        resized = F.interpolate(chunk, size=(size, size), mode="bilinear", align_corners=False, antialias=shrinking)
        out[start : start + _CHUNK] = resized.round_().clamp_(0, 255).to(torch.uint8)
    return out


def channel_stats(x: Tensor) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """Per-channel mean and standard deviation of uint8 (N, C, H, W) images in [0, 1] units (float64 sums)."""
    channels = x.shape[1]
    total = torch.zeros(channels, dtype=torch.float64)
    squares = torch.zeros(channels, dtype=torch.float64)
    for start in range(0, x.shape[0], _CHUNK):
        chunk = x[start : start + _CHUNK].to(torch.float64).div_(255.0)
        total += chunk.sum(dim=(0, 2, 3))
        squares += chunk.square().sum(dim=(0, 2, 3))
    count = max(1, x.shape[0] * x.shape[2] * x.shape[3])
    mean = total / count
    var = (squares / count - mean.square()).clamp_(min=0.0)
    std = var.sqrt()
    std = torch.where(std > 1e-6, std, torch.ones_like(std))  # a constant channel: leave its scale alone
    return tuple(float(v) for v in mean), tuple(float(v) for v in std)


def to_tensor_uint8(images: np.ndarray) -> Tensor:
    """numpy uint8 (N, H, W, C) -> torch uint8 (N, C, H, W), contiguous."""
    return torch.from_numpy(np.ascontiguousarray(images.transpose(0, 3, 1, 2)))
