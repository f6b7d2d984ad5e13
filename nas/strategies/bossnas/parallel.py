"""The independent mode: every block trains on the output of fixed reference paths of the blocks before it, so the
blocks do not wait for each other and run at once as Ray tasks (one GPU each on CUDA), or one after another in this
process (``parallel: none``).

A block's task builds the whole network from the search's seed (the same initial weights as the driver's), trains
block k with the reference paths of blocks < k in front of it (they keep receiving gradients, as in the sequential
mode, but their updates stay in the task), rates every candidate of block k there, and returns block k's weights
(online and target block modules, projector, predictor) with its ratings. Each task checkpoints every epoch in its
own folder (``<checkpoints>/block-<k>``), and the driver stores each finished block (``independent-<k>``), so a
resumed search re-runs only unfinished blocks, from their last epoch. The driver merges the blocks into its network.
"""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import torch

from nas.checkpoint import CheckpointStore
from nas.errors import SearchCancelled
from nas.events import EventType, Reporter
from nas.strategies.bossnas.bootstrap import BossNASNet, build_net, pack_state, reference_prefix, unpack_state
from nas.strategies.bossnas.run_block import train_and_rate

if TYPE_CHECKING:
    from nas.data import DataSplits
    from nas.space import MacroBase, SearchSpace
    from nas.strategies.base import SearchContext
    from nas.strategies.bossnas.options import BossNASOptions

log = logging.getLogger(__name__)


@dataclass
class BlockJob:
    """What a task needs besides the data (which travels once, by reference)."""

    space_cls: type[SearchSpace]
    space_options: dict[str, Any]
    macro: MacroBase
    options: BossNASOptions
    device: str
    seed: int
    checkpoint_root: str
    block: int


def block_state(net: BossNASNet, k: int) -> dict[str, torch.Tensor]:
    """The entries of ``net.state_dict()`` that belong to block ``k`` (online and target modules and heads)."""
    names = {id(m): name for name, m in net.named_modules()}
    modules = [*net.block_module_list("online", k), *net.block_module_list("target", k)]
    modules += [net.projectors[k], net.predictors[k], net.target_projectors[k]]
    prefixes = tuple(names[id(m)] + "." for m in modules)
    return {key: v.detach().cpu().clone() for key, v in net.state_dict().items() if key.startswith(prefixes)}


def run_block_job(
    job: BlockJob, data: DataSplits, reporter: Reporter, cancel: threading.Event | None = None
) -> dict[str, Any]:
    """Train and rate one block of the independent mode; returns its weights, ratings and timings."""
    started = time.perf_counter()
    space = job.space_cls(**job.space_options)
    device = torch.device(job.device)
    net = build_net(space, job.macro, job.options, job.seed).to(device)
    prefix = reference_prefix(net.online, job.block)
    store = CheckpointStore(job.checkpoint_root)
    out = train_and_rate(net, job.block, prefix, job.options, data, device, job.seed, store, "train", reporter, cancel)
    return {
        "block": job.block,
        "state": pack_state(block_state(net, job.block)),
        "prefix": [list(p) for p in prefix],
        "ratings": [[list(p), float(v)] for p, v in out["ratings"].items()],
        "metrics": out["metrics"],
        "seconds": time.perf_counter() - started,
    }


class _QueueReporter(Reporter):
    """Forwards a task's events (except per-step progress) to the driver through a Ray queue."""

    def __init__(self, queue: Any) -> None:
        self.queue = queue

    def emit(self, event: Any) -> None:
        if event.type != EventType.PROGRESS:
            self.queue.put(event)


def _ray_block(job: BlockJob, data: DataSplits, queue: Any) -> dict[str, Any]:
    torch.set_num_threads(max(1, int(job.options.cpus_per_block)))
    return run_block_job(job, data, _QueueReporter(queue))


def run_independent(ctx: SearchContext, opts: BossNASOptions, net: BossNASNet, use_ray: bool) -> dict[int, Any]:
    """Train every unfinished block (in Ray tasks when ``use_ray``), merge all blocks into ``net``; returns the
    per-block results (ratings, prefixes, metrics, seconds)."""
    k_all = list(range(net.num_blocks))
    results: dict[int, Any] = {}
    for k in k_all:
        stored = ctx.checkpoints.load(f"independent-{k}")
        if stored is not None:
            results[k] = stored
    pending = [k for k in k_all if k not in results]
    if results:
        ctx.reporter.log(f"resumed independent blocks: {sorted(results)} already trained", phase="blocks")

    def job(k: int) -> BlockJob:
        return BlockJob(
            space_cls=type(ctx.space),
            space_options=ctx.space.options.model_dump(),
            macro=ctx.macro,
            options=opts,
            device=str(ctx.device),
            seed=ctx.seed,
            checkpoint_root=str(ctx.checkpoints.child(f"block-{k}").root),
            block=k,
        )

    def finished(k: int, result: dict[str, Any]) -> None:
        ctx.checkpoints.save(f"independent-{k}", result)
        results[k] = result

    if pending and use_ray:
        _run_on_ray(ctx, opts, [job(k) for k in pending], finished)
    else:
        for k in pending:
            ctx.check_cancelled()
            finished(k, run_block_job(job(k), ctx.data, ctx.reporter, ctx.cancel))
    for k in k_all:
        _, unexpected = net.load_state_dict(unpack_state(results[k]["state"]), strict=False)
        if unexpected:
            raise RuntimeError(f"block {k}'s weights do not fit the network: {unexpected[:3]}")
    return results


def _run_on_ray(ctx: SearchContext, opts: BossNASOptions, jobs: list[BlockJob], finished: Any) -> None:
    from nas.strategies.ray_local import LocalRay

    cuda = ctx.device.type == "cuda"
    gpus = opts.gpus_per_block if opts.gpus_per_block is not None else (1.0 if cuda else 0.0)
    session = LocalRay(min_cpus=len(jobs) * opts.cpus_per_block, gpus=torch.cuda.device_count() if cuda else 0)
    ray = session.ray
    try:
        from ray.util.queue import Queue

        queue = Queue(actor_options={"num_cpus": 0})
        task = ray.remote(_ray_block).options(num_cpus=opts.cpus_per_block, num_gpus=gpus, max_retries=0)
        data_ref = ray.put(ctx.data)
        refs = {task.remote(j, data_ref, queue): j.block for j in jobs}
        for j in jobs:
            ctx.reporter.log(f"block {j.block} submitted to Ray", phase=f"block-{j.block}")
        pending = list(refs)
        try:
            while pending:
                done, pending = ray.wait(pending, num_returns=1, timeout=0.5)
                _drain(queue, ctx.reporter)
                for ref in done:
                    finished(refs[ref], ray.get(ref))
                if ctx.cancel.is_set():
                    raise SearchCancelled("search cancelled")
            _drain(queue, ctx.reporter)
        except BaseException:
            for ref in pending:
                ray.cancel(ref, force=True)
            raise
        finally:
            queue.shutdown()
    finally:
        session.close()


def _drain(queue: Any, reporter: Reporter) -> None:
    while not queue.empty():
        reporter.emit(queue.get_nowait())
