"""The NASNet cell encoding: sampling, mutation, crossover, validation, conversions of reference genotypes."""

from __future__ import annotations

import copy
import math
import random
from collections import Counter
from typing import Any

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from nas.arch import Architecture
from nas.errors import InvalidInput
from nas.space import get_space
from searchspaces.nasnet import NASNetSpace
from searchspaces.nasnet.genotype import (
    ATTENTION_OP,
    CELL_TYPES,
    DARTS_OPS,
    NUM_BLOCKS,
    NUM_INPUTS,
    OP_NAMES,
    from_tf,
    live_blocks,
    nasnet_a,
    pnasnet_5,
    unused_states,
)

SPACE = NASNetSpace()
seeds = st.integers(min_value=0, max_value=2**32 - 1)


def _arch(choices: dict[str, Any]) -> Architecture:
    return Architecture(space="nasnet", version="1", choices=choices)


@settings(max_examples=60, deadline=None)
@given(seeds)
def test_sampled_architectures_validate_with_unused_concat(seed: int) -> None:
    arch = SPACE.sample(random.Random(seed))
    SPACE.validate(arch)
    for t in ("normal", "reduce"):
        cell = arch.choices[t]
        assert cell["concat"] == unused_states(cell["blocks"])
        assert 6 in cell["concat"]  # the last block is never read
        assert all(live_blocks(cell["blocks"], cell["concat"]))
    # canonical JSON and hash are stable: same seed, same hash; JSON round trip keeps it
    again = SPACE.sample(random.Random(seed))
    assert again.hash == arch.hash and again.to_json() == arch.to_json()
    assert Architecture.from_json(arch.to_json()).hash == arch.hash


@settings(max_examples=60, deadline=None)
@given(seeds, st.floats(min_value=0.0, max_value=1.0))
def test_mutate_validates_and_changes(seed: int, rate: float) -> None:
    rng = random.Random(seed)
    parent = SPACE.sample(rng)
    child = SPACE.mutate(parent, rng, rate)
    SPACE.validate(child)
    assert child.hash != parent.hash
    for t in ("normal", "reduce"):
        assert child.choices[t]["concat"] == unused_states(child.choices[t]["blocks"])


def test_mutate_rate_zero_changes_exactly_one_choice() -> None:
    rng = random.Random(3)
    parent = SPACE.sample(rng)
    child = SPACE.mutate(parent, rng, 0.0)
    diffs = [
        (t, b, k)
        for t in ("normal", "reduce")
        for b in range(5)
        for k in range(4)
        if parent.choices[t]["blocks"][b][k] != child.choices[t]["blocks"][b][k]
    ]
    assert len(diffs) == 1


def test_mutate_keeps_a_custom_concat() -> None:
    preset = SPACE.preset("nasnet-a-cifar").arch  # normal concat includes state 0: not the "unused" set
    child = SPACE.mutate(preset, random.Random(0), 0.2)
    assert child.choices["normal"]["concat"] == [0, 2, 3, 4, 5, 6]


@settings(max_examples=40, deadline=None)
@given(seeds)
def test_crossover_takes_blocks_from_parents(seed: int) -> None:
    rng = random.Random(seed)
    a, b = SPACE.sample(rng), SPACE.sample(rng)
    child = SPACE.crossover(a, b, rng)
    SPACE.validate(child)
    for t in ("normal", "reduce"):
        for i, block in enumerate(child.choices[t]["blocks"]):
            assert block in (a.choices[t]["blocks"][i], b.choices[t]["blocks"][i])
        assert child.choices[t]["concat"] == unused_states(child.choices[t]["blocks"])


def _bad(path: list[Any], value: Any) -> dict[str, Any]:
    choices = copy.deepcopy(SPACE.sample(random.Random(0)).choices)
    target = choices
    for p in path[:-1]:
        target = target[p]
    if value is _DELETE:
        del target[path[-1]]
    else:
        target[path[-1]] = value
    return choices


_DELETE = object()


@pytest.mark.parametrize(
    ("path", "value", "field", "text"),
    [
        (["normal", "blocks", 2, 1], "foo", "architecture.choices.normal.blocks[2][1]", "unknown op 'foo'; allowed:"),
        (["reduce", "blocks", 0, 0], 2, "architecture.choices.reduce.blocks[0][0]", "may read 0..1"),
        (["reduce", "blocks", 4, 2], -1, "architecture.choices.reduce.blocks[4][2]", "out of range"),
        (["normal", "blocks", 1, 2], "1", "architecture.choices.normal.blocks[1][2]", "out of range"),
        (["normal", "blocks", 3], [0, "skip_connect"], "architecture.choices.normal.blocks[3]", "[in1, op1, in2, op2]"),
        (["normal", "blocks"], [], "architecture.choices.normal.blocks", "5 blocks"),
        (["normal", "concat"], [], "architecture.choices.normal.concat", "non-empty"),
        (["normal", "concat"], [3, 2], "architecture.choices.normal.concat", "sorted"),
        (["normal", "concat"], [2, 2], "architecture.choices.normal.concat", "duplicates"),
        (["reduce", "concat"], [2, 7], "architecture.choices.reduce.concat[1]", "out of range"),
        (["reduce", "concat"], _DELETE, "architecture.choices.reduce", "'blocks' and 'concat'"),
        (["reduce"], _DELETE, "architecture.choices", "'normal' and 'reduce'"),
    ],
)
def test_validation_names_the_field(path: list[Any], value: Any, field: str, text: str) -> None:
    with pytest.raises(InvalidInput) as err:
        SPACE.validate(_arch(_bad(path, value)))
    assert err.value.field == field
    assert text in err.value.message


def test_validation_checks_space_and_version() -> None:
    arch = SPACE.sample(random.Random(0))
    with pytest.raises(InvalidInput) as err:
        SPACE.validate(Architecture(space="other", version="1", choices=arch.choices))
    assert err.value.field == "architecture.space"
    with pytest.raises(InvalidInput) as err:
        SPACE.validate(Architecture(space="nasnet", version="9", choices=arch.choices))
    assert err.value.field == "architecture.version"


def test_options_ops_and_attention() -> None:
    with pytest.raises(InvalidInput) as err:
        NASNetSpace(ops=["sep_conv_3x3", "foo"])
    assert err.value.field == "space.options.ops"
    assert "unknown op 'foo'" in err.value.message and "sep_conv_7x7" in err.value.message
    small = NASNetSpace(ops=["sep_conv_3x3", "max_pool_3x3"])
    rng = random.Random(0)
    for _ in range(10):
        arch = small.sample(rng)
        ops = {blk[k] for t in ("normal", "reduce") for blk in arch.choices[t]["blocks"] for k in (1, 3)}
        assert ops <= {"sep_conv_3x3", "max_pool_3x3"}
    # an op outside the configured set is rejected
    with pytest.raises(InvalidInput, match="unknown op 'skip_connect'"):
        small.validate(SPACE.preset("darts-v2-cifar").arch)
    hybrid = NASNetSpace(attention=True, attention_heads=4)
    assert "self_attention" in hybrid.op_names and len(hybrid.op_names) == 14
    assert hybrid.macro().attention_heads == 4  # the option fills the macro
    with pytest.raises(InvalidInput, match="unknown op 'self_attention'"):
        SPACE.validate(_arch(_bad(["normal", "blocks", 0, 1], "self_attention")))


def test_op_sets_name_darts_and_nasnet() -> None:
    darts = NASNetSpace(ops="darts")
    assert darts.options.ops == list(DARTS_OPS) and darts.op_names == DARTS_OPS
    assert DARTS_OPS == (
        "none", "max_pool_3x3", "avg_pool_3x3", "skip_connect", "sep_conv_3x3", "sep_conv_5x5", "dil_conv_3x3",
        "dil_conv_5x5",
    )  # fmt: skip
    assert NASNetSpace(ops="nasnet").op_names == SPACE.op_names
    with pytest.raises(InvalidInput) as err:
        NASNetSpace(ops="enas")
    assert err.value.field == "space.options.ops" and "unknown op set 'enas'" in err.value.message
    assert "darts" in err.value.message
    # the DARTS ops build in a standalone network, "none" included
    rng = random.Random(0)
    macro = {"kind": "darts", "layers": 3, "channels": 4, "image_size": 8, "num_classes": 3}
    seen: set[str] = set()
    for _ in range(6):
        arch = darts.sample(rng)
        darts.validate(arch)
        seen |= {blk[k] for t in ("normal", "reduce") for blk in arch.choices[t]["blocks"] for k in (1, 3)}
        net = darts.build(arch, macro).eval()
        with torch.no_grad():
            assert net(torch.randn(2, 3, 8, 8)).shape == (2, 3)
    assert seen <= set(DARTS_OPS) and {"none", "dil_conv_5x5"} <= seen
    assert darts.log10_size() == pytest.approx(2 * sum(2 * math.log10((2 + b) * 8) for b in range(5)))
    with pytest.raises(InvalidInput, match="unknown op 'dil_conv_5x5'"):  # not in the default 13
        SPACE.validate(_arch(_bad(["normal", "blocks", 0, 1], "dil_conv_5x5")))


def test_registered_by_entry_point() -> None:
    space = get_space("nasnet")
    assert isinstance(space, NASNetSpace)
    desc = space.describe()
    assert set(desc["presets"]) == {
        "nasnet-a-cifar",
        "nasnet-a-mobile",
        "nasnet-a-large",
        "pnasnet-5-large",
        "darts-v2-cifar",
    }


def test_log10_size_and_schema() -> None:
    expected = 2 * sum(2 * math.log10((2 + b) * 13) for b in range(5))
    assert SPACE.log10_size() == pytest.approx(expected)
    assert NASNetSpace(ops=["sep_conv_3x3"]).log10_size() == pytest.approx(
        2 * sum(2 * math.log10(2 + b) for b in range(5))
    )
    schema = SPACE.choices_schema()
    assert schema["required"] == ["normal", "reduce"]
    blocks = schema["properties"]["normal"]["properties"]["blocks"]
    assert blocks["prefixItems"][3]["prefixItems"][0]["maximum"] == 4
    assert blocks["prefixItems"][0]["prefixItems"][1]["enum"] == list(OP_NAMES)


def test_tf_genotypes_convert_to_the_canonical_convention() -> None:
    a = nasnet_a()
    # spec: c0 = sep5(h) + sep3(p); c2 = avg3(h) + p; c4 = sep3(h) + h; output = concat[p, c0..c4]
    assert a["normal"]["blocks"][0] == [1, "sep_conv_5x5", 0, "sep_conv_3x3"]
    assert a["normal"]["blocks"][2] == [1, "avg_pool_3x3", 0, "skip_connect"]
    assert a["normal"]["blocks"][4] == [1, "sep_conv_3x3", 1, "skip_connect"]
    assert a["normal"]["concat"] == [0, 2, 3, 4, 5, 6]
    # reduction: c3 = c1 + avg3(c0); output = concat[c1..c4]
    assert a["reduce"]["blocks"][3] == [3, "skip_connect", 2, "avg_pool_3x3"]
    assert a["reduce"]["concat"] == [3, 4, 5, 6]
    p = pnasnet_5()
    assert p["normal"] == p["reduce"]
    assert p["normal"]["blocks"][3] == [4, "sep_conv_3x3", 1, "max_pool_3x3"]
    assert p["normal"]["concat"] == [2, 3, 4, 5, 6]
    assert from_tf(["none", "none"], [0, 1], [0, 1, 0]) == {
        "blocks": [[1, "skip_connect", 0, "skip_connect"]],
        "concat": [1, 2],
    }
    darts = SPACE.preset("darts-v2-cifar").arch.choices
    assert darts["normal"]["blocks"][3] == [0, "skip_connect", 2, "dil_conv_3x3"]
    assert darts["normal"]["concat"] == [2, 3, 4, 5]
    assert live_blocks(darts["normal"]["blocks"], darts["normal"]["concat"]) == [True] * 4 + [False]


def test_presets_validate() -> None:
    for preset in SPACE.presets().values():
        SPACE.validate(preset.arch)
        SPACE.macro(preset.macro)


def test_macro_validation_names_the_field() -> None:
    with pytest.raises(InvalidInput) as err:
        SPACE.macro({"stem": "imagenet", "filters": 4})
    assert err.value.field == "macro.filters"
    with pytest.raises(InvalidInput) as err:
        SPACE.macro({"kind": "nas"})
    assert err.value.field == "macro.kind"
    with pytest.raises(InvalidInput) as err:
        SPACE.macro({"drop_path_keep": 0.0})
    assert err.value.field == "macro.drop_path_keep"
    with pytest.raises(InvalidInput) as err:
        SPACE.macro({"filters": 2, "stem_multiplier": 0.25})
    assert err.value.field == "macro.stem_multiplier"


# ---------------------------------------------------------------- FairNAS groups (strict fairness)

op_subsets = st.lists(st.sampled_from(OP_NAMES), min_size=1, max_size=len(OP_NAMES), unique=True)


@settings(max_examples=60, deadline=None)
@given(seeds, op_subsets, st.booleans())
def test_fair_paths_train_every_op_and_every_input_choice_per_group(seed: int, ops: list[str], attention: bool) -> None:
    """FairNAS strict fairness, inputs included: across one group every op slot of every block of both cells takes
    each op equally often, and every input slot takes each of its 2 + b choices at least once, equally often up to
    one. The group is the smallest multiple of the op count that holds the 6 input choices of the last block."""
    space = NASNetSpace(ops=ops, attention=attention)
    n_ops = len(ops) + (attention and ATTENTION_OP not in ops)
    group = space.fair_paths(random.Random(seed))
    size, most_inputs = len(group), NUM_INPUTS + NUM_BLOCKS - 1
    assert len(space.op_names) == n_ops
    assert size % n_ops == 0 and most_inputs <= size < most_inputs + n_ops
    for arch in group:
        space.validate(arch)
    for cell in CELL_TYPES:
        for b in range(NUM_BLOCKS):
            blocks = [arch.choices[cell]["blocks"][b] for arch in group]
            for slot in (1, 3):
                assert Counter(block[slot] for block in blocks) == Counter(space.op_names * (size // n_ops))
            for slot in (0, 2):
                counts = Counter(block[slot] for block in blocks)
                assert set(counts) == set(range(NUM_INPUTS + b)), (cell, b, slot)  # every choice, none outside
                assert max(counts.values()) - min(counts.values()) <= 1, (cell, b, slot, counts)
        for arch in group:
            assert arch.choices[cell]["concat"] == unused_states(arch.choices[cell]["blocks"])


@settings(max_examples=20, deadline=None)
@given(seeds)
def test_fair_paths_are_seeded(seed: int) -> None:
    space = NASNetSpace(ops=["sep_conv_3x3", "max_pool_3x3", "skip_connect"])
    first = [a.hash for a in space.fair_paths(random.Random(seed))]
    assert first == [a.hash for a in space.fair_paths(random.Random(seed))]
    rng = random.Random(seed)
    assert [a.hash for a in space.fair_paths(rng)] != [a.hash for a in space.fair_paths(rng)]  # next group differs
