"""'shapes': a procedural, seeded dataset of coloured shapes on textured, noisy backgrounds.

Each image holds 1-3 shapes of 6 kinds (circle, square, triangle, cross, ring, diamond) with random colours, sizes,
positions, small rotations and optional stripe/checker textures. The first shape is always the largest (its size,
the radius of its circumscribed circle, is drawn from a range above the others'); the class label is its kind.
Every image also carries a per-pixel mask (kind + 1, 0 = background, later shapes drawn over earlier ones) and one
box per shape, so classification, segmentation and detection heads can share one dataset (FBNetV5's proxy task).

Generation is vectorised over images: a loop over chunks and the 3 shape slots, tensor ops for every pixel.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

from nas.data.assemble import index_split, make_splits
from nas.data.base import DataSplits, Split
from nas.data.splitting import TEST_FRACTION, three_way
from nas.spec import DatasetSpec

KINDS = ("circle", "square", "triangle", "cross", "ring", "diamond")
DEFAULT_SIZE = 32
MAX_SHAPES = 3
_CHUNK = 1024
_SQRT3 = math.sqrt(3.0)


def _inside(kind: int, u: Tensor, v: Tensor) -> Tensor:
    """Whether each pixel lies inside a shape of ``kind``, in shape coordinates (u, v) scaled so the shape's
    circumscribed circle has radius 1 (v points down)."""
    name = KINDS[kind]
    if name in ("circle", "ring"):
        rr = u.square() + v.square()
        return (rr <= 1.0) & (rr >= 0.36) if name == "ring" else rr <= 1.0
    au, av = u.abs(), v.abs()
    if name == "square":
        return torch.maximum(au, av) <= 0.75
    if name == "triangle":  # apex up
        return (v <= 0.5) & (v >= _SQRT3 * au - 1.0)
    if name == "cross":
        return ((au <= 0.28) & (av <= 0.95)) | ((av <= 0.28) & (au <= 0.95))
    return au + av <= 1.0  # diamond


def _kind_masks(kinds: Tensor, u: Tensor, v: Tensor) -> Tensor:
    """(n, H, W) bool: pixels inside each image's shape, whose kind is ``kinds`` (n,)."""
    out = torch.zeros(u.shape, dtype=torch.bool)
    for kind in range(len(KINDS)):
        sel = torch.nonzero(kinds == kind).squeeze(1)
        if len(sel):
            out[sel] = _inside(kind, u[sel], v[sel])
    return out


def _uniform(g: torch.Generator, shape: tuple[int, ...], low: float, high: float) -> Tensor:
    return torch.rand(shape, generator=g) * (high - low) + low


def _pattern(g: torch.Generator, n: int, xs: Tensor, ys: Tensor) -> Tensor:
    """(n, H, W) float in {0, 1}: per image no texture, stripes at a random angle, or a checkerboard."""
    kind = torch.randint(0, 3, (n,), generator=g)
    period = _uniform(g, (n, 1, 1), 2.0, 5.0)
    angle = _uniform(g, (n, 1, 1), 0.0, math.pi)
    along = xs * torch.cos(angle) + ys * torch.sin(angle)
    stripes = (torch.floor(along / period) % 2).float()
    checker = ((torch.floor(xs / period) + torch.floor(ys / period)) % 2).float()
    out = torch.where((kind == 1)[:, None, None], stripes, checker)
    return torch.where((kind == 0)[:, None, None], torch.zeros_like(out), out)


def _chunk(g: torch.Generator, n: int, size: int) -> tuple[Tensor, Tensor, Tensor, Tensor, Tensor]:
    """One chunk: images uint8 (n, 3, S, S), labels (n,), masks (n, S, S), boxes (n, 3, 5), present (n, 3)."""
    coords = torch.arange(size, dtype=torch.float32) + 0.5
    ys, xs = coords.view(1, size, 1), coords.view(1, 1, size)

    # background: a base colour, a linear gradient and (half the time) a faint checkerboard
    base = _uniform(g, (n, 3), 0.0, 255.0)
    phi = _uniform(g, (n, 1, 1), 0.0, 2 * math.pi)
    amp = _uniform(g, (n, 1, 1), -40.0, 40.0)
    gradient = amp * ((xs / size - 0.5) * torch.cos(phi) + (ys / size - 0.5) * torch.sin(phi))
    faint = _pattern(g, n, xs, ys) * _uniform(g, (n, 1, 1), -15.0, 15.0)
    image = base[:, :, None, None] + (gradient + faint)[:, None]
    mask = torch.zeros((n, size, size), dtype=torch.int64)

    count = torch.randint(1, MAX_SHAPES + 1, (n,), generator=g)
    present = torch.arange(MAX_SHAPES)[None, :] < count[:, None]
    boxes = torch.zeros((n, MAX_SHAPES, 5), dtype=torch.float32)
    kinds = torch.randint(0, len(KINDS), (n, MAX_SHAPES), generator=g)
    for slot in range(MAX_SHAPES):
        low, high = (0.28, 0.42) if slot == 0 else (0.12, 0.22)
        radius = _uniform(g, (n, 1, 1), low, high) * size
        radius = radius.clamp(min=1.5)
        cx = radius + torch.rand((n, 1, 1), generator=g) * (size - 2 * radius).clamp(min=0.0)
        cy = radius + torch.rand((n, 1, 1), generator=g) * (size - 2 * radius).clamp(min=0.0)
        theta = _uniform(g, (n, 1, 1), -0.3, 0.3)
        dx, dy = xs - cx, ys - cy
        u = (dx * torch.cos(theta) + dy * torch.sin(theta)) / radius
        v = (-dx * torch.sin(theta) + dy * torch.cos(theta)) / radius
        inside = _kind_masks(kinds[:, slot], u, v) & present[:, slot, None, None]

        colour = (base + _uniform(g, (n, 3), 80.0, 176.0)) % 256.0  # every channel at least 80 from the base
        shade = 1.0 - 0.4 * _pattern(g, n, xs, ys)
        pixels = colour[:, :, None, None] * shade[:, None]
        image = torch.where(inside[:, None], pixels, image)
        mask = torch.where(inside, kinds[:, slot, None, None] + 1, mask)

        # box of the pixels the shape covers (before later shapes overlap it); the analytic extent if none
        rows, cols = inside.any(dim=2), inside.any(dim=1)
        has = rows.any(dim=1)
        idx = torch.arange(size)
        big = torch.full_like(idx, size)
        y0 = torch.where(rows, idx, big).amin(dim=1).float()
        y1 = torch.where(rows, idx, -1).amax(dim=1).float() + 1
        x0 = torch.where(cols, idx, big).amin(dim=1).float()
        x1 = torch.where(cols, idx, -1).amax(dim=1).float() + 1
        r, cxf, cyf = radius.view(n), cx.view(n), cy.view(n)
        analytic = torch.stack([cxf - r, cyf - r, cxf + r, cyf + r], dim=1).clamp(0, size)
        exact = torch.stack([x0, y0, x1, y1], dim=1)
        boxes[:, slot, 0] = kinds[:, slot].float()
        boxes[:, slot, 1:] = torch.where(has[:, None], exact, analytic)

    noise = _uniform(g, (n, 1, 1, 1), 4.0, 16.0) * torch.randn((n, 3, size, size), generator=g)
    pixels_u8 = (image + noise).round_().clamp_(0, 255).to(torch.uint8)
    return pixels_u8, kinds[:, 0].clone(), mask, boxes, present


def generate(num_samples: int, size: int, seed: int) -> Split:
    """``num_samples`` images of ``size`` px, deterministic given ``seed``."""
    g = torch.Generator()
    g.manual_seed(seed)
    parts = [_chunk(g, min(_CHUNK, num_samples - start), size) for start in range(0, num_samples, _CHUNK)]
    x = torch.cat([p[0] for p in parts])
    y = torch.cat([p[1] for p in parts])
    masks = torch.cat([p[2] for p in parts])
    all_boxes = torch.cat([p[3] for p in parts])
    present = torch.cat([p[4] for p in parts])
    boxes = [b[keep] for b, keep in zip(all_boxes, present, strict=True)]
    return Split(x=x, y=y, masks=masks, boxes=boxes)


def load_shapes_dataset(spec: DatasetSpec) -> DataSplits:
    size = spec.image_size or DEFAULT_SIZE
    full = generate(spec.num_samples, size, spec.seed)
    train, val, test = three_way(
        full.y.numpy(), test_fraction=TEST_FRACTION, val_fraction=spec.val_fraction, seed=spec.seed
    )
    return make_splits(
        "shapes",
        train=index_split(full, train),
        val=index_split(full, val),
        test=index_split(full, test),
        num_classes=len(KINDS),
        class_names=list(KINDS),
        limit=spec.limit,
        seed=spec.seed,
    )
