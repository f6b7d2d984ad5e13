"""The BYOL augmentations (Grill et al., NeurIPS 2020), batched on the device, without torchvision.

One call augments a whole batch with per-sample random parameters, all drawn from a ``torch.Generator`` on the CPU
(so the same seed gives the same views on any device) and applied with tensor ops only: one ``affine_grid`` +
``grid_sample`` for crop, resize and flip, masked elementwise colour ops, a grouped convolution for the blur.
No Python loop runs over samples.

The pipeline of one view (torchvision semantics, the order of BYOL/BossNAS):

1. random resized crop (area ``crop_scale`` of the image, aspect ratio ``crop_ratio``, 10 attempts then a centre
   crop), resized bilinearly to ``out_size``; horizontal flip with ``flip_p``;
2. colour jitter with ``jitter_p``: brightness, contrast, saturation and hue factors from ``jitter``, applied in a
   random order per sample;
3. grayscale with ``gray_p`` (ITU-R 601 luma, replicated to the three channels);
4. Gaussian blur with ``blur_p``: kernel of ~10% of the side (odd, at least 3; 23 at 224 px), sigma uniform in
   ``blur_sigma`` scaled by ``side / 224`` (so 0.1-2.0 px at 224 px; a 32 px image gets 0.014-0.29 px), reflect
   padding;
5. solarize with ``solarize_p`` (values >= 0.5 become 1 - value).

Input: (B, C, H, W) uint8 (0..255) or float in [0, 1]; output float32 in [0, 1], (B, C, out, out).
Colour on other than three channels: brightness and contrast (blend with the image's mean) apply as usual;
saturation, hue and grayscale are the identity (a 1-channel image is its own grayscale, and has no hue).

Every random number of a call is drawn whether or not its operation fires (p = 0 or 1 included), so the generator
advances by the same amount per call for a given batch size: changing one probability does not reshuffle the rest.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor

CROP_ATTEMPTS = 10
BLUR_REFERENCE_SIZE = 224


@dataclass(frozen=True)
class ViewSpec:
    """Probabilities and ranges of one view's augmentations (defaults: BYOL's shared settings)."""

    crop_scale: tuple[float, float] = (0.08, 1.0)
    crop_ratio: tuple[float, float] = (3.0 / 4.0, 4.0 / 3.0)
    flip_p: float = 0.5
    jitter: tuple[float, float, float, float] = (0.4, 0.4, 0.2, 0.1)  # brightness, contrast, saturation, hue
    jitter_p: float = 0.8
    gray_p: float = 0.2
    blur_p: float = 1.0
    blur_sigma: tuple[float, float] = (0.1, 2.0)  # pixels at BLUR_REFERENCE_SIZE
    solarize_p: float = 0.0

    def __post_init__(self) -> None:
        for name in ("flip_p", "jitter_p", "gray_p", "blur_p", "solarize_p"):
            value = getattr(self, name)
            if not 0.0 <= value <= 1.0:
                raise ValueError(f"{name} must be a probability in [0, 1], got {value}")
        lo, hi = self.crop_scale
        if not 0.0 < lo <= hi <= 1.0:
            raise ValueError(f"crop_scale must satisfy 0 < min <= max <= 1, got {self.crop_scale}")
        if not 0.0 < self.crop_ratio[0] <= self.crop_ratio[1]:
            raise ValueError(f"crop_ratio must satisfy 0 < min <= max, got {self.crop_ratio}")
        b, c, s, h = self.jitter
        if min(b, c, s) < 0 or not 0.0 <= h <= 0.5:
            raise ValueError(f"jitter needs non-negative factors and a hue in [0, 0.5], got {self.jitter}")
        if not 0.0 < self.blur_sigma[0] <= self.blur_sigma[1]:
            raise ValueError(f"blur_sigma must satisfy 0 < min <= max, got {self.blur_sigma}")


#: BYOL's asymmetric pair: blur always / solarize never for view 1, blur 0.1 / solarize 0.2 for view 2.
BYOL_VIEWS = (ViewSpec(blur_p=1.0, solarize_p=0.0), ViewSpec(blur_p=0.1, solarize_p=0.2))


def byol_views(
    x: Tensor, generator: torch.Generator, specs: tuple[ViewSpec, ViewSpec] = BYOL_VIEWS, out_size: int | None = None
) -> tuple[Tensor, Tensor]:
    """Two augmented views of the batch ``x`` (view 1 drawn first)."""
    return augment(x, specs[0], generator, out_size), augment(x, specs[1], generator, out_size)


def augment(x: Tensor, spec: ViewSpec, generator: torch.Generator, out_size: int | None = None) -> Tensor:
    """One BYOL view of every image of ``x`` (see the module docstring)."""
    if x.dim() != 4:
        raise ValueError(f"expected a (B, C, H, W) batch, got shape {tuple(x.shape)}")
    img = x.float().div(255.0) if x.dtype == torch.uint8 else x.float()
    b, c, h, w = img.shape
    size = int(out_size or h)
    p = _draw(b, spec, generator, h, w)
    p = {k: v.to(img.device) for k, v in p.items()}
    img = _crop_resize_flip(img, p["box"], p["flip"], size)
    img = _colour_jitter(img, p["jitter_on"], p["factors"], p["order"])
    if c == 3:
        img = torch.where(p["gray"].view(b, 1, 1, 1), grayscale(img).expand(-1, 3, -1, -1), img)
    img = torch.where(p["blur"].view(b, 1, 1, 1), _gaussian_blur(img, p["sigma"] * size / BLUR_REFERENCE_SIZE), img)
    img = torch.where(p["solarize"].view(b, 1, 1, 1) & (img >= 0.5), 1.0 - img, img)
    return img.clamp_(0.0, 1.0)


# --------------------------------------------------------------------------------------------- random parameters
def _draw(b: int, spec: ViewSpec, g: torch.Generator, h: int, w: int) -> dict[str, Tensor]:
    """Every random number of one view of a batch of ``b``, in a fixed order (CPU)."""
    area_frac = torch.empty(b, CROP_ATTEMPTS).uniform_(*spec.crop_scale, generator=g)
    log_lo, log_hi = math.log(spec.crop_ratio[0]), math.log(spec.crop_ratio[1])
    log_ratio = torch.empty(b, CROP_ATTEMPTS).uniform_(log_lo, log_hi, generator=g)
    position = torch.rand(b, 2, generator=g)
    flip = torch.rand(b, generator=g) < spec.flip_p
    jitter_on = torch.rand(b, generator=g) < spec.jitter_p
    u = torch.rand(b, 4, generator=g)
    order = torch.rand(b, 4, generator=g).argsort(dim=1)
    gray = torch.rand(b, generator=g) < spec.gray_p
    blur = torch.rand(b, generator=g) < spec.blur_p
    sigma_u = torch.rand(b, generator=g)
    solarize = torch.rand(b, generator=g) < spec.solarize_p

    bright, contrast, sat, hue = spec.jitter
    lows = torch.tensor([max(0.0, 1 - bright), max(0.0, 1 - contrast), max(0.0, 1 - sat), -hue])
    highs = torch.tensor([1 + bright, 1 + contrast, 1 + sat, hue])
    factors = lows + u * (highs - lows)
    sigma = spec.blur_sigma[0] + sigma_u * (spec.blur_sigma[1] - spec.blur_sigma[0])
    box = _crop_boxes(area_frac, log_ratio, position, h, w, spec.crop_ratio)
    return {
        "box": box, "flip": flip, "jitter_on": jitter_on, "factors": factors, "order": order, "gray": gray,
        "blur": blur, "sigma": sigma, "solarize": solarize,
    }  # fmt: skip


def _crop_boxes(
    area_frac: Tensor, log_ratio: Tensor, position: Tensor, h: int, w: int, ratio: tuple[float, float]
) -> Tensor:
    """(B, 4) float boxes (top, left, height, width) in pixels, torchvision's RandomResizedCrop.get_params batched:
    the first of the attempts that fits, else a centre crop with the ratio clamped to the allowed range."""
    area = area_frac * (h * w)
    aspect = torch.exp(log_ratio)
    cw = torch.round(torch.sqrt(area * aspect))
    ch = torch.round(torch.sqrt(area / aspect))
    fits = (cw > 0) & (cw <= w) & (ch > 0) & (ch <= h)
    first = fits.float().argmax(dim=1, keepdim=True)  # index of the first fitting attempt (0 when none fits)
    cw, ch = cw.gather(1, first).squeeze(1), ch.gather(1, first).squeeze(1)
    any_fit = fits.any(dim=1)
    in_ratio = w / h
    if in_ratio < ratio[0]:
        fw, fh = float(w), float(round(w / ratio[0]))
    elif in_ratio > ratio[1]:
        fh, fw = float(h), float(round(h * ratio[1]))
    else:
        fw, fh = float(w), float(h)
    cw = torch.where(any_fit, cw, torch.full_like(cw, fw))
    ch = torch.where(any_fit, ch, torch.full_like(ch, fh))
    top = torch.floor(position[:, 0] * (h - ch + 1))
    left = torch.floor(position[:, 1] * (w - cw + 1))
    top = torch.where(any_fit, top, torch.full_like(top, float((h - int(fh)) // 2)))
    left = torch.where(any_fit, left, torch.full_like(left, float((w - int(fw)) // 2)))
    return torch.stack([top, left, ch, cw], dim=1)


# --------------------------------------------------------------------------------------------- geometry
def _crop_resize_flip(img: Tensor, box: Tensor, flip: Tensor, size: int) -> Tensor:
    """Bilinear resampling of each box to ``size`` x ``size`` (mirrored where ``flip``), one grid_sample."""
    b, _, h, w = img.shape
    top, left, ch, cw = box.unbind(1)
    # normalised coordinates (align_corners=False): pixel edges at -1 and 1
    cx = (left + cw / 2) / w * 2 - 1
    cy = (top + ch / 2) / h * 2 - 1
    sx = (cw / w) * torch.where(flip, -1.0, 1.0)
    sy = ch / h
    zeros = torch.zeros_like(cx)
    theta = torch.stack([torch.stack([sx, zeros, cx], 1), torch.stack([zeros, sy, cy], 1)], 1)
    grid = F.affine_grid(theta, [b, img.shape[1], size, size], align_corners=False)
    return F.grid_sample(img, grid, mode="bilinear", padding_mode="border", align_corners=False)


# --------------------------------------------------------------------------------------------- colour
def grayscale(img: Tensor) -> Tensor:
    """(B, 1, H, W) luma (0.299 R + 0.587 G + 0.114 B) of RGB images; the image itself for one channel; the
    channel mean otherwise."""
    c = img.shape[1]
    if c == 3:
        weights = torch.tensor([0.299, 0.587, 0.114], device=img.device, dtype=img.dtype).view(1, 3, 1, 1)
        return (img * weights).sum(1, keepdim=True)
    return img.mean(1, keepdim=True)


def _blend(a: Tensor, b: Tensor, factor: Tensor) -> Tensor:
    return (factor.view(-1, 1, 1, 1) * a + (1 - factor.view(-1, 1, 1, 1)) * b).clamp(0.0, 1.0)


def _hue(img: Tensor, shift: Tensor) -> Tensor:
    if img.shape[1] != 3:
        return img
    h, s, v = _rgb_to_hsv(img)
    h = torch.remainder(h + shift.view(-1, 1, 1), 1.0)
    return _hsv_to_rgb(h, s, v)


def _colour_jitter(img: Tensor, on: Tensor, factors: Tensor, order: Tensor) -> Tensor:
    """Brightness, contrast, saturation and hue in a per-sample random order, only where ``on``.

    Brightness, contrast and saturation are one blend ``f * img + (1 - f) * ref`` with a per-sample reference
    (black, the mean luma, the luma image), so each of the 4 slots costs one blend; hue runs on the samples whose
    slot holds it only."""
    b = img.shape[0]
    rgb = img.shape[1] == 3
    for slot in range(4):
        op = order[:, slot]
        blend_on = (on & (op < 3) & (rgb | (op < 2))).view(b, 1, 1, 1)
        gray = grayscale(img)
        ref = torch.where((op == 1).view(b, 1, 1, 1), gray.mean((1, 2, 3), keepdim=True), gray)
        ref = torch.where((op == 0).view(b, 1, 1, 1), torch.zeros_like(ref), ref)
        f = factors.gather(1, op.clamp(max=2).view(b, 1)).view(b)
        img = torch.where(blend_on, _blend(img, ref.expand_as(img), f), img)
        if rgb:
            idx = torch.nonzero(on & (op == 3)).flatten()
            if idx.numel():
                img = img.index_put((idx,), _hue(img.index_select(0, idx), factors[idx, 3]))
    return img


def _rgb_to_hsv(img: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    r, g, b = img.unbind(1)
    maxc, _ = img.max(1)
    minc, _ = img.min(1)
    delta = maxc - minc
    s = torch.where(maxc > 0, delta / maxc.clamp_min(1e-12), torch.zeros_like(maxc))
    safe = torch.where(delta > 0, delta, torch.ones_like(delta))
    rc, gc, bc = (maxc - r) / safe, (maxc - g) / safe, (maxc - b) / safe
    h = torch.where(maxc == r, bc - gc, torch.where(maxc == g, 2.0 + rc - bc, 4.0 + gc - rc))
    h = torch.where(delta > 0, torch.remainder(h / 6.0, 1.0), torch.zeros_like(h))
    return h, s, maxc


def _hsv_to_rgb(h: Tensor, s: Tensor, v: Tensor) -> Tensor:
    i = torch.floor(h * 6.0)
    f = h * 6.0 - i
    i = i.long() % 6
    p, q, t = v * (1 - s), v * (1 - s * f), v * (1 - s * (1 - f))
    # (r, g, b) per sector 0..5
    table = torch.stack(
        [
            torch.stack([v, t, p], 1), torch.stack([q, v, p], 1), torch.stack([p, v, t], 1),
            torch.stack([p, q, v], 1), torch.stack([t, p, v], 1), torch.stack([v, p, q], 1),
        ],
        1,
    )  # (B, 6, 3, H, W)  # fmt: skip
    index = i.unsqueeze(1).unsqueeze(1).expand(-1, 1, 3, -1, -1)
    return table.gather(1, index).squeeze(1)


# --------------------------------------------------------------------------------------------- blur
def blur_kernel_size(side: int) -> int:
    """About 10% of the side, odd, at least 3 (23 at 224 px, as BYOL)."""
    k = round(0.1 * side)
    k = k if k % 2 else k + 1
    return max(3, k)


def _gaussian_blur(img: Tensor, sigma: Tensor) -> Tensor:
    """Separable Gaussian blur with a per-sample ``sigma`` (pixels): one grouped conv per direction."""
    b, c, h, w = img.shape
    k = blur_kernel_size(h)
    radius = k // 2
    pos = torch.arange(k, device=img.device, dtype=img.dtype) - radius
    kernel = torch.exp(-(pos.view(1, -1) ** 2) / (2 * sigma.view(-1, 1).clamp_min(1e-6) ** 2))
    kernel = kernel / kernel.sum(1, keepdim=True)  # (B, k)
    weight = kernel.repeat_interleave(c, dim=0)  # (B*C, k)
    flat = img.reshape(1, b * c, h, w)
    mode = "reflect" if min(h, w) > radius else "replicate"
    flat = F.pad(flat, (radius, radius, 0, 0), mode=mode)
    flat = F.conv2d(flat, weight.view(b * c, 1, 1, k), groups=b * c)
    flat = F.pad(flat, (0, 0, radius, radius), mode=mode)
    flat = F.conv2d(flat, weight.view(b * c, 1, k, 1), groups=b * c)
    return flat.view(b, c, h, w)
