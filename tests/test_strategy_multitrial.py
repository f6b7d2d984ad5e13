"""The Optuna multi-trial strategy on the toy space of tests/test_strategy_random.py: define-by-run proposals, the
sample fallback, NSGA-II with constraints, pruning, exact resume, and parallel trials on Ray."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import optuna
import pytest
from optuna.trial import TrialState

from nas.arch import Architecture
from nas.errors import InvalidInput, SearchCancelled
from nas.events import EventType, ListReporter
from nas.objectives import dominates
from nas.space import register_space
from nas.spec import ConstraintSpec
from nas.strategies import multitrial
from nas.strategies.base import get_strategy
from nas.strategies.multitrial import STUDY_NAME, OptunaStrategy, storage_url
from nas.strategies.trial import train_candidate
from tests.test_strategy_random import CHOICES, ToySpace, make_ctx, run_interrupted, summary


class SuggestToySpace(ToySpace):
    """The toy space with define-by-run proposals."""

    name = "toy-suggest"

    def suggest(self, trial: optuna.Trial) -> Architecture:
        return self.make({k: trial.suggest_categorical(k, v) for k, v in CHOICES.items()})


register_space(SuggestToySpace)

TRAIN = {"epochs": 2, "batch_size": 16, "lr": 0.05}


def load(folder: Path) -> optuna.Study:
    from nas.checkpoint import CheckpointStore

    return optuna.load_study(study_name=STUDY_NAME, storage=storage_url(CheckpointStore(folder)))


def test_options_are_validated_with_field_names() -> None:
    for bad, field in [
        ({"trials": 0}, "strategy.options.trials"),
        ({"parallel": 0}, "strategy.options.parallel"),
        ({"backend": "dask"}, "strategy.options.backend"),
        ({"sampler": "cmaes"}, "strategy.options.sampler"),
        ({"train": {"epochs": 0}}, "strategy.options.train"),
        ({"cpus_per_trial": -1}, "strategy.options.cpus_per_trial"),
    ]:
        with pytest.raises(InvalidInput) as err:
            OptunaStrategy(bad)
        assert err.value.field == field
    assert isinstance(get_strategy("optuna"), OptunaStrategy)


def test_train_candidate_stops_when_report_says_prune(tmp_path: Path) -> None:
    from nas.spec import TrainSpec

    ctx = make_ctx(tmp_path)
    arch = ctx.space.sample(__import__("random").Random(0))
    seen: list[tuple[int, float]] = []

    def report(epoch: int, acc: float) -> bool:
        seen.append((epoch, acc))
        return True

    out = train_candidate(ctx, arch, TrainSpec(batch_size=16), 3, seed=5, report=report)
    assert out["pruned"] == 1.0 and out["epochs"] == 1.0 and len(seen) == 1
    full = train_candidate(ctx, arch, TrainSpec(batch_size=16), 3, seed=5)
    assert full["pruned"] == 0.0 and full["epochs"] == 3.0
    assert train_candidate(ctx, arch, TrainSpec(batch_size=16), 3, seed=5) == full  # seeded: repeatable


def test_tpe_proposes_define_by_run_and_stores_the_study(tmp_path: Path) -> None:
    reporter = ListReporter()
    opts = {"trials": 5, "train": TRAIN, "startup_trials": 2, "pruner": "none"}
    result = OptunaStrategy(opts).run(make_ctx(tmp_path, space=SuggestToySpace(), reporter=reporter))
    assert result.strategy == "optuna" and result.extra["sampler"] == "tpe"
    assert len(result.candidates) == 5
    study = load(tmp_path)
    trials = study.get_trials(states=(TrialState.COMPLETE,))
    assert len(trials) == 5
    for t, c in zip(sorted(trials, key=lambda t: t.user_attrs["slot"]), result.candidates, strict=True):
        assert t.params == c.arch.choices  # the trial's parameters are the architecture
        assert t.value == pytest.approx(c.metrics["accuracy"])
    assert [e.step for e in reporter.of_type(EventType.CANDIDATE)] == [0, 1, 2, 3, 4]
    assert result.best[0].metrics["accuracy"] == max(c.metrics["accuracy"] for c in result.candidates)


def test_space_without_suggest_falls_back_to_seeded_samples(tmp_path: Path) -> None:
    opts = {"trials": 3, "train": TRAIN, "pruner": "none"}
    result = OptunaStrategy(opts).run(make_ctx(tmp_path / "a", seed=2))
    again = OptunaStrategy(opts).run(make_ctx(tmp_path / "b", seed=2))
    assert summary(result) == summary(again)
    for t in load(tmp_path / "a").get_trials():
        assert t.params == {}
        Architecture.from_dict(t.user_attrs["arch"])


def test_nsga2_with_constraints_skips_infeasible_and_returns_a_front(tmp_path: Path) -> None:
    space = SuggestToySpace()
    macro = space.macro(num_classes=2)
    small = space.make({"width": 4, "kernel": 3, "depth": 2, "act": "relu"})
    limit = float(sum(p.numel() for p in space.build(small, macro).parameters()))
    ctx = make_ctx(
        tmp_path,
        space=space,
        objectives=["accuracy", "params"],
        constraints=[ConstraintSpec(metric="params", max=limit)],
    )
    opts = {"trials": 8, "train": {**TRAIN, "epochs": 1}, "population_size": 4}
    result = OptunaStrategy(opts).run(ctx)
    assert result.extra["sampler"] == "nsga2"
    assert result.extra["infeasible"] + len(result.candidates) == 8
    assert result.extra["infeasible"] > 0
    assert all(c.feasible and c.metrics["params"] <= limit for c in result.candidates)
    vec = [(-c.metrics["accuracy"], c.metrics["params"]) for c in result.pareto]
    assert not any(dominates(a, b) for a in vec for b in vec if a != b)
    infeasible = [t for t in load(tmp_path).get_trials() if t.user_attrs.get("infeasible")]
    assert all(t.user_attrs["constraint"] > 0 and "metrics" not in t.user_attrs for t in infeasible)


def test_median_pruner_prunes_poor_trials(tmp_path: Path) -> None:
    opts = {
        "trials": 8,
        "train": {**TRAIN, "epochs": 3},
        "pruner": "median",
        "pruner_startup_trials": 1,
        "pruner_warmup_epochs": 0,
        "startup_trials": 8,
    }
    result = OptunaStrategy(opts).run(make_ctx(tmp_path, space=SuggestToySpace(), seed=1))
    pruned = [c for c in result.candidates if c.metrics["pruned"] == 1.0]
    assert result.extra["pruned"] == len(pruned) > 0
    assert all(c.metrics["epochs"] < 3 for c in pruned)
    states = [t.state for t in load(tmp_path).get_trials()]
    assert states.count(TrialState.PRUNED) == len(pruned)


@pytest.mark.slow  # two searches
def test_resume_after_cancellation_matches_uninterrupted_run(tmp_path: Path, monkeypatch: Any) -> None:
    opts = {"trials": 4, "train": TRAIN, "startup_trials": 2, "pruner_startup_trials": 1}
    full = OptunaStrategy(opts).run(make_ctx(tmp_path / "full", space=SuggestToySpace(), seed=7))

    # between trials: cancel after the second candidate, resume
    resumed, first, second = run_interrupted(
        OptunaStrategy(opts), tmp_path / "between", 2, space=SuggestToySpace(), seed=7
    )
    assert len(first.of_type(EventType.CANDIDATE)) == 2
    assert len(second.of_type(EventType.CANDIDATE)) == 2
    assert summary(resumed) == summary(full)

    # in the middle of a trial: cancel during the third trial's second epoch, as a kill would leave it
    real = multitrial.train_candidate
    calls: list[int] = []

    def cut_short(ctx: Any, arch: Any, train: Any, epochs: int, *, seed: int, report: Any = None, **kw: Any) -> Any:
        calls.append(seed)

        def report_then_cancel(epoch: int, acc: float) -> bool:
            if report is not None:
                report(epoch, acc)
            ctx.cancel.set()
            return False  # go on to the next epoch, which sees the cancel

        hook = report_then_cancel if len(calls) == 3 else report
        return real(ctx, arch, train, epochs, seed=seed, report=hook, **kw)

    monkeypatch.setattr(multitrial, "train_candidate", cut_short)
    with pytest.raises(SearchCancelled):
        OptunaStrategy(opts).run(make_ctx(tmp_path / "inside", space=SuggestToySpace(), seed=7))
    monkeypatch.undo()
    running = load(tmp_path / "inside").get_trials(states=(TrialState.RUNNING,))
    assert len(running) == 1 and running[0].user_attrs["slot"] == 2
    reporter = ListReporter()
    resumed = OptunaStrategy(opts).run(
        make_ctx(tmp_path / "inside", space=SuggestToySpace(), seed=7, reporter=reporter)
    )
    assert [e.step for e in reporter.of_type(EventType.CANDIDATE)] == [2, 3]
    assert summary(resumed) == summary(full)
    failed = load(tmp_path / "inside").get_trials(states=(TrialState.FAIL,))
    assert len(failed) == 1 and failed[0].params == resumed.candidates[2].arch.choices  # re-run with its params


@pytest.mark.ray
@pytest.mark.slow
def test_parallel_trials_on_ray_match_local_batches(tmp_path: Path) -> None:
    import cloudpickle

    # the toy space lives in a test module Ray workers cannot import: ship it by value
    cloudpickle.register_pickle_by_value(sys.modules[ToySpace.__module__])
    cloudpickle.register_pickle_by_value(sys.modules[__name__])
    opts = {"trials": 2, "parallel": 2, "train": {**TRAIN, "epochs": 1}, "pruner": "none"}
    ray_result = OptunaStrategy({**opts, "backend": "ray", "cpus_per_trial": 1}).run(
        make_ctx(tmp_path / "ray", space=SuggestToySpace(), seed=3)
    )
    local = OptunaStrategy({**opts, "backend": "local"}).run(
        make_ctx(tmp_path / "local", space=SuggestToySpace(), seed=3)
    )
    assert ray_result.extra["backend"] == "ray" and local.extra["backend"] == "local"
    assert [c.arch.hash for c in ray_result.candidates] == [c.arch.hash for c in local.candidates]
    for a, b in zip(ray_result.candidates, local.candidates, strict=True):
        assert a.metrics["accuracy"] == pytest.approx(b.metrics["accuracy"], abs=0.05)


def test_suggest_nasnet_proposes_valid_architectures_and_round_trips() -> None:
    import random

    from searchspaces.nasnet import NASNetSpace
    from searchspaces.nasnet.suggest import nasnet_params, suggest_nasnet

    space = NASNetSpace(ops=["skip_connect", "sep_conv_3x3", "avg_pool_3x3"])
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=0))
    for _ in range(5):
        trial = study.ask()
        arch = suggest_nasnet(space, trial)
        space.validate(arch)
        assert len(trial.params) == 2 * 5 * 4
        assert trial.distributions["normal.b3.in1"].choices == (0, 1, 2, 3, 4)
        study.tell(trial, 0.0)
    # a sampled architecture (concat = unused states) is proposed again from its parameters
    arch = space.sample(random.Random(1))
    assert suggest_nasnet(space, optuna.trial.FixedTrial(nasnet_params(arch))) == arch
