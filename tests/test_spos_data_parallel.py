"""SPOS supernet training data-parallel on Ray Train (CPU, gloo, 2 workers): training, sharding, checkpoints,
cancellation, exact resume, and the validation of the options.

The workers rebuild the space from its class, which must be importable there: these tests use the real NASNet space
(not the toy space of a test module) with a tiny macro on 8x8 digits. One Ray instance serves the whole module;
starting the Ray Train workers is the slow part, so only two trainings run on Ray (the reference and its resume).
The worker loop is also run in this process as a torch.distributed world of one.
"""

from __future__ import annotations

import os
import shutil
import tempfile
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch

from nas.checkpoint import CheckpointStore
from nas.data import DataSplits, load_dataset
from nas.errors import InvalidInput, SearchCancelled
from nas.events import Event, EventType, ListReporter
from nas.space import get_space
from nas.spec import DatasetSpec
from nas.strategies.base import SearchContext, get_strategy

BATCH = 16
OPTIONS = {
    "epochs": 2,
    "data_parallel": 2,
    "train": {"batch_size": BATCH, "lr": 0.01},
    "evolution": {"population": 4, "generations": 0, "parents": 2},
    "bn_batches": 1,
    "eval_batch_size": 512,
}
SEED = 3


@pytest.fixture(scope="module")
def data() -> DataSplits:
    return load_dataset(DatasetSpec(name="digits", image_size=8, limit=200))


def make_ctx(root: Path, data: DataSplits, reporter: ListReporter | None = None) -> SearchContext:
    space = get_space("nasnet", ops=["sep_conv_3x3", "max_pool_3x3", "skip_connect"])
    macro = space.macro(
        {"cells_per_stack": 1, "filters": 8, "stem_multiplier": 1},
        num_classes=data.num_classes,
        in_channels=data.channels,
    )
    return SearchContext(
        space=space,
        macro=macro,
        data=data,
        device=torch.device("cpu"),
        checkpoints=CheckpointStore(root / "ckpt"),
        reporter=reporter or ListReporter(),
        seed=SEED,
    )


@pytest.fixture(scope="module")
def ray_cluster() -> Iterator[object]:
    """A local Ray with 2 CPUs for the module; the strategy uses it as it finds it (as in the service)."""
    import ray

    if ray.is_initialized():  # another test left one running: use it as it is
        yield ray
        return
    temp = tempfile.mkdtemp(prefix="ray-dpt-", dir="/tmp")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("RAY_TRAIN_HEALTH_CHECK_INTERVAL_S", "0.25")  # Ray Train notices the end of a run sooner
        ray.init(
            num_cpus=2,
            include_dashboard=False,
            log_to_driver=False,
            configure_logging=False,
            _temp_dir=temp,
            _node_ip_address="127.0.0.1",
        )
    yield ray
    ray.shutdown()
    shutil.rmtree(temp, ignore_errors=True)


def model_state(state: dict) -> dict[str, torch.Tensor]:
    return state["trainer"]["model"]


def assert_same_weights(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> None:
    assert a.keys() == b.keys()
    different = [k for k in a if not torch.equal(a[k].cpu(), b[k].cpu())]
    assert not different, f"{len(different)} tensors differ, e.g. {different[:3]}"


class SnapshotAtEpoch1(ListReporter):
    """Copies the supernet checkpoint as it is right after epoch 1 (the state an interrupted run would leave)."""

    def __init__(self, target: Path) -> None:
        super().__init__()
        self.target = target

    def emit(self, event: Event) -> None:
        super().emit(event)
        if event.type == EventType.CHECKPOINT and event.phase == "supernet" and not self.target.exists():
            shutil.copy(event.data["path"], self.target)


@pytest.fixture(scope="module")
def reference(ray_cluster, data, tmp_path_factory):
    """An uninterrupted data-parallel search: 2 supernet epochs on 2 workers, then the evolution."""
    root = tmp_path_factory.mktemp("reference")
    ctx = make_ctx(root, data, reporter=SnapshotAtEpoch1(root / "epoch1.pt"))
    initial = get_strategy("spos", OPTIONS).build_supernet(ctx).state_dict()
    result = get_strategy("spos", OPTIONS).run(ctx)
    return ctx, result, initial, ctx.checkpoints.load("supernet"), root / "epoch1.pt"


def expected_shards(data: DataSplits, epochs: int) -> list[list[tuple[int, float]]]:
    """(examples, fingerprint) per epoch and rank, recomputed from a loader seeded like the strategy's."""
    loader = data.loader("train", BATCH, shuffle=True, augment=True, seed=SEED + 1)
    out = []
    for _ in range(epochs):
        counts, sums = [0, 0], [torch.zeros((), dtype=torch.float64) for _ in range(2)]
        for x, _y in loader:
            for rank, part in enumerate(x.tensor_split(2)):
                counts[rank] += len(part)
                sums[rank] += part.sum(dtype=torch.float64)
        out.append([(counts[r], float(sums[r])) for r in range(2)])
    return out


@pytest.mark.ray
@pytest.mark.slow
def test_data_parallel_search_trains_on_distinct_shards_and_evolves(reference, data) -> None:
    ctx, result, initial, state, _ = reference
    events = ctx.reporter.events
    epochs = [e for e in events if e.type == EventType.EPOCH and e.phase == "supernet"]
    assert [e.step for e in epochs] == [1, 2]
    assert epochs[1].metrics["train_loss"] < epochs[0].metrics["train_loss"]  # it learns
    assert sum(e.type == EventType.CHECKPOINT and e.phase == "supernet" for e in events) == 2
    steps = len(data.train) // BATCH
    progress = [e.step for e in events if e.type == EventType.PROGRESS and e.phase == "supernet"]
    assert progress == sorted(progress) and progress[-1] == 2 * steps

    # each rank trained on its own half of every global batch, exactly the half the sharding promises
    seen = [[(w["examples"], w["fingerprint"]) for w in e.data["workers"]] for e in epochs]
    assert seen == expected_shards(data, 2)
    assert all(s[0][0] == s[1][0] == steps * BATCH // 2 and s[0][1] != s[1][1] for s in seen)

    # the checkpoint has the single-process format and trained weights
    assert set(state) == {"trainer", "loader", "rng", "extra", "metrics"}
    assert state["trainer"]["epoch"] == 2 and state["trainer"]["global_step"] == 2 * steps
    assert any(not torch.equal(initial[k], v) for k, v in model_state(state).items())

    # the evolution ran on the trained supernet
    assert result.strategy == "spos" and len(result.candidates) >= 4
    assert any(e.type == EventType.PHASE_FINISHED and e.phase == "evolution" for e in events)


@pytest.mark.ray
@pytest.mark.slow
def test_a_single_process_run_continues_from_a_data_parallel_checkpoint(reference, data, tmp_path) -> None:
    """Same checkpoint format: the in-process trainer loads it (nothing left to train) into its supernet."""
    _, _, _, state, _ = reference
    ctx = make_ctx(tmp_path, data)
    ctx.checkpoints.save("supernet", state)
    supernet = get_strategy("spos", {**OPTIONS, "data_parallel": 1}).train_supernet(ctx)
    assert_same_weights(supernet.state_dict(), model_state(state))


@pytest.mark.ray
@pytest.mark.slow
def test_resume_after_one_epoch_matches_the_uninterrupted_run(reference, data, tmp_path) -> None:
    """Epoch 1 of the 2-epoch run was checkpointed, then the search stopped: resuming trains epoch 2 on 2 workers
    and ends with exactly the weights, optimizer state and metrics of the uninterrupted run."""
    _, _, _, uninterrupted, epoch1 = reference
    store = CheckpointStore(tmp_path / "ckpt")
    store.save("supernet", torch.load(epoch1, weights_only=True))
    assert store.load("supernet")["trainer"]["epoch"] == 1

    ctx = make_ctx(tmp_path, data)
    supernet = get_strategy("spos", OPTIONS).train_supernet(ctx)
    resumed = ctx.checkpoints.load("supernet")
    assert "resumed supernet at epoch 1/2" in [e.message for e in ctx.reporter.events if e.type == EventType.LOG]
    assert [e.step for e in ctx.reporter.events if e.type == EventType.EPOCH] == [2]
    assert_same_weights(model_state(resumed), model_state(uninterrupted))
    assert_same_weights(supernet.state_dict(), model_state(uninterrupted))  # the driver holds the final weights
    momentum = [v["momentum_buffer"] for v in resumed["trainer"]["optimizer"]["state"].values()]
    reference_momentum = [v["momentum_buffer"] for v in uninterrupted["trainer"]["optimizer"]["state"].values()]
    assert all(torch.equal(a, b) for a, b in zip(momentum, reference_momentum, strict=True))
    assert resumed["metrics"] == uninterrupted["metrics"]


@pytest.mark.ray
@pytest.mark.slow
def test_cancel_before_the_workers_start_kills_the_trainer(ray_cluster, data, tmp_path, monkeypatch) -> None:
    """Workers that cannot stop by themselves (not started yet) are killed after the grace period; nothing leaks."""
    import time

    from nas.strategies import data_parallel

    monkeypatch.setattr(data_parallel, "CANCEL_GRACE_S", 0.0)
    ctx = make_ctx(tmp_path, data)
    ctx.cancel.set()
    with pytest.raises(SearchCancelled):
        get_strategy("spos", OPTIONS).train_supernet(ctx)
    assert not ctx.checkpoints.exists("supernet")
    deadline = time.monotonic() + 30
    while ray_cluster.available_resources().get("CPU", 0) < ray_cluster.cluster_resources()["CPU"]:
        assert time.monotonic() < deadline, "the killed trainer still holds CPUs"
        time.sleep(0.2)


@pytest.mark.ray
@pytest.mark.slow
def test_more_workers_than_the_cluster_holds_are_refused(ray_cluster, data, tmp_path) -> None:
    from nas.strategies.data_parallel import check_resources

    ctx = make_ctx(tmp_path, data)
    workers = int(ray_cluster.cluster_resources()["CPU"]) + 1  # one CPU each: one more than there are
    with pytest.raises(InvalidInput) as info:
        get_strategy("spos", {**OPTIONS, "data_parallel": workers, "train": {"batch_size": 2 * workers}}).run(ctx)
    assert info.value.field == "strategy.options.data_parallel" and "CPUs" in info.value.message
    assert not ctx.checkpoints.exists("supernet")
    with pytest.raises(InvalidInput) as info:
        check_resources(ray_cluster, 2, cuda=True, cpus_per_worker=1.0)  # this cluster has no GPU
    assert info.value.field == "strategy.options.data_parallel" and "GPU" in info.value.message


@pytest.mark.parametrize(
    ("options", "field"),
    [
        ({"data_parallel": 0}, "strategy.options.data_parallel"),
        ({"data_parallel": 65}, "strategy.options.data_parallel"),
        ({"data_parallel": 3, "train": {"batch_size": 32}}, "strategy.options.data_parallel"),
        ({"data_parallel": 2, "cpus_per_worker": 0}, "strategy.options.cpus_per_worker"),
    ],
)
def test_bad_data_parallel_options_name_the_field(options, field) -> None:
    with pytest.raises(InvalidInput) as info:
        get_strategy("spos", options)
    assert info.value.field == field


def test_data_parallel_needs_ray(monkeypatch) -> None:
    import nas.strategies.spos as spos

    monkeypatch.setattr(spos, "ray_available", lambda: False)
    with pytest.raises(InvalidInput) as info:
        get_strategy("spos", {"data_parallel": 2})
    assert info.value.field == "strategy.options.data_parallel" and "Ray" in info.value.message
    assert get_strategy("spos", {"data_parallel": 1}).options.data_parallel == 1


def test_no_ray_import_at_import_time() -> None:
    import subprocess
    import sys

    code = "import sys, nas.strategies.spos, nas.strategies.data_parallel; sys.exit('ray' in sys.modules)"
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1])}
    assert subprocess.run([sys.executable, "-c", code], env=env, check=False).returncode == 0


# --- one rank in this process (torch.distributed world of one): the worker loop without Ray ----------------------
class FakeMailbox:
    """The driver's side for a rank run in the test: records messages; asks to cancel once training is past
    ``cancel_after`` steps, and holds that rank until its cancel poller has seen the request."""

    def __init__(self, cancel_after: int | None = None) -> None:
        self.posts: list[dict] = []
        self.delivered: list[tuple[dict, dict]] = []
        self.cancel_after = cancel_after
        self.cancel = False
        self.requested: threading.Event | None = None

    def post(self, message: dict) -> None:
        self.posts.append(message)
        if self.cancel_after is not None and message["step"] > self.cancel_after and not self.cancel:
            self.cancel = True
            assert self.requested is not None and self.requested.wait(10)

    def deliver(self, message: dict, state: dict) -> bool:
        self.delivered.append((message, state))
        return False

    def cancel_requested(self) -> bool:
        return self.cancel


@pytest.fixture
def world_of_one() -> Iterator[None]:
    import torch.distributed as dist

    dist.init_process_group("gloo", store=dist.HashStore(), rank=0, world_size=1)
    yield
    dist.destroy_process_group()


def one_rank(ctx: SearchContext, mailbox: FakeMailbox, options: dict | None = None):
    from nas.strategies.data_parallel import WorkerSetup, WorkerTraining

    setup = WorkerSetup(
        strategy=get_strategy("spos", options or OPTIONS), space_cls=type(ctx.space),
        space_options=ctx.space.options.model_dump(), macro=ctx.macro, seed=ctx.seed, cuda=False, threads=1,
        deterministic=False,
    )  # fmt: skip
    return WorkerTraining(setup, ctx.data, None, mailbox, rank=0, world=1, device=torch.device("cpu"))


@pytest.mark.slow  # two supernet trainings per case
@pytest.mark.parametrize("extra", [{}, {"strict_fairness": True, "epochs": 1}], ids=["uniform", "fair"])
def test_one_rank_trains_exactly_like_the_single_process_loop(world_of_one, data, tmp_path, extra) -> None:
    """The gradient all-reduce, the clipping after it and the sharding change nothing for a world of one."""
    options = {**OPTIONS, **extra}
    epochs = options["epochs"]
    ctx = make_ctx(tmp_path, data)
    single = get_strategy("spos", {**options, "data_parallel": 1}).train_supernet(ctx)
    mailbox = FakeMailbox()
    rank = one_rank(ctx, mailbox, options)
    rank()
    assert_same_weights(rank.trainer.model.state_dict(), single.state_dict())
    assert [m["epoch"] for m, _ in mailbox.delivered] == list(range(1, epochs + 1))
    state = mailbox.delivered[-1][1]
    assert set(state) == {"trainer", "loader", "rng", "extra", "metrics"}
    expected = ctx.checkpoints.load("supernet")["metrics"]
    assert state["metrics"] == pytest.approx(expected, rel=1e-12)
    steps = len(data.train) // BATCH
    assert mailbox.posts[-1] == {"kind": "progress", "step": epochs * steps, "total": epochs * steps}


def test_a_cancel_request_stops_the_ranks_after_the_next_step(world_of_one, data, tmp_path) -> None:
    steps = len(data.train) // BATCH
    mailbox = FakeMailbox(cancel_after=steps)  # asked during epoch 2, after its first step
    rank = one_rank(make_ctx(tmp_path, data), mailbox)
    mailbox.requested = rank.requested
    rank()
    assert rank.stop.is_set()
    assert rank.trainer.global_step == steps + 2  # the step after the request carried the flag; then it stopped
    assert rank.trainer.epoch == 1 and [m["epoch"] for m, _ in mailbox.delivered] == [1]
