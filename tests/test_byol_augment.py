"""The batched BYOL augmentations (nas.data.byol): shapes, ranges, determinism, p = 0 / p = 1 behaviour of every
operation, 1- and 3-channel data, and the batched colour jitter against a per-image reference."""

from __future__ import annotations

import pytest
import torch

from nas.data import byol
from nas.data.byol import BYOL_VIEWS, ViewSpec, augment, byol_views, grayscale

OFF = ViewSpec(crop_scale=(1.0, 1.0), crop_ratio=(1.0, 1.0), flip_p=0.0, jitter_p=0.0, gray_p=0.0, blur_p=0.0)


def images(channels: int, n: int = 6, size: int = 12, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.randint(0, 256, (n, channels, size, size), generator=g, dtype=torch.int64).to(torch.uint8)


def gen(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


@pytest.mark.parametrize("channels", [1, 3])
def test_views_have_the_input_shape_and_stay_in_unit_range(channels: int) -> None:
    x = images(channels)
    v1, v2 = byol_views(x, gen())
    for v in (v1, v2):
        assert v.shape == x.shape and v.dtype == torch.float32
        assert float(v.min()) >= 0.0 and float(v.max()) <= 1.0
    assert not torch.equal(v1, v2)
    assert augment(x, BYOL_VIEWS[0], gen(), out_size=7).shape == (6, channels, 7, 7)
    floats = augment(x.float() / 255.0, BYOL_VIEWS[1], gen())  # float input in [0, 1] works the same
    assert torch.allclose(floats, augment(x, BYOL_VIEWS[1], gen()), atol=1e-5)


@pytest.mark.parametrize("channels", [1, 3])
def test_a_seeded_generator_gives_the_same_views(channels: int) -> None:
    x = images(channels)
    a = byol_views(x, gen(7))
    b = byol_views(x, gen(7))
    c = byol_views(x, gen(8))
    assert all(torch.equal(u, v) for u, v in zip(a, b, strict=True))
    assert not torch.equal(a[0], c[0])


def test_the_generator_advances_the_same_whatever_the_probabilities() -> None:
    x = images(3)
    g0, g1 = gen(), gen()
    augment(x, OFF, g0)
    augment(x, ViewSpec(flip_p=1.0, jitter_p=1.0, gray_p=1.0, blur_p=1.0, solarize_p=1.0), g1)
    assert torch.equal(g0.get_state(), g1.get_state())


@pytest.mark.parametrize("channels", [1, 3])
def test_with_every_probability_zero_and_the_full_crop_the_view_is_the_image(channels: int) -> None:
    x = images(channels)
    assert torch.allclose(augment(x, OFF, gen()), x.float() / 255.0, atol=1e-5)


@pytest.mark.parametrize("channels", [1, 3])
def test_flip_with_p_one_mirrors_every_image(channels: int) -> None:
    x = images(channels)
    out = augment(x, ViewSpec(**{**OFF.__dict__, "flip_p": 1.0}), gen())
    assert torch.allclose(out, x.float().flip(-1) / 255.0, atol=1e-5)


def test_solarize_with_p_one_inverts_the_bright_values() -> None:
    x = images(3).float() / 255.0
    out = augment(x, ViewSpec(**{**OFF.__dict__, "solarize_p": 1.0}), gen())
    assert torch.allclose(out, torch.where(x >= 0.5, 1.0 - x, x), atol=1e-5)


def test_grayscale_with_p_one_equalises_the_channels_and_is_the_identity_on_one_channel() -> None:
    x = images(3).float() / 255.0
    out = augment(x, ViewSpec(**{**OFF.__dict__, "gray_p": 1.0}), gen())
    luma = 0.299 * x[:, 0] + 0.587 * x[:, 1] + 0.114 * x[:, 2]
    assert all(torch.allclose(out[:, c], luma, atol=1e-5) for c in range(3))
    mono = images(1).float() / 255.0
    assert torch.allclose(augment(mono, ViewSpec(**{**OFF.__dict__, "gray_p": 1.0}), gen()), mono, atol=1e-5)


def test_blur_with_p_one_keeps_a_flat_image_and_smooths_an_impulse() -> None:
    flat = torch.full((2, 3, 40, 40), 0.3)
    spec = ViewSpec(**{**OFF.__dict__, "blur_p": 1.0, "blur_sigma": (20.0, 20.0)})  # 3.6 px at 40 px
    assert torch.allclose(augment(flat, spec, gen()), flat, atol=1e-5)
    impulse = torch.zeros(1, 1, 40, 40)
    impulse[0, 0, 20, 20] = 1.0
    out = augment(impulse, spec, gen())
    assert float(out[0, 0, 20, 20]) < 0.2 and float(out[0, 0, 20, 21]) > 0.0
    assert float(out.sum()) == pytest.approx(1.0, abs=1e-4)
    assert byol.blur_kernel_size(224) == 23


def test_colour_ops_on_one_channel_are_brightness_and_contrast_only() -> None:
    mono = images(1).float() / 255.0
    sat_hue = ViewSpec(**{**OFF.__dict__, "jitter_p": 1.0, "jitter": (0.0, 0.0, 0.9, 0.5)})
    assert torch.allclose(augment(mono, sat_hue, gen()), mono, atol=1e-5)
    bright = ViewSpec(**{**OFF.__dict__, "jitter_p": 1.0, "jitter": (0.5, 0.0, 0.0, 0.0)})
    assert not torch.allclose(augment(mono, bright, gen()), mono, atol=1e-3)


def _reference_jitter(img: torch.Tensor, on: torch.Tensor, factors: torch.Tensor, order: torch.Tensor) -> torch.Tensor:
    """torchvision's ColorJitter, image by image."""
    out = []
    for i in range(len(img)):
        x = img[i : i + 1]
        if on[i]:
            for op in order[i].tolist():
                f = float(factors[i, op])
                if op == 0:
                    x = (f * x).clamp(0, 1)
                elif op == 1:
                    x = (f * x + (1 - f) * grayscale(x).mean()).clamp(0, 1)
                elif op == 2:
                    x = (f * x + (1 - f) * grayscale(x)).clamp(0, 1)
                else:
                    h, s, v = byol._rgb_to_hsv(x)
                    x = byol._hsv_to_rgb(torch.remainder(h + f, 1.0), s, v)
        out.append(x)
    return torch.cat(out)


def test_batched_colour_jitter_matches_the_per_image_reference() -> None:
    x = images(3, n=16).float() / 255.0
    params = byol._draw(16, BYOL_VIEWS[0], gen(3), 12, 12)
    batched = byol._colour_jitter(x, params["jitter_on"], params["factors"], params["order"])
    reference = _reference_jitter(x, params["jitter_on"], params["factors"], params["order"])
    assert params["jitter_on"].any() and not params["jitter_on"].all()
    assert torch.allclose(batched, reference, atol=1e-5)


def test_crop_boxes_lie_inside_the_image_with_the_allowed_area_and_ratio() -> None:
    params = byol._draw(500, ViewSpec(crop_scale=(0.2, 0.6)), gen(1), 32, 24)
    top, left, h, w = params["box"].unbind(1)
    assert bool((top >= 0).all() and (left >= 0).all() and (top + h <= 32).all() and (left + w <= 24).all())
    area = h * w / (32 * 24)
    assert float(area.min()) > 0.15 and float(area.max()) < 0.7  # 0.2..0.6, up to rounding to whole pixels
    ratio = w / h
    assert float(ratio.min()) > 0.6 and float(ratio.max()) < 1.6


def test_bad_probabilities_are_refused() -> None:
    with pytest.raises(ValueError, match="solarize_p"):
        ViewSpec(solarize_p=1.5)
