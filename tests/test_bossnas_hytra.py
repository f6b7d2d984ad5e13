"""BossNAS on the real HyTra supernet (tiny macro, 8x8 toy data): the sequential mode rates each block on the output
of the best paths before it, the greedy result is a valid architecture, an interrupted training resumes bit for bit,
evolution stays inside the rated architectures, and scores of paths the sequential mode did not rate fall back to
the reference input."""

from __future__ import annotations

import math
import random
import threading
from pathlib import Path
from typing import Any

import pytest
import torch

from nas.checkpoint import CheckpointStore
from nas.errors import SearchCancelled
from nas.events import EventType, ListReporter
from nas.space import get_space
from nas.strategies.base import SearchContext, get_strategy
from nas.strategies.bossnas import BossNASStrategy
from nas.strategies.bossnas.search import RatedSpace
from searchspaces.hytra.encoding import OP_LEVEL
from tests.conftest import tiny_splits
from tests.test_bossnas_strategy import CancelAt

# a whole BossNAS search on HyTra (trained once for the module, ~15 s on one core)
pytestmark = pytest.mark.slow

TINY = {"stem": "small", "stem_channels": 4, "widths": [8, 8, 16, 16], "head_dim": 2, "image_size": 8}
OPTIONS: dict[str, Any] = {
    "epochs_per_block": 2,
    "batch_size": 16,
    "lr": 2.0,
    "eval_batch_size": 16,
    "warmup_epochs": 0.5,
    "parallel": "none",
    "evolution": {"population": 8, "generations": 1, "parents": 4},
}


def make_ctx(root: Path, reporter: ListReporter | None = None) -> SearchContext:
    space = get_space("hytra")
    return SearchContext(
        space=space,
        macro=space.macro(TINY, num_classes=3, in_channels=1),
        data=tiny_splits(n_train=16, n_val=16, n_test=16),
        device=torch.device("cpu"),
        checkpoints=CheckpointStore(root / "ckpt"),
        reporter=reporter or ListReporter(),
        seed=1,
    )


def strategy(**options: Any) -> BossNASStrategy:
    return get_strategy("bossnas", {**OPTIONS, **options})  # type: ignore[return-value]


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory) -> tuple[BossNASStrategy, SearchContext, Any]:
    torch.set_num_threads(1)  # module fixtures run before conftest's per-test setting; the runs must match
    ctx = make_ctx(tmp_path_factory.mktemp("hytra"))
    s = strategy()
    return s, ctx, s.train_supernet(ctx)


def test_each_block_is_rated_on_the_output_of_the_best_paths_before_it(trained) -> None:
    _, _, net = trained
    sn = net.online
    level = 0
    for k in range(4):
        prefix = net.prefixes[k]
        assert len(prefix) == k
        rated = set(net.ratings[k])
        assert rated == set(sn.block_paths(k, level))  # the candidates that run on the block's input
        # BossNAS's restricted_path[pos + 1] for the level the previous best path ended at: 51 / 99 / 80 / 16 paths
        assert len(rated) == (51, 99, 80, 16)[level]
        assert {OP_LEVEL[p[0]] for p in rated} <= {level, level + 1}
        assert all(math.isfinite(v) and -4.0 <= v <= 4.0 for v in net.ratings[k].values())
        if k < 3:
            best = net.prefixes[k + 1][k]  # the path block k + 1 was trained on
            options = [p for p in rated if sn.path_completes(k, p)]
            assert net.ratings[k][best] == min(net.ratings[k][p] for p in options)
            level = sn.path_end_level(k, best)
    assert len(net.ratings[0]) == 51  # block 0 reads the stem: all its candidates


def test_greedy_result_is_the_sequential_choice_and_a_valid_architecture(trained) -> None:
    s, ctx, net = trained
    (cand,) = s.search(ctx, net)
    ctx.space.validate(cand.arch)
    paths = [tuple(p) for p in cand.arch.choices["blocks"]]
    assert paths[:3] == net.prefixes[3]
    assert paths[3] == min(net.ratings[3], key=lambda p: (net.ratings[3][p], p))
    assert cand.metrics["bossnas_score"] == pytest.approx(sum(net.ratings[k][p] + 4 for k, p in enumerate(paths)))


def test_evolution_stays_inside_the_rated_architectures(trained) -> None:
    _, ctx, net = trained
    evo = strategy(search="evolution")
    candidates = evo.search(ctx, net)
    rated = RatedSpace(net.online, net.ratings)
    assert len(candidates) >= 8
    for c in candidates:
        ctx.space.validate(c.arch)
        assert rated.contains(c.arch)


def test_interrupted_training_resumes_bit_for_bit(trained, tmp_path: Path) -> None:
    _, _, reference = trained
    cancel = threading.Event()
    ctx = make_ctx(tmp_path, reporter=CancelAt(cancel, EventType.EPOCH, "block-2", 1))
    ctx.cancel = cancel
    with pytest.raises(SearchCancelled):
        strategy().train_supernet(ctx)
    resumed_ctx = make_ctx(tmp_path)
    resumed = strategy().train_supernet(resumed_ctx)
    assert any("resumed block 2 at epoch 1/2" in (e.message or "") for e in resumed_ctx.reporter.events)
    assert resumed.ratings == reference.ratings
    ref_state, res_state = reference.state_dict(), resumed.state_dict()
    assert all(torch.equal(ref_state[k], res_state[k]) for k in ref_state)


def test_scores_of_unrated_paths_fall_back_to_the_reference_input(trained) -> None:
    s, ctx, net = trained
    sn = net.online
    rated = RatedSpace(sn, net.ratings)
    inside = rated.sample(random.Random(0))
    outside = next(
        a for a in (ctx.space.sample(random.Random(i)) for i in range(500)) if not rated.contains(a)
    )  # some block path was never rated in the sequential mode
    score_in, score_out = s.score_architectures(ctx, net, [inside, outside])
    assert score_in == pytest.approx(sum(net.ratings[k][tuple(p)] + 4 for k, p in enumerate(sn.paths_of(inside))))
    assert math.isfinite(score_out) and 0.0 <= score_out <= 32.0
    assert net.fallback_ratings  # rated once per (block, input level), on prefix paths that end at that level
    for (k, level), ratings in net.fallback_ratings.items():
        assert set(ratings) == set(sn.block_paths(k, level))
    assert s.score_architectures(ctx, net, [outside]) == [score_out]
