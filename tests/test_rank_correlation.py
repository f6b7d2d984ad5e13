"""The rank-correlation study (benchmarks/rank_correlation.py) end to end on a tiny config, and its pieces: the signed
correlations, architecture sampling, the --quick preset and the table."""

from __future__ import annotations

import math
import random
from collections.abc import Sequence
from typing import Any

import pytest

from benchmarks.rank_correlation import (
    QUICK,
    StudyConfig,
    correlation,
    format_table,
    parse_args,
    run_study,
    sample_architectures,
)
from nas.space import get_space

# the --quick preset's shape on HyTra's tiny fabric (cheaper to rate than MBConv's 1,040 block paths)
TINY = StudyConfig(
    space="hytra",
    dataset="digits",
    image_size=8,
    limit=64,
    archs=4,
    epochs=3,
    block_epochs=1,
    repeats=2,
    batch_size=16,
    rating_batches=1,
    eval_batch_size=16,
)


# the BossNAS paper's rank correlations (../shared/specs/hytra.md section 3): name -> (Kendall tau, Spearman rho)
SPEC_PUBLISHED = {"bossnas-mbconv (ImageNet)": (0.65, 0.78), "NATS-Bench size space (CIFAR-10)": (0.53, 0.73)}
ROUNDING = 0.05  # the study rounds its timings to 0.1 s


# ---------------------------------------------------------------- rank correlations written out (no scipy)


def kendall_tau_b(x: Sequence[float], y: Sequence[float]) -> float | None:
    """Kendall's tau-b by counting pairs: (concordant - discordant) / sqrt((pairs - tied in x)(pairs - tied in y))."""
    concordant = discordant = tied_x = tied_y = 0
    n = len(x)
    for i in range(n):
        for j in range(i + 1, n):
            dx, dy = x[i] - x[j], y[i] - y[j]
            tied_x += dx == 0
            tied_y += dy == 0
            if dx * dy > 0:
                concordant += 1
            elif dx * dy < 0:
                discordant += 1
    pairs = n * (n - 1) // 2
    denominator = math.sqrt((pairs - tied_x) * (pairs - tied_y))
    return None if denominator == 0 else (concordant - discordant) / denominator


def average_ranks(values: Sequence[float]) -> list[float]:
    """1-based ranks; tied values share the mean of the ranks they span."""
    order = sorted(range(len(values)), key=lambda i: values[i])
    ranks = [0.0] * len(values)
    start = 0
    while start < len(order):
        end = start
        while end + 1 < len(order) and values[order[end + 1]] == values[order[start]]:
            end += 1
        for k in range(start, end + 1):
            ranks[order[k]] = (start + end) / 2 + 1
        start = end + 1
    return ranks


def spearman_rho(x: Sequence[float], y: Sequence[float]) -> float | None:
    """Spearman's rho: the Pearson correlation of the average ranks."""
    rx, ry = average_ranks(x), average_ranks(y)
    mx, my = sum(rx) / len(rx), sum(ry) / len(ry)
    cov = sum((a - mx) * (b - my) for a, b in zip(rx, ry, strict=True))
    var = math.sqrt(sum((a - mx) ** 2 for a in rx) * sum((b - my) ** 2 for b in ry))
    return None if var == 0 else cov / var


def same(got: float | None, want: float | None, tol: float = 1e-9) -> bool:
    return (got is None and want is None) or (got is not None and want is not None and abs(got - want) <= tol)


def test_hand_correlations_on_known_rankings() -> None:
    """The formulas above on rankings worked out on paper."""
    # one swap in five: 2 discordant of 10 pairs -> tau 0.6; rank differences 0,1,1,1,1 -> rho 1 - 6*4/(5*24) = 0.8
    assert kendall_tau_b([1, 2, 3, 4, 5], [1, 3, 2, 5, 4]) == pytest.approx(0.6)
    assert spearman_rho([1, 2, 3, 4, 5], [1, 3, 2, 5, 4]) == pytest.approx(0.8)
    # ties: x = 1,1,2,3 against y = 1,2,3,4: 5 concordant, 1 pair tied in x -> 5 / sqrt(5 * 6)
    assert kendall_tau_b([1, 1, 2, 3], [1, 2, 3, 4]) == pytest.approx(5 / math.sqrt(30))
    assert average_ranks([10, 10, 20, 30]) == [1.5, 1.5, 3.0, 4.0]
    assert kendall_tau_b([2, 2, 2], [1, 2, 3]) is None and spearman_rho([2, 2, 2], [1, 2, 3]) is None


@pytest.fixture(scope="module")
def result(tmp_path_factory):
    import torch

    torch.set_num_threads(1)
    return run_study(TINY, workdir=tmp_path_factory.mktemp("study"), progress=lambda _msg: None)


@pytest.mark.slow  # the study's fixture trains and rates for ~40 s
def test_study_reports_every_architecture_and_finite_correlations(result) -> None:
    rows = result["architectures"]
    assert len(rows) == TINY.archs
    assert len({r["hash"] for r in rows}) == TINY.archs
    space = get_space("hytra")
    for r in rows:
        space.validate(space.make(r["choices"]))
        assert 0.0 <= r["test_accuracy"] <= 1.0 and 0.0 <= r["spos_val_accuracy"] <= 1.0
        assert len(r["test_accuracy_runs"]) == TINY.repeats
        assert r["test_accuracy"] == pytest.approx(sum(r["test_accuracy_runs"]) / TINY.repeats)
        assert r["params"] > 0 and r["macs"] > 0
        # sum over 4 blocks of (loss + 4), each loss in [-4, 4]
        assert math.isfinite(r["bossnas_score"]) and 0.0 <= r["bossnas_score"] <= 4 * 8.0
    assert len({r["test_accuracy"] for r in rows}) > 1, "the tiny config must give distinct accuracies"
    for name in ("spos", "bossnas", "params", "macs", "repeat_agreement"):
        c = result["correlations"][name]
        for key in ("kendall_tau", "spearman_rho"):
            assert c[key] is not None and math.isfinite(c[key]) and -1.0 <= c[key] <= 1.0, (name, key, c)
        assert 0.0 <= c["kendall_p"] <= 1.0 and 0.0 <= c["spearman_p"] <= 1.0


def rated_pairs(result: dict[str, Any]) -> dict[str, tuple[list[float], list[float]]]:
    """Per correlation of the study: (ratings signed so that higher means better, what they should rank like)."""
    rows = result["architectures"]
    acc = [r["test_accuracy"] for r in rows]
    first, second = ([r["test_accuracy_runs"][i] for r in rows] for i in (0, 1))
    return {
        "spos": ([r["spos_val_accuracy"] for r in rows], acc),
        "bossnas": ([-r["bossnas_score"] for r in rows], acc),  # a loss: lower is better
        "params": ([float(r["params"]) for r in rows], acc),
        "macs": ([float(r["macs"]) for r in rows], acc),
        "repeat_agreement": (first, second),
    }


@pytest.mark.slow  # the study's fixture trains and rates for ~40 s
def test_study_correlations_match_hand_computed_ones(result) -> None:
    pairs = rated_pairs(result)
    assert set(result["correlations"]) == set(pairs)
    for name, (ratings, target) in pairs.items():
        got = result["correlations"][name]
        assert same(got["kendall_tau"], kendall_tau_b(ratings, target)), (name, got)
        assert same(got["spearman_rho"], spearman_rho(ratings, target)), (name, got)


@pytest.mark.slow  # the study's fixture trains and rates for ~40 s
def test_study_records_budget_timings_and_machine(result) -> None:
    budget = result["budget"]
    assert budget["blocks"] == 4
    assert budget["spos_epochs"] == budget["blocks"] * TINY.block_epochs
    assert budget["images_seen_spos"] == budget["images_seen_bossnas"] == budget["spos_epochs"] * TINY.limit
    assert result["data"]["train"] == TINY.limit
    for key in ("standalone_s", "spos_train_s", "spos_score_s", "bossnas_train_s", "bossnas_score_s", "total_s"):
        assert result["timings"][key] >= 0.0
    t = result["timings"]
    # consistency of the measured intervals (each rounded by up to ROUNDING), not a bound on how long anything takes
    assert t["total_s"] + 3 * ROUNDING >= t["standalone_s"] + t["bossnas_train_s"]
    parts = t["bossnas_block_training_s"] + t["bossnas_block_rating_s"]  # phases inside the BossNAS training
    assert 0.0 <= parts <= t["bossnas_train_s"] + 3 * ROUNDING
    assert len(result["load_average"]["start"]) == 3 and result["machine"]["cpus"] >= 1
    assert result["config"]["space"] == "hytra" and result["config"]["macro"]["image_size"] == 8


def table_rows(table: str) -> dict[str, list[str]]:
    """Markdown table rows: first cell -> the other cells."""
    rows = {}
    for line in table.splitlines():
        if line.startswith("|") and not line.startswith("|---"):
            cells = [c.strip() for c in line.strip("|").split("|")]
            rows[cells[0]] = cells[1:]
    return rows


@pytest.mark.slow  # the study's fixture trains and rates for ~40 s
def test_table_shows_the_computed_and_the_published_correlations(result) -> None:
    rows = table_rows(format_table(result))
    for r in result["architectures"]:
        assert rows[str(r["index"])][0] == r["hash"]
        assert float(rows[str(r["index"])][3]) == pytest.approx(r["test_accuracy"], abs=5e-5)
    for name, (ratings, target) in rated_pairs(result).items():
        shown = [None if cell == "n/a" else float(cell) for cell in rows[f"{name} (this run)"]]
        assert same(shown[0], kendall_tau_b(ratings, target), tol=5e-4), (name, shown)
        assert same(shown[1], spearman_rho(ratings, target), tol=5e-4), (name, shown)
    for name, (tau, rho) in SPEC_PUBLISHED.items():
        assert [float(cell) for cell in rows[f"BossNAS published, {name}"]] == [tau, rho]


def test_correlation_on_constructed_rankings() -> None:
    """The study's function against values worked out by hand (one swap in five, and a tie)."""
    c = correlation([1.0, 2.0, 3.0, 4.0, 5.0], [0.1, 0.3, 0.2, 0.5, 0.4], higher_is_better=True)
    assert c["kendall_tau"] == pytest.approx(0.6) and c["spearman_rho"] == pytest.approx(0.8)
    # exact two-sided p of tau 0.6 at n = 5: 14 of the 120 orderings have at most 2 inversions -> 2 * 14 / 120
    assert c["kendall_p"] == pytest.approx(28 / 120)
    tied = correlation([1.0, 1.0, 2.0, 3.0], [0.1, 0.2, 0.3, 0.4], higher_is_better=True)
    assert tied["kendall_tau"] == pytest.approx(5 / math.sqrt(30))
    assert tied["spearman_rho"] == pytest.approx(spearman_rho([1, 1, 2, 3], [1, 2, 3, 4]))


def test_correlation_is_signed_so_that_agreement_is_positive() -> None:
    acc = [0.1, 0.4, 0.3, 0.9]
    assert correlation([1.0, 4.0, 3.0, 9.0], acc, higher_is_better=True)["kendall_tau"] == pytest.approx(1.0)
    lower = correlation([9.0, 6.0, 7.0, 1.0], acc, higher_is_better=False)
    assert lower["kendall_tau"] == pytest.approx(1.0) and lower["spearman_rho"] == pytest.approx(1.0)
    reversed_ = correlation([9.0, 6.0, 7.0, 1.0], acc, higher_is_better=True)
    assert reversed_["kendall_tau"] == pytest.approx(-1.0) and reversed_["spearman_rho"] == pytest.approx(-1.0)
    assert correlation([2.0, 2.0, 2.0, 2.0], acc, higher_is_better=True)["kendall_tau"] is None


def test_sampled_architectures_are_distinct_and_seeded() -> None:
    space = get_space("bossnas-mbconv")
    a = sample_architectures(space, 12, seed=5)
    assert len({x.hash for x in a}) == 12
    assert [x.hash for x in a] == [x.hash for x in sample_architectures(space, 12, seed=5)]
    assert [x.hash for x in a] != [x.hash for x in sample_architectures(space, 12, seed=6)]
    for x in a:
        space.validate(x)
    assert a[0].hash == space.sample(random.Random(5)).hash


def test_cli_quick_preset_and_overrides() -> None:
    cfg, _ = parse_args(["--quick"])
    assert cfg.archs == QUICK["archs"] and cfg.dataset == QUICK["dataset"] and cfg.space == "bossnas-mbconv"
    cfg, args = parse_args(["--quick", "--archs", "6", "--limit", "0", "--space", "hytra", "--json", "x.json"])
    assert cfg.archs == 6 and cfg.limit is None and cfg.space == "hytra" and args.json == "x.json"
    assert cfg.macro_dict()["stem"] == "small"
    cfg, _ = parse_args(["--macro", '{"width_mult": 0.5}', "--seed", "3"])
    assert cfg.macro_dict() == {"width_mult": 0.5, "image_size": 16} and cfg.seed == 3 and cfg.archs >= 12
