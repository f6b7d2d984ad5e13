"""Candidate paths of HyTra's blocks and the rules that join them into architectures (see docs/hytra.md).

Rules (levels as in :mod:`searchspaces.hytra.encoding`; the stem output is at level 0):

1. Searchable down-sampling: every layer stays at the level of its input or halves the resolution once (level + 1);
   the resolution never rises. The first layer reads the stem (level 0), so it runs at level 0 or 1.
2. Restricted path sets (BossNAS public code): the candidates of block k are the 4-layer paths whose first layer is
   at level k or k + 1, i.e. the paths a block can run on an input at level k. Counts: 51 / 99 / 80 / 16. As a
   consequence block 1 never runs at 56x56 and blocks 2-3 only at 14x14 and 7x7 (block 3 only at 7x7).
3. Joining: block k + 1 reads the output of block k, so by rule 1 its first layer is at the level where block k
   ended or one lower; with rule 2 this is the whole constraint. A candidate of block k can run on an input at level
   s when its first layer is at s or s + 1 (:func:`paths_from`).

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
    block_first_levels,
    ops_at_level,
)

Path = tuple[int, ...]


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


@cache
def block_candidates(block: int) -> tuple[Path, ...]:
    """The candidate paths (op indices) of ``block``, ordered by level sequence, then by ops."""
    if not 0 <= block < NUM_BLOCKS:
        raise ValueError(f"block must be in 0..{NUM_BLOCKS - 1}, got {block}")
    paths: list[Path] = []
    for levels in level_sequences(block_first_levels(block)):
        combos: list[Path] = [()]
        for lv in levels:
            combos = [(*c, o) for c in combos for o in ops_at_level(lv)]
        paths += combos
    return tuple(paths)


def path_levels(path: Path) -> tuple[int, ...]:
    return tuple(OP_LEVEL[o] for o in path)


def end_level(path: Path) -> int:
    return OP_LEVEL[path[-1]]


def runs_from(path: Path, start_level: int) -> bool:
    """Whether ``path`` can read an input at ``start_level`` (its first layer stays there or halves once)."""
    return OP_LEVEL[path[0]] - start_level in (0, 1)


@cache
def paths_from(block: int, start_level: int) -> tuple[Path, ...]:
    """The candidates of ``block`` that can run on an input at ``start_level``."""
    return tuple(p for p in block_candidates(block) if runs_from(p, start_level))


@cache
def start_levels(block: int) -> tuple[int, ...]:
    """Input levels on which at least one candidate of ``block`` can run (block 0: the stem level only)."""
    if block == 0:
        return (STEM_LEVEL,)
    return tuple(s for s in range(NUM_LEVELS) if paths_from(block, s))


@cache
def completions(block: int, start_level: int) -> int:
    """Number of ways to choose blocks ``block``..last when ``block`` reads an input at ``start_level``."""
    if block == NUM_BLOCKS:
        return 1
    return sum(completions(block + 1, end_level(p)) for p in paths_from(block, start_level))


def completes(block: int, path: Path) -> bool:
    """Whether the blocks after ``block`` can follow ``path`` (False only for block-0 paths ending at 7x7)."""
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
            if j == 0 and lv not in block_first_levels(k):
                allowed = " or ".join(str(x) for x in block_first_levels(k))
                return (
                    f"[{k}][0]",
                    f"block {k} must start at level {allowed} (BossNAS restricted path set); {describe_op(op)} is "
                    f"at level {lv}",
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
