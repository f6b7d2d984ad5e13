"""What every checked export format shares: the error it raises and the comparison of its output with the model's."""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor

from nas.errors import NASError

__all__ = ["ExportError"]

_RTOL = 1e-4
_ATOL = 1e-5


class ExportError(NASError):
    """A format could not be written or did not reproduce the model's output."""

    def __init__(self, fmt: str, message: str) -> None:
        self.format = fmt
        super().__init__(f"export to {fmt} failed: {message}")


def _first_tensor(output: Any) -> Tensor:
    if isinstance(output, Tensor):
        return output
    if isinstance(output, (tuple, list)) and output and isinstance(output[0], Tensor):
        return output[0]
    if isinstance(output, dict) and output:
        return _first_tensor(next(iter(output.values())))
    raise TypeError(f"model output of type {type(output).__name__} holds no tensor")


def _assert_close(fmt: str, got: Any, want: Any) -> None:
    a, b = _first_tensor(got).float(), _first_tensor(want).float()
    if a.shape != b.shape:
        raise ExportError(fmt, f"output shape {tuple(a.shape)} differs from the model's {tuple(b.shape)}")
    scale = max(1.0, float(b.abs().max())) if b.numel() else 1.0
    if not torch.allclose(a, b, rtol=_RTOL * 10, atol=_ATOL * 10 * scale):
        diff = float((a - b).abs().max())
        raise ExportError(fmt, f"output differs from the model's (max abs difference {diff:.3g})")


def _other_batch(x: Tensor) -> Tensor:
    """An input with a different batch size, to check that an export does not bake the batch size in."""
    n = 2 if x.shape[0] == 1 else 1
    gen = torch.Generator().manual_seed(1)
    return torch.randn((n, *x.shape[1:]), generator=gen)
