from __future__ import annotations

import random
import threading

import pytest
import torch

from nas.checkpoint import CheckpointStore
from nas.errors import InvalidInput, SearchCancelled
from nas.events import Event, EventType, ListReporter
from nas.space import get_space
from nas.spec import ConstraintSpec
from nas.strategies.base import SearchContext, get_strategy
from nas.strategies.evolution import Evolution
from tests.conftest import tiny_splits

OPTIONS = {
    "epochs": 2,
    "train": {"batch_size": 32, "lr": 0.05, "epochs": 2},
    "evolution": {"population": 6, "generations": 2, "parents": 3},
    "bn_batches": 2,
}


def make_ctx(tmp_path, reporter=None, constraints=(), objectives=("accuracy",)) -> SearchContext:
    space = get_space("toyconv")
    return SearchContext(
        space=space,
        macro=space.macro({"width": 4}, num_classes=3, in_channels=1),
        data=tiny_splits(),
        device=torch.device("cpu"),
        checkpoints=CheckpointStore(tmp_path / "ckpt"),
        reporter=reporter or ListReporter(),
        objectives=list(objectives),
        constraints=list(constraints),
        seed=3,
    )


def run(tmp_path, **options):
    ctx = make_ctx(tmp_path)
    return get_strategy("spos", {**OPTIONS, **options}).run(ctx), ctx


def test_spos_search_reports_and_returns_ranked_candidates(tmp_path) -> None:
    result, ctx = run(tmp_path)
    events = ctx.reporter.events
    assert result.strategy == "spos"
    assert len(result.candidates) >= 6 and len({c.arch.hash for c in result.candidates}) == len(result.candidates)
    accs = [c.metrics["accuracy"] for c in result.best]
    assert accs == sorted(accs, reverse=True)
    assert all({"params", "macs"} <= set(c.metrics) for c in result.candidates)
    kinds = {e.type for e in events}
    assert {EventType.EPOCH, EventType.CANDIDATE, EventType.CHECKPOINT, EventType.PHASE_FINISHED} <= kinds
    assert sum(e.type == EventType.EPOCH and e.phase == "supernet" for e in events) == 2


def test_spos_is_deterministic(tmp_path) -> None:
    a, _ = run(tmp_path / "a")
    b, _ = run(tmp_path / "b")
    assert [c.arch.hash for c in a.best] == [c.arch.hash for c in b.best]
    assert [c.metrics["accuracy"] for c in a.best] == [c.metrics["accuracy"] for c in b.best]


class CancelAfter(ListReporter):
    def __init__(self, cancel: threading.Event, kind: EventType, n: int) -> None:
        super().__init__()
        self.cancel, self.kind, self.n = cancel, kind, n

    def emit(self, event: Event) -> None:
        super().emit(event)
        if event.type == self.kind:
            self.n -= 1
            if self.n == 0:
                self.cancel.set()


@pytest.mark.parametrize(("kind", "n"), [(EventType.PROGRESS, 4), (EventType.CANDIDATE, 8)])
def test_spos_resume_after_cancel_matches_uninterrupted(tmp_path, kind: EventType, n: int) -> None:
    reference, _ = run(tmp_path / "ref")
    cancel = threading.Event()
    ctx = make_ctx(tmp_path / "int", reporter=CancelAfter(cancel, kind, n))
    ctx.cancel = cancel
    with pytest.raises(SearchCancelled):
        get_strategy("spos", OPTIONS).run(ctx)
    resumed_ctx = make_ctx(tmp_path / "int")
    resumed = get_strategy("spos", OPTIONS).run(resumed_ctx)
    assert any(e.type == EventType.LOG and "resumed" in (e.message or "") for e in resumed_ctx.reporter.events)
    assert [c.arch.hash for c in resumed.best] == [c.arch.hash for c in reference.best]
    assert [c.metrics["accuracy"] for c in resumed.best] == [c.metrics["accuracy"] for c in reference.best]


def test_spos_strict_fairness_trains(tmp_path) -> None:
    result, _ = run(tmp_path, strict_fairness=True)
    assert result.best


def test_constraints_are_respected(tmp_path) -> None:
    space = get_space("toyconv")
    macro = space.macro({"width": 4}, num_classes=3, in_channels=1)
    from nas.measure import count_macs

    skip_only = count_macs(space.build(space.make({"ops": ["skip"] * 3}), macro), (1, 1, 8, 8))
    bound = skip_only + 6000  # room for about one 3x3 conv layer at width 4 on 8x8
    ctx = make_ctx(tmp_path, constraints=[ConstraintSpec(metric="macs", max=bound)])
    result = get_strategy("spos", OPTIONS).run(ctx)
    assert result.candidates and all(c.metrics["macs"] <= bound for c in result.candidates)


@pytest.mark.parametrize(
    ("options", "field"),
    [
        ({"epochs": -1}, "strategy.options.epochs"),
        ({"evolution": {"population": 10**9}}, "strategy.options.evolution.population"),
        ({"bogus": 1}, "strategy.options.bogus"),
        ({"train": {"lr": 0}}, "strategy.options.train.lr"),
    ],
)
def test_bad_options_name_the_field(options, field) -> None:
    with pytest.raises(InvalidInput) as info:
        get_strategy("spos", options)
    assert info.value.field == field


def test_paper_preset_sets_the_published_evolution_and_recalibration() -> None:
    opts = get_strategy("spos", {"preset": "paper"}).options
    evo = opts.evolution
    assert (evo.population, evo.generations, evo.parents) == (50, 20, 10)
    assert (evo.mutation_rate, evo.mutation_share) == (0.1, 0.5)
    assert (opts.bn_batches, opts.bn_batch_size) == (20, 128)
    # what is given explicitly wins over the preset
    mixed = get_strategy("spos", {"preset": "paper", "evolution": {"population": 6}, "bn_batches": 3}).options
    assert (mixed.evolution.population, mixed.evolution.generations, mixed.evolution.parents) == (6, 20, 10)
    assert (mixed.bn_batches, mixed.bn_batch_size) == (3, 128)
    # without the preset nothing changes
    plain = get_strategy("spos", {}).options
    assert (plain.evolution.population, plain.bn_batches, plain.bn_batch_size) == (20, 4, None)
    with pytest.raises(InvalidInput) as info:
        get_strategy("spos", {"preset": "fast"})
    assert info.value.field == "strategy.options.preset"


def test_paper_preset_breeds_25_mutants_and_25_crossovers_per_generation(tmp_path) -> None:
    space = get_space("nasnet")
    ctx = make_ctx(tmp_path)
    ctx.space = space
    calls = {"mutate": 0, "crossover": 0}
    mutate, crossover = space.mutate, space.crossover

    def counting_mutate(arch, rng, rate=0.1):  # type: ignore[no-untyped-def]
        assert rate == 0.1
        calls["mutate"] += 1
        return mutate(arch, rng, rate)

    def counting_crossover(a, b, rng):  # type: ignore[no-untyped-def]
        calls["crossover"] += 1
        return crossover(a, b, rng)

    space.mutate, space.crossover = counting_mutate, counting_crossover  # type: ignore[method-assign]
    opts = get_strategy("spos", {"preset": "paper"}).options
    evolution = Evolution(ctx, opts.evolution, lambda arch: {"accuracy": 0.0})
    rng = random.Random(0)
    parents = [space.sample(rng) for _ in range(opts.evolution.parents)]
    children = evolution.children(parents, set(), rng)
    assert len(children) == 50 and calls == {"mutate": 25, "crossover": 25}


def test_recalibration_batches_have_bn_batch_size_images(tmp_path) -> None:
    ctx = make_ctx(tmp_path)
    strategy = get_strategy("spos", {**OPTIONS, "bn_batches": 2, "bn_batch_size": 8})
    supernet = ctx.space.supernet(ctx.macro)
    seen: list[tuple[str, int]] = []
    loader = ctx.loader

    def spy(split, batch_size, **kw):  # type: ignore[no-untyped-def]
        seen.append((split, batch_size))
        return loader(split, batch_size, **kw)

    ctx.loader = spy  # type: ignore[method-assign]
    acc = strategy.score(ctx, supernet, ctx.space.sample(random.Random(0)))  # type: ignore[attr-defined]
    assert 0.0 <= acc <= 1.0
    assert ("train", 8) in seen and ("train", 32) not in seen
