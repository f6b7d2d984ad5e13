"""The training loop: SGD/AdamW, warm-up + cosine schedule, label smoothing, gradient clipping, AMP and
channels_last on CUDA, checkpoints every epoch with exact resume."""

from __future__ import annotations

import contextlib
import math
import threading
from collections.abc import Callable, Iterable, Iterator
from typing import Any

import torch
from torch import Tensor, nn

from nas.checkpoint import CheckpointStore, capture_rng, restore_rng
from nas.errors import SearchCancelled
from nas.events import Reporter
from nas.spec import TrainSpec


def seed_everything(seed: int, deterministic: bool = True) -> None:
    import random

    random.seed(seed)
    torch.manual_seed(seed)
    if deterministic:
        torch.use_deterministic_algorithms(True, warn_only=True)
        torch.backends.cudnn.benchmark = False


def make_optimizer(params: Iterable[nn.Parameter], cfg: TrainSpec) -> torch.optim.Optimizer:
    params = [p for p in params if p.requires_grad]
    # no weight decay on BatchNorm/bias parameters (1-d tensors)
    decay = [p for p in params if p.ndim > 1]
    no_decay = [p for p in params if p.ndim <= 1]
    groups = [{"params": decay, "weight_decay": cfg.weight_decay}, {"params": no_decay, "weight_decay": 0.0}]
    if cfg.optimizer == "sgd":
        return torch.optim.SGD(groups, lr=cfg.lr, momentum=cfg.momentum, nesterov=cfg.nesterov and cfg.momentum > 0)
    return torch.optim.AdamW(groups, lr=cfg.lr)


def make_scheduler(
    optimizer: torch.optim.Optimizer, cfg: TrainSpec, steps_per_epoch: int
) -> torch.optim.lr_scheduler.LambdaLR:
    """Linear warm-up for ``warmup_epochs`` then cosine decay from ``lr`` to ``lr_min``, stepped every batch."""
    total = max(1, cfg.epochs * steps_per_epoch)
    warmup = min(total - 1, round(cfg.warmup_epochs * steps_per_epoch))
    floor = cfg.lr_min / cfg.lr

    def factor(step: int) -> float:
        if warmup > 0 and step < warmup:
            return (step + 1) / warmup
        progress = (step - warmup) / max(1, total - warmup)
        return floor + (1.0 - floor) * 0.5 * (1.0 + math.cos(math.pi * min(1.0, progress)))

    return torch.optim.lr_scheduler.LambdaLR(optimizer, factor)


def use_amp(cfg: TrainSpec, device: torch.device) -> bool:
    return cfg.amp and device.type == "cuda"


def autocast(enabled: bool, device: torch.device) -> contextlib.AbstractContextManager[Any]:
    if not enabled:
        return contextlib.nullcontext()
    return torch.autocast(device_type=device.type, dtype=torch.bfloat16)


def prepare_model(model: nn.Module, cfg: TrainSpec, device: torch.device) -> nn.Module:
    model = model.to(device)
    if cfg.channels_last and device.type == "cuda":
        model = model.to(memory_format=torch.channels_last)  # type: ignore[call-overload]  # missing from the stubs
    return model


@torch.no_grad()
def evaluate(
    model: nn.Module, batches: Iterable[tuple[Tensor, Tensor]], device: torch.device, amp: bool = False
) -> dict[str, float]:
    """Loss and top-1 accuracy of ``model`` over ``batches`` (eval mode)."""
    model.eval()
    loss_sum, correct, count = 0.0, 0, 0
    for x, y in batches:
        with autocast(amp, device):
            logits = model(x)
        loss_sum += float(nn.functional.cross_entropy(logits.float(), y, reduction="sum"))
        correct += int((logits.argmax(1) == y).sum())
        count += y.numel()
    if count == 0:
        return {"loss": float("nan"), "accuracy": 0.0}
    return {"loss": loss_sum / count, "accuracy": correct / count}


StepHook = Callable[[int], None]


class Trainer:
    """Trains one model with one optimizer. ``before_step(global_step)`` runs before each batch (a supernet samples
    its path there). ``loss_fn(model, x, y)`` may replace the default cross-entropy on the model's logits."""

    def __init__(
        self,
        model: nn.Module,
        cfg: TrainSpec,
        device: torch.device,
        steps_per_epoch: int,
        *,
        params: Iterable[nn.Parameter] | None = None,
        before_step: StepHook | None = None,
        loss_fn: Callable[[nn.Module, Tensor, Tensor], Tensor] | None = None,
    ) -> None:
        self.cfg = cfg
        self.device = device
        self.model = prepare_model(model, cfg, device)
        self.optimizer = make_optimizer(params if params is not None else self.model.parameters(), cfg)
        self.scheduler = make_scheduler(self.optimizer, cfg, steps_per_epoch)
        self.amp = use_amp(cfg, device)
        self.before_step = before_step
        self.loss_fn = loss_fn
        self.criterion = nn.CrossEntropyLoss(label_smoothing=cfg.label_smoothing)
        self.epoch = 0
        self.global_step = 0
        self.total_steps = max(1, cfg.epochs * steps_per_epoch)

    def _loss(self, x: Tensor, y: Tensor) -> tuple[Tensor, Tensor | None]:
        if self.loss_fn is not None:
            return self.loss_fn(self.model, x, y), None
        out = self.model(x)
        if isinstance(out, tuple):  # (logits, aux_logits)
            logits, aux = out
            return self.criterion(logits.float(), y) + 0.4 * self.criterion(aux.float(), y), logits
        return self.criterion(out.float(), y), out

    def train_step(self, x: Tensor, y: Tensor) -> tuple[float, int]:
        if self.before_step is not None:
            self.before_step(self.global_step)
        set_progress = getattr(self.model, "set_progress", None)
        if callable(set_progress):  # ScheduledDropPath and similar schedules
            set_progress(self.global_step / self.total_steps)
        self.model.train()
        self.optimizer.zero_grad(set_to_none=True)
        with autocast(self.amp, self.device):
            loss, logits = self._loss(x, y)
        loss.backward()
        if self.cfg.grad_clip is not None:
            nn.utils.clip_grad_norm_([p for g in self.optimizer.param_groups for p in g["params"]], self.cfg.grad_clip)
        self.optimizer.step()
        self.scheduler.step()
        self.global_step += 1
        correct = int((logits.argmax(1) == y).sum()) if logits is not None else 0
        return float(loss.detach()), correct

    def train_epoch(
        self, batches: Iterable[tuple[Tensor, Tensor]], cancel: threading.Event | None = None
    ) -> dict[str, float]:
        loss_sum, correct, count = 0.0, 0, 0
        for x, y in batches:
            if cancel is not None and cancel.is_set():
                raise SearchCancelled("training cancelled")
            loss, ok = self.train_step(x, y)
            loss_sum += loss * y.numel()
            correct += ok
            count += y.numel()
        self.epoch += 1
        return {"train_loss": loss_sum / max(1, count), "train_accuracy": correct / max(1, count)}

    def state_dict(self) -> dict[str, Any]:
        return {
            "model": self.model.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict(),
            "epoch": self.epoch,
            "global_step": self.global_step,
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.model.load_state_dict(state["model"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.scheduler.load_state_dict(state["scheduler"])
        self.epoch = int(state["epoch"])
        self.global_step = int(state["global_step"])


def fit(
    trainer: Trainer,
    train_loader: Any,
    *,
    epochs: int,
    phase: str,
    reporter: Reporter,
    checkpoints: CheckpointStore | None = None,
    name: str = "train",
    val_loader: Any = None,
    cancel: threading.Event | None = None,
    extra_state: tuple[Callable[[], dict[str, Any]], Callable[[dict[str, Any]], None]] | None = None,
    eval_every: int = 1,
) -> dict[str, float]:
    """Train for ``epochs`` epochs, resuming from checkpoint ``name`` if it exists, checkpointing after each epoch.

    The checkpoint holds the trainer (model, optimizer, scheduler, counters), the loaders' shuffling state, every
    RNG and ``extra_state`` (a getter/setter pair for strategy state), so an interrupted run that resumes ends
    exactly where an uninterrupted one would.
    """
    metrics: dict[str, float] = {}
    if checkpoints is not None and (state := checkpoints.load(name)) is not None:
        trainer.load_state_dict(state["trainer"])
        train_loader.load_state_dict(state["loader"])
        restore_rng(state["rng"])
        if extra_state is not None:
            extra_state[1](state["extra"])
        metrics = dict(state.get("metrics", {}))
        reporter.log(f"resumed {phase} at epoch {trainer.epoch}/{epochs}", phase=phase)
    reporter.phase_started(phase, total=epochs)
    while trainer.epoch < epochs:
        metrics = trainer.train_epoch(_with_progress(train_loader, reporter, phase, trainer, epochs), cancel)
        if val_loader is not None and (trainer.epoch % eval_every == 0 or trainer.epoch == epochs):
            val = evaluate(trainer.model, val_loader, trainer.device, trainer.amp)
            metrics.update({"val_loss": val["loss"], "val_accuracy": val["accuracy"]})
        metrics["lr"] = trainer.optimizer.param_groups[0]["lr"]
        reporter.epoch(phase, trainer.epoch, epochs, metrics)
        if checkpoints is not None:
            state = {
                "trainer": trainer.state_dict(),
                "loader": train_loader.state_dict(),
                "rng": capture_rng(),
                "extra": extra_state[0]() if extra_state is not None else {},
                "metrics": metrics,
            }
            path = checkpoints.save(name, state)
            reporter.checkpoint(phase, str(path))
    reporter.phase_finished(phase, metrics)
    return metrics


def _with_progress(
    loader: Any, reporter: Reporter, phase: str, trainer: Trainer, epochs: int
) -> Iterator[tuple[Tensor, Tensor]]:
    n = len(loader)
    for i, batch in enumerate(loader):
        yield batch
        reporter.progress(phase, trainer.epoch * n + i + 1, epochs * n)
