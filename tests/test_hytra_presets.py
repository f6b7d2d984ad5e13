"""BossNet presets in their retraining form, `nas info` on them, the retraining network, standalone export."""

from __future__ import annotations

import json
import random
import re

import pytest
import torch
from torch import nn
from typer.testing import CliRunner

from nas.cli import app
from nas.export import export_model
from nas.measure import count_macs, count_params
from nas.ops.se import SqueezeExcitation
from searchspaces.hytra import HyTraSpace
from searchspaces.hytra.ops import ResAtt, ResConv

SPACE = HyTraSpace()
runner = CliRunner()
PUBLISHED_MADDS = {"bossnet-t0": 3.4e9, "bossnet-t0-nose": 3.4e9, "bossnet-t1": 7.9e9}  # BossNAS README / paper


# ---------------------------------------------------------------- independent cost figures
# Written out from the architecture definition (../shared/specs/hytra.md section 4, BossNAS retraining_hytra), not
# from the code under test: per stage (bottleneck planes, output width, the layer kinds in order) of BossNet-T0/T1.
STAGES: list[tuple[int, int, list[str]]] = [
    (64, 256, ["conv"]),  # 56x56: ResConv
    (128, 512, ["conv"]),  # 28x28: ResConv
    (256, 1024, ["conv", "conv", "conv", "att", "conv"]),  # 14x14: ResConv x3, ResAtt, ResConv
    (512, 2048, ["att", "att", "att", "conv", "att", "att", "att", "att", "att"]),  # 7x7: ResAtt x3, ResConv, ResAtt x5
]
PRESET_SHAPES = {  # name -> (SE in ResConv, stage strides)
    "bossnet-t0": (True, [1, 2, 2, 2]),
    "bossnet-t0-nose": (False, [1, 2, 2, 2]),
    "bossnet-t1": (True, [1, 2, 2, 1]),  # the last stage stays at 14x14
}


def conv_weights(k: int, c_in: int, c_out: int, groups: int = 1, bias: bool = False) -> int:
    return k * k * (c_in // groups) * c_out + (c_out if bias else 0)


def bn_weights(c: int) -> int:
    return 2 * c  # gamma and beta


def halve(side: int) -> int:
    return (side + 1) // 2  # a stride-2 conv (7x7 pad 3, 3x3 pad 1) or the 3x3 max pool (pad 1)


def hand_costs(name: str, size: int = 224, in_channels: int = 3, classes: int = 1000) -> tuple[int, int]:
    """(params, MACs) of a BossNet preset, layer by layer from the spec. MACs count convolutions (k*k*c_in/groups
    *c_out per output position), the two attention products (q k^T and attn v: N*N*head_dim each per head, over
    heads*head_dim = planes channels) and the classifier; BN, activations, pooling and residual adds are free.

    - stem: conv 7x7 s2 (3 -> 64, no bias) + BN, max pool s2
    - every layer: input branch conv 1x1 (c_in -> planes) -> PEG depthwise 3x3 with bias (the stage's stride in
      its first layer) -> BN; shortcut avgpool + conv 1x1 + BN on a stride or width change (ResNet-D)
    - ResConv: conv 3x3 (planes) + BN, conv 1x1 (planes -> C) + BN [+ SE: 1x1 convs with bias C -> max(C/16, 8) -> C]
    - ResAtt: qkv conv 1x1 (planes -> 3 planes, no bias) + BN(planes), conv 1x1 (planes -> C) + BN
    - head: linear 2048 -> classes
    """
    se, strides = PRESET_SHAPES[name]
    side = halve(halve(size))
    params = conv_weights(7, in_channels, 64) + bn_weights(64)
    macs = conv_weights(7, in_channels, 64) * halve(size) ** 2
    c_in = 64
    for (planes, c, kinds), stride in zip(STAGES, strides, strict=True):
        for j, kind in enumerate(kinds):
            side_in, side = side, (halve(side) if j == 0 and stride == 2 else side)
            n_in, n_out = side_in * side_in, side * side
            params += conv_weights(1, c_in, planes) + conv_weights(3, planes, planes, planes, True) + bn_weights(planes)
            macs += conv_weights(1, c_in, planes) * n_in + conv_weights(3, planes, planes, planes) * n_out
            if (j == 0 and stride == 2) or c_in != c:
                params += conv_weights(1, c_in, c) + bn_weights(c)
                macs += conv_weights(1, c_in, c) * n_out  # after the 2x2 average pool
            if kind == "conv":
                params += (
                    conv_weights(3, planes, planes) + bn_weights(planes) + conv_weights(1, planes, c) + bn_weights(c)
                )
                macs += (conv_weights(3, planes, planes) + conv_weights(1, planes, c)) * n_out
                if se:
                    hidden = max(c // 16, 8)
                    params += conv_weights(1, c, hidden, bias=True) + conv_weights(1, hidden, c, bias=True)
                    macs += 2 * c * hidden  # on the pooled 1x1 map
            else:
                params += conv_weights(1, planes, 3 * planes) + bn_weights(planes)
                params += conv_weights(1, planes, c) + bn_weights(c)
                macs += (conv_weights(1, planes, 3 * planes) + conv_weights(1, planes, c)) * n_out
                macs += 2 * n_out * n_out * planes
            c_in = c
    params += 2048 * classes + classes
    macs += 2048 * classes
    return params, macs


def test_hand_costs_follow_the_spec_arithmetic() -> None:
    """The hand formulas themselves: the stem at 224 px, and what SE and the last stage's stride change."""
    assert conv_weights(7, 3, 64) * 112 * 112 == 118_013_952  # the ResNet stem's well-known 118M MACs
    (p0, m0), (pn, mn), (p1, m1) = (hand_costs(n) for n in ("bossnet-t0", "bossnet-t0-nose", "bossnet-t1"))
    se_params = sum((c * max(c // 16, 8) + max(c // 16, 8)) + (max(c // 16, 8) * c + c)
                    for _, c, kinds in STAGES for k in kinds if k == "conv")  # fmt: skip
    assert p0 - pn == se_params and p0 == p1  # SE adds weights; the last stage's stride changes none
    assert 0 < m0 - mn < 10_000_000  # SE works on pooled 1x1 maps: a little
    assert m1 > 2 * m0  # nine layers at 14x14 instead of 7x7, attention quadratic in the tokens


# ---------------------------------------------------------------- the presets' costs


def nas_info(name: str, size: int) -> dict:
    result = runner.invoke(app, ["info", f"hytra:{name}", "--input-size", str(size), "--json", "--no-latency"])
    assert result.exit_code == 0, result.output
    return json.loads(result.output)


def costs_at_224(name: str) -> tuple[int, int]:
    """Params and MACs of a preset at 224 px as the project counts them, on the meta device (no arithmetic: fast)."""
    preset = SPACE.preset(name)
    with torch.device("meta"):
        net = SPACE.build(preset.arch, preset.macro)
    return count_params(net), count_macs(net, (1, 3, 224, 224))


def test_nas_info_prints_params_and_macs_of_bossnet_t0_at_224() -> None:
    info = nas_info("bossnet-t0", 224)
    assert info["space"] == "hytra" and info["input_size"] == 224
    assert (info["params"], info["macs"]) == hand_costs("bossnet-t0", 224)
    assert info["macs"] == pytest.approx(PUBLISHED_MADDS["bossnet-t0"], rel=0.03)


@pytest.mark.parametrize("name", ["bossnet-t0-nose", "bossnet-t1"])
def test_nas_info_works_for_the_other_presets(name: str) -> None:
    info = nas_info(name, 64)  # a small input keeps the (slow) FLOP counter quick; 224 px is checked below
    assert (info["params"], info["macs"]) == hand_costs(name, 64)


@pytest.mark.parametrize("name", list(PRESET_SHAPES))
def test_costs_at_224_match_the_hand_count_and_the_published_madds(name: str) -> None:
    params, macs = costs_at_224(name)
    assert (params, macs) == hand_costs(name)
    preset = SPACE.preset(name)
    torch.manual_seed(0)
    net = SPACE.build(preset.arch, preset.macro)
    assert sum(p.numel() for p in net.parameters() if p.requires_grad) == params  # the real (not meta) network
    assert macs == pytest.approx(PUBLISHED_MADDS[name], rel=0.03)


def test_presets_are_valid_architectures_of_the_space() -> None:
    for preset in SPACE.presets().values():
        SPACE.validate(preset.arch)
        assert preset.input_size == 224 and preset.macro["form"] == "retrain"


def count(net: nn.Module, cls: type) -> int:
    return sum(isinstance(m, cls) for m in net.modules())


@pytest.mark.parametrize(
    ("name", "se", "act", "last_size"), [("bossnet-t0", 7, nn.SiLU, 7), ("bossnet-t0-nose", 0, nn.ReLU, 7),
                                         ("bossnet-t1", 7, nn.SiLU, 14)]
)  # fmt: skip
def test_retraining_network_structure(name: str, se: int, act: type, last_size: int) -> None:
    preset = SPACE.preset(name)
    net = SPACE.build(preset.arch, preset.macro)
    # the published per-stage encoding [[1], [1], [1, 1, 1, 0, 1], [0, 0, 0, 1, 0, 0, 0, 0, 0]]: 7 ResConv, 9 ResAtt
    assert count(net, ResConv) == 7 and count(net, ResAtt) == 9
    assert count(net, SqueezeExcitation) == se  # SE in every ResConv of the SE variants
    assert count(net, act) > 0 and count(net, nn.ReLU if act is nn.SiLU else nn.SiLU) == se  # SE's own ReLU
    assert net.adapter is None  # the retraining network feeds the stem straight into stage 1
    heads = [(m.attn.heads, m.out_channels) for m in net.modules() if isinstance(m, ResAtt)]
    assert heads[0] == (4, 1024) and all(h == (8, 2048) for h in heads[1:])
    rates = [m.drop_path_rate for m in net.modules() if isinstance(m, ResConv)]
    assert rates[0] == 0.0 and max(rates) <= 0.1 and rates == sorted(rates)
    sizes = []
    net.layers[-1].register_forward_hook(lambda _m, _i, out: sizes.append(out.shape[-1]))
    with torch.no_grad():
        net.eval()(torch.randn(1, 3, 224, 224))
    assert sizes == [last_size]


def test_empty_stage_becomes_a_transition_conv() -> None:
    arch = SPACE.make({"blocks": [[4, 4, 3, 3], [3, 2, 3, 0], [0, 0, 1, 0], [0, 0, 0, 0]]})  # nothing at 56x56
    macro = {**SPACE.preset("bossnet-t0").macro, "widths": [16, 32, 64, 128], "bottlenecks": None, "head_dim": 8}
    net = SPACE.build(arch, macro).eval()
    assert isinstance(net.layers[0], nn.Sequential) and net.layers[0][0].stride == (1, 1)
    with torch.no_grad():
        assert net(torch.randn(1, 3, 64, 64)).shape == (1, 1000)


@pytest.mark.parametrize("form", ["search", "retrain"])
def test_standalone_export_rebuilds_the_network(tmp_path, form: str) -> None:
    retrain = form == "retrain"
    macro = {"form": form, "stem": "small", "stem_channels": 8, "widths": [16, 32, 64, 128], "head_dim": 8,
             "num_classes": 4, "se": retrain, "activation": "silu" if retrain else "relu"}  # fmt: skip
    arch = SPACE.sample(random.Random(3))
    torch.manual_seed(0)
    model = SPACE.build(arch, macro).eval()
    files = export_model(model, arch, macro, SPACE, tmp_path / form, input_shape=(1, 3, 16, 16),
                         formats=["json", "python", "torchscript"])  # fmt: skip
    assert set(files) == {"json", "python", "torchscript"}
    source = (tmp_path / form / "model.py").read_text()
    assert not re.search(r"^\s*(from|import)\s+(nas|searchspaces|pydantic)\b", source, re.MULTILINE)
