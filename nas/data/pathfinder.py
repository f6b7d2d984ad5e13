"""'pathfinder': a procedural, seeded long-range connectivity task (after Linsley et al. 2018 and the Long Range
Arena's Pathfinder).

Each grey image holds ``paths`` smooth random curves that never touch one another (not even diagonally) and two
marker squares on a noisy background. Label 1 ("connected"): both markers sit on the two ends of one curve. Label 0:
they sit on the ends of two different curves. Every image has the same number of curves and markers, and a marker
always sits on a curve end, so nothing local tells the classes apart: a network has to follow a curve from one marker
to the other, which needs a receptive field as large as the curve and enough depth to trace it.

Difficulty knobs (arguments of ``generate``; the dataset uses the defaults of ``Difficulty``): the number of curves,
their length (a share of the image side), how much they bend, dashes (gaps a network has to bridge) and noise.
Curves and markers keep a margin of ``crop_pad(size)`` from the border, so the loader's random crop never cuts one.

Generation is vectorised over images: a loop over chunks, curve slots, walk steps and rejection rounds, tensor ops
over all images of a chunk.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor

from nas.data.assemble import index_split, make_splits
from nas.data.augment import crop_pad
from nas.data.base import DataSplits, Split
from nas.data.splitting import TEST_FRACTION, three_way
from nas.spec import DatasetSpec

CLASSES = ("disconnected", "connected")
DEFAULT_SIZE = 16
_CHUNK = 1024
_STEP = 0.7  # walk step in pixels: below 1, so a rounded curve is 8-connected
_MAX_ROUNDS = 6
_TRIES = 8  # walks tried at once per image and curve slot


@dataclass(frozen=True)
class Difficulty:
    """How hard the task is. Each curve's arc length is drawn uniformly from ``length`` (shares of the image side):
    short curves put the markers of a connected pair close together, long ones need a large receptive field."""

    paths: int = 2  # curves per image, the two marked ones included (at least 2)
    length: tuple[float, float] = (0.2, 0.5)
    bend: float = 0.25  # std of the heading change per pixel of arc (radians)
    dash: int = 0  # 0: solid curves; k: dashes of k px with 1 px gaps
    noise: float = 25.0  # std of the Gaussian pixel noise (grey levels)
    contrast: float = 200.0  # curve and marker brightness above the background

    def __post_init__(self) -> None:
        if self.paths < 2:
            raise ValueError("paths: at least 2 curves (the two marked ones)")
        low, high = self.length
        if not 0.1 <= low <= high <= 8.0 or self.bend < 0 or self.dash < 0 or self.noise < 0:
            raise ValueError("difficulty: length a range within 0.1..8, bend, dash and noise >= 0")


_TURNS = (0.0, 0.6, -0.6, 1.2, -1.2, 1.8, -1.8, 2.4, -2.4, 3.1)  # tried in this order (signs swapped at random)


def _free(blocked: Tensor, pos: Tensor) -> Tensor:
    """(n, k) bool: whether the pixel of each point ``pos`` (n, k, 2) lies inside ``blocked`` (n, S, S)'s image and
    is not blocked."""
    size = blocked.shape[-1]
    cells = pos.round().long()
    inside = ((cells >= 0) & (cells < size)).all(dim=-1)
    cells = cells.clamp(0, size - 1)
    flat = cells[..., 1] * size + cells[..., 0]
    return inside & ~blocked.flatten(1).gather(1, flat)


def _walk(
    g: torch.Generator,
    blocked: Tensor,
    no_marker: Tensor,
    margin: int,
    steps: tuple[int, int],
    bend: float,
    radius: int,
) -> tuple[Tensor, Tensor]:
    """Smooth random walks of ``steps[0]..steps[1]`` steps (drawn per walk) that steer around ``blocked`` pixels
    (n, S, S) and the border margin: points (n, steps[1] + 1, 2) as (x, y), the last ones repeated after a short
    walk ends, and whether each walk succeeded (it never got stuck, and both of its ends lie off ``no_marker``, the
    pixels where a marker square would touch another curve; its two ends hold two separate marker squares of
    ``radius``)."""
    stop = torch.randint(steps[0], steps[1] + 1, (blocked.shape[0],), generator=g)
    longest = steps[1]
    n, size = blocked.shape[0], blocked.shape[-1]
    wall = torch.ones((size, size), dtype=torch.bool)
    wall[margin : size - margin, margin : size - margin] = False
    blocked = blocked | wall
    lo, hi = float(margin), float(size - 1 - margin)
    tries = 8
    starts = torch.rand((n, tries, 2), generator=g) * (hi - lo) + lo
    room = _free(no_marker, starts)
    pick = torch.where(room.any(dim=1), room.float().argmax(dim=1), 0)
    pos = starts[torch.arange(n), pick]
    ok = room.any(dim=1)
    heading = torch.rand((n,), generator=g) * (2 * math.pi)
    turns = torch.randn((n, longest), generator=g) * (bend * math.sqrt(_STEP))
    signs = torch.where(torch.rand((n, longest), generator=g) < 0.5, -1.0, 1.0)
    offsets = torch.tensor(_TURNS)
    points = [pos]
    for t in range(longest):
        candidates = heading[:, None] + turns[:, t, None] + signs[:, t, None] * offsets  # (n, k)
        step = torch.stack([torch.cos(candidates), torch.sin(candidates)], dim=-1) * _STEP
        nxt = pos[:, None] + step
        free = _free(blocked, nxt)
        active = stop > t
        ok &= free.any(dim=1) | ~active
        choice = free.float().argmax(dim=1)
        rows = torch.arange(n)
        heading = candidates[rows, choice]
        pos = torch.where((ok & active)[:, None], nxt[rows, choice], pos)
        points.append(pos)
    out = torch.stack(points, dim=1)
    ok &= _free(no_marker, out[:, -1:])[:, 0]
    apart = (out[:, 0].round() - out[:, -1].round()).abs().amax(dim=1) >= 2 * radius + 2
    return out, ok & apart


def _render(points: Tensor, size: int, keep: Tensor | None = None) -> Tensor:
    """(n, size, size) bool: the pixels the points fall in (only the points where ``keep``, (steps + 1,) bool)."""
    n = points.shape[0]
    cells = points.round().long().clamp(0, size - 1)
    flat = cells[..., 1] * size + cells[..., 0]  # (n, steps + 1)
    if keep is not None:
        flat = flat[:, keep]
    out = torch.zeros((n, size * size), dtype=torch.bool)
    out.scatter_(1, flat, True)
    return out.view(n, size, size)


def _dilate(mask: Tensor, radius: int) -> Tensor:
    """(n, H, W) bool grown by ``radius`` pixels (a square neighbourhood: a row pass, then a column pass)."""
    k = 2 * radius + 1
    grown = F.max_pool2d(mask[:, None].float(), (1, k), stride=1, padding=(0, radius))
    grown = F.max_pool2d(grown, (k, 1), stride=1, padding=(radius, 0))
    return grown[:, 0] > 0


def _marker(ends: Tensor, size: int, radius: int) -> Tensor:
    """(n, size, size) bool: the (2 radius + 1)-square (cut at the border) around the pixel of each point ``ends``
    (n, 2) as (x, y)."""
    cells = ends.round().long().clamp(0, size - 1)
    idx = torch.arange(size)
    rows = (idx[None, :] - cells[:, 1:2]).abs() <= radius  # (n, S)
    cols = (idx[None, :] - cells[:, 0:1]).abs() <= radius
    return rows[:, :, None] & cols[:, None, :]


@dataclass
class _Chunk:
    images: Tensor  # uint8 (n, 1, S, S)
    labels: Tensor  # int64 (n,)
    curves: Tensor  # bool (n, paths, S, S): the pixels of each curve, solid (before dashes)
    ends: Tensor  # float (n, paths, 2, 2): the (x, y) of both ends of each curve


def _curves(g: torch.Generator, n: int, size: int, d: Difficulty) -> tuple[Tensor, Tensor]:
    """Curves that keep a pixel of background between each other and between every curve end's marker square and
    any other curve: (n, paths, S, S) solid pixel masks and (n, paths, steps + 1, 2) points. Images whose curve
    cannot be placed are retried with fresh curves (the curve slot only), up to ``_MAX_ROUNDS`` rounds per slot,
    after which the whole image starts over."""
    margin = crop_pad(size)
    steps = (max(2, round(d.length[0] * size / _STEP)), max(2, round(d.length[1] * size / _STEP)))
    radius = max(1, size // 24)
    masks = torch.zeros((n, d.paths, size, size), dtype=torch.bool)
    points = torch.zeros((n, d.paths, steps[1] + 1, 2))
    todo = torch.arange(n)
    while len(todo):
        occupied = torch.zeros((len(todo), size, size), dtype=torch.bool)  # footprints grown by 1 px
        failed = torch.zeros(len(todo), dtype=torch.bool)
        for slot in range(d.paths):
            pending = torch.nonzero(~failed).squeeze(1)
            for _ in range(_MAX_ROUNDS):
                if not len(pending):
                    break
                here = occupied[pending]
                no_marker = _dilate(here, radius)  # a marker may reach into the margin, never near another curve
                pts, good = _walk(
                    g,
                    here.repeat_interleave(_TRIES, 0),
                    no_marker.repeat_interleave(_TRIES, 0),
                    margin,
                    steps,
                    d.bend,
                    radius,
                )
                pts, good = pts.view(len(pending), _TRIES, -1, 2), good.view(len(pending), _TRIES)
                first = good.float().argmax(dim=1)
                pts, good = pts[torch.arange(len(pending)), first], good.any(dim=1)
                curve = _render(pts, size)
                footprint = curve | _marker(pts[:, 0], size, radius) | _marker(pts[:, -1], size, radius)
                ok = pending[good]
                masks[todo[ok], slot] = curve[good]
                points[todo[ok], slot] = pts[good]
                occupied[ok] |= _dilate(footprint[good], 1)
                pending = pending[~good]
            failed[pending] = True
        todo = todo[failed]
    return masks, points


def _chunk(g: torch.Generator, n: int, size: int, d: Difficulty) -> _Chunk:
    masks, points = _curves(g, n, size, d)
    labels = torch.randint(0, 2, (n,), generator=g)
    ends = torch.stack([points[:, :, 0], points[:, :, -1]], dim=2)  # (n, paths, 2 ends, 2)
    first = ends[:, 0, 0]  # marker 1: the start of curve 0
    second = torch.where(labels[:, None] == 1, ends[:, 0, 1], ends[:, 1, 1])  # the end of curve 0 or of curve 1
    radius = max(1, size // 24)
    markers = _marker(first, size, radius) | _marker(second, size, radius)

    steps = points.shape[2] - 1
    if d.dash:
        arc = torch.arange(steps + 1) * _STEP
        keep = (arc % (d.dash + 1)) < d.dash
        drawn = torch.stack([_render(points[:, p], size, keep) for p in range(d.paths)], dim=1)
    else:
        drawn = masks
    ink = drawn.any(dim=1) | markers
    base = torch.rand((n, 1, 1), generator=g) * 40.0 + 10.0
    noise = torch.randn((n, size, size), generator=g) * d.noise
    image = base + noise + ink.float() * d.contrast
    pixels = image.round_().clamp_(0, 255).to(torch.uint8)[:, None]
    return _Chunk(images=pixels, labels=labels, curves=masks, ends=ends)


def generate_with_curves(
    num_samples: int, size: int, seed: int, difficulty: Difficulty | None = None
) -> tuple[Split, Tensor, Tensor]:
    """The images and labels (a ``Split``) plus each image's solid curve masks (N, paths, S, S) and curve ends
    (N, paths, 2, 2) as (x, y) pixels: curve 0 always carries the first marker (at its start)."""
    d = difficulty or Difficulty()
    g = torch.Generator()
    g.manual_seed(seed)
    parts = [_chunk(g, min(_CHUNK, num_samples - start), size, d) for start in range(0, num_samples, _CHUNK)]
    split = Split(x=torch.cat([p.images for p in parts]), y=torch.cat([p.labels for p in parts]))
    return split, torch.cat([p.curves for p in parts]), torch.cat([p.ends for p in parts])


def generate(num_samples: int, size: int, seed: int, difficulty: Difficulty | None = None) -> Split:
    """``num_samples`` images of ``size`` px, deterministic given ``seed`` (and ``difficulty``)."""
    return generate_with_curves(num_samples, size, seed, difficulty)[0]


def load_pathfinder_dataset(spec: DatasetSpec) -> DataSplits:
    size = spec.image_size or DEFAULT_SIZE
    full = generate(spec.num_samples, size, spec.seed)
    train, val, test = three_way(
        full.y.numpy(), test_fraction=TEST_FRACTION, val_fraction=spec.val_fraction, seed=spec.seed
    )
    return make_splits(
        "pathfinder",
        train=index_split(full, train),
        val=index_split(full, val),
        test=index_split(full, test),
        num_classes=len(CLASSES),
        class_names=list(CLASSES),
        limit=spec.limit,
        seed=spec.seed,
    )
