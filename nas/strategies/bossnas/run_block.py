"""One block of BossNAS from start to finish: train it (checkpointing every epoch, resuming exactly), then rate its
candidates. Used by the sequential mode (in this process) and by the independent mode (in this process or in a Ray
task); the caller decides what else goes into the checkpoint (``extra``)."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

import torch

from nas.checkpoint import CheckpointStore, capture_rng, restore_rng
from nas.events import Reporter
from nas.strategies.bossnas.blocks import SALT_LOADER, BlockTrainer, block_seed
from nas.strategies.bossnas.bootstrap import BossNASNet, Path, pack_state, unpack_state
from nas.strategies.bossnas.rating import RatingData, rate_block

if TYPE_CHECKING:
    from nas.data import DataSplits
    from nas.strategies.bossnas.options import BossNASOptions

SALT_GLOBAL = 401


def train_and_rate(
    net: BossNASNet,
    k: int,
    prefix: Sequence[Path],
    opts: BossNASOptions,
    data: DataSplits,
    device: torch.device,
    seed: int,
    store: CheckpointStore,
    name: str,
    reporter: Reporter,
    cancel: threading.Event | None = None,
    extra: Callable[[], dict[str, Any]] | None = None,
    resume: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Train block ``k`` on top of ``prefix`` for ``opts.epochs_per_block`` epochs (phase ``block-<k>``), then rate
    the candidates that run on the prefix's output (phase ``rating-<k>``).

    Checkpoint ``name`` in ``store`` is written after every epoch with the network, the trainer, the loader, every
    RNG and ``extra()``. ``resume`` is that checkpoint as loaded by the caller: when it holds block ``k`` in
    training, the block resumes from it. Returns ``ratings``
    (path -> loss), ``candidates``, ``level`` (the block's input level) and ``metrics``.
    """
    loader = data.loader(
        "train", opts.batch_size, shuffle=True, augment=False, device=device, seed=block_seed(seed, SALT_LOADER, k)
    )
    trainer = BlockTrainer(net, k, prefix, opts, data, device, seed, len(loader))
    phase = f"block-{k}"
    state = resume if resume is not None and int(resume.get("block", -1)) == k and resume.get("trainer") else None
    if state is not None:
        net.load_state_dict(unpack_state(state["net"]))
        trainer.load_state_dict(state["trainer"])
        loader.load_state_dict(state["loader"])
        restore_rng(state["rng"])
        reporter.log(f"resumed block {k} at epoch {trainer.epoch}/{opts.epochs_per_block}", phase=phase)
    else:
        torch.manual_seed(block_seed(seed, SALT_GLOBAL, k))  # nothing below depends on what ran before
    started = time.perf_counter()
    epochs = opts.epochs_per_block
    reporter.phase_started(phase, total=epochs, message=f"{len(trainer.candidates)} candidate paths")
    metrics: dict[str, float] = dict(state.get("metrics", {})) if state is not None else {}

    def on_step(step: int, total: int) -> None:
        reporter.progress(phase, step, total)

    while trainer.epoch < epochs:
        metrics = trainer.train_epoch(loader, cancel, on_step)
        reporter.epoch(phase, trainer.epoch, epochs, metrics)
        saved = {
            "block": k,
            "net": pack_state(net.state_dict()),
            "trainer": trainer.state_dict(),
            "loader": loader.state_dict(),
            "rng": capture_rng(),
            "metrics": metrics,
            **(extra() if extra is not None else {}),
        }
        reporter.checkpoint(phase, str(store.save(name, saved)))
    train_seconds = time.perf_counter() - started
    reporter.phase_finished(phase, metrics)

    rating_phase = f"rating-{k}"
    started = time.perf_counter()
    reporter.phase_started(rating_phase, total=len(trainer.candidates))
    cuda_devices = (
        [device.index if device.index is not None else torch.cuda.current_device()] if device.type == "cuda" else []
    )
    with torch.random.fork_rng(devices=cuda_devices):
        torch.manual_seed(block_seed(seed, SALT_GLOBAL + 1, k))
        inputs = RatingData(data, opts, device, seed, k)
        ratings = rate_block(
            net, k, trainer.prefix, trainer.candidates, inputs, device=device, amp=opts.amp, cancel=cancel,
            on_path=lambda i, n: reporter.progress(rating_phase, i, n), center=opts.rating_center,
        )  # fmt: skip
    best = min(ratings.values())
    summary = {"rated": float(len(ratings)), "best_loss": best, "mean_loss": sum(ratings.values()) / len(ratings)}
    reporter.phase_finished(rating_phase, summary)
    return {
        "ratings": ratings,
        "candidates": trainer.candidates,
        "level": trainer.level,
        "metrics": {
            **{f"train_{key}": float(v) for key, v in metrics.items()},
            **summary,
            "train_seconds": train_seconds,
            "rating_seconds": time.perf_counter() - started,
        },
    }
