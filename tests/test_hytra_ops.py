"""HyTra's ops: correct (not transposed) multi-head attention, head counts, branches, shortcuts, zero-init."""

from __future__ import annotations

import pytest
import torch
from torch import nn
from torch.nn import functional as F

from searchspaces.hytra import HyTraSpace
from searchspaces.hytra.ops import MultiHeadSelfAttention2d, ResAtt, ResConv


def test_attention_equals_scaled_dot_product_attention() -> None:
    torch.manual_seed(0)
    attn = MultiHeadSelfAttention2d(dim=12, heads=3, head_dim=8)
    x = torch.randn(2, 12, 5, 7)
    q, k, v = attn.split_qkv(x)
    assert q.shape == (2, 3, 35, 8)
    want = F.scaled_dot_product_attention(q, k, v)  # softmax(q k^T / sqrt(d)) v
    with torch.no_grad():
        got = attn(x)
    assert got.shape == (2, 24, 5, 7)
    torch.testing.assert_close(got, want.transpose(-2, -1).reshape(2, 24, 5, 7))


def test_attention_qkv_layout_is_q_then_k_then_v_head_major() -> None:
    attn = MultiHeadSelfAttention2d(dim=4, heads=2, head_dim=3)
    x = torch.randn(1, 4, 2, 3)
    q, k, v = attn.split_qkv(x)
    full = attn.qkv(x).flatten(2)  # (1, 18, 6)
    torch.testing.assert_close(q[0, 1], full[0, 3:6].T)  # head 1 of q: channels 3..5
    torch.testing.assert_close(k[0, 0], full[0, 6:9].T)
    torch.testing.assert_close(v[0, 1], full[0, 15:18].T)


def test_attention_rows_sum_to_one_not_the_transposed_aggregation() -> None:
    """v constant over the tokens while q and k vary: softmax(qk^T) v must return v at every token. The
    transposed aggregation of BossNAS's search code (v @ attn) would scale v by the column sums instead."""
    torch.manual_seed(1)
    dim, heads, hd = 6, 2, 4
    attn = MultiHeadSelfAttention2d(dim, heads, hd)
    with torch.no_grad():
        w = attn.qkv.weight  # (3 * heads * hd, dim, 1, 1)
        w[: 2 * heads * hd, -1] = 0.0  # q, k ignore the constant channel
        w[2 * heads * hd :, :-1] = 0.0  # v reads only the constant channel
        x = torch.randn(1, dim, 3, 3) * 3
        x[:, -1] = 1.0
        out = attn(x)
        q, k, v = attn.split_qkv(x)
        weights = torch.softmax(q @ k.transpose(-2, -1) * hd**-0.5, dim=-1)
        transposed = (v.transpose(-2, -1) @ weights).reshape(1, heads * hd, 3, 3)  # the public search code's form
    expected = v[:, :, :1].transpose(-2, -1).reshape(1, heads * hd, 1, 1).expand(1, heads * hd, 3, 3)
    torch.testing.assert_close(out, expected)
    assert not torch.allclose(transposed, expected, atol=1e-3)


def test_default_widths_give_8_heads_at_7x7_and_4_at_14x14() -> None:
    space = HyTraSpace()
    net = space.build(space.preset("bossnet-t0").arch)  # search form, default ImageNet widths
    heads = {}
    for layer in net.layers:
        if isinstance(layer, ResAtt):
            heads[layer.out_channels] = (layer.attn.heads, layer.attn.head_dim, layer.attn.qkv.bias)
    assert heads == {1024: (4, 64, None), 2048: (8, 64, None)}


@pytest.mark.parametrize("op_cls", [ResConv, ResAtt])
def test_fresh_op_is_its_shortcut_because_the_last_bn_starts_at_zero(op_cls: type) -> None:
    torch.manual_seed(0)
    extra = {"heads": 2, "head_dim": 4} if op_cls is ResAtt else {}
    op = op_cls({"same": 16, "down": 8}, 8, 32, **extra).eval()
    for branch, c_in, size in (("same", 16, 6), ("down", 8, 12)):
        x = torch.randn(2, c_in, size, size)
        with torch.no_grad():
            y = op(x, branch)
            residual = op.inputs[branch].shortcut(x)
        assert y.shape == (2, 32, 6, 6)
        torch.testing.assert_close(y, F.relu(residual))


def test_branches_have_the_specified_shortcuts_and_pegs() -> None:
    op = ResConv({"same": 32, "down": 16}, 8, 32)
    same, down = op.inputs["same"], op.inputs["down"]
    assert isinstance(same.shortcut, nn.Identity)  # shapes match
    conv = down.shortcut[0]
    assert (conv.kernel_size, conv.stride) == ((3, 3), (2, 2)) and isinstance(down.shortcut[2], nn.ReLU)
    assert same.peg.groups == 8 and same.peg.bias is not None and same.peg.stride == (1, 1)
    assert down.peg.stride == (2, 2)
    width_change = ResConv({"same": 8}, 8, 32).inputs["same"].shortcut
    assert width_change[0].kernel_size == (1, 1) and isinstance(width_change[2], nn.ReLU)
    resnet_d = ResConv({"down": 16}, 8, 32, shortcut="resnet_d").inputs["down"].shortcut
    assert isinstance(resnet_d[0], nn.AvgPool2d) and resnet_d[1].kernel_size == (1, 1)
    assert isinstance(resnet_d[2], nn.BatchNorm2d) and len(resnet_d) == 3  # no activation


def test_drop_path_only_in_training() -> None:
    torch.manual_seed(0)
    op = ResConv({"same": 8}, 4, 8, drop_path_rate=0.5)
    nn.init.ones_(op.bn3.weight)
    x = torch.randn(64, 8, 4, 4)
    op.train()
    body = op.body(op.inputs["same"](x)[0])
    dropped = (body.flatten(1).abs().sum(1) == 0).float().mean().item()
    assert 0.2 < dropped < 0.8
    op.eval()
    assert (op.body(op.inputs["same"](x)[0]).flatten(1).abs().sum(1) > 0).all()
