"""Data-parallel supernet training for SPOS with Ray Train (``strategy.options.data_parallel`` > 1).

The search process (the *driver*: ``nas search --local`` or the service's runner actor) submits one Ray Train
``TorchTrainer`` with N workers (gloo on CPU, NCCL on CUDA with one GPU per worker) and stays in charge of everything
that leaves the training: events, checkpoints, cancellation.

Every worker builds the supernet from the search seed (same initial weights), draws the same path before every step
(the path sampler has the same seed everywhere), iterates the same global batches (the loader has the same seed
everywhere) and trains on its own contiguous 1/N share of each global batch. Before each optimizer step the
gradients that exist (those of the active path: the same parameters on every rank) are averaged with one all-reduce
of a flat buffer, then clipped, so every rank applies the same update and the replicas stay identical. This is an
explicit all-reduce rather than DistributedDataParallel: DDP would need ``find_unused_parameters=True`` (a graph walk
every step), would fill zero gradients into the unused choices (SGD would then apply momentum and weight decay to
them, unlike the single-process run) and cannot run the several forward passes of one FairNAS step. The learning
rate schedule counts global steps, as in the single-process run. BatchNorm uses the statistics of each worker's
share (no SyncBN); the checkpoint holds rank 0's running statistics, which the evolution re-estimates anyway.

Driver and workers talk through a small actor (:class:`TrainingHost`, which also runs the trainer): rank 0 sends
throttled progress and, after every epoch, the metrics (gathered over all ranks) and its training state; the driver
emits the usual events, writes the state to ``ctx.checkpoints`` in the format of the single-process loop
(``nas.train.fit``) and acknowledges, and only then does training continue, so a checkpoint is on disk before the
next epoch starts. A cancel is a flag that rank 0
polls and that travels in the gradient all-reduce, so every rank stops after the same step; if the workers do not
stop within ``CANCEL_GRACE_S`` (e.g. still waiting for resources) the driver kills the trainer.

Resume: the driver loads the checkpoint and hands it to the workers; every worker restores the weights, optimizer,
schedule, loader and path sampler. The global RNG (dropout, drop-path) is reseeded at the start of every epoch from
(seed, epoch, rank), so a resumed run repeats the exact numbers of an uninterrupted one.
"""

from __future__ import annotations

import random
import shutil
import tempfile
import threading
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol

import torch
from torch import Tensor, nn

from nas.checkpoint import CheckpointStore, capture_rng
from nas.errors import InvalidInput, SearchCancelled
from nas.events import Event, EventType, Reporter
from nas.strategies.base import SearchContext
from nas.strategies.ray_local import LocalRay
from nas.train import Trainer

if TYPE_CHECKING:
    from nas.data import DataSplits, DeviceLoader
    from nas.space import MacroBase, SearchSpace
    from nas.strategies.spos import SPOSStrategy
    from nas.supernet import Supernet

PHASE = "supernet"
CHECKPOINT = "supernet"
FIELD = "strategy.options.data_parallel"
POLL_S = 0.1  # driver: how often it looks for messages
ACK_POLL_S = 0.02  # rank 0: how often it looks for the driver's acknowledgement of an epoch
CANCEL_POLL_S = 0.25  # rank 0: how often it looks for a cancel request
CANCEL_GRACE_S = 15.0  # driver: how long workers may take to stop before the trainer is killed
PROGRESS_EVERY_S = 0.5  # rank 0: at most one progress message per this many seconds (and the last batch)


# --- driver side -----------------------------------------------------------------------------------------------
def check_resources(ray: Any, workers: int, cuda: bool, cpus_per_worker: float) -> bool:
    """Refuse (InvalidInput on ``strategy.options.data_parallel``) what the Ray cluster can never hold; what this
    process holds itself (the runner actor's reservation) is not available to the workers. Returns whether the
    workers' resources are free right now (else Ray Train waits for them)."""
    total = {k: float(v) for k, v in ray.cluster_resources().items()}
    try:
        held = {k: float(v) for k, v in ray.get_runtime_context().get_assigned_resources().items()}
    except Exception:  # a driver process holds nothing
        held = {}
    free = {k: float(v) for k, v in ray.available_resources().items()}
    if cuda:
        gpus = total.get("GPU", 0.0) - held.get("GPU", 0.0)
        if workers > gpus:
            allowed = f"1..{int(gpus)}" if gpus >= 2 else "1 (training in the search process)"
            raise InvalidInput(
                FIELD, f"{workers} workers need one GPU each but the Ray cluster has {gpus:g} GPUs for them; "
                f"allowed here: {allowed}",
            )  # fmt: skip
    cpus = total.get("CPU", 0.0) - held.get("CPU", 0.0)
    need = workers * cpus_per_worker
    if need > cpus:
        raise InvalidInput(
            FIELD, f"{workers} workers x {cpus_per_worker:g} CPUs (cpus_per_worker) = {need:g} CPUs but the Ray "
            f"cluster has {cpus:g} CPUs for them; lower data_parallel or cpus_per_worker",
        )  # fmt: skip
    return need <= free.get("CPU", 0.0) and (not cuda or workers <= free.get("GPU", 0.0))


def train_data_parallel(
    strategy: SPOSStrategy, ctx: SearchContext, supernet: Supernet, *, workers: int | None = None
) -> dict[str, float]:
    """Train ``supernet`` (in place: the final weights are loaded into it) on ``workers`` Ray Train workers (default
    ``strategy.options.data_parallel``), resuming from ``ctx.checkpoints`` when a checkpoint exists. Emits the events
    of ``nas.train.fit``; raises SearchCancelled when ``ctx.cancel`` is set. Returns the last epoch's metrics."""
    opts = strategy.options
    n = workers or opts.data_parallel
    epochs = opts.epochs
    state = ctx.checkpoints.load(CHECKPOINT)
    done = int(state["trainer"]["epoch"]) if state is not None else 0
    metrics: dict[str, float] = dict(state.get("metrics", {})) if state is not None else {}
    cuda = ctx.device.type == "cuda"
    session: LocalRay | None = None
    free_now = True
    try:
        if done < epochs:
            gpus = torch.cuda.device_count() if cuda else 0
            session = LocalRay(min_cpus=n * opts.cpus_per_worker, gpus=gpus)
            free_now = check_resources(session.ray, n, cuda, opts.cpus_per_worker)
        if state is not None:
            ctx.reporter.log(f"resumed {PHASE} at epoch {done}/{epochs}", phase=PHASE)
        ctx.reporter.phase_started(PHASE, total=epochs, message=f"data-parallel on {n} workers")
        if session is not None and not free_now:
            ctx.reporter.log(f"waiting for the resources of {n} workers (busy in the Ray cluster)", phase=PHASE)
        if session is not None:
            metrics = _DriverRun(session.ray, strategy, ctx, n, state).wait()
            state = ctx.checkpoints.load(CHECKPOINT)
    finally:
        if session is not None:
            session.close()
    if state is not None:
        supernet.load_state_dict(state["trainer"]["model"])
    ctx.reporter.phase_finished(PHASE, metrics)
    return metrics


@dataclass
class WorkerSetup:
    """What a worker needs to rebuild the training of the driver (the data and the resume state travel as refs)."""

    strategy: SPOSStrategy
    space_cls: type[SearchSpace]
    space_options: dict[str, Any]
    macro: MacroBase
    seed: int
    cuda: bool
    threads: int
    deterministic: bool


class _DriverRun:
    """One submitted TorchTrainer, followed from the driver until it ends."""

    def __init__(
        self, ray: Any, strategy: SPOSStrategy, ctx: SearchContext, workers: int, state: dict[str, Any] | None
    ) -> None:
        self.ray = ray
        self.ctx = ctx
        self.epochs = strategy.options.epochs
        self.epoch = int(state["trainer"]["epoch"]) if state is not None else 0
        self.metrics: dict[str, float] = {}
        self.step = 0  # the last progress step emitted (the host may hand messages over out of order)
        cuda = ctx.device.type == "cuda"
        setup = WorkerSetup(
            strategy=strategy,
            space_cls=type(ctx.space),
            space_options=ctx.space.options.model_dump(),
            macro=ctx.macro,
            seed=ctx.seed,
            cuda=cuda,
            threads=max(1, int(strategy.options.cpus_per_worker)),
            deterministic=torch.are_deterministic_algorithms_enabled(),
        )
        # the host runs the TorchTrainer in one thread and is the mailbox in others; killing it stops the training
        self.host = ray.remote(TrainingHost).options(num_cpus=0, max_concurrency=8, max_restarts=0).remote()
        # refs inside a list are not resolved on the way: only the workers fetch the data
        refs = [ray.put(ctx.data), ray.put(state) if state is not None else None]
        self.ref = self.host.fit.remote(setup, refs, workers, strategy.options.cpus_per_worker)

    def wait(self) -> dict[str, float]:
        cancel_at: float | None = None
        finished = False
        try:
            while not finished:
                finished = bool(self.ray.wait([self.ref], timeout=POLL_S)[0])
                self._drain()
                if not finished and self.ctx.cancel.is_set():
                    if cancel_at is None:
                        cancel_at = time.monotonic()
                        self.host.request_cancel.remote()
                    elif time.monotonic() - cancel_at > CANCEL_GRACE_S:
                        raise SearchCancelled("search cancelled (data-parallel workers killed)")
            self.ray.get(self.ref)  # raises what the workers raised
        finally:
            self.ray.kill(self.host)  # when it is still training: stops the controller and the workers
        if self.epoch < self.epochs:
            if self.ctx.cancel.is_set():
                raise SearchCancelled("search cancelled")
            raise RuntimeError(f"data-parallel supernet training stopped at epoch {self.epoch}/{self.epochs}")
        return self.metrics

    def _drain(self) -> None:
        for message in self.ray.get(self.host.drain.remote()):
            if message["kind"] == "progress" and message["step"] > self.step:
                self.step = message["step"]
                self.ctx.reporter.progress(PHASE, message["step"], message["total"])
            elif message["kind"] == "epoch":
                self._epoch(message)

    def _epoch(self, message: dict[str, Any]) -> None:
        state = self.ray.get(message["state"][0])
        self.epoch = int(message["epoch"])
        self.step = max(self.step, int(message["step"]))
        self.metrics = dict(message["metrics"])
        self.ctx.reporter.emit(
            Event(
                type=EventType.EPOCH, phase=PHASE, step=self.epoch, total=self.epochs, metrics=self.metrics,
                data={"workers": message["workers"]},
            )
        )  # fmt: skip
        path = self.ctx.checkpoints.save(CHECKPOINT, state)
        self.ctx.reporter.checkpoint(PHASE, str(path))
        self.host.ack.remote(message["seq"], self.ctx.cancel.is_set())


class TrainingHost:
    """A Ray actor (threaded) that runs the TorchTrainer in one thread and is the mailbox between the driver and
    rank 0 in the others: messages up, acknowledgements and the cancel request down. Killing it kills the trainer's
    controller (an actor it owns) and so the workers."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._messages: list[dict[str, Any]] = []
        self._seq = 0
        self._acks: dict[int, bool] = {}
        self._cancel = False

    def fit(self, setup: WorkerSetup, refs: list[Any], workers: int, cpus_per_worker: float) -> None:
        import ray
        from ray.train import FailureConfig, RunConfig, ScalingConfig
        from ray.train.torch import TorchConfig, TorchTrainer

        me = ray.get_runtime_context().current_actor
        storage = tempfile.mkdtemp(prefix="nas-train-")  # Ray Train's run folder; nothing is persisted there
        try:
            trainer = TorchTrainer(
                _worker_loop,
                train_loop_config={"setup": setup, "refs": refs, "host": me},
                torch_config=TorchConfig(backend="nccl" if setup.cuda else "gloo"),
                scaling_config=ScalingConfig(
                    num_workers=workers, use_gpu=setup.cuda, resources_per_worker={"CPU": cpus_per_worker}
                ),
                run_config=RunConfig(
                    name=f"spos-supernet-{uuid.uuid4().hex[:8]}",
                    storage_path=storage,
                    failure_config=FailureConfig(max_failures=0),
                ),
            )
            trainer.fit()
        finally:
            shutil.rmtree(storage, ignore_errors=True)

    def put(self, message: dict[str, Any]) -> int:
        with self._lock:
            self._seq += 1
            self._messages.append({**message, "seq": self._seq})
            return self._seq

    def drain(self) -> list[dict[str, Any]]:
        with self._lock:
            out, self._messages = self._messages, []
            return out

    def ack(self, seq: int, stop: bool) -> None:
        with self._lock:
            self._acks[seq] = stop
            self._cancel = self._cancel or stop

    def acked(self, seq: int) -> bool | None:
        """None until the driver has handled message ``seq``; then whether training must stop."""
        with self._lock:
            return self._acks.pop(seq, None)

    def request_cancel(self) -> None:
        with self._lock:
            self._cancel = True

    def cancel_requested(self) -> bool:
        with self._lock:
            return self._cancel


# --- worker side -----------------------------------------------------------------------------------------------
def _worker_loop(config: dict[str, Any]) -> None:
    import ray
    import ray.train
    import ray.train.torch

    setup: WorkerSetup = config["setup"]
    context = ray.train.get_context()
    device = ray.train.torch.get_device() if setup.cuda else torch.device("cpu")
    if not setup.cuda:
        torch.set_num_threads(setup.threads)
    if setup.deterministic:
        torch.use_deterministic_algorithms(True, warn_only=True)
        torch.backends.cudnn.benchmark = False
    data_ref, state_ref = config["refs"]
    data: DataSplits = ray.get(data_ref)
    state = ray.get(state_ref) if state_ref is not None else None
    mailbox = HostMailbox(config["host"])
    WorkerTraining(setup, data, state, mailbox, context.get_world_rank(), context.get_world_size(), device)()


class Mailbox(Protocol):
    """What rank 0 needs from the driver's side."""

    def post(self, message: dict[str, Any]) -> None:
        """Send without waiting (progress)."""

    def deliver(self, message: dict[str, Any], state: dict[str, Any]) -> bool:
        """Send an epoch's message and state; return once the driver has checkpointed it: True means stop."""

    def cancel_requested(self) -> bool: ...


class HostMailbox:
    """Rank 0's side of the :class:`TrainingHost` actor."""

    def __init__(self, host: Any) -> None:
        self.host = host

    def post(self, message: dict[str, Any]) -> None:
        self.host.put.remote(message)

    def deliver(self, message: dict[str, Any], state: dict[str, Any]) -> bool:
        import ray

        ref = ray.put(state)  # owned by this worker, which stays alive until the driver has read it (the ack)
        seq = ray.get(self.host.put.remote({**message, "state": [ref]}))
        while (stop := ray.get(self.host.acked.remote(seq))) is None:
            time.sleep(ACK_POLL_S)
        return bool(stop)

    def cancel_requested(self) -> bool:
        import ray

        return bool(ray.get(self.host.cancel_requested.remote()))


class WorkerTraining:
    """The training on one rank (inside a Ray Train worker, with torch.distributed initialised)."""

    def __init__(
        self, setup: WorkerSetup, data: DataSplits, state: dict[str, Any] | None, mailbox: Mailbox, rank: int,
        world: int, device: torch.device,
    ) -> None:  # fmt: skip
        self.setup, self.mailbox, self.rank, self.world, self.device = setup, mailbox, rank, world, device
        strategy = setup.strategy
        ctx = SearchContext(
            space=setup.space_cls(**setup.space_options),
            macro=setup.macro,
            data=data,
            device=device,
            checkpoints=CheckpointStore(tempfile.gettempdir()),  # unused: the driver writes the checkpoints
            reporter=Reporter(),
            seed=setup.seed,
        )
        supernet = strategy.build_supernet(ctx)
        cfg = strategy.supernet_train_spec()
        self.epochs = cfg.epochs
        self.loader = strategy.supernet_loader(ctx, cfg)
        self.sampler = strategy.path_sampler(ctx)
        before_step, loss_fn = strategy.path_hooks(ctx, supernet, self.sampler, cfg)
        # clipping happens after the all-reduce (GradientAverager), on the averaged gradients
        self.trainer = Trainer(
            supernet, cfg.model_copy(update={"grad_clip": None}), device, len(self.loader),
            params=supernet.weight_parameters(), before_step=before_step, loss_fn=loss_fn,
        )  # fmt: skip
        if state is not None:
            self.trainer.load_state_dict(state["trainer"])
            self.loader.load_state_dict(state["loader"])
            self.sampler.setstate(_as_tuple(state["extra"]["sampler"]))
        self.stop = threading.Event()  # set on every rank after the same step
        self.requested = threading.Event()  # rank 0: the driver asked to cancel
        self.averager = GradientAverager(world, cfg.grad_clip, self.requested, self.stop)

    def __call__(self) -> None:
        poller = _CancelPoller(self.mailbox, self.requested) if self.rank == 0 else None
        hook = self.trainer.optimizer.register_step_pre_hook(self.averager)
        try:
            while self.trainer.epoch < self.epochs:
                _reseed(self.setup.seed, self.trainer.epoch, self.rank)
                shard = _Shard(self.loader, self.rank, self.world, self.device)
                batches = self._with_progress(shard) if self.rank == 0 else shard
                try:
                    metrics = self.trainer.train_epoch(batches, self.stop)
                except SearchCancelled:
                    return
                metrics, workers = self._gather(metrics, shard)
                stop = self._send_epoch(metrics, workers) if self.rank == 0 else False
                if self._any(stop or self.stop.is_set()):
                    return
        finally:
            hook.remove()
            if poller is not None:
                poller.close()

    def _with_progress(self, shard: _Shard) -> Iterator[tuple[Tensor, Tensor]]:
        n, last = len(shard), 0.0
        for i, batch in enumerate(shard):
            yield batch
            now = time.monotonic()
            if now - last >= PROGRESS_EVERY_S or i + 1 == n:
                last = now
                step = self.trainer.epoch * n + i + 1
                self.mailbox.post({"kind": "progress", "step": step, "total": self.epochs * n})

    def _gather(self, local: dict[str, float], shard: _Shard) -> tuple[dict[str, float], list[dict[str, Any]]]:
        """Epoch metrics over all ranks, and what each rank trained on."""
        import torch.distributed as dist

        mine = torch.tensor(
            [local["train_loss"] * shard.examples, local["train_accuracy"] * shard.examples, shard.examples, 0.0],
            dtype=torch.float64, device=self.device,
        )  # fmt: skip
        mine[3] = shard.fingerprint
        everyone = [torch.zeros_like(mine) for _ in range(self.world)]
        dist.all_gather(everyone, mine)
        rows = torch.stack(everyone).cpu()
        count = max(1.0, float(rows[:, 2].sum()))
        metrics = {"train_loss": float(rows[:, 0].sum()) / count, "train_accuracy": float(rows[:, 1].sum()) / count}
        workers = [{"rank": r, "examples": int(row[2]), "fingerprint": float(row[3])} for r, row in enumerate(rows)]
        return metrics, workers

    def _send_epoch(self, metrics: dict[str, float], workers: list[dict[str, Any]]) -> bool:
        """Rank 0: hand the epoch's metrics and state to the driver, wait until it is checkpointed; True: stop."""
        metrics["lr"] = self.trainer.optimizer.param_groups[0]["lr"]
        state = {
            "trainer": self.trainer.state_dict(),
            "loader": self.loader.state_dict(),
            "rng": capture_rng(),
            "extra": {"sampler": self.sampler.getstate()},
            "metrics": metrics,
        }
        message = {
            "kind": "epoch", "epoch": self.trainer.epoch, "step": self.trainer.epoch * len(self.loader),
            "metrics": metrics, "workers": workers,
        }  # fmt: skip
        return self.mailbox.deliver(message, _to_cpu(state))

    def _any(self, flag: bool) -> bool:
        import torch.distributed as dist

        t = torch.tensor([1.0 if flag else 0.0], device=self.device)
        dist.all_reduce(t)
        return bool(t.item() > 0)


class GradientAverager:
    """An optimizer step pre-hook: averages the gradients that exist over all ranks with one all-reduce of a flat
    buffer (which also carries the cancel request), then clips the averaged gradients like ``nas.train`` does."""

    def __init__(self, world: int, clip: float | None, requested: threading.Event, stop: threading.Event) -> None:
        self.world = world
        self.clip = clip
        self.requested = requested
        self.stop = stop

    def __call__(self, optimizer: torch.optim.Optimizer, args: Any, kwargs: Any) -> None:
        import torch.distributed as dist

        params = [p for g in optimizer.param_groups for p in g["params"]]
        grads = [p.grad for p in params if p.grad is not None]
        flag = params[0].new_full((1,), 1.0 if self.requested.is_set() else 0.0)
        flat = torch.cat([g.reshape(-1).to(flag.dtype) for g in grads] + [flag])
        dist.all_reduce(flat)
        offset = 0
        for g in grads:
            n = g.numel()
            g.copy_(flat[offset : offset + n].view_as(g).div_(self.world))
            offset += n
        if float(flat[-1]) > 0:
            self.stop.set()
        if self.clip is not None:
            nn.utils.clip_grad_norm_(params, self.clip)


class _Shard:
    """Rank ``rank``'s contiguous 1/``world`` share of every global batch, with a count and an order-independent
    fingerprint (sum of the normalised pixels) of what it yielded, so one can see that ranks trained on different
    data."""

    def __init__(self, loader: DeviceLoader, rank: int, world: int, device: torch.device) -> None:
        self.loader, self.rank, self.world = loader, rank, world
        self.examples = 0
        self._fingerprint = torch.zeros((), dtype=torch.float64, device=device)

    def __len__(self) -> int:
        return len(self.loader)

    def __iter__(self) -> Iterator[tuple[Tensor, Tensor]]:
        for x, y in self.loader:
            xs, ys = x.tensor_split(self.world)[self.rank], y.tensor_split(self.world)[self.rank]
            self.examples += len(ys)
            self._fingerprint += xs.sum(dtype=torch.float64)
            yield xs, ys

    @property
    def fingerprint(self) -> Tensor:
        return self._fingerprint


class _CancelPoller:
    """Rank 0: a thread that asks the driver's side for a cancel request every ``CANCEL_POLL_S`` seconds."""

    def __init__(self, mailbox: Mailbox, requested: threading.Event) -> None:
        self.mailbox = mailbox
        self.requested = requested
        self._done = threading.Event()
        self._thread = threading.Thread(target=self._run, name="nas-cancel-poller", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._done.wait(CANCEL_POLL_S):
            try:
                if self.mailbox.cancel_requested():
                    self.requested.set()
                    return
            except Exception:  # the driver is gone: the collective calls fail on their own
                return

    def close(self) -> None:
        self._done.set()


def shard_seed(seed: int, epoch: int, rank: int) -> int:
    """The global RNG seed of ``rank`` during ``epoch`` (dropout, drop-path)."""
    return (seed * 1_000_003 + 7_919 * (epoch + 1) + 104_729 * rank) % (2**31 - 1)


def _reseed(seed: int, epoch: int, rank: int) -> None:
    s = shard_seed(seed, epoch, rank)
    random.seed(s)
    torch.manual_seed(s)


def _as_tuple(value: Any) -> Any:
    """random.Random.setstate needs nested tuples; checkpoints may hand back lists."""
    if isinstance(value, list | tuple):
        return tuple(_as_tuple(v) for v in value)
    return value


def _to_cpu(value: Any) -> Any:
    if isinstance(value, Tensor):
        return value.detach().cpu()
    if isinstance(value, dict):
        return {k: _to_cpu(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return type(value)(_to_cpu(v) for v in value)
    return value
