"""The engine's typed interfaces, checked against the spaces that implement them: the block-wise supernet (HyTra,
MBConv; what BossNAS trains) and the optional space capabilities FairPaths and Suggest (NASNet)."""

from __future__ import annotations

import random
from typing import Any

import optuna
import pytest
import torch
from torch import nn

from nas.arch import Architecture
from nas.errors import InvalidInput
from nas.space import BlockInfo, FairPaths, SearchSpace, Suggest, get_space
from nas.strategies.base import get_strategy
from nas.strategies.bossnas import BossNASOptions
from nas.strategies.bossnas.bootstrap import build_net
from nas.supernet import BlockwiseSupernet, Supernet, missing_members
from tests.toy_space import ToySpace

TINY: dict[str, dict[str, Any]] = {
    "hytra": {"stem": "small", "stem_channels": 8, "widths": [16, 32, 64, 128], "head_dim": 8, "image_size": 16},
    "bossnas-mbconv": {"stem_stride": 1, "width_mult": 0.25, "head_channels": 16, "image_size": 16},
}
_NETS: dict[str, tuple[SearchSpace, Supernet]] = {}


def tiny(name: str) -> tuple[SearchSpace, Supernet]:
    if name not in _NETS:
        space = get_space(name)
        torch.manual_seed(0)
        _NETS[name] = space, space.supernet({**TINY[name], "num_classes": 5}).eval()
    return _NETS[name]


# --------------------------------------------------------------------------------------------- block-wise supernets
@pytest.mark.parametrize("name", ["hytra", "bossnas-mbconv"])
def test_blockwise_supernets_implement_the_protocol(name: str) -> None:
    space, sn = tiny(name)
    assert isinstance(sn, BlockwiseSupernet) and isinstance(sn, Supernet)
    assert BlockwiseSupernet in type(sn).__mro__  # listed as a base, so mypy checks the signatures
    assert missing_members(sn, BlockwiseSupernet) == []
    blocks = space.blocks()
    assert blocks is not None and sn.num_blocks == len(blocks)
    for k, info in enumerate(blocks):
        assert sorted(sn.block_paths(k)) == sorted(info.candidates)
        starts = sn.path_start_levels(k)
        assert starts and all(set(sn.block_paths(k, s)) <= set(info.candidates) for s in starts)
        assert sn.block_modules(k) and all(isinstance(m, nn.Module) for m in sn.block_modules(k))


@pytest.mark.parametrize("name", ["hytra", "bossnas-mbconv"])
@pytest.mark.parametrize("seed", [0, 1])
def test_running_block_by_block_equals_the_supernet(name: str, seed: int) -> None:
    space, sn = tiny(name)
    assert isinstance(sn, BlockwiseSupernet)
    arch = space.sample(random.Random(seed))
    paths = sn.paths_of(arch)
    assert sn.arch_from_paths(paths) == arch
    x = torch.randn(2, 3, 16, 16, generator=torch.Generator().manual_seed(seed))
    with torch.no_grad():
        sn.set_active(arch)
        want = sn(x)
        h = sn.stem_forward(x)
        level = sn.path_start_levels(0)[0]
        for k, path in enumerate(paths):
            assert path in sn.block_paths(k, level) and sn.path_completes(k, path)
            h = sn.forward_block(k, h, path, level)
            level = sn.path_end_level(k, path)
            assert (h.shape[1], h.shape[-1]) == sn.block_output_shape(k, path)
        got = sn.head_forward(h)
    assert got.shape == (2, 5)
    torch.testing.assert_close(got, want)


@pytest.mark.parametrize("name", ["hytra", "bossnas-mbconv"])
def test_reference_paths_feed_each_block_the_input_most_candidates_run_on(name: str) -> None:
    space, sn = tiny(name)
    assert isinstance(sn, BlockwiseSupernet)
    refs = sn.reference_paths()
    assert len(refs) == sn.num_blocks
    space.validate(sn.arch_from_paths(refs))
    level = sn.path_start_levels(0)[0]
    for k, path in enumerate(refs):
        most = max(len(sn.block_paths(k, s)) for s in sn.path_start_levels(k))
        assert len(sn.block_paths(k, level)) == most
        if len(sn.path_start_levels(k)) == 1:  # candidates independent of the input level: all of them
            assert sorted(sn.block_paths(k, level)) == sorted(sn.block_paths(k))
        level = sn.path_end_level(k, path)


def test_modules_and_other_supernets_are_not_blockwise() -> None:
    assert not isinstance(nn.Linear(2, 2), BlockwiseSupernet)
    toy = ToySpace().supernet({"num_classes": 3})
    assert not isinstance(toy, BlockwiseSupernet)
    assert "forward_block" in missing_members(toy, BlockwiseSupernet)


class BlocksWithoutBlockwiseSupernet(ToySpace):
    """Lists blocks but builds a supernet without the block-wise interface."""

    name = "toy-fake-blocks"

    def blocks(self) -> list[BlockInfo]:
        return [BlockInfo(0, "block0", [(0,)])]


def test_bossnas_refuses_a_space_whose_supernet_is_not_blockwise() -> None:
    space = BlocksWithoutBlockwiseSupernet()
    get_strategy("bossnas").check_space(space)  # it claims blocks ...
    with pytest.raises(InvalidInput) as info:  # ... but its supernet does not run block by block
        build_net(space, space.macro(num_classes=3), BossNASOptions(), seed=0)
    assert info.value.field == "space.name"
    assert "forward_block" in info.value.message and "BlockwiseSupernet" in info.value.message
    with pytest.raises(InvalidInput) as info:
        get_strategy("bossnas").check_space(get_space("nasnet"))
    assert info.value.field == "space.name"


# --------------------------------------------------------------------------------------------- space capabilities
def test_capabilities_of_the_spaces() -> None:
    nasnet, hytra, mbconv = get_space("nasnet"), get_space("hytra"), get_space("bossnas-mbconv")
    assert isinstance(nasnet, FairPaths) and isinstance(nasnet, Suggest)
    for space in (hytra, mbconv):
        assert not isinstance(space, FairPaths) and not isinstance(space, Suggest)
    assert isinstance(ToySpace(), FairPaths) and not isinstance(ToySpace(), Suggest)  # structural: no base needed


def test_nasnet_fair_paths_train_every_op_once_per_slot() -> None:
    space = get_space("nasnet", ops=["sep_conv_3x3", "max_pool_3x3", "skip_connect"])
    assert isinstance(space, FairPaths)
    group = space.fair_paths(random.Random(0))
    assert len(group) == 6  # each of the 3 ops twice, so that the 6 input choices of the last block fit
    for arch in group:
        space.validate(arch)
    for cell in ("normal", "reduce"):
        for b in range(len(group[0].choices[cell]["blocks"])):
            for slot in (1, 3):
                assert sorted(a.choices[cell]["blocks"][b][slot] for a in group) == sorted(space.op_names * 2)


def test_nasnet_suggest_proposes_a_valid_architecture_through_optuna() -> None:
    space = get_space("nasnet")
    assert isinstance(space, Suggest)
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=0))
    trial = study.ask()
    arch = space.suggest(trial)
    assert isinstance(arch, Architecture)
    space.validate(arch)
    assert trial.params  # one parameter per choice, visible to the sampler


def test_strict_fairness_needs_a_fair_sampler() -> None:
    spos = get_strategy("spos", {"strict_fairness": True})
    spos.check_space(get_space("nasnet"))
    with pytest.raises(InvalidInput) as info:
        spos.check_space(get_space("hytra"))
    assert info.value.field == "strategy.options.strict_fairness"
