"""Turning block ratings into architectures (spec section 3): BossNAS's greedy block-by-block choice and the
paper's evolutionary search over whole architectures, with fitness = the sum of the blocks' ratings.

An architecture can be scored from the ratings when each of its block paths has one. Every candidate of a block is
rated in the independent mode (each block reads an input at the level all its candidates run on); in the
sequential mode block k is rated on the output of the best paths before it, so only the candidates that run there
are. :class:`RatedSpace` is the set of architectures made of rated paths, with a uniform sampler over it.
"""

from __future__ import annotations

import random
from functools import cache

from nas.arch import Architecture
from nas.strategies.bossnas.bootstrap import LOSS_OFFSET, Path, as_path
from nas.supernet import BlockwiseSupernet

Ratings = dict[int, dict[Path, float]]


class RatedSpace:
    """The architectures of a block-wise supernet's space whose block paths all have a rating."""

    def __init__(self, supernet: BlockwiseSupernet, ratings: Ratings) -> None:
        self.sn = supernet
        self.ratings = ratings
        self.num_blocks = supernet.num_blocks
        self.start_level = supernet.path_start_levels(0)[0]
        missing = [k for k in range(self.num_blocks) if not ratings.get(k)]
        if missing:
            raise ValueError(f"blocks {missing} have no ratings")
        self._options = cache(self._options_uncached)
        self._completions = cache(self._completions_uncached)

    def _options_uncached(self, k: int, level: int) -> tuple[Path, ...]:
        """Rated paths of block ``k`` that run on an input at ``level`` and that the later blocks can follow."""
        runnable = {as_path(p) for p in self.sn.block_paths(k, level)}
        out = []
        for p in sorted(self.ratings[k]):
            if p not in runnable or not self.sn.path_completes(k, p):
                continue
            if k == self.num_blocks - 1 or self._completions(k + 1, self.sn.path_end_level(k, p)) > 0:
                out.append(p)
        return tuple(out)

    def _completions_uncached(self, k: int, level: int) -> int:
        if k == self.num_blocks:
            return 1
        return sum(self._completions(k + 1, self.sn.path_end_level(k, p)) for p in self._options(k, level))

    def size(self) -> int:
        return self._completions(0, self.start_level)

    def sample(self, rng: random.Random) -> Architecture:
        """Uniform over the rated architectures (each path weighted by its number of completions)."""
        if self.size() == 0:
            raise ValueError("no architecture is made of rated paths only")
        level, paths = self.start_level, []
        for k in range(self.num_blocks):
            options = self._options(k, level)
            weights = [self._completions(k + 1, self.sn.path_end_level(k, p)) for p in options]
            r = rng.randrange(sum(weights))
            for p, w in zip(options, weights, strict=True):
                if r < w:
                    paths.append(p)
                    level = self.sn.path_end_level(k, p)
                    break
                r -= w
        return self.sn.arch_from_paths(paths)

    def contains(self, arch: Architecture) -> bool:
        return all(as_path(p) in self.ratings[k] for k, p in enumerate(self.sn.paths_of(arch)))

    def block_losses(self, arch: Architecture) -> list[float]:
        return [self.ratings[k][as_path(p)] for k, p in enumerate(self.sn.paths_of(arch))]


def arch_metrics(losses: list[float]) -> dict[str, float]:
    """Candidate metrics from the per-block ratings: ``bossnas_score`` (sum of loss + 4; lower is better, the
    rank-correlation form), ``bossnas_loss`` (sum of losses) and each block's loss."""
    out = {f"block{k}_loss": float(v) for k, v in enumerate(losses)}
    out["bossnas_loss"] = float(sum(losses))
    out["bossnas_score"] = float(sum(v + LOSS_OFFSET for v in losses))
    return out


def best_path(supernet: BlockwiseSupernet, ratings: dict[Path, float], k: int, level: int) -> Path:
    """Block ``k``'s best-rated path among those that run on ``level`` and can be completed (ties: lowest ops)."""
    runnable = {as_path(p) for p in supernet.block_paths(k, level)}
    options = [p for p in ratings if p in runnable and supernet.path_completes(k, p)]
    if not options:
        raise ValueError(f"block {k} has no rated path that runs on level {level} and can be completed")
    return min(options, key=lambda p: (ratings[p], p))


def greedy_paths(supernet: BlockwiseSupernet, ratings: Ratings) -> list[Path]:
    """The public code's combination: block by block, the best-rated path that runs on the previous block's output
    and leaves the later blocks a rated completion."""
    space = RatedSpace(supernet, ratings)
    level, paths = space.start_level, []
    for k in range(space.num_blocks):
        options = space._options(k, level)
        if not options:
            raise ValueError(f"block {k} has no rated path on level {level}")
        path = min(options, key=lambda p: (ratings[k][p], p))
        paths.append(path)
        level = supernet.path_end_level(k, path)
    return paths
