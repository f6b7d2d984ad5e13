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


def nas_info(name: str, size: int) -> dict:
    result = runner.invoke(app, ["info", f"hytra:{name}", "--input-size", str(size), "--json", "--no-latency"])
    assert result.exit_code == 0, result.output
    return json.loads(result.output)


def costs_at_224(name: str) -> tuple[int, int]:
    """Params and MACs of a preset at 224 px, counted on the meta device (no arithmetic: fast)."""
    preset = SPACE.preset(name)
    with torch.device("meta"):
        net = SPACE.build(preset.arch, preset.macro)
    return count_params(net), count_macs(net, (1, 3, 224, 224))


def test_nas_info_prints_params_and_macs_of_bossnet_t0_at_224() -> None:
    info = nas_info("bossnet-t0", 224)
    assert info["space"] == "hytra" and info["input_size"] == 224
    assert (info["params"], info["macs"]) == costs_at_224("bossnet-t0")
    assert info["macs"] == pytest.approx(PUBLISHED_MADDS["bossnet-t0"], rel=0.03)


@pytest.mark.parametrize("name", ["bossnet-t0-nose", "bossnet-t1"])
def test_nas_info_works_for_the_other_presets(name: str) -> None:
    info = nas_info(name, 64)  # a small input keeps the (slow) FLOP counter quick; 224 px is checked below
    assert info["params"] == costs_at_224(name)[0] and info["macs"] > 0


def test_costs_at_224_are_near_the_published_madds() -> None:
    costs = {name: costs_at_224(name) for name in PUBLISHED_MADDS}
    for name, (params, macs) in costs.items():
        assert macs == pytest.approx(PUBLISHED_MADDS[name], rel=0.03), name
        assert 30e6 < params < 45e6
    (p0, m0), (pn, mn), (p1, _) = costs["bossnet-t0"], costs["bossnet-t0-nose"], costs["bossnet-t1"]
    assert p0 == p1  # the last stage's stride changes the cost, not the weights
    assert pn < p0 and mn < m0  # SE adds a little


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
