from __future__ import annotations

import os

import pytest
import torch

os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")

import tests.toy_space  # noqa: F401  (registers the 'toyconv' space)


@pytest.fixture(autouse=True)
def _small_torch() -> None:
    torch.set_num_threads(1)  # tiny tensors: threads only add overhead, and CI has 2 shared cores


def tiny_splits(n_train: int = 96, n_val: int = 48, n_test: int = 48, size: int = 8, classes: int = 3, seed: int = 0):
    """A learnable toy dataset: the class decides which quadrant is bright."""
    from nas.data.base import DataSplits, Split

    g = torch.Generator().manual_seed(seed)

    def make(n: int) -> Split:
        y = torch.randint(0, classes, (n,), generator=g)
        x = torch.randint(0, 60, (n, 1, size, size), generator=g, dtype=torch.int64)
        for c in range(classes):
            rows = slice(0, size // 2) if c % 2 == 0 else slice(size // 2, size)
            cols = slice(0, size // 2) if c < 2 else slice(size // 2, size)
            x[y == c, :, rows, cols] += 150
        return Split(x=x.clamp(0, 255).to(torch.uint8), y=y)

    return DataSplits(
        name="tiny", num_classes=classes, channels=1, image_size=size, train=make(n_train), val=make(n_val),
        test=make(n_test), mean=(0.3,), std=(0.3,), class_names=[str(i) for i in range(classes)], flip_ok=False,
    )  # fmt: skip
