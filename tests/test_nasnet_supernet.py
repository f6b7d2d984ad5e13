"""The single-path NASNet supernet: routing, exact subnet extraction, cost of a path."""

from __future__ import annotations

import random
from typing import Any

import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from torch.utils.flop_counter import FlopCounterMode

from nas.errors import InvalidInput
from nas.supernet import Supernet
from searchspaces.nasnet import NASNetSpace
from searchspaces.nasnet.supernet import NASNetSupernet

SPACE = NASNetSpace()
# the nasnet-macro supernet uses the ops of the NASNet-A/DARTS-V2 cells plus one of each other family (fewer
# modules, faster tests); the darts-macro supernet has all 13 ops
NASNET_OPS = ["skip_connect", "sep_conv_3x3", "sep_conv_5x5", "sep_conv_7x7", "avg_pool_3x3", "max_pool_3x3",
              "dil_conv_3x3", "conv_3x1_1x3", "conv_1x1"]  # fmt: skip
SPACES = {"nasnet": NASNetSpace(ops=NASNET_OPS), "darts": SPACE}
seeds = st.integers(min_value=0, max_value=2**32 - 1)
MACROS: dict[str, dict[str, Any]] = {
    "nasnet": {"filters": 4, "cells_per_stack": 1, "aux_head": True, "num_classes": 5},
    "darts": {"kind": "darts", "layers": 3, "channels": 4, "aux_head": True, "num_classes": 5},
}
_CACHE: dict[str, NASNetSupernet] = {}


def supernet(kind: str) -> NASNetSupernet:
    if kind not in _CACHE:
        torch.manual_seed(0)
        net = SPACES[kind].supernet(MACROS[kind])
        assert isinstance(net, NASNetSupernet)
        _CACHE[kind] = net
    return _CACHE[kind]


def _check_extract(net: NASNetSupernet, arch: Any, seed: int, size: int = 8) -> None:
    net.set_active(arch)
    g = torch.Generator().manual_seed(seed)
    net.train()
    with torch.no_grad():
        for _ in range(2):  # move the BN statistics of this path
            net(torch.randn(4, 3, size, size, generator=g))
    net.eval()
    sub = net.extract(arch).eval()
    assert sorted(sub.state_dict()) == sorted(net.space.build(arch, net.macro).state_dict())
    x = torch.randn(3, 3, size, size, generator=g)
    with torch.no_grad():
        assert torch.allclose(sub(x), net(x), atol=1e-5)


@pytest.mark.parametrize("kind", sorted(MACROS))
@settings(max_examples=5, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(seed=seeds)
def test_extracted_subnet_matches_supernet(kind: str, seed: int) -> None:
    _check_extract(supernet(kind), SPACES[kind].sample(random.Random(seed)), seed % 1000)


def _chain_arch() -> Any:
    """Every block reads the previous one: concat = [6], so cell outputs have F channels (identity adjustment)."""
    blocks = [[1, "sep_conv_3x3", 0, "max_pool_3x3"]] + [
        [1 + b, "sep_conv_3x3", 0, "skip_connect"] for b in range(1, 5)
    ]
    cell = {"blocks": blocks, "concat": [6]}
    return SPACE.make({"normal": cell, "reduce": cell})


def test_extract_with_single_state_outputs_and_presets() -> None:
    small = NASNetSpace(ops=["sep_conv_3x3", "max_pool_3x3", "skip_connect"])
    torch.manual_seed(1)
    net2 = small.supernet({"filters": 2, "cells_per_stack": 2})
    assert isinstance(net2, NASNetSupernet)
    arch = _chain_arch()
    sub = small.build(arch, net2.macro)
    assert sum(spec.pre0 == "identity" for spec in sub.specs) == 2  # second normal cell of stacks 2 and 3
    _check_extract(net2, arch, 1)
    net = supernet("nasnet")
    for name in ("nasnet-a-cifar", "darts-v2-cifar"):  # custom concat sets (state 0 in concat; a dead block)
        _check_extract(net, SPACE.preset(name).arch, 2)


def test_paths_differ_and_weights_are_shared() -> None:
    net = supernet("nasnet")
    a, b = SPACES["nasnet"].sample(random.Random(10)), SPACES["nasnet"].sample(random.Random(11))
    x = torch.randn(2, 3, 8, 8)
    net.eval()
    with torch.no_grad():
        net.set_active(a)
        ya = net(x)
        net.set_active(b)
        yb = net(x)
    assert not torch.allclose(ya, yb)
    # an extracted subnet owns copies: training it leaves the supernet unchanged
    sub = net.extract(a)
    before = {k: v.clone() for k, v in net.state_dict().items()}
    for p in sub.parameters():
        p.data.add_(1.0)
    after = net.state_dict()
    assert all(torch.equal(v, after[k]) for k, v in before.items())


def test_only_the_active_path_runs() -> None:
    net = supernet("nasnet")
    arch = SPACES["nasnet"].sample(random.Random(5))
    net.set_active(arch)
    net.eval()
    sub = net.extract(arch).eval()
    x = torch.randn(1, 3, 16, 16)

    def flops(model: torch.nn.Module) -> int:
        counter = FlopCounterMode(display=False)
        with counter, torch.no_grad():
            model(x)
        return int(counter.get_total_flops())

    assert flops(net) == flops(sub)
    # gradients reach the active ops only
    net.train()
    net.zero_grad()
    logits, aux = net(torch.randn(2, 3, 16, 16))
    (logits.sum() + aux.sum()).backward()
    genotype = arch.choices["normal"]
    j, op = genotype["blocks"][0][0], genotype["blocks"][0][1]
    active = net.net.cells[0].choices["0_0"][str(j)][op]
    inactive = [m for name, m in net.net.cells[0].choices["0_0"].items() if name != str(j)]
    assert any(p.grad is not None for p in active.parameters()) or not list(active.parameters())
    assert all(p.grad is None for m in inactive for p in m.parameters())


def test_supernet_interface() -> None:
    net = supernet("darts")
    assert isinstance(net, Supernet) and net.mode == "single_path"
    assert SPACE.supports_differentiable
    assert SPACE.supernet(MACROS["darts"], mode="differentiable").mode == "differentiable"
    with pytest.raises(InvalidInput):
        SPACE.supernet(MACROS["darts"], mode="sideways")
    net.set_progress(0.5)
