"""The HyTra single-path supernet: exact extraction, the block-wise interface, SPOS training."""

from __future__ import annotations

import random

import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from nas.checkpoint import CheckpointStore
from nas.errors import InvalidInput
from nas.events import ListReporter
from nas.space import get_space
from nas.strategies.base import SearchContext, get_strategy
from searchspaces.hytra import HyTraSpace
from searchspaces.hytra.supernet import HyTraSupernet
from tests.conftest import tiny_splits

SPACE = HyTraSpace()
MACRO = {"stem": "small", "stem_channels": 8, "widths": [16, 32, 64, 128], "head_dim": 8, "image_size": 16}
seeds = st.integers(min_value=0, max_value=2**32 - 1)
_NET: dict[str, HyTraSupernet] = {}


def randomize_bn(module: torch.nn.Module, seed: int) -> None:
    """Random BN affine parameters and statistics, so zero-initialised gammas hide nothing."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for m in module.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                m.weight.copy_(torch.rand(m.weight.shape, generator=g) + 0.5)
                m.bias.copy_(torch.randn(m.bias.shape, generator=g) * 0.1)
                m.running_mean.copy_(torch.randn(m.running_mean.shape, generator=g) * 0.1)
                m.running_var.copy_(torch.rand(m.running_var.shape, generator=g) + 0.5)


def supernet() -> HyTraSupernet:
    if "net" not in _NET:
        torch.manual_seed(0)
        net = SPACE.supernet({**MACRO, "num_classes": 5})
        assert isinstance(net, HyTraSupernet)
        randomize_bn(net, 0)
        _NET["net"] = net.eval()
    return _NET["net"]


@settings(max_examples=8, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(seed=seeds)
def test_extracted_network_equals_the_supernet_on_its_path(seed: int) -> None:
    net = supernet()
    arch = SPACE.sample(random.Random(seed))
    net.set_active(arch)
    sub = net.extract(arch).eval()
    assert sorted(sub.state_dict()) == sorted(SPACE.build(arch, net.macro).state_dict())
    x = torch.randn(3, 3, 16, 16, generator=torch.Generator().manual_seed(seed))
    with torch.no_grad():
        want = net(x)
        assert want.std() > 0
        torch.testing.assert_close(sub(x), want, rtol=1e-4, atol=1e-5)


@settings(max_examples=8, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(seed=seeds)
def test_blocks_chained_with_the_head_equal_the_full_forward(seed: int) -> None:
    net = supernet()
    arch = SPACE.sample(random.Random(seed))
    net.set_active(arch)
    x = torch.randn(2, 3, 16, 16, generator=torch.Generator().manual_seed(seed))
    with torch.no_grad():
        h = net.stem_forward(x)
        level = net.path_start_levels(0)[0]
        for k, path in enumerate(net.paths_of(arch)):
            assert path in net.block_paths(k, level)
            h = net.forward_block(k, h, path, level)
            level = net.path_end_level(k, path)
            assert (h.shape[1], h.shape[2]) == net.level_shape(level)
        torch.testing.assert_close(net.head_forward(h), net(x))
    assert net.arch_from_paths(net.paths_of(arch)) == arch


def test_every_candidate_runs_on_every_start_level_it_accepts() -> None:
    net = supernet()
    assert net.num_blocks == 4
    assert [len(net.block_paths(k)) for k in range(4)] == [51, 115, 80, 80]
    assert [net.path_start_levels(k) for k in range(4)] == [[0], [1, 2, 3], [2, 3], [2, 3]]
    for k in range(4):
        for s in net.path_start_levels(k):
            paths = net.block_paths(k, s)
            assert paths and set(paths) <= set(net.block_paths(k))
            c, size = net.level_shape(s)
            x = net.stem_forward(torch.randn(2, 3, 16, 16)) if k == 0 else torch.randn(2, c, size, size)
            with torch.no_grad():
                for path in paths:
                    y = net.forward_block(k, x, path, s)
                    assert (y.shape[1], y.shape[2]) == net.level_shape(net.path_end_level(k, path))
    with pytest.raises(InvalidInput, match="not a candidate of block 1"):
        net.forward_block(1, torch.randn(1, 64, 4, 4), (4, 4, 4, 4), 2)  # 28x28 cannot follow 14x14
    with pytest.raises(InvalidInput, match="not a candidate of block 2"):
        net.forward_block(2, torch.randn(1, 32, 8, 8), (3, 3, 3, 3), 1)  # block 2 has no branch from 28x28


def test_only_paths_ending_where_the_next_block_cannot_read_are_dead_ends() -> None:
    net = supernet()
    stuck = [(k, p) for k in range(4) for p in net.block_paths(k) if not net.path_completes(k, p)]
    assert stuck == [(0, (5, 5, 5, 5)), (1, (4, 4, 4, 4))]
    for k, p in stuck:  # the next block has no layers at their end level (56x56, 28x28) ...
        assert net.block_paths(k + 1, net.path_end_level(k, p)) == []
    for k in range(3):  # ... while every other end has a continuation
        for p in net.block_paths(k):
            if net.path_completes(k, p):
                assert net.block_paths(k + 1, net.path_end_level(k, p))


def test_level_shapes_follow_the_stem_and_the_input_size() -> None:
    imagenet = SPACE.supernet({**MACRO, "stem": "imagenet", "image_size": 224})
    assert [imagenet.level_shape(lv) for lv in range(4)] == [(16, 56), (32, 28), (64, 14), (128, 7)]
    with torch.no_grad():
        h = imagenet.stem_forward(torch.randn(1, 3, 224, 224))
        level = 0
        for k, path in enumerate(imagenet.reference_paths()):
            h = imagenet.forward_block(k, h, path, level)
            level = imagenet.path_end_level(k, path)
            assert (h.shape[1], h.shape[2]) == imagenet.level_shape(imagenet.path_end_level(k, path))
    assert [supernet().level_shape(lv) for lv in range(4)] == [(16, 16), (32, 8), (64, 4), (128, 2)]


def test_block_modules_partition_the_weights() -> None:
    net = supernet()
    owned = [id(p) for k in range(4) for m in net.block_modules(k) for p in m.parameters()]
    assert len(owned) == len(set(owned))
    rest = {id(p) for p in net.parameters()} - set(owned)
    assert rest == {id(p) for p in net.classifier.parameters()}
    assert sorted(net.classifier.keys()) == ["2", "3"]  # the last block ends at 14x14 or 7x7


def test_reference_paths_hand_each_block_its_default_input_level() -> None:
    net = supernet()
    paths = net.reference_paths()
    SPACE.validate(net.arch_from_paths(paths))
    assert [net.path_end_level(k, p) for k, p in enumerate(paths)] == [1, 2, 2, 3]
    level = 0
    for k, p in enumerate(paths):  # BossNAS's lists before a path is chosen (stage_depths [4, 3, 2, 2])
        assert len(net.block_paths(k, level)) == [51, 99, 80, 80][k]
        level = net.path_end_level(k, p)


def test_one_training_step_moves_the_active_path_only() -> None:
    torch.manual_seed(0)
    net = SPACE.supernet({**MACRO, "num_classes": 3})
    randomize_bn(net, 1)  # a zero last-BN gamma would block the gradient of the first step
    arch = SPACE.make({"blocks": [[5, 4, 3, 3], [3, 2, 3, 0], [0, 0, 1, 0], [0, 0, 0, 0]]})
    net.set_active(arch)
    net.train()
    before = {k: v.clone() for k, v in net.state_dict().items()}
    opt = torch.optim.SGD(net.parameters(), lr=0.1)
    loss = torch.nn.functional.cross_entropy(net(torch.randn(4, 3, 16, 16)), torch.tensor([0, 1, 2, 0]))
    loss.backward()
    opt.step()
    after = net.state_dict()
    assert not torch.equal(before["layers.5.2.attn.qkv.weight"], after["layers.5.2.attn.qkv.weight"])
    assert not torch.equal(before["layers.0.5.inputs.same.conv.weight"], after["layers.0.5.inputs.same.conv.weight"])
    assert torch.equal(before["layers.5.3.conv2.weight"], after["layers.5.3.conv2.weight"])  # inactive op
    assert torch.equal(before["adapters.1.1.weight"], after["adapters.1.1.weight"])  # inactive stem adapter


def test_spos_trains_the_hytra_supernet(tmp_path) -> None:
    space = get_space("hytra")
    ctx = SearchContext(
        space=space,
        macro=space.macro({**MACRO, "image_size": 8, "stem_channels": 4, "widths": [8, 8, 16, 16]}, num_classes=3,
                          in_channels=1),
        data=tiny_splits(n_train=64),
        device=torch.device("cpu"),
        checkpoints=CheckpointStore(tmp_path / "ckpt"),
        reporter=ListReporter(),
        seed=1,
    )  # fmt: skip
    strategy = get_strategy("spos", {"epochs": 1, "train": {"batch_size": 32, "lr": 0.05, "epochs": 1}})
    net = strategy.train_supernet(ctx)  # type: ignore[attr-defined]
    assert isinstance(net, HyTraSupernet)
    losses = [e.metrics["train_loss"] for e in ctx.reporter.events if e.metrics and "train_loss" in e.metrics]
    assert losses and all(torch.isfinite(torch.tensor(v)) for v in losses)
