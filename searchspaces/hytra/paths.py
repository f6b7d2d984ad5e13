"""Candidate paths of HyTra's blocks and the rules that join them into architectures (see docs/hytra.md).

Rules (levels as in :mod:`searchspaces.hytra.encoding`; the stem output is at level 0):

1. Searchable down-sampling: every layer stays at the level of its input or halves the resolution once (level + 1);
   the resolution never rises. The first layer reads the stem (level 0), so it runs at level 0 or 1.
2. Restricted path sets (BossNAS public code, ``restricted_path``): the candidates of a block that reads an input
   at level s are the 4-layer paths whose first layer is at s or s + 1 (:func:`entry_paths`; 51 / 99 / 80 / 16
   paths for s = 0..3). Which list a block gets depends on the level where the previous block's chosen path ended,
   not on the block's index (``restricted_path[pos + 1]``).
3. What the reference supernet builds: block k holds layers at levels >= ``DEFAULT_START_LEVELS[k]`` = 0, 1, 2, 2
   only (its ``stage_depths`` defaults [4, 3, 2, 2], depth = 4 - level), and its shallowest level has no
   down-sampling branch. So block k >= 1 can read an input at that level or lower resolutions only
   (:func:`start_levels`); block 0 reads the stem. Before a path is chosen, block k's list is the one of its
   default level (51 / 99 / 80 / 80 paths).

An architecture is valid iff its 16 levels follow rule 1 from the stem and every block k >= 1 reads an input at a
level in ``start_levels(k)``. Candidates per block (over all its input levels): 51 / 115 / 80 / 80.

Pure Python; the functions are cached, the path lists are tuples of op indices.
"""

import math
import random
from functools import cache

from searchspaces.hytra.encoding import (
    LAYERS_PER_BLOCK,
    NUM_BLOCKS,
    NUM_LEVELS,
    NUM_OPS,
    OP_LEVEL,
    OP_NAMES,
    STEM_LEVEL,
    ops_at_level,
)

Path = tuple[int, ...]

# BossNAS's ``stage_depths`` defaults [4, 3, 2, 2] as levels (level = 4 - depth): the lowest level block k's layers
# run at, and the level of the input its candidates are listed for before the previous block's path is chosen.
DEFAULT_START_LEVELS = (0, 1, 2, 2)


@cache
def level_sequences(first_levels: tuple[int, ...], length: int = LAYERS_PER_BLOCK) -> tuple[tuple[int, ...], ...]:
    """All level sequences of ``length`` starting in ``first_levels`` whose steps are 0 or +1 (capped at the last
    level), in lexicographic order."""
    out: list[tuple[int, ...]] = []

    def extend(seq: tuple[int, ...]) -> None:
        if len(seq) == length:
            out.append(seq)
            return
        last = seq[-1]
        for nxt in (last, last + 1):
            if nxt < NUM_LEVELS:
                extend((*seq, nxt))

    for first in sorted(first_levels):
        extend((first,))
    return tuple(out)


def _paths_on(levels: tuple[int, ...]) -> list[Path]:
    combos: list[Path] = [()]
    for lv in levels:
        combos = [(*c, o) for c in combos for o in ops_at_level(lv)]
    return combos


@cache
def entry_paths(start_level: int) -> tuple[Path, ...]:
    """The paths that run on an input at ``start_level`` (BossNAS's ``restricted_path[4 - start_level]``): first
    layer at ``start_level`` or one lower, ordered by level sequence, then by ops."""
    if not 0 <= start_level < NUM_LEVELS:
        raise ValueError(f"start_level must be in 0..{NUM_LEVELS - 1}, got {start_level}")
    firsts = tuple(lv for lv in (start_level, start_level + 1) if lv < NUM_LEVELS)
    return tuple(p for levels in level_sequences(firsts) for p in _paths_on(levels))


def _check_block(block: int) -> None:
    if not 0 <= block < NUM_BLOCKS:
        raise ValueError(f"block must be in 0..{NUM_BLOCKS - 1}, got {block}")


@cache
def start_levels(block: int) -> tuple[int, ...]:
    """Input levels ``block`` can read: the stem's for block 0, else its default level and the lower resolutions."""
    _check_block(block)
    if block == 0:
        return (STEM_LEVEL,)
    return tuple(range(DEFAULT_START_LEVELS[block], NUM_LEVELS))


@cache
def paths_from(block: int, start_level: int) -> tuple[Path, ...]:
    """The candidates of ``block`` on an input at ``start_level`` (none where the block cannot read that level)."""
    return entry_paths(start_level) if start_level in start_levels(block) else ()


def default_paths(block: int) -> tuple[Path, ...]:
    """The candidates of ``block`` before the previous block's path is chosen (51 / 99 / 80 / 80)."""
    _check_block(block)
    return paths_from(block, DEFAULT_START_LEVELS[block])


@cache
def block_candidates(block: int) -> tuple[Path, ...]:
    """Every candidate path of ``block`` over the input levels it can read (51 / 115 / 80 / 80), ordered by level
    sequence, then by ops."""
    found = {p for s in start_levels(block) for p in paths_from(block, s)}
    return tuple(sorted(found, key=lambda p: (path_levels(p), p)))


def path_levels(path: Path) -> tuple[int, ...]:
    return tuple(OP_LEVEL[o] for o in path)


def end_level(path: Path) -> int:
    return OP_LEVEL[path[-1]]


@cache
def completions(block: int, start_level: int) -> int:
    """Number of ways to choose blocks ``block``..last when ``block`` reads an input at ``start_level``."""
    if block == NUM_BLOCKS:
        return 1
    return sum(completions(block + 1, end_level(p)) for p in paths_from(block, start_level))


def completes(block: int, path: Path) -> bool:
    """Whether the blocks after ``block`` can follow ``path`` (False only for block 0's [5, 5, 5, 5], ending at
    level 0, and block 1's [4, 4, 4, 4], ending at level 1)."""
    return completions(block + 1, end_level(path)) > 0


def num_architectures() -> int:
    return completions(0, STEM_LEVEL)


def log10_num_architectures() -> float:
    return math.log10(num_architectures())


def sample_paths(rng: random.Random) -> list[Path]:
    """A uniformly random architecture, as its per-block paths (exact: weighted by the completion counts)."""
    paths: list[Path] = []
    level = STEM_LEVEL
    for k in range(NUM_BLOCKS):
        options = [p for p in paths_from(k, level) if completes(k, p)]
        weights = [completions(k + 1, end_level(p)) for p in options]
        r = rng.randrange(sum(weights))
        for p, w in zip(options, weights, strict=True):
            if r < w:
                paths.append(p)
                level = end_level(p)
                break
            r -= w
    return paths


def describe_op(op: int) -> str:
    return f"{OP_NAMES[op]} (op {op})"


def check_paths(paths: list[Path]) -> tuple[str, str] | None:
    """The first rule ``paths`` (well-formed op indices) break, as (field suffix, message); None when valid.

    The field suffix is ``[k]`` or ``[k][j]`` (block k, layer j).
    """
    level = STEM_LEVEL
    for k, path in enumerate(paths):
        for j, op in enumerate(path):
            lv = OP_LEVEL[op]
            if lv < level:
                where = "the stem" if (k, j) == (0, 0) else f"a layer at level {level}"
                return f"[{k}][{j}]", f"{describe_op(op)} runs at level {lv} after {where}: resolution cannot rise"
            if lv > level + 1:
                return (
                    f"[{k}][{j}]",
                    f"{describe_op(op)} runs at level {lv} after level {level}: a layer may halve the resolution "
                    "only once (one level down)",
                )
            if j == 0 and level not in start_levels(k):
                allowed = ", ".join(str(x) for x in start_levels(k))
                return (
                    f"[{k}][0]",
                    f"block {k} cannot read block {k - 1}'s output at level {level}: BossNAS builds block {k} for "
                    f"inputs at levels {allowed} only (restricted path sets); {describe_op(op)} would run on it",
                )
            level = lv
    return None


def well_formed(value: object) -> tuple[str, str] | None:
    """Shape and type errors of ``choices['blocks']`` as (field suffix, message); None when well-formed."""
    if not isinstance(value, list) or len(value) != NUM_BLOCKS:
        return "", f"must be a list of {NUM_BLOCKS} blocks, each a list of {LAYERS_PER_BLOCK} op indices"
    for k, path in enumerate(value):
        if not isinstance(path, list) or len(path) != LAYERS_PER_BLOCK:
            return f"[{k}]", f"must be a list of {LAYERS_PER_BLOCK} op indices"
        for j, op in enumerate(path):
            if not isinstance(op, int) or isinstance(op, bool) or not 0 <= op < NUM_OPS:
                names = ", ".join(f"{i} = {n}" for i, n in enumerate(OP_NAMES))
                return f"[{k}][{j}]", f"{op!r} is not an op index; allowed: {names}"
    return None
