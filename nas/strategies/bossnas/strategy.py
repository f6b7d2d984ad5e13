"""BossNAS (Li et al., ICCV 2021) as a search strategy: block-wise self-supervised ensemble bootstrapping of a
block-wise supernet, ratings of every candidate path of every block, then the greedy combination of the public
code or an evolutionary search over whole architectures (see docs/bossnas.md)."""

from __future__ import annotations

import random
import time
from collections.abc import Sequence
from typing import Any, ClassVar

import torch

from nas.arch import Architecture
from nas.errors import InvalidInput
from nas.objectives import mark_pareto, rank
from nas.space import SearchSpace
from nas.spec import Candidate, SearchResult
from nas.strategies.base import SearchContext, Strategy
from nas.strategies.bossnas.bootstrap import (
    LOSS_OFFSET,
    BossNASNet,
    Path,
    as_path,
    build_net,
    pack_state,
    prefix_to_level,
    unpack_state,
)
from nas.strategies.bossnas.options import BossNASOptions
from nas.strategies.bossnas.rating import RatingData
from nas.strategies.bossnas.run_block import train_and_rate
from nas.strategies.bossnas.search import RatedSpace, arch_metrics, best_path, greedy_paths
from nas.strategies.evolution import Evolution, arch_dict
from nas.supernet import BlockwiseSupernet

CHECKPOINT = "bossnas"
SCORE = "bossnas_score"


def ranking_objectives(objectives: Sequence[str]) -> list[str]:
    """The search's objectives with 'accuracy' (which BossNAS does not measure) replaced by ``bossnas_score``
    (minimised)."""
    return [SCORE if o == "accuracy" else o for o in objectives]


def _encode_ratings(ratings: dict[int, dict[Path, float]]) -> dict[str, list[list[Any]]]:
    return {str(k): [[list(p), float(v)] for p, v in r.items()] for k, r in ratings.items()}


def _decode_ratings(data: dict[str, Any]) -> dict[int, dict[Path, float]]:
    return {int(k): {as_path(p): float(v) for p, v in r} for k, r in data.items()}


def _paths_and_levels(sn: BlockwiseSupernet, start: int, arch: Architecture) -> list[tuple[int, Path, int]]:
    """(block, path, the level of the input the block reads) along ``arch``."""
    out, level = [], start
    for k, p in enumerate(sn.paths_of(arch)):
        out.append((k, as_path(p), level))
        level = sn.path_end_level(k, p)
    return out


class BossNASStrategy(Strategy):
    """BossNAS (Li et al., ICCV 2021): block-wise self-supervised ensemble bootstrapping, rating of every block path,
    greedy or evolutionary search over the ratings.

    ``train_supernet`` and ``score_architectures`` also serve rank-correlation studies."""

    name: ClassVar[str] = "bossnas"
    Options = BossNASOptions
    options: BossNASOptions

    def check_space(self, space: SearchSpace) -> None:
        super().check_space(space)
        if not space.blocks():
            raise InvalidInput(
                "space.name",
                f"BossNAS trains block-wise supernets and {space.name!r} has no blocks; allowed: hytra, "
                "bossnas-mbconv (or any space whose blocks() lists its blocks and whose supernet implements "
                "nas.supernet.BlockwiseSupernet)",
            )

    # --- supernet training -------------------------------------------------------------------------------------
    def build_net(self, ctx: SearchContext) -> BossNASNet:
        return build_net(ctx.space, ctx.macro, self.options, ctx.seed).to(ctx.device)

    def train_supernet(self, ctx: SearchContext) -> BossNASNet:
        """Train and rate every block (sequential or independent mode). The returned network carries
        ``ratings`` (block -> path -> loss), ``prefixes`` (the paths that fed each block) and ``timings``."""
        self.check_space(ctx.space)
        net = self.build_net(ctx)
        started = time.perf_counter()
        if self.options.mode == "sequential":
            self._train_sequential(ctx, net)
        else:
            from nas.strategies.bossnas.parallel import run_independent

            results = run_independent(ctx, self.options, net, self.options.use_ray())
            for k, res in sorted(results.items()):
                net.ratings[k] = {as_path(p): float(v) for p, v in res["ratings"]}
                net.prefixes[k] = [as_path(p) for p in res["prefix"]]
                net.timings[f"block{k}_seconds"] = float(res["seconds"])
        net.timings["supernet_seconds"] = time.perf_counter() - started
        return net

    def _train_sequential(self, ctx: SearchContext, net: BossNASNet) -> None:
        opts = self.options
        best: list[Path] = []
        k = 0
        state = ctx.checkpoints.load(CHECKPOINT)
        if state is not None:
            k = int(state["block"])
            net.ratings = _decode_ratings(state["ratings"])
            net.prefixes = {int(j): [as_path(p) for p in v] for j, v in state["prefixes"].items()}
            best = [as_path(p) for p in state["best"]]
            if state.get("trainer") is None:  # saved after rating block k - 1: the weights are all there is
                net.load_state_dict(unpack_state(state["net"]))
                ctx.reporter.log(f"resumed BossNAS before block {k}", phase=f"block-{k}")

        def extra() -> dict[str, Any]:
            return {
                "ratings": _encode_ratings(net.ratings),
                "prefixes": {str(j): [list(p) for p in v] for j, v in net.prefixes.items()},
                "best": [list(p) for p in best],
            }

        while k < net.num_blocks:
            prefix = list(best)
            out = train_and_rate(
                net, k, prefix, opts, ctx.data, ctx.device, ctx.seed, ctx.checkpoints, CHECKPOINT, ctx.reporter,
                ctx.cancel, extra, resume=state,
            )  # fmt: skip
            state = None
            net.ratings[k] = out["ratings"]
            net.prefixes[k] = prefix
            choice = best_path(net.online, out["ratings"], k, out["level"])
            best.append(choice)
            ctx.reporter.log(f"block {k}: best path {list(choice)} (loss {out['ratings'][choice]:.4f})", f"rating-{k}")
            net.timings[f"block{k}_seconds"] = out["metrics"]["train_seconds"] + out["metrics"]["rating_seconds"]
            k += 1
            saved = {"block": k, "trainer": None, "net": pack_state(net.state_dict()), **extra()}
            ctx.reporter.checkpoint(f"rating-{k - 1}", str(ctx.checkpoints.save(CHECKPOINT, saved)))

    # --- scores --------------------------------------------------------------------------------------------
    def score_architectures(
        self, ctx: SearchContext, supernet: BossNASNet, archs: Sequence[Architecture]
    ) -> list[float]:
        """Whole-architecture scores for rank-correlation studies: the unweighted sum over blocks of (the block
        path's rating + 4); lower is better.

        Ratings come from ``train_supernet``. A path it did not rate (the sequential mode rates block k only on the
        output of the best paths before it; the independent mode on its reference input) is rated here with every
        candidate of its block that runs on the level the architecture feeds it, on the output of prefix paths
        ending there (the reference paths where they do), once per (block, level).
        """
        sn = supernet.online
        needed: dict[tuple[int, int], set[Path]] = {}
        for arch in archs:
            for k, p, level in _paths_and_levels(sn, supernet.start_level, arch):
                if p not in supernet.ratings.get(k, {}):
                    needed.setdefault((k, level), set()).add(p)
        for key in sorted(needed):
            if not needed[key] <= supernet.fallback_ratings.get(key, {}).keys():
                supernet.fallback_ratings[key] = self._rate_on_level(ctx, supernet, *key)

        def rating(k: int, p: Path, level: int) -> float:
            r = supernet.ratings.get(k, {})
            return r[p] if p in r else supernet.fallback_ratings[(k, level)][p]

        return [
            float(sum(rating(k, p, lv) + LOSS_OFFSET for k, p, lv in _paths_and_levels(sn, supernet.start_level, a)))
            for a in archs
        ]

    def _rate_on_level(self, ctx: SearchContext, net: BossNASNet, k: int, level: int) -> dict[Path, float]:
        from nas.strategies.bossnas.rating import rate_block

        sn = net.online
        prefix = prefix_to_level(sn, k, level)
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(ctx.seed)
            inputs = RatingData(ctx.data, self.options, ctx.device, ctx.seed, k)
            return rate_block(
                net, k, prefix, sn.block_paths(k, level), inputs, device=ctx.device, amp=self.options.amp,
                cancel=ctx.cancel, center=self.options.rating_center,
            )  # fmt: skip

    # --- search --------------------------------------------------------------------------------------------
    def search(self, ctx: SearchContext, net: BossNASNet) -> list[Candidate]:
        rated = RatedSpace(net.online, net.ratings)
        sn = net.online
        if self.options.search == "greedy":
            ctx.reporter.phase_started("greedy", total=1)
            arch = sn.arch_from_paths(greedy_paths(sn, net.ratings))
            cand = ctx.candidate(arch, arch_metrics(rated.block_losses(arch)))
            ctx.reporter.candidate("greedy", arch_dict(arch), cand.metrics, 1)
            ctx.reporter.phase_finished("greedy", {SCORE: cand.metrics[SCORE]})
            return [cand]
        evolution = Evolution(
            ctx,
            self.options.evolution,
            lambda arch: arch_metrics(rated.block_losses(arch)),
            objectives=ranking_objectives(ctx.objectives),
            best_metric=SCORE,
            sample=rated.sample,
            accept=rated.contains,
        )
        return evolution.run(random.Random(ctx.seed * 1_000_003 + 29))

    def run(self, ctx: SearchContext) -> SearchResult:
        self.check_space(ctx.space)
        if self.options.search == "greedy" and ctx.constraints:
            raise InvalidInput(
                "strategy.options.search",
                "'greedy' (the public code's combination) ignores resource constraints; use 'evolution' to enforce "
                f"the constraints on {', '.join(c.metric for c in ctx.constraints)}",
            )
        net = self.train_supernet(ctx)
        candidates = self.search(ctx, net)
        objectives = ranking_objectives(ctx.objectives)
        front = mark_pareto(candidates, objectives)
        extra = {
            "mode": self.options.mode,
            "search": self.options.search,
            "score": f"{SCORE}: sum over blocks of (rating + {LOSS_OFFSET:g}), lower is better",
            "ratings": _encode_ratings(net.ratings),
            "prefixes": {str(k): [list(p) for p in v] for k, v in net.prefixes.items()},
            "rated_architectures": RatedSpace(net.online, net.ratings).size(),
            "timings": dict(net.timings),
        }
        return SearchResult(
            strategy=self.name, candidates=candidates, best=rank(candidates, objectives), pareto=front, extra=extra
        )
