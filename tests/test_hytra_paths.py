"""HyTra's path sets against BossNAS's rule, derived here on its own terms (issue 9, item 5).

The public code (``hytra_supernet.py``, ``val_hook.py``, ``hytra_paths.py``) works in *depths* (0 = 7x7 ... 3 = 56x56):
- ``restricted_path[K]`` lists the 4-layer paths whose first layer is at depth K - 1 or K - 2 and whose every later
  layer keeps the depth or goes one deeper (lower resolution); ops per depth are {0: [0, 1], 1: [2, 3], 2: [4], 3: [5]};
- block 0 gets ``restricted_path[4]``; after block k's path is chosen, ``pos = op // 2 if op < 4 else op - 2`` of its
  last op and block k + 1 gets ``restricted_path[pos + 1]``;
- block k's supernet holds layers at depths < ``stage_depths[k]`` with the defaults [4, 3, 2, 2] (also the lists
  before a path is chosen), and a layer at depth d has a branch from depth d + 1 only when d < stage_depths[k] - 1;
  block 0's first layer reads the stem through adapters of any stride.
An architecture the reference can build is one whose every layer exists. This module counts them block by block
over explicit path lists and checks the space, its supernet and its operators against that count and those lists.
"""

from __future__ import annotations

import itertools
import random
from collections import Counter
from functools import cache

import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from nas.arch import Architecture
from nas.errors import InvalidInput
from searchspaces.hytra import HyTraSpace
from searchspaces.hytra.encoding import OP_LEVEL
from searchspaces.hytra.paths import block_candidates, default_paths, paths_from, start_levels
from tests.test_hytra_supernet import supernet

SPACE = HyTraSpace()
OPS_AT_DEPTH = {0: (0, 1), 1: (2, 3), 2: (4,), 3: (5,)}
STAGE_DEPTHS = (4, 3, 2, 2)
REFERENCE_SIZE = 1_615_872


def depth(op: int) -> int:
    return next(d for d, ops in OPS_AT_DEPTH.items() if op in ops)


@cache
def restricted_path(key: int) -> tuple[tuple[int, ...], ...]:
    out = []
    for first in (key - 1, key - 2):
        if first < 0:
            continue
        for steps in itertools.product((0, 1), repeat=3):
            depths = list(itertools.accumulate((first, *(-s for s in steps))))
            if min(depths) < 0:
                continue
            out += list(itertools.product(*(OPS_AT_DEPTH[d] for d in depths)))
    return tuple(out)


def next_key(path: tuple[int, ...]) -> int:
    op = path[-1]
    pos = op // 2 if op < 4 else op - 2
    return pos + 1


def builds(block: int, path: tuple[int, ...], key: int) -> bool:
    """Whether every layer of ``path`` exists in block ``block`` when the block's input is at depth key - 1."""
    limit = STAGE_DEPTHS[block]
    prev = key - 1
    for j, op in enumerate(path):
        d = depth(op)
        if d >= limit:
            return False
        if d == prev - 1 and not (block == 0 and j == 0) and d >= limit - 1:
            return False  # no branch from the higher resolution at the block's shallowest depth
        prev = d
    return True


def reference_lists(block: int, key: int) -> tuple[tuple[int, ...], ...]:
    return tuple(p for p in restricted_path(key) if builds(block, p, key))


@cache
def reference_count(block: int, key: int) -> int:
    if block == 4:
        return 1
    return sum(reference_count(block + 1, next_key(p)) for p in reference_lists(block, key))


def reference_accepts(blocks: list[list[int]]) -> bool:
    key = 4
    for k, path in enumerate(blocks):
        if tuple(path) not in reference_lists(k, key):
            return False
        key = next_key(tuple(path))
    return True


def arch(blocks: list[list[int]]) -> Architecture:
    return SPACE.make({"blocks": blocks})


def test_restricted_lists_have_the_public_sizes() -> None:
    assert [len(restricted_path(key)) for key in (4, 3, 2, 1)] == [51, 99, 80, 16]


def test_the_space_holds_exactly_the_architectures_the_reference_builds() -> None:
    assert reference_count(0, 4) == REFERENCE_SIZE
    assert SPACE.describe()["num_architectures"] == REFERENCE_SIZE
    assert SPACE.log10_size() == pytest.approx(6.2084, abs=1e-4)


def test_each_block_gets_the_list_of_the_level_the_previous_block_ended_at() -> None:
    for k in range(4):
        for level in range(4):
            key = 4 - level  # restricted_path[pos + 1] for a path ending at this level
            want = reference_lists(k, key) if k else (reference_lists(0, 4) if level == 0 else ())
            assert set(paths_from(k, level)) == set(want), (k, level)
            # the reference builds either all of a list or none of it
            assert want in ((), restricted_path(key)) or k == 0
    # before a path is chosen: the lists of the defaults [4, 3, 2, 2]
    assert [set(default_paths(k)) for k in range(4)] == [set(restricted_path(key)) for key in STAGE_DEPTHS]
    assert [len(block_candidates(k)) for k in range(4)] == [51, 115, 80, 80]
    assert start_levels(1) == (1, 2, 3) and start_levels(3) == (2, 3)


def test_the_old_static_lists_lost_and_added_what_the_issue_counts() -> None:
    """The previous sets (block k's first layer at level k or k + 1) held 972,288 architectures, 28,160 of which the
    reference cannot build; they lacked 671,744 of the reference's."""

    all_paths = sorted({p for key in (1, 2, 3, 4) for p in restricted_path(key)})

    @cache
    def counts(block: int, level: int, key: int | None) -> tuple[int, int]:
        """(old-set architectures from here, those among them the reference builds); ``key`` is the reference's
        list for this block, None once the reference could not build the prefix."""
        if block == 4:
            return 1, int(key is not None)
        total = both = 0
        for path in all_paths:
            first = OP_LEVEL[path[0]]
            if first not in (block, block + 1) or first - level not in (0, 1):
                continue
            ref = key is not None and path in reference_lists(block, key)
            t, b = counts(block + 1, OP_LEVEL[path[-1]], next_key(path) if ref else None)
            total, both = total + t, both + b
        return total, both

    total, both = counts(0, 0, 4)
    assert total == 972_288
    assert total - both == 28_160
    assert REFERENCE_SIZE - both == 671_744


def test_architectures_only_the_reference_holds_are_valid_now() -> None:
    for blocks in (
        [[4, 2, 0, 0], [1, 1, 1, 1], [0, 0, 0, 0], [0, 0, 0, 0]],  # block 0 ends at 7x7
        [[5, 4, 3, 3], [3, 2, 3, 2], [2, 2, 2, 2], [2, 2, 3, 3]],  # block 3 at 14x14
        [[5, 4, 4, 4], [4, 4, 3, 3], [3, 3, 3, 3], [3, 3, 0, 0]],  # block 1 starts at 28x28 and stays there
    ):
        assert reference_accepts(blocks)
        SPACE.validate(arch(blocks))


def test_architectures_the_reference_cannot_build_are_rejected() -> None:
    blocks = [[5, 5, 5, 4], [4, 4, 4, 4], [3, 3, 3, 3], [1, 1, 1, 1]]  # block 2 reading 28x28 (the old sets allowed)
    assert not reference_accepts(blocks)
    with pytest.raises(InvalidInput) as info:
        SPACE.validate(Architecture(space="hytra", version=SPACE.version, choices={"blocks": blocks}))
    assert info.value.field == "architecture.choices.blocks[2][0]"


def _walk(draw_bits: list[int], draw_ops: list[int]) -> list[list[int]]:
    """16 ops along a level walk (mostly valid by rule 1; the block rule decides the rest)."""
    level, ops = 0, []
    for bit, pick in zip(draw_bits, draw_ops, strict=True):
        level = min(3, level + bit)
        choices = [o for o in range(6) if OP_LEVEL[o] == level]
        ops.append(choices[pick % len(choices)])
    return [ops[4 * k : 4 * k + 4] for k in range(4)]


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    bits=st.lists(st.integers(0, 1), min_size=16, max_size=16),
    picks=st.lists(st.integers(0, 1), min_size=16, max_size=16),
    noise=st.lists(st.tuples(st.integers(0, 15), st.integers(0, 5)), max_size=2),
)
def test_validation_agrees_with_the_reference_rule(bits: list[int], picks: list[int], noise: list) -> None:
    blocks = _walk(bits, picks)
    for i, op in noise:
        blocks[i // 4][i % 4] = op
    candidate = Architecture(space="hytra", version=SPACE.version, choices={"blocks": blocks})
    if reference_accepts(blocks):
        SPACE.validate(candidate)
    else:
        with pytest.raises(InvalidInput):
            SPACE.validate(candidate)


def test_sampling_is_uniform_over_the_reference_space() -> None:
    """The share of architectures whose last block ends at 14x14, exact (enumerated) against 3,000 samples."""

    @cache
    def ending_at_14(block: int, key: int) -> int:
        if block == 3:
            return sum(1 for p in reference_lists(3, key) if OP_LEVEL[p[-1]] == 2)
        return sum(ending_at_14(block + 1, next_key(p)) for p in reference_lists(block, key))

    share = ending_at_14(0, 4) / REFERENCE_SIZE
    rng = random.Random(0)
    samples = [SPACE.sample(rng) for _ in range(3000)]
    assert all(reference_accepts(a.choices["blocks"]) for a in samples)
    seen = sum(OP_LEVEL[a.choices["blocks"][3][-1]] == 2 for a in samples) / len(samples)
    assert 0.0 < share < 1.0
    assert seen == pytest.approx(share, abs=4 * (share * (1 - share) / len(samples)) ** 0.5)


def test_mutation_and_crossover_reach_the_new_architectures_and_stay_inside() -> None:
    rng = random.Random(1)
    ends: Counter[int] = Counter()
    block1_starts: Counter[int] = Counter()
    for _ in range(300):
        a, b = SPACE.sample(rng), SPACE.sample(rng)
        for child in (SPACE.mutate(a, rng, 0.2), SPACE.crossover(a, b, rng)):
            assert reference_accepts(child.choices["blocks"])
            ends[OP_LEVEL[child.choices["blocks"][3][-1]]] += 1
            block1_starts[OP_LEVEL[child.choices["blocks"][1][0]]] += 1
    assert set(ends) == {2, 3}
    assert set(block1_starts) == {1, 2, 3}


@pytest.mark.parametrize(
    "blocks",
    [
        [[5, 4, 3, 3], [3, 2, 3, 2], [2, 2, 2, 2], [2, 2, 3, 3]],  # ends at 14x14: the level-2 classifier
        [[4, 2, 0, 0], [1, 1, 1, 1], [0, 0, 0, 0], [0, 0, 0, 0]],  # block 0 ends at 7x7
    ],
)
def test_supernet_runs_and_extracts_the_new_architectures(blocks: list[list[int]]) -> None:
    net = supernet()
    a = arch(blocks)
    net.set_active(a)
    x = torch.randn(2, 3, 16, 16, generator=torch.Generator().manual_seed(3))
    with torch.no_grad():
        want = net(x)
        got = net.extract(a).eval()(x)
        h, level = net.stem_forward(x), 0
        for k, path in enumerate(net.paths_of(a)):
            h = net.forward_block(k, h, path, level)
            level = net.path_end_level(k, path)
        torch.testing.assert_close(net.head_forward(h, level), want)
    torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-5)
    with pytest.raises(InvalidInput, match="last block ends at levels 2, 3"):
        net.head_forward(h, 1)
