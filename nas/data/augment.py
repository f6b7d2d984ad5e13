"""Batched augmentation on the device: random crop with zero padding and horizontal flip, as one gather."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor


def crop_pad(image_size: int) -> int:
    """Padding of the random crop: an eighth of the image side, at least one pixel (4 px at 32 px, as for CIFAR)."""
    return max(1, image_size // 8)


def crop_flip(x: Tensor, offsets: Tensor, flips: Tensor, pad: int) -> Tensor:
    """Zero-pad ``x`` by ``pad`` on every side, then cut out for image i the window at ``offsets[i] = (row, col)``
    (each in 0..2*pad) of the original size, mirrored left-right where ``flips[i]``.

    ``x`` is (B, C, H, W) or (B, H, W) of any dtype (uint8 images, int64 masks); ``offsets`` int64 (B, 2) and
    ``flips`` bool (B,) on the same device. No Python loop over samples: one pad and one advanced-indexing gather.
    Offsets of (pad, pad) with no flip give back ``x`` unchanged.
    """
    plain = x.dim() == 3
    if plain:
        x = x.unsqueeze(1)
    b, _, h, w = x.shape
    padded = F.pad(x, (pad, pad, pad, pad))
    rows = offsets[:, 0:1] + torch.arange(h, device=x.device)  # (B, H)
    cols_fwd = torch.arange(w, device=x.device).expand(b, w)
    cols = torch.where(flips[:, None], cols_fwd.flip(1), cols_fwd) + offsets[:, 1:2]  # (B, W)
    batch = torch.arange(b, device=x.device)[:, None, None]
    out = padded[batch, :, rows[:, :, None], cols[:, None, :]]  # (B, H, W, C): advanced dims come first
    out = out.permute(0, 3, 1, 2).contiguous()
    return out[:, 0] if plain else out
