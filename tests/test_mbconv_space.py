"""BossNAS's MBConv space: sampling, validation, networks, the block-wise supernet, SPOS, standalone export."""

from __future__ import annotations

import random

import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from torch import nn

from nas.arch import Architecture
from nas.checkpoint import CheckpointStore
from nas.errors import InvalidInput
from nas.events import ListReporter
from nas.export import export_model
from nas.measure import count_macs, count_params
from nas.ops.mbconv import MBConv
from nas.ops.se import SqueezeExcitation
from nas.space import get_space
from nas.strategies.base import SearchContext, get_strategy
from searchspaces.mbconv import MBConvSpace
from searchspaces.mbconv.supernet import MBConvSupernet
from tests.conftest import tiny_splits

SPACE = MBConvSpace()
TINY = {"stem_stride": 1, "width_mult": 0.25, "head_channels": 16, "image_size": 16, "num_classes": 5}
seeds = st.integers(min_value=0, max_value=2**32 - 1)
_NET: dict[str, MBConvSupernet] = {}


def supernet() -> MBConvSupernet:
    if "net" not in _NET:
        torch.manual_seed(0)
        net = SPACE.supernet(TINY)
        assert isinstance(net, MBConvSupernet)
        g = torch.Generator().manual_seed(0)
        with torch.no_grad():  # random BN statistics so the comparison is not trivial
            for m in net.modules():
                if isinstance(m, nn.BatchNorm2d):
                    m.running_mean.copy_(torch.randn(m.running_mean.shape, generator=g) * 0.1)
                    m.running_var.copy_(torch.rand(m.running_var.shape, generator=g) + 0.5)
                    m.bias.copy_(torch.randn(m.bias.shape, generator=g) * 0.1)
        _NET["net"] = net.eval()
    return _NET["net"]


def test_blocks_and_size() -> None:
    blocks = SPACE.blocks()
    assert [len(b.candidates) for b in blocks] == [16, 256, 256, 256, 256]  # 4 ops ^ 2/4/4/4/4 layers
    assert SPACE.log10_size() == pytest.approx(18 * 0.6020599913)
    d = get_space("bossnas-mbconv").describe()
    assert d["block_wise"] and d["block_candidates"] == [16, 256, 256, 256, 256]


@settings(max_examples=10, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(seed=seeds)
def test_sample_mutate_crossover_build(seed: int) -> None:
    rng = random.Random(seed)
    a, b = SPACE.sample(rng), SPACE.sample(rng)
    assert [len(p) for p in a.choices["blocks"]] == [2, 4, 4, 4, 4]
    child = SPACE.crossover(a, b, rng)
    for k, path in enumerate(child.choices["blocks"]):
        for j, op in enumerate(path):
            assert op in (a.choices["blocks"][k][j], b.choices["blocks"][k][j])
    assert SPACE.mutate(a, rng, 0.05) != a
    net = SPACE.build(a, TINY).eval()
    with torch.no_grad():
        assert net(torch.randn(2, 3, 16, 16)).shape == (2, 5)


@pytest.mark.parametrize(
    ("blocks", "field"),
    [
        ([[0, 1], [0, 1, 2, 3], [0, 0, 0, 0], [1, 1, 1, 1], [2, 2, 2, 4]], "blocks[4][3]"),
        ([[0, 1], [0, 1, 2], [0, 0, 0, 0], [1, 1, 1, 1], [2, 2, 2, 2]], "blocks[1]"),
        ([[0, 1], [0, 1, 2, 3]], "blocks"),
    ],
)
def test_validate_names_the_bad_field(blocks: list, field: str) -> None:
    with pytest.raises(InvalidInput) as info:
        SPACE.validate(Architecture(space="bossnas-mbconv", version="1", choices={"blocks": blocks}))
    assert info.value.field == f"architecture.choices.{field}"


def test_full_size_network_matches_the_spec() -> None:
    arch = SPACE.make({"blocks": [[0, 0], [1, 1, 1, 1], [2, 2, 2, 2], [3, 3, 3, 3], [0, 1, 2, 3]]})
    with torch.device("meta"):
        net = SPACE.build(arch, {"num_classes": 1000})
    convs = [m for m in net.modules() if isinstance(m, MBConv)]
    assert len(convs) == 19  # 18 searched layers + the fixed [320, 1, 1] layer
    assert [c.conv_pwl.out_channels for c in convs] == [24] * 2 + [40] * 4 + [80] * 4 + [112] * 4 + [192] * 4 + [320]
    strides = [2, 1, 2, 1, 1, 1, 2, 1, 1, 1, 1, 1, 1, 1, 2, 1, 1, 1, 1]  # stage strides 2, 2, 2, 1, 2; tail 1
    assert [c.conv_dw.stride[0] for c in convs] == strides
    assert (convs[2].conv_dw.kernel_size, convs[2].conv_pw.out_channels) == ((5, 5), 24 * 6)
    assert (convs[6].conv_dw.kernel_size, convs[6].conv_pw.out_channels) == ((3, 3), 40 * 3)
    assert all(isinstance(c.se, SqueezeExcitation) and isinstance(c.act1, nn.SiLU) for c in convs)
    assert convs[0].se.reduce.out_channels == 4  # SE width: 0.25 of the block input (16)
    assert 3e6 < count_params(net) < 8e6 and 200e6 < count_macs(net, (1, 3, 224, 224)) < 700e6


@settings(max_examples=6, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(seed=seeds)
def test_extraction_and_block_chain_equal_the_supernet(seed: int) -> None:
    net = supernet()
    arch = SPACE.sample(random.Random(seed))
    net.set_active(arch)
    x = torch.randn(2, 3, 16, 16, generator=torch.Generator().manual_seed(seed))
    with torch.no_grad():
        want = net(x)
        torch.testing.assert_close(net.extract(arch).eval()(x), want, rtol=1e-4, atol=1e-5)
        h = net.stem_forward(x)
        for k, path in enumerate(net.paths_of(arch)):
            assert net.path_start_levels(k) == [0] and path in net.block_paths(k, 0)
            h = net.forward_block(k, h, path, 0)
            assert net.path_end_level(k, path) == 0
            assert (h.shape[1], h.shape[2]) == net.block_output_shape(k, path)
        assert (h.shape[1], h.shape[2]) == net.level_shape(0)
        torch.testing.assert_close(net.head_forward(h), want)
    assert net.arch_from_paths(net.paths_of(arch)) == arch


def test_block_interface_counts_and_modules() -> None:
    net = supernet()
    assert net.num_blocks == 5
    assert [len(net.block_paths(k)) for k in range(5)] == [16, 256, 256, 256, 256]
    owned = [id(p) for k in range(5) for m in net.block_modules(k) for p in m.parameters()]
    assert len(owned) == len(set(owned))
    assert {id(p) for p in net.parameters()} - set(owned) == {id(p) for p in net.head.parameters()}
    assert all(net.path_completes(k, net.block_paths(k)[-1]) for k in range(5))
    with pytest.raises(InvalidInput):
        net.forward_block(0, torch.randn(1, 8, 16, 16), (0, 1, 2), 0)


def test_spos_trains_the_mbconv_supernet(tmp_path) -> None:
    space = get_space("bossnas-mbconv")
    ctx = SearchContext(
        space=space,
        macro=space.macro({**TINY, "image_size": 8}, num_classes=3, in_channels=1),
        data=tiny_splits(n_train=64),
        device=torch.device("cpu"),
        checkpoints=CheckpointStore(tmp_path / "ckpt"),
        reporter=ListReporter(),
        seed=2,
    )
    before = {k: v.clone() for k, v in space.supernet(ctx.macro).state_dict().items()}
    strategy = get_strategy("spos", {"epochs": 1, "train": {"batch_size": 32, "lr": 0.05, "epochs": 1}})
    net = strategy.train_supernet(ctx)  # type: ignore[attr-defined]
    after = net.state_dict()
    assert isinstance(net, MBConvSupernet) and before.keys() == after.keys()
    assert any(not torch.equal(before[k], after[k]) for k in before if k.startswith("layers."))


def test_standalone_export_rebuilds_the_network(tmp_path) -> None:
    arch = SPACE.sample(random.Random(4))
    torch.manual_seed(0)
    model = SPACE.build(arch, TINY).eval()
    files = export_model(model, arch, TINY, SPACE, tmp_path, input_shape=(1, 3, 16, 16), formats=["json", "python"])
    assert set(files) == {"json", "python"}
