"""The 'pathfinder' dataset: determinism, shapes, balance, and labels that match the drawn curves."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from scipy import ndimage

from nas.data import describe_datasets, load_dataset
from nas.data.augment import crop_pad
from nas.data.pathfinder import CLASSES, Difficulty, generate, generate_with_curves
from nas.spec import DatasetSpec

EIGHT = np.ones((3, 3), dtype=bool)  # 8-connectivity


def test_deterministic_by_seed() -> None:
    a, b, c = generate(64, 16, 5), generate(64, 16, 5), generate(64, 16, 6)
    assert torch.equal(a.x, b.x) and torch.equal(a.y, b.y)
    assert not torch.equal(a.x, c.x)


@pytest.mark.parametrize("size", [12, 16, 32])
def test_shapes_and_dtypes(size: int) -> None:
    split = generate(40, size, 1)
    assert split.x.dtype == torch.uint8 and split.x.shape == (40, 1, size, size)
    assert split.y.dtype == torch.int64 and set(split.y.tolist()) <= {0, 1}


def test_load_dataset_splits_and_registry() -> None:
    data = load_dataset(DatasetSpec(name="pathfinder", num_samples=300, seed=2, limit=100))
    assert data.num_classes == 2 and data.class_names == list(CLASSES)
    assert data.channels == 1 and data.image_size == 16
    assert len(data.train) == 100 and len(data.test) == 45  # 15 % of 300
    assert data.train.x.shape[1:] == (1, 16, 16)
    described = {d["name"]: d for d in describe_datasets()}
    assert described["pathfinder"]["needs_path"] is False and described["pathfinder"]["num_classes"] == 2


def test_labels_balanced() -> None:
    y = generate(1000, 16, 3).y.float()
    assert 0.45 <= float(y.mean()) <= 0.55


def _marker_cells(ends: torch.Tensor, label: int) -> tuple[tuple[int, int], tuple[int, int]]:
    """(row, col) of the two markers of one image: the start of curve 0, and the end of curve 0 (connected) or of
    curve 1 (not connected)."""
    first = ends[0, 0].round().long()
    second = (ends[0, 1] if label == 1 else ends[1, 1]).round().long()
    return (int(first[1]), int(first[0])), (int(second[1]), int(second[0]))


@pytest.mark.parametrize("size", [12, 16, 24])
def test_labels_match_the_drawing(size: int) -> None:
    """Without noise every bright pixel is ink; the markers are joined by ink exactly when the label says so, and
    they are the only two marker squares in the image."""
    split, curves, ends = generate_with_curves(200, size, 7, Difficulty(noise=0.0))
    ink = (split.x[:, 0] > 120).numpy()
    radius = max(1, size // 24)
    for i in range(len(split)):
        components, _ = ndimage.label(ink[i], structure=EIGHT)
        a, b = _marker_cells(ends[i], int(split.y[i]))
        assert ink[i][a] and ink[i][b]
        assert (components[a] == components[b]) == bool(split.y[i]), f"image {i}"
        # the marker squares are filled: a full (2r+1)^2 block of ink around each marker
        for r, c in (a, b):
            block = ink[i][max(0, r - radius) : r + radius + 1, max(0, c - radius) : c + radius + 1]
            assert block.all()
    assert curves.shape == (200, 2, size, size)


def test_curves_never_touch_and_keep_off_the_border() -> None:
    size = 24
    _, curves, _ = generate_with_curves(200, size, 4, Difficulty(paths=3))
    grown = torch.nn.functional.max_pool2d(curves.float().flatten(0, 1)[:, None], 3, 1, 1)[:, 0] > 0
    grown = grown.view_as(curves)
    for p in range(3):
        for q in range(3):
            if p != q:
                assert not (grown[:, p] & curves[:, q]).any()
    m = crop_pad(size)
    border = torch.ones((size, size), dtype=torch.bool)
    border[m : size - m, m : size - m] = False
    assert not (curves & border).any()


def test_difficulty_knobs() -> None:
    solid = generate(100, 16, 9, Difficulty(noise=0.0))
    dashed = generate(100, 16, 9, Difficulty(noise=0.0, dash=2))
    assert (dashed.x > 120).sum() < (solid.x > 120).sum()
    noisy = generate(100, 16, 9, Difficulty(noise=40.0))
    assert float(noisy.x.float().std()) > float(solid.x.float().std())
    more = generate_with_curves(20, 24, 1, Difficulty(paths=3))[1]
    assert more.shape[1] == 3 and bool(more.flatten(2).any(dim=2).all())
    with pytest.raises(ValueError, match="paths"):
        Difficulty(paths=1)
