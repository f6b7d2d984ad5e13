"""The HyTra space: path rules and counts, sampling, mutation, crossover, validation, macro checks."""

from __future__ import annotations

import itertools
import json
import math
import random

import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from nas.arch import Architecture
from nas.errors import InvalidInput
from nas.space import get_space
from searchspaces.hytra import HyTraSpace
from searchspaces.hytra.encoding import OP_KIND, OP_LEVEL

SPACE = HyTraSpace()
SMALL = {"stem": "small", "stem_channels": 8, "widths": [16, 32, 64, 128], "head_dim": 8, "num_classes": 3}
seeds = st.integers(min_value=0, max_value=2**32 - 1)
T0 = [[5, 4, 3, 3], [3, 2, 3, 0], [0, 0, 1, 0], [0, 0, 0, 0]]


def arch(blocks: list[list[int]]) -> Architecture:
    return Architecture(space="hytra", version=SPACE.version, choices={"blocks": blocks})


def assert_follows_rules(blocks: list[list[int]]) -> None:
    """The spec's rules, checked from the levels alone."""
    assert len(blocks) == 4 and all(len(b) == 4 for b in blocks)
    level = 0  # the stem's output
    for k, path in enumerate(blocks):
        for j, op in enumerate(path):
            lv = OP_LEVEL[op]
            assert lv - level in (0, 1), f"block {k} layer {j}: level {level} -> {lv}"
            if j == 0:  # BossNAS builds block k for inputs at levels >= 0, 1, 2, 2 only
                assert level >= (0, 1, 2, 2)[k], f"block {k} reads level {level}"
            level = lv
    kinds_at = {(OP_KIND[o], OP_LEVEL[o]) for path in blocks for o in path}
    assert all(lv in (2, 3) for kind, lv in kinds_at if kind == "att"), "ResAtt only at 14x14 and 7x7"


def test_candidate_paths_per_block_match_the_public_code() -> None:
    blocks = SPACE.blocks()
    assert [b.index for b in blocks] == [0, 1, 2, 3]
    # every path of the lists of the input levels a block can read (the lists themselves: test_hytra_paths.py)
    assert [len(b.candidates) for b in blocks] == [51, 115, 80, 80]
    for b in blocks:
        assert len(set(b.candidates)) == len(b.candidates)
        levels = {tuple(OP_LEVEL[o] for o in p) for p in b.candidates}
        assert all(0 <= lv[j + 1] - lv[j] <= 1 for lv in levels for j in range(3))
    assert {OP_LEVEL[p[0]] for p in blocks[0].candidates} == {0, 1}
    # block 1 never runs at 56x56, blocks 2 and 3 only at 14x14 and 7x7 (block 3 at 14x14 too)
    assert {OP_LEVEL[o] for p in blocks[1].candidates for o in p} == {1, 2, 3}
    assert {OP_LEVEL[o] for p in blocks[2].candidates for o in p} == {2, 3}
    assert {OP_LEVEL[o] for p in blocks[3].candidates for o in p} == {2, 3}


def test_space_size_equals_a_brute_force_count_over_level_sequences() -> None:
    ops_per_level = [sum(OP_LEVEL[o] == lv for o in range(6)) for lv in range(4)]
    total = 0
    for steps in itertools.product((0, 1), repeat=16):  # level change entering each layer (from the stem at 0)
        levels = list(itertools.accumulate(steps))
        if levels[-1] > 3 or any(levels[4 * k - 1] < (0, 1, 2, 2)[k] for k in range(1, 4)):
            continue
        total += math.prod(ops_per_level[lv] for lv in levels)
    assert total == 1_615_872
    assert SPACE.log10_size() == pytest.approx(math.log10(total))
    assert SPACE.describe()["num_architectures"] == total


@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(seed=seeds)
def test_sampled_architectures_follow_the_rules_and_build(seed: int) -> None:
    a = SPACE.sample(random.Random(seed))
    SPACE.validate(a)
    assert_follows_rules(a.choices["blocks"])
    net = SPACE.build(a, SMALL).eval()
    with torch.no_grad():
        out = net(torch.randn(2, 3, 16, 16))
    assert out.shape == (2, 3) and torch.isfinite(out).all()


def test_sampling_reaches_every_candidate_start_of_every_block() -> None:
    rng = random.Random(0)
    starts = [set() for _ in range(4)]
    for _ in range(400):
        for k, path in enumerate(SPACE.sample(rng).choices["blocks"]):
            starts[k].add(OP_LEVEL[path[0]])
    assert starts == [{0, 1}, {1, 2, 3}, {2, 3}, {2, 3}]


@settings(max_examples=40, deadline=None)
@given(seed=seeds, rate=st.floats(min_value=0.01, max_value=1.0))
def test_mutation_keeps_the_rules_and_changes_something(seed: int, rate: float) -> None:
    rng = random.Random(seed)
    parent = SPACE.sample(rng)
    child = SPACE.mutate(parent, rng, rate)
    assert_follows_rules(child.choices["blocks"])
    assert child != parent


@settings(max_examples=40, deadline=None)
@given(seed=seeds)
def test_crossover_takes_whole_blocks_from_the_parents(seed: int) -> None:
    rng = random.Random(seed)
    a, b = SPACE.sample(rng), SPACE.sample(rng)
    child = SPACE.crossover(a, b, rng)
    assert_follows_rules(child.choices["blocks"])
    for k, path in enumerate(child.choices["blocks"]):
        assert path in (a.choices["blocks"][k], b.choices["blocks"][k])


@pytest.mark.parametrize(
    ("blocks", "field", "words"),
    [
        ([[5, 4, 3, 3], [3, 2, 3, 0], [0, 3, 1, 0], [0, 0, 0, 0]], "blocks[2][1]", "cannot rise"),
        ([[5, 2, 3, 3], [3, 2, 3, 0], [0, 0, 1, 0], [0, 0, 0, 0]], "blocks[0][1]", "only once"),
        ([[2, 2, 3, 3], [3, 2, 3, 0], [0, 0, 1, 0], [0, 0, 0, 0]], "blocks[0][0]", "only once"),
        (
            [[5, 5, 5, 5], [4, 2, 0, 0], [0, 0, 0, 0], [0, 0, 0, 0]],
            "blocks[1][0]",
            "cannot read block 0's output at level 0",
        ),
        (
            [[5, 5, 5, 4], [4, 4, 4, 4], [3, 3, 3, 3], [1, 1, 1, 1]],
            "blocks[2][0]",
            "block 2 for inputs at levels 2, 3 only",
        ),
        ([[5, 4, 3, 3], [3, 2, 3, 6], [0, 0, 1, 0], [0, 0, 0, 0]], "blocks[1][3]", "not an op index"),
        ([[5, 4, 3, 3], [3, 2, 3, "ResAtt"], [0, 0, 1, 0], [0, 0, 0, 0]], "blocks[1][3]", "0 = ResAtt@7x7"),
        ([[5, 4, 3, 3], [3, 2, 3], [0, 0, 1, 0], [0, 0, 0, 0]], "blocks[1]", "4 op indices"),
        ([[5, 4, 3, 3]], "blocks", "4 blocks"),
    ],
)
def test_validate_names_the_bad_field(blocks: list, field: str, words: str) -> None:
    with pytest.raises(InvalidInput) as info:
        SPACE.validate(arch(blocks))
    assert info.value.field == f"architecture.choices.{field}"
    assert words in info.value.message


def test_validate_checks_keys_space_and_version() -> None:
    SPACE.validate(arch(T0))
    with pytest.raises(InvalidInput, match="exactly the key 'blocks'"):
        SPACE.validate(Architecture(space="hytra", version="1", choices={"blocks": T0, "extra": 1}))
    with pytest.raises(InvalidInput) as info:
        SPACE.validate(Architecture(space="nasnet", version="1", choices={"blocks": T0}))
    assert info.value.field == "architecture.space"


def test_describe_is_json_and_reports_blocks() -> None:
    d = json.loads(json.dumps(get_space("hytra").describe()))
    assert d["name"] == "hytra" and d["block_wise"] is True
    assert d["block_candidates"] == [51, 115, 80, 80]
    assert d["num_architectures"] == 1_615_872
    assert d["ops"]["2"] == {"name": "ResAtt@14x14", "level": 2}
    assert set(d["presets"]) == {"bossnet-t0", "bossnet-t0-nose", "bossnet-t1"}
    assert d["choices_schema"]["properties"]["blocks"]["minItems"] == 4


@pytest.mark.parametrize(
    ("macro", "field"),
    [
        ({"widths": [16, 32, 64]}, "macro.widths"),
        ({"bottlenecks": [4, 8, 16, 0]}, "macro.bottlenecks"),
        ({"stage_strides": [1, 2, 3, 2]}, "macro.stage_strides"),
        ({"widths": [256, 512, 1024, 2048], "head_dim": 48}, "macro.head_dim"),
        ({"stem": "cifar"}, "macro.stem"),
        ({"form": "supernet"}, "macro.form"),
    ],
)
def test_macro_errors_name_the_field(macro: dict, field: str) -> None:
    with pytest.raises(InvalidInput) as info:
        SPACE.macro(macro)
    assert info.value.field == field


def test_supernet_refuses_the_retraining_form() -> None:
    with pytest.raises(InvalidInput) as info:
        SPACE.supernet({**SMALL, "form": "retrain"})
    assert info.value.field == "macro.form"
