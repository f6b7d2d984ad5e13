"""Standalone NASNet-family networks: shapes, macro structure, drop path, aux head, presets."""

from __future__ import annotations

import random

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import nn

from nas.ops import FactorizedReduce, ScheduledDropPath
from searchspaces.nasnet import NASNetSpace
from searchspaces.nasnet.cells import Cell

SPACE = NASNetSpace()
seeds = st.integers(min_value=0, max_value=2**32 - 1)
TINY = {"filters": 4, "cells_per_stack": 1}


@settings(max_examples=6, deadline=None)
@given(seeds)
def test_sampled_cifar_networks_run(seed: int) -> None:
    arch = SPACE.sample(random.Random(seed))
    net = SPACE.build(arch, {**TINY, "num_classes": 7}).eval()
    with torch.no_grad():
        assert net(torch.randn(2, 3, 32, 32)).shape == (2, 7)


@settings(max_examples=3, deadline=None)
@given(seeds)
def test_sampled_imagenet_networks_run(seed: int) -> None:
    arch = SPACE.sample(random.Random(seed))
    macro = {"stem": "imagenet", "filters": 8, "cells_per_stack": 1, "stem_multiplier": 0.25, "num_classes": 5}
    net = SPACE.build(arch, macro).eval()
    with torch.no_grad():
        assert net(torch.randn(1, 3, 224, 224)).shape == (1, 5)


@pytest.mark.parametrize("size", [8, 13, 32])
def test_any_input_size_from_8_with_the_cifar_stem(size: int) -> None:
    arch = SPACE.sample(random.Random(1))
    net = SPACE.build(arch, {**TINY, "aux_head": True})
    logits, aux = net(torch.randn(2, 3, size, size))  # train mode: aux head too
    assert logits.shape == aux.shape == (2, 10)
    net.eval()
    assert net(torch.randn(2, 3, size, size)).shape == (2, 10)


@pytest.mark.parametrize("kind", ["pnasnet", "darts"])
def test_other_macros_run(kind: str) -> None:
    arch = SPACE.sample(random.Random(2))
    for stem, size in (("cifar", 16), ("imagenet", 64)):
        net = SPACE.build(arch, {**TINY, "kind": kind, "stem": stem, "filters": 8, "layers": 4, "channels": 4})
        assert net.eval()(torch.randn(2, 3, size, size)).shape == (2, 10)


def test_nasnet_macro_structure() -> None:
    arch = SPACE.preset("nasnet-a-cifar").arch
    net = SPACE.build(arch, {"filters": 8, "cells_per_stack": 2})
    specs = net.specs
    assert [s.reduction for s in specs] == [False, False, True, False, False, True, False, False]
    assert [s.filters for s in specs] == [8, 8, 16, 16, 16, 32, 32, 32]
    assert specs[0].pre0 == "raw"  # first cell: h_{i-1} is the raw stem output
    assert specs[1].pre0 == "conv"  # 6F channels -> F
    assert specs[3].pre0 == "factorized"  # after a reduction cell: its input is twice as large
    assert net.classifier.in_features == 24 * 8  # "N @ 24F"
    assert net.cells[0].out_channels == 6 * 8 and net.cells[2].out_channels == 4 * 16
    # the raw stem output (3F channels) is concatenated through a 1x1 conv to F
    assert "0" in net.cells[0].concat_reduce
    # skip_reduction_layer_input: the normal cell after a reduction reads the output before the previous cell
    plain = SPACE.build(arch, {"filters": 8, "cells_per_stack": 2})._prev_prev
    skip = SPACE.build(arch, {"filters": 8, "cells_per_stack": 2, "skip_reduction_layer_input": True})._prev_prev
    assert plain[3] == 2 and skip[3] == 1  # kept outputs: [stem, c0, c1, r0, ...]
    assert skip[6] == plain[6] - 1  # also after the second reduction
    assert [v for i, v in enumerate(plain) if i not in (3, 6)] == [v for i, v in enumerate(skip) if i not in (3, 6)]


def test_imagenet_stem_cells() -> None:
    arch = SPACE.preset("nasnet-a-mobile").arch
    net = SPACE.build(arch, {"stem": "imagenet", "filters": 12, "cells_per_stack": 1, "stem_multiplier": 1.0})
    assert net.stems[0][0].stride == (2, 2) and net.stems[0][0].padding == (0, 0)  # VALID 3x3 stride 2
    assert net.stems[0][0].out_channels == 32
    stem_specs = [s for s in net.specs if s.stem]
    assert [s.filters for s in stem_specs] == [3, 6]  # F/4, F/2 (odd F/4: factorized reduction splits 1 + 2)
    assert stem_specs[0].pre0 == "raw" and stem_specs[1].pre0 == "factorized"
    net.eval()
    for size in (96, 75):
        assert net(torch.randn(1, 3, size, size)).shape == (1, 10)


def test_darts_macro_structure() -> None:
    arch = SPACE.preset("darts-v2-cifar").arch
    net = SPACE.build(arch, {"kind": "darts", "layers": 8, "channels": 6})
    assert [i for i, s in enumerate(net.specs) if s.reduction] == [2, 5]
    assert [s.pre0 for s in net.specs][:4] == ["conv", "conv", "conv", "factorized"]
    assert net.stems[0][0].out_channels == 18  # 3C
    assert net.classifier.in_features == 4 * 24
    cell = net.cells[0]
    assert isinstance(cell, Cell) and "4_0" not in cell.ops  # the placeholder block is dead and not built
    reduce_cell = net.cells[2]
    assert isinstance(reduce_cell.ops["0_0"][0], nn.MaxPool2d)
    assert isinstance(net.cells[5].ops["1_0"], nn.Identity)  # skip on a node: identity
    assert not net.head_relu


def test_scheduled_drop_path_in_the_network() -> None:
    arch = SPACE.preset("nasnet-a-cifar").arch
    net = SPACE.build(arch, {**TINY, "drop_path_keep": 0.6})
    drops = [c.drop_path for c in net.cells]
    assert all(isinstance(d, ScheduledDropPath) for d in drops)
    total = len(net.cells)
    assert total == 3 * 1 + 2
    net.set_progress(1.0)
    for i, d in enumerate(drops):
        assert d.keep == pytest.approx(1 - (i + 1) / total * 0.4)
    net.set_progress(0.5)
    assert drops[-1].keep == pytest.approx(1 - 0.5 * 0.4)
    # identity ops are never dropped
    cell = net.cells[0]
    flags = {(b, i1, i2): (d1, d2) for b, i1, i2, d1, d2 in cell._blocks}
    assert flags[(2, 1, 0)] == (True, False)  # avg3(h) + p
    # eval mode is deterministic; training mode drops samples
    x = torch.randn(4, 3, 16, 16)
    net.eval()
    with torch.no_grad():
        assert torch.equal(net(x), net(x))
    net.train()
    net.set_progress(1.0)
    torch.manual_seed(0)
    with torch.no_grad():
        assert not torch.allclose(net(x), net(x))
    no_drop = SPACE.build(arch, TINY)
    assert all(c.drop_path is None for c in no_drop.cells)


def test_aux_head_only_in_training() -> None:
    arch = SPACE.preset("nasnet-a-cifar").arch
    net = SPACE.build(arch, {**TINY, "aux_head": True, "num_classes": 3})
    assert net.aux_index == 2  # cells: n, r, n, r, n: the normal cell before the second reduction
    assert net.aux.kernel == 4  # 16x16 -> avg pool 5/3 -> 4x4 -> conv 4x4
    out = net(torch.randn(2, 3, 32, 32))
    assert isinstance(out, tuple) and out[0].shape == out[1].shape == (2, 3)
    assert isinstance(net.eval()(torch.randn(2, 3, 32, 32)), torch.Tensor)
    darts = SPACE.build(SPACE.preset("darts-v2-cifar").arch, {"kind": "darts", "layers": 8, "aux_head": True})
    assert darts.aux_index == 5 and darts.aux.kernel == 2  # after the second reduction cell (8x8), as DARTS


def test_hybrid_attention_network() -> None:
    space = NASNetSpace(attention=True, attention_heads=2)
    arch = space.sample(random.Random(0))
    choices = {t: {"blocks": [list(b) for b in arch.choices[t]["blocks"]], "concat": arch.choices[t]["concat"]}
               for t in ("normal", "reduce")}  # fmt: skip
    choices["normal"]["blocks"][0][1] = "self_attention"
    choices["reduce"]["blocks"][0][1] = "self_attention"
    net = space.build(space.make(choices), TINY)
    assert any(type(m).__name__ == "SelfAttention2d" for m in net.modules())
    assert net.eval()(torch.randn(2, 3, 16, 16)).shape == (2, 10)


PUBLISHED_PARAMS = {  # millions, without the auxiliary head
    "nasnet-a-cifar": 3.3,
    "nasnet-a-mobile": 5.3,
    "nasnet-a-large": 88.9,
    "pnasnet-5-large": 86.1,
    "darts-v2-cifar": 3.3,
}


@pytest.mark.parametrize("name", sorted(PUBLISHED_PARAMS))
def test_presets_build_with_published_sizes(name: str) -> None:
    preset = SPACE.preset(name)
    net = SPACE.build(preset.arch, preset.macro)
    total = sum(p.numel() for p in net.parameters())
    aux = sum(p.numel() for p in net.aux.parameters())
    assert (total - aux) / 1e6 == pytest.approx(PUBLISHED_PARAMS[name], rel=0.02)
    if name.endswith("cifar"):
        net.eval()
        with torch.no_grad():
            assert net(torch.randn(1, 3, 32, 32)).shape == (1, 10)


def test_preset_widths() -> None:
    widths = {"nasnet-a-cifar": 768, "nasnet-a-mobile": 1056, "nasnet-a-large": 4032}
    for name, width in widths.items():
        preset = SPACE.preset(name)
        net = SPACE.build(preset.arch, {**preset.macro, "filters": preset.macro["filters"], "aux_head": False})
        assert net.classifier.in_features == width
    assert any(isinstance(m, FactorizedReduce) for m in SPACE.build(SPACE.preset("nasnet-a-mobile").arch,
               SPACE.preset("nasnet-a-mobile").macro).modules())  # fmt: skip
