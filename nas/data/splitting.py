"""Seeded, stratified index splits (numpy), shared by every dataset."""

from __future__ import annotations

import math

import numpy as np

#: Seed of every test split that the data itself does not fix, independent of ``DatasetSpec.seed`` so the test
#: set of a dataset never changes between searches.
TEST_SEED = 20_240_601
#: Share of the data held out as test set where a dataset brings none of its own.
TEST_FRACTION = 0.15


def _allocate(counts: np.ndarray, total: int) -> np.ndarray:
    """Split ``total`` over classes in proportion to ``counts`` (largest remainder), never more than a class has."""
    if counts.sum() == 0:
        return np.zeros_like(counts)
    exact = counts * (total / counts.sum())
    take = np.floor(exact).astype(np.int64)
    rest = total - int(take.sum())
    if rest > 0:
        order = np.argsort(-(exact - take), kind="stable")
        take[order[:rest]] += 1
    return np.minimum(take, counts)


def stratified_split(y: np.ndarray, held: int | float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Indices ``(kept, held_out)`` of ``y`` (each sorted): ``held`` examples (a count, or a fraction of ``len(y)``)
    chosen at random per class, in proportion to the class sizes. Deterministic given ``seed``."""
    y = np.asarray(y)
    n = len(y)
    count = math.floor(held * n + 0.5) if isinstance(held, float) else int(held)  # halves round up
    count = max(0, min(n, count))
    rng = np.random.default_rng(seed)
    classes, inverse = np.unique(y, return_inverse=True)
    per_class = _allocate(np.bincount(inverse, minlength=len(classes)), count)
    chosen: list[np.ndarray] = []
    for c in range(len(classes)):
        members = np.flatnonzero(inverse == c)
        chosen.append(rng.permutation(members)[: per_class[c]])
    out = np.sort(np.concatenate(chosen)) if chosen else np.zeros(0, dtype=np.int64)
    mask = np.ones(n, dtype=bool)
    mask[out] = False
    return np.flatnonzero(mask), out


def limit_indices(y: np.ndarray, limit: int | None, seed: int) -> np.ndarray:
    """Indices of at most ``limit`` examples, stratified by class (all of them when ``limit`` is None or larger)."""
    n = len(y)
    if limit is None or limit >= n:
        return np.arange(n)
    _, taken = stratified_split(y, int(limit), seed + 1)
    return taken


def three_way(
    y: np.ndarray, *, test_fraction: float, val_fraction: float, seed: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``(train, val, test)`` indices: a test set fixed by ``TEST_SEED``, then ``val_fraction`` of the rest as
    validation set chosen with ``seed``. All three stratified and disjoint, together covering ``y``."""
    rest, test = stratified_split(y, test_fraction, TEST_SEED)
    train_pos, val_pos = stratified_split(y[rest], val_fraction, seed)
    return rest[train_pos], rest[val_pos], test
