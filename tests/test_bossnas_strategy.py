"""The BossNAS strategy end to end on a tiny block-wise toy space (fast): results and events, greedy choice,
evolution under constraints, the independent mode in this process and on Ray, exact resume after a cancel in
training or rating, architecture scores, option and space validation."""

from __future__ import annotations

import itertools
import math
import random
import sys
import threading
from pathlib import Path
from typing import Any

import pytest
import torch
from pydantic import Field
from torch import Tensor, nn

from nas.arch import Architecture
from nas.checkpoint import CheckpointStore
from nas.errors import InvalidInput, SearchCancelled
from nas.events import Event, EventType, ListReporter
from nas.space import BlockInfo, MacroBase, SearchSpace, get_space
from nas.spec import ConstraintSpec
from nas.strategies.base import SearchContext, get_strategy
from nas.strategies.bossnas import BossNASStrategy
from nas.strategies.bossnas.bootstrap import LOSS_OFFSET, unpack_state
from nas.supernet import Supernet
from tests.conftest import tiny_splits

# --------------------------------------------------------------------------------------------- a block-wise toy
BLOCKS, LAYERS, OPS = 3, 2, (3, 5)  # op 0: 3x3 conv, op 1: 5x5 conv; block 1 halves the resolution


class BlockToyMacro(MacroBase):
    width: int = Field(4, ge=1, le=64)
    image_size: int = Field(8, ge=4, le=64)


def _conv(c_in: int, c_out: int, k: int, stride: int) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(c_in, c_out, k, stride, k // 2, bias=False), nn.BatchNorm2d(c_out), nn.ReLU())


def _stride(k: int, j: int) -> int:
    return 2 if (k, j) == (1, 0) else 1


class BlockToyNet(nn.Module):
    def __init__(self, paths: list[list[int]], m: BlockToyMacro) -> None:
        super().__init__()
        self.stem = _conv(m.in_channels, m.width, 3, 1)
        self.layers = nn.ModuleList(
            [_conv(m.width, m.width, OPS[op], _stride(k, j)) for k, p in enumerate(paths) for j, op in enumerate(p)]
        )
        self.head = nn.Linear(m.width, m.num_classes)

    def forward(self, x: Tensor) -> Tensor:
        x = self.stem(x)
        for layer in self.layers:
            x = layer(x)
        return self.head(x.mean((2, 3)))


class BlockToySupernet(Supernet):
    """Implements nas.supernet.BlockwiseSupernet structurally (without listing it as a base)."""

    num_blocks = BLOCKS

    def __init__(self, space: BlockToySpace, m: BlockToyMacro) -> None:
        super().__init__()
        self.space, self.m = space, m
        self.stem = _conv(m.in_channels, m.width, 3, 1)
        self.layers = nn.ModuleList(
            [
                nn.ModuleDict({str(o): _conv(m.width, m.width, OPS[o], _stride(k, j)) for o in range(len(OPS))})
                for k in range(BLOCKS)
                for j in range(LAYERS)
            ]
        )
        self.head = nn.Linear(m.width, m.num_classes)
        self.paths = [(0,) * LAYERS] * BLOCKS

    def set_active(self, arch: Architecture) -> None:
        self.paths = self.paths_of(arch)

    def forward(self, x: Tensor) -> Tensor:
        x = self.stem_forward(x)
        for k, p in enumerate(self.paths):
            x = self.forward_block(k, x, p, 0)
        return self.head_forward(x)

    def extract(self, arch: Architecture) -> nn.Module:
        net = self.space.build(arch, self.m)
        ops = [o for p in self.paths_of(arch) for o in p]
        net.stem.load_state_dict(self.stem.state_dict())
        for i, op in enumerate(ops):
            net.layers[i].load_state_dict(self.layers[i][str(op)].state_dict())
        net.head.load_state_dict(self.head.state_dict())
        return net

    stem_forward = property(lambda self: self.stem)
    head_forward = property(lambda self: lambda x: self.head(x.mean((2, 3))))

    def block_paths(self, k: int, start_level: int | None = None) -> list[tuple[int, ...]]:
        return list(itertools.product(range(len(OPS)), repeat=LAYERS)) if start_level in (None, 0) else []

    def path_start_levels(self, k: int) -> list[int]:
        return [0]

    def path_end_level(self, k: int, path: Any) -> int:
        return 0

    def path_completes(self, k: int, path: Any) -> bool:
        return True

    def forward_block(self, k: int, x: Tensor, path: Any, start_level: int) -> Tensor:
        for j, op in enumerate(path):
            x = self.layers[k * LAYERS + j][str(op)](x)
        return x

    def block_modules(self, k: int) -> list[nn.Module]:
        layers = list(self.layers[k * LAYERS : (k + 1) * LAYERS])
        return [self.stem, *layers] if k == 0 else layers

    def block_output_shape(self, k: int, path: Any) -> tuple[int, int]:
        return self.m.width, self.m.image_size if k == 0 else self.m.image_size // 2

    def reference_paths(self) -> list[tuple[int, ...]]:
        return [(0,) * LAYERS] * BLOCKS

    def arch_from_paths(self, paths: Any) -> Architecture:
        return self.space.make({"blocks": [[int(o) for o in p] for p in paths]})

    def paths_of(self, arch: Architecture) -> list[tuple[int, ...]]:
        return [tuple(p) for p in arch.choices["blocks"]]


class BlockToySpace(SearchSpace):
    name = "bossnas-toy"
    version = "1"
    Macro = BlockToyMacro

    def sample(self, rng: random.Random) -> Architecture:
        return self.make({"blocks": [[rng.randrange(len(OPS)) for _ in range(LAYERS)] for _ in range(BLOCKS)]})

    def mutate(self, arch: Architecture, rng: random.Random, rate: float = 0.1) -> Architecture:
        blocks = [list(p) for p in arch.choices["blocks"]]
        k, j = rng.randrange(BLOCKS), rng.randrange(LAYERS)
        blocks[k][j] = 1 - blocks[k][j]
        return self.make({"blocks": blocks})

    def crossover(self, a: Architecture, b: Architecture, rng: random.Random) -> Architecture:
        pairs = zip(a.choices["blocks"], b.choices["blocks"], strict=True)
        return self.make({"blocks": [list(rng.choice(pair)) for pair in pairs]})

    def validate(self, arch: Architecture) -> None:
        self.check_space(arch)
        blocks = arch.choices.get("blocks")
        if not isinstance(blocks, list) or len(blocks) != BLOCKS:
            raise InvalidInput("architecture.choices.blocks", f"must list {BLOCKS} blocks")
        for k, p in enumerate(blocks):
            if not isinstance(p, list) or len(p) != LAYERS or any(o not in (0, 1) for o in p):
                raise InvalidInput(f"architecture.choices.blocks[{k}]", f"must be {LAYERS} ops in 0..1")

    def log10_size(self) -> float:
        return BLOCKS * LAYERS * math.log10(len(OPS))

    def choices_schema(self) -> dict[str, Any]:
        return {"type": "object"}

    def blocks(self) -> list[BlockInfo]:
        return [
            BlockInfo(k, f"block{k}", list(itertools.product(range(len(OPS)), repeat=LAYERS))) for k in range(BLOCKS)
        ]

    def build(self, arch: Architecture, macro: Any = None) -> nn.Module:
        self.validate(arch)
        return BlockToyNet(arch.choices["blocks"], self.macro(macro))  # type: ignore[arg-type]

    def supernet(self, macro: Any = None, mode: str = "single_path") -> Supernet:
        return BlockToySupernet(self, self.macro(macro))  # type: ignore[arg-type]


# --------------------------------------------------------------------------------------------- helpers
OPTIONS: dict[str, Any] = {
    "epochs_per_block": 2,
    "batch_size": 16,
    "lr": 2.0,
    "eval_batch_size": 32,
    "warmup_epochs": 0.5,
    "paths_per_step": 3,
    "parallel": "none",
    "evolution": {"population": 6, "generations": 2, "parents": 3},
}


def make_ctx(root: Path, reporter: ListReporter | None = None, constraints=(), objectives=("accuracy",)):
    space = BlockToySpace()
    return SearchContext(
        space=space,
        macro=space.macro({"width": 4}, num_classes=3, in_channels=1),
        data=tiny_splits(n_train=48, n_val=32, n_test=16),
        device=torch.device("cpu"),
        checkpoints=CheckpointStore(root / "ckpt"),
        reporter=reporter or ListReporter(),
        objectives=list(objectives),
        constraints=list(constraints),
        seed=5,
    )


def strategy(**options: Any) -> BossNASStrategy:
    return get_strategy("bossnas", {**OPTIONS, **options})  # type: ignore[return-value]


class CancelAt(ListReporter):
    """Sets the cancel flag at the n-th event of ``kind`` in ``phase``."""

    def __init__(self, cancel: threading.Event, kind: EventType, phase: str, n: int) -> None:
        super().__init__()
        self.cancel, self.kind, self.phase, self.n = cancel, kind, phase, n

    def emit(self, event: Event) -> None:
        super().emit(event)
        if event.type == self.kind and event.phase == self.phase:
            self.n -= 1
            if self.n == 0:
                self.cancel.set()


@pytest.fixture(scope="module")
def references(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """Uninterrupted searches per mode (computed on first use) with their checkpoint folders."""
    cache: dict[str, Any] = {}

    def get(mode: str) -> tuple[Any, Path]:
        if mode not in cache:
            root = tmp_path_factory.mktemp(f"ref-{mode}")
            cache[mode] = (strategy(mode=mode).run(make_ctx(root)), root)
        return cache[mode]

    return get  # type: ignore[return-value]


def all_paths() -> list[tuple[int, ...]]:
    return list(itertools.product(range(len(OPS)), repeat=LAYERS))


# --------------------------------------------------------------------------------------------- tests
def test_search_returns_the_greedy_architecture_with_its_scores_and_reports_every_block(tmp_path: Path) -> None:
    ctx = make_ctx(tmp_path)
    result = strategy().run(ctx)  # a fresh run: the events of the whole search are checked
    ratings = {int(k): {tuple(p): v for p, v in r} for k, r in result.extra["ratings"].items()}
    assert sorted(ratings) == [0, 1, 2] and all(set(r) == set(all_paths()) for r in ratings.values())
    assert all(-4.0 <= v <= 4.0 and math.isfinite(v) for r in ratings.values() for v in r.values())
    (best,) = result.best
    ctx.space.validate(best.arch)
    paths = [tuple(p) for p in best.arch.choices["blocks"]]
    assert paths == [min(r, key=lambda p, r=r: (r[p], p)) for _, r in sorted(ratings.items())]  # greedy
    losses = [ratings[k][p] for k, p in enumerate(paths)]
    assert best.metrics["bossnas_score"] == pytest.approx(sum(v + LOSS_OFFSET for v in losses))
    assert best.metrics["bossnas_loss"] == pytest.approx(sum(losses))
    assert {"params", "macs", "block0_loss"} <= set(best.metrics) and "accuracy" not in best.metrics
    assert result.pareto and result.extra["mode"] == "sequential"
    phases = [(e.type, e.phase) for e in ctx.reporter.events if e.type != EventType.PROGRESS]
    for k in range(BLOCKS):
        assert (EventType.PHASE_STARTED, f"block-{k}") in phases
        assert sum(p == (EventType.EPOCH, f"block-{k}") for p in phases) == 2
        assert (EventType.PHASE_FINISHED, f"rating-{k}") in phases
    assert phases.index((EventType.PHASE_FINISHED, "rating-0")) < phases.index((EventType.PHASE_STARTED, "block-1"))
    assert (EventType.CANDIDATE, "greedy") in phases
    # block k trains on the best paths of the blocks before it
    assert result.extra["prefixes"] == {str(k): [list(p) for p in paths[:k]] for k in range(BLOCKS)}


def test_training_is_deterministic_and_moves_the_weights(tmp_path: Path) -> None:
    a = strategy(epochs_per_block=1).train_supernet(make_ctx(tmp_path / "a"))
    b = strategy(epochs_per_block=1).train_supernet(make_ctx(tmp_path / "b"))
    assert a.ratings == b.ratings
    initial = strategy().build_net(make_ctx(tmp_path / "c")).state_dict()
    trained = a.state_dict()
    assert all(torch.equal(v, b.state_dict()[k]) for k, v in trained.items())
    moved = [k for k in trained if k.startswith("online.layers.") and not torch.equal(trained[k], initial[k])]
    assert moved and any(k.startswith("target.layers.") and not torch.equal(trained[k], initial[k]) for k in trained)


@pytest.mark.slow  # several searches
def test_evolution_respects_constraints_and_greedy_refuses_them(tmp_path: Path) -> None:
    space = BlockToySpace()
    ctx = make_ctx(tmp_path)
    small = ctx.costs(space.make({"blocks": [[0, 0]] * BLOCKS}))["macs"]
    large = ctx.costs(space.make({"blocks": [[1, 1]] * BLOCKS}))["macs"]
    bound = small + (large - small) / 3  # about two 5x5 layers allowed
    constrained = make_ctx(tmp_path / "evo", constraints=[ConstraintSpec(metric="macs", max=bound)])
    result = strategy(search="evolution").run(constrained)
    assert len(result.candidates) >= 6
    assert all(c.metrics["macs"] <= bound and c.feasible for c in result.candidates)
    scores = [c.metrics["bossnas_score"] for c in result.best]
    assert scores == sorted(scores)  # one objective: ranked by the score, lower first
    with pytest.raises(InvalidInput) as info:
        strategy(search="greedy").run(constrained)
    assert info.value.field == "strategy.options.search"


def test_independent_mode_in_process_rates_every_block_on_the_reference_paths(tmp_path: Path, references: Any) -> None:
    result, root = references("independent")
    ctx = make_ctx(root)
    assert result.extra["mode"] == "independent"
    assert result.extra["prefixes"] == {"0": [], "1": [[0, 0]], "2": [[0, 0], [0, 0]]}  # first candidate per block
    for k in range(BLOCKS):
        assert len(result.extra["ratings"][str(k)]) == 4
        assert result.extra["timings"][f"block{k}_seconds"] > 0
    ctx.space.validate(result.best[0].arch)
    assert all(ctx.checkpoints.exists(f"independent-{k}") for k in range(BLOCKS))
    # each block trained on its own: block 2's training does not depend on blocks 0 and 1's ratings
    alone = strategy(mode="independent", parallel="none").train_supernet(make_ctx(tmp_path / "again"))
    assert {str(k): [[list(p), v] for p, v in r.items()] for k, r in alone.ratings.items()} == result.extra["ratings"]


@pytest.mark.slow  # two searches per case
@pytest.mark.parametrize(
    ("mode", "kind", "phase", "n"),
    [
        ("sequential", EventType.PROGRESS, "block-1", 4),  # mid-block, after one epoch of block 1
        ("sequential", EventType.PROGRESS, "rating-1", 2),  # during rating: training of block 1 is complete
        ("sequential", EventType.PROGRESS, "block-1", 1),  # before block 1's first epoch: the rating-0 checkpoint
        ("independent", EventType.PROGRESS, "block-1", 4),
    ],
)
def test_resume_after_cancel_equals_an_uninterrupted_search(
    tmp_path: Path, references: Any, mode: str, kind: EventType, phase: str, n: int
) -> None:
    reference, ref_root = references(mode)
    cancel = threading.Event()
    ctx = make_ctx(tmp_path / "int", reporter=CancelAt(cancel, kind, phase, n))
    ctx.cancel = cancel
    with pytest.raises(SearchCancelled):
        strategy(mode=mode).run(ctx)
    resumed_ctx = make_ctx(tmp_path / "int")
    resumed = strategy(mode=mode).run(resumed_ctx)
    assert any(e.type == EventType.LOG and "resumed" in (e.message or "") for e in resumed_ctx.reporter.events)
    assert resumed.extra["ratings"] == reference.extra["ratings"]
    assert [c.arch for c in resumed.best] == [c.arch for c in reference.best]
    assert [c.metrics for c in resumed.best] == [c.metrics for c in reference.best]
    if mode == "sequential":  # the final weights, bit for bit
        ref_state = unpack_state(CheckpointStore(ref_root / "ckpt").load("bossnas")["net"])
        res_state = unpack_state(CheckpointStore(tmp_path / "int" / "ckpt").load("bossnas")["net"])
        assert ref_state.keys() == res_state.keys()
        assert all(torch.equal(ref_state[k], res_state[k]) for k in ref_state)


def test_score_architectures_sums_block_ratings_plus_four(tmp_path: Path) -> None:
    ctx = make_ctx(tmp_path)
    s = strategy(epochs_per_block=1)
    net = s.train_supernet(ctx)
    space = BlockToySpace()
    archs = [space.sample(random.Random(i)) for i in range(5)]
    scores = s.score_architectures(ctx, net, archs)
    for arch, score in zip(archs, scores, strict=True):
        expected = sum(net.ratings[k][tuple(p)] + 4.0 for k, p in enumerate(arch.choices["blocks"]))
        assert score == pytest.approx(expected)
        assert 0.0 <= score <= 8.0 * BLOCKS


@pytest.mark.ray
@pytest.mark.slow
def test_independent_blocks_on_ray_match_the_in_process_run(tmp_path: Path, references: Any) -> None:
    import cloudpickle

    cloudpickle.register_pickle_by_value(sys.modules[__name__])  # Ray workers cannot import this test module
    on_ray = strategy(mode="independent", parallel="ray").run(make_ctx(tmp_path / "ray"))
    local, _ = references("independent")
    assert on_ray.extra["ratings"] == local.extra["ratings"]
    assert [c.arch for c in on_ray.best] == [c.arch for c in local.best]


@pytest.mark.parametrize(
    ("options", "field"),
    [
        ({"epochs_per_block": -1}, "strategy.options.epochs_per_block"),
        ({"epochs_per_block": 10**9}, "strategy.options.epochs_per_block"),
        ({"batch_size": 1}, "strategy.options.batch_size"),
        ({"lr": 0}, "strategy.options.lr"),
        ({"ema_momentum": 1.0}, "strategy.options.ema_momentum"),
        ({"paths_per_step": 0}, "strategy.options.paths_per_step"),
        ({"epochs_per_block": 2, "warmup_epochs": 3}, "strategy.options.warmup_epochs"),
        ({"parallel": "ray"}, "strategy.options.parallel"),  # sequential mode cannot fan out
        ({"mode": "both"}, "strategy.options.mode"),
        ({"search": "random"}, "strategy.options.search"),
        ({"evolution": {"population": 10**9}}, "strategy.options.evolution.population"),
        ({"bogus": 1}, "strategy.options.bogus"),
        ({"update_interval": 0}, "strategy.options.update_interval"),
        ({"view_order": "simclr"}, "strategy.options.view_order"),
        ({"rating_center": "median"}, "strategy.options.rating_center"),
    ],
)
def test_bad_options_name_the_field(options: dict[str, Any], field: str) -> None:
    with pytest.raises(InvalidInput) as info:
        get_strategy("bossnas", options)
    assert info.value.field == field


def test_spaces_without_blocks_are_refused() -> None:
    with pytest.raises(InvalidInput) as info:
        get_strategy("bossnas").check_space(get_space("toyconv"))
    assert info.value.field == "space.name"


def test_accumulated_updates_and_the_raw_center_resume_exactly(tmp_path: Path) -> None:
    """update_interval 2 (the toy's 3 steps per epoch: an update of 2 steps, one of 1) with the public code's raw
    rating centre: an interrupted search, resumed, equals an uninterrupted one."""
    options = {"update_interval": 2, "rating_center": "raw"}
    reference_ctx = make_ctx(tmp_path / "ref")
    reference = strategy(**options).run(reference_ctx)
    progress = [e for e in reference_ctx.reporter.events if e.type == EventType.PROGRESS and e.phase == "block-1"]
    assert [(e.step, e.total) for e in progress] == [(1, 4), (2, 4), (3, 4), (4, 4)]  # 2 epochs x 2 updates
    normal = strategy(update_interval=2).run(make_ctx(tmp_path / "normal"))
    assert reference.extra["ratings"] != normal.extra["ratings"]  # the centre changes the ratings, not training
    cancel = threading.Event()
    ctx = make_ctx(tmp_path / "int", reporter=CancelAt(cancel, EventType.PROGRESS, "block-1", 3))
    ctx.cancel = cancel
    with pytest.raises(SearchCancelled):
        strategy(**options).run(ctx)
    resumed_ctx = make_ctx(tmp_path / "int")
    resumed = strategy(**options).run(resumed_ctx)
    assert any(e.type == EventType.LOG and "resumed" in (e.message or "") for e in resumed_ctx.reporter.events)
    assert resumed.extra["ratings"] == reference.extra["ratings"]
    assert [c.arch for c in resumed.best] == [c.arch for c in reference.best]
    ref_state = unpack_state(CheckpointStore(tmp_path / "ref" / "ckpt").load("bossnas")["net"])
    res_state = unpack_state(CheckpointStore(tmp_path / "int" / "ckpt").load("bossnas")["net"])
    assert all(torch.equal(ref_state[k], res_state[k]) for k in ref_state)
