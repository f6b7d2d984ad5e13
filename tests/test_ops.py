"""Shared building blocks (nas.ops) and the NASNet op factory."""

from __future__ import annotations

import pytest
import torch
from torch import nn
from torch.nn import functional as F

from nas.ops import (
    FactorizedReduce,
    Pool,
    ReLUConvBN,
    ScheduledDropPath,
    SelfAttention2d,
    SepConv,
    SqueezeExcite,
    StackedSepConv,
    Zero,
    drop_path,
    scheduled_keep_prob,
)
from searchspaces.nasnet.ops import OPS, OpConfig, make_op


def test_drop_path_is_identity_in_eval_and_at_keep_one() -> None:
    x = torch.randn(8, 3, 4, 4)
    assert torch.equal(drop_path(x, 0.5, training=False), x)
    assert torch.equal(drop_path(x, 1.0, training=True), x)


def test_drop_path_masks_whole_samples_and_rescales() -> None:
    torch.manual_seed(0)
    x = torch.rand(400, 2, 3, 3) + 0.5
    y = drop_path(x, 0.6, training=True)
    dropped = (y == 0).flatten(1).all(1)
    kept = ~dropped
    assert torch.allclose(y[kept], x[kept] / 0.6)
    # per-sample Bernoulli: a sample is either fully zero or fully kept
    assert bool(((y == 0).flatten(1).any(1) == dropped).all())
    assert 0.3 < dropped.float().mean().item() < 0.5


def test_scheduled_keep_prob_v3_rule() -> None:
    # no dropping at the start of training
    assert scheduled_keep_prob(0.6, 5, 20, 0.0) == 1.0
    # last cell at the end of training keeps keep0
    assert scheduled_keep_prob(0.6, 19, 20, 1.0) == pytest.approx(0.6)
    # depth scaling, then time scaling
    keep_layer = 1 - (3 + 1) / 20 * (1 - 0.6)
    assert scheduled_keep_prob(0.6, 3, 20, 0.5) == pytest.approx(1 - 0.5 * (1 - keep_layer))
    assert scheduled_keep_prob(0.6, 3, 20, 7.0) == pytest.approx(keep_layer)  # progress is clipped at 1
    assert scheduled_keep_prob(0.8, 3, 20, 0.5, layer_scaled=False) == pytest.approx(0.9)  # DARTS rule


def test_scheduled_drop_path_module() -> None:
    m = ScheduledDropPath(0.6, cell_index=9, total_cells=10)
    assert m.keep == 1.0
    m.progress = 1.0
    assert m.keep == pytest.approx(0.6)
    assert m.state_dict() == {}
    m.eval()
    x = torch.randn(4, 2, 3, 3)
    assert torch.equal(m(x), x)


@pytest.mark.parametrize("size", [8, 9, 15])
@pytest.mark.parametrize("c_out", [4, 5])
def test_factorized_reduce_shapes_and_split(size: int, c_out: int) -> None:
    fr = FactorizedReduce(3, c_out)
    assert fr.conv1.out_channels == c_out // 2 and fr.conv2.out_channels == c_out - c_out // 2
    y = fr(torch.randn(2, 3, size, size))
    assert y.shape == (2, c_out, (size + 1) // 2, (size + 1) // 2)


def test_factorized_reduce_matches_darts_form_on_even_sizes() -> None:
    fr = FactorizedReduce(3, 6).eval()
    x = torch.randn(2, 3, 8, 8)
    ref = fr.bn(torch.cat([fr.conv1(F.relu(x)), fr.conv2(F.relu(x)[:, :, 1:, 1:])], dim=1))
    assert torch.allclose(fr(x), ref, atol=1e-6)


def test_forward_sliced_equals_forward_on_zero_filled_input() -> None:
    torch.manual_seed(0)
    idx = torch.tensor([1, 2, 5, 6])
    x = torch.randn(2, 4, 6, 6)
    full = torch.zeros(2, 8, 6, 6)
    full[:, idx] = x
    for m in (ReLUConvBN(8, 5).eval(), FactorizedReduce(8, 6).eval()):
        assert torch.allclose(m.forward_sliced(x, idx), m(full), atol=1e-5)


@pytest.mark.parametrize("name", sorted(OPS))
@pytest.mark.parametrize("stride", [1, 2])
@pytest.mark.parametrize("size", [7, 8])
def test_every_op_maps_shapes(name: str, stride: int, size: int) -> None:
    op = make_op(name, 6, 4, stride, OpConfig(attention_heads=2))
    y = op(torch.randn(2, 6, size, size))
    out = -(-size // stride)
    assert y.shape == (2, 4, out, out)


def test_op_structures_follow_the_spec() -> None:
    cfg = OpConfig(bn_eps=1e-3)
    assert isinstance(make_op("skip_connect", 4, 4, 1, cfg), nn.Identity)
    assert isinstance(make_op("skip_connect", 4, 4, 2, cfg), ReLUConvBN)  # TF: ReLU -> 1x1 conv(stride) -> BN
    darts = OpConfig(identity_reduction="factorized")
    assert isinstance(make_op("skip_connect", 4, 4, 2, darts), FactorizedReduce)
    sep = make_op("sep_conv_5x5", 4, 8, 2, cfg)
    assert isinstance(sep, StackedSepConv) and len(sep) == 2
    first, second = sep[0], sep[1]
    # ReLU, depthwise (stride), pointwise, BN: no BN or ReLU between depthwise and pointwise
    assert [type(m) for m in first] == [nn.ReLU, nn.Conv2d, nn.Conv2d, nn.BatchNorm2d]
    assert first[1].groups == 4 and first[1].stride == (2, 2) and first[2].out_channels == 8
    assert second[1].stride == (1, 1) and second[2].in_channels == 8
    assert first[3].eps == 1e-3
    dil = make_op("dil_conv_3x3", 4, 4, 1, cfg)
    assert isinstance(dil, SepConv) and dil[1].dilation == (2, 2)
    strip = make_op("conv_7x1_1x7", 4, 4, 2, cfg)
    convs = [m for m in strip if isinstance(m, nn.Conv2d)]
    assert [c.kernel_size for c in convs] == [(1, 7), (7, 1)] and [c.stride for c in convs] == [(1, 2), (2, 1)]
    assert sum(isinstance(m, nn.BatchNorm2d) for m in strip) == 1
    pool = make_op("max_pool_5x5", 4, 8, 1, cfg)
    assert isinstance(pool, Pool) and isinstance(pool[1], nn.Conv2d)  # channel change: 1x1 conv + BN
    assert len(make_op("max_pool_5x5", 4, 4, 1, cfg)) == 1
    assert all(c.bias is None for c in sep.modules() if isinstance(c, nn.Conv2d))


def test_darts_ops_dil_conv_5x5_and_none() -> None:
    cfg = OpConfig()
    dil = make_op("dil_conv_5x5", 4, 6, 2, cfg)
    assert isinstance(dil, SepConv)
    assert dil[1].kernel_size == (5, 5) and dil[1].dilation == (2, 2) and dil[1].padding == (4, 4)
    assert dil[1].groups == 4 and dil[1].stride == (2, 2) and dil[2].out_channels == 6
    # dilation 2 with a 5x5 kernel sees 9x9: a pixel 4 away moves the centre output, one 5 away does not
    flat = make_op("dil_conv_5x5", 4, 6, 1, cfg).eval()
    with torch.no_grad():
        base = torch.zeros(1, 4, 11, 11)
        near, far = base.clone(), base.clone()
        near[0, :, 5, 9] = 1.0
        far[0, :, 5, 10] = 1.0
        centre = flat(base)[0, :, 5, 5]
        assert not torch.allclose(flat(near)[0, :, 5, 5], centre)
        assert torch.allclose(flat(far)[0, :, 5, 5], centre)
    none = make_op("none", 6, 4, 2, cfg)
    assert not list(none.parameters())
    y = none(torch.randn(2, 6, 7, 7, requires_grad=True))
    assert y.shape == (2, 4, 4, 4) and not y.any()
    same = make_op("none", 4, 4, 1, cfg)(torch.randn(1, 4, 5, 5))
    assert same.shape == (1, 4, 5, 5) and not same.any()


def test_avg_pool_excludes_padding() -> None:
    pool = make_op("avg_pool_3x3", 2, 2, 1, OpConfig())
    y = pool(torch.ones(1, 2, 5, 5))
    assert torch.allclose(y, torch.ones_like(y))


def test_self_attention_op() -> None:
    att = SelfAttention2d(6, 6, 1, heads=4)
    assert att.heads == 3  # the largest divisor of 6 not above 4
    assert att.proj_in is None
    x = torch.randn(2, 6, 5, 7, requires_grad=True)
    y = att(x)
    assert y.shape == (2, 6, 5, 7)
    y.sum().backward()
    assert att.pos.weight.grad is not None and att.qkv.weight.grad is not None
    # every output position sees every input position (global attention)
    att.eval()
    x = torch.randn(1, 6, 5, 7, requires_grad=True)
    att(x)[0, :, 0, 0].sum().backward()
    assert x.grad is not None and bool((x.grad[0].abs().sum(0) > 0).all())
    down = SelfAttention2d(4, 8, 2, heads=2)
    assert down(torch.randn(1, 4, 9, 9)).shape == (1, 8, 5, 5)


def test_squeeze_excite_and_zero() -> None:
    se = SqueezeExcite(16)
    x = torch.randn(2, 16, 4, 4)
    assert se(x).shape == x.shape
    z = Zero(4, 2)(torch.randn(2, 4, 7, 7))
    assert z.shape == (2, 4, 4, 4) and not z.any()
