"""Training one block by ensemble bootstrapping (spec section 2), with state for exact resume.

One step: draw ``paths_per_step`` candidate paths of block k uniformly without replacement (among those that run on
the block's input level), give each its own pair of BYOL views of the batch, compute the target projections of
every (path, view) with the EMA target network, form the population center per view (mean of the normalised
projections over the paths), then for every path the online loss ``-2 cos(pred(proj(v1)), T2) - 2 cos(pred(proj(v2)),
T1)`` is back-propagated on its own (gradients accumulate over the paths). Every ``update_interval`` steps (public
code: 8, each step with its own paths and views) one LARS step on the summed gradients follows and the target moves
towards the online network with the cosine momentum schedule; the schedules count these updates. An epoch's last
steps update at its end, so checkpoints (after every epoch) never hold partial gradients.
"""

from __future__ import annotations

import math
import random
import threading
from collections.abc import Callable, Iterator, Sequence
from typing import TYPE_CHECKING, Any

import torch
from torch import Tensor

from nas.data.byol import ViewSpec, byol_views
from nas.errors import SearchCancelled
from nas.optim import LARS, lars_param_groups
from nas.strategies.bossnas.bootstrap import (
    BossNASNet,
    Path,
    as_path,
    bootstrap_loss,
    ema_update,
    population_center,
    target_momentum,
)
from nas.train import autocast

if TYPE_CHECKING:
    from nas.data import DataSplits, DeviceLoader
    from nas.strategies.bossnas.options import BossNASOptions

SALT_LOADER = 1000
SALT_PATHS = 101
SALT_AUGMENT = 211
SALT_RATING = 307
SALT_BN = 2000


def block_seed(seed: int, salt: int, k: int) -> int:
    return (seed * 1_000_003 + salt * 7919 + k) % (2**62)


def view_specs(opts: BossNASOptions, flip_ok: bool) -> tuple[ViewSpec, ViewSpec]:
    """The two views, with the crop scale of the options and no flip on data where flipping is wrong. ``bossnas``
    order (public config: ``train_pipeline1`` blur 0.1; ``train_pipeline2`` blur 1.0, solarize 0.2) or BYOL's."""
    common = {"crop_scale": (opts.crop_min_scale, 1.0), "flip_p": 0.5 if flip_ok else 0.0}
    if opts.view_order == "bossnas":
        first, second = {"blur_p": 0.1, "solarize_p": 0.0}, {"blur_p": 1.0, "solarize_p": 0.2}
    else:
        first, second = {"blur_p": 1.0, "solarize_p": 0.0}, {"blur_p": 0.1, "solarize_p": 0.2}
    return ViewSpec(**first, **common), ViewSpec(**second, **common)  # type: ignore[arg-type]


class Normaliser:
    """Between the loaders' normalised floats and the [0, 1] images the augmentations work on."""

    def __init__(self, data: DataSplits, device: torch.device) -> None:
        self.mean = torch.tensor(data.mean, dtype=torch.float32, device=device).view(1, -1, 1, 1)
        self.std = torch.tensor([max(float(s), 1e-6) for s in data.std], device=device).view(1, -1, 1, 1)

    def to_unit(self, x: Tensor) -> Tensor:
        return (x * self.std + self.mean).clamp_(0.0, 1.0)

    def normalise(self, x: Tensor) -> Tensor:
        return (x - self.mean) / self.std


def block_schedule(warmup_steps: int, total: int) -> Callable[[int], float]:
    """Linear warm-up then cosine decay to zero over ``total`` steps (restarted for every block)."""

    def factor(step: int) -> float:
        if warmup_steps > 0 and step < warmup_steps:
            return (step + 1) / warmup_steps
        progress = (step - warmup_steps) / max(1, total - warmup_steps)
        return 0.5 * (1.0 + math.cos(math.pi * min(1.0, progress)))

    return factor


class BlockTrainer:
    """Trains block ``k`` of ``net`` on top of ``prefix`` (the paths of blocks 0..k-1 that feed it)."""

    def __init__(
        self,
        net: BossNASNet,
        k: int,
        prefix: Sequence[Path],
        opts: BossNASOptions,
        data: DataSplits,
        device: torch.device,
        seed: int,
        steps_per_epoch: int,
    ) -> None:
        self.net, self.k, self.opts, self.device = net, k, opts, device
        self.prefix = [as_path(p) for p in prefix]
        sn = net.online
        self.level = net.start_level
        for j, p in enumerate(self.prefix):
            self.level = sn.path_end_level(j, p)
        self.candidates = [as_path(p) for p in sn.block_paths(k, self.level)]
        if not self.candidates:
            raise ValueError(f"block {k} has no candidate path on an input at level {self.level}")
        self.steps_per_epoch = max(1, steps_per_epoch)
        self.interval = opts.update_interval
        self.updates_per_epoch = math.ceil(self.steps_per_epoch / self.interval)  # the last one may sum fewer steps
        self.total_steps = opts.epochs_per_block * self.updates_per_epoch  # optimizer (and target) updates
        lr = opts.lr * opts.batch_size * self.interval / 256.0
        groups = lars_param_groups(net.trainable_parameters(k), opts.weight_decay)
        self.optimizer = LARS(groups, lr=lr, momentum=opts.momentum, eta=opts.trust_coefficient)
        warmup = min(self.total_steps - 1, round(opts.warmup_epochs * self.updates_per_epoch))
        self.scheduler = torch.optim.lr_scheduler.LambdaLR(self.optimizer, block_schedule(warmup, self.total_steps))
        self.online_params, self.target_params = net.ema_pairs(k)
        self.path_rng = random.Random(block_seed(seed, SALT_PATHS, k))
        self.augment_generator = torch.Generator().manual_seed(block_seed(seed, SALT_AUGMENT, k))
        self.specs = view_specs(opts, data.flip_ok)
        self.norm = Normaliser(data, device)
        self.amp = opts.amp and device.type == "cuda"
        self.step = 0  # optimizer updates so far
        self.pending = 0  # steps whose gradients wait for the next update (0 at every epoch end)
        self.tau = target_momentum(0, self.total_steps, opts.ema_momentum)
        self.epoch = 0

    # --- one step ----------------------------------------------------------------------------------------------
    def _views(self, x01: Tensor, n: int) -> list[tuple[Tensor, Tensor]]:
        out = []
        for _ in range(n):
            v1, v2 = byol_views(x01, self.augment_generator, self.specs)
            out.append((self.norm.normalise(v1), self.norm.normalise(v2)))
        return out

    def _output(self, which: str, x: Tensor, path: Path) -> tuple[Tensor, int]:
        h, level = self.net.run_prefix(which, x, self.prefix)
        return self.net.run_block(which, h, self.k, path, level), self.net.online.path_end_level(self.k, path)

    def train_step(self, x: Tensor) -> dict[str, float]:
        """One step on the normalised batch ``x`` (as the loaders give it): gradients of freshly sampled paths are
        added to those of the steps since the last update, and every ``update_interval`` steps the optimizer and the
        target update. Returns the mean loss and the schedules."""
        net, k = self.net, self.k
        paths = self.path_rng.sample(self.candidates, min(self.opts.paths_per_step, len(self.candidates)))
        views = self._views(self.norm.to_unit(x), len(paths))
        net.train()
        with torch.no_grad(), autocast(self.amp, self.device):
            targets = []
            for path, (v1, v2) in zip(paths, views, strict=True):
                h1, level = self._output("target", v1, path)
                h2, _ = self._output("target", v2, path)
                targets.append((net.target_projection(h1, k, level), net.target_projection(h2, k, level)))
        center1 = population_center([t[0] for t in targets])
        center2 = population_center([t[1] for t in targets])
        if self.pending == 0:
            self.optimizer.zero_grad(set_to_none=True)
        total = 0.0
        for path, (v1, v2) in zip(paths, views, strict=True):
            with autocast(self.amp, self.device):
                h1, level = self._output("online", v1, path)
                h2, _ = self._output("online", v2, path)
                p1 = net.online_prediction(h1, k, level)
                p2 = net.online_prediction(h2, k, level)
            loss = bootstrap_loss(p1, p2, center1, center2).mean()
            loss.backward()  # per path: the graphs of the other paths are never alive at the same time
            total += float(loss.detach())
        lr = self.optimizer.param_groups[0]["lr"]
        self.pending += 1
        if self.pending == self.interval:
            self.update()
        return {"loss": total / len(paths), "lr": lr, "target_momentum": self.tau}

    def update(self) -> None:
        """One optimizer step on the summed gradients of the pending steps, then the target's EMA step (public code:
        the optimizer hook and the BYOL hook both act every ``update_interval`` iterations)."""
        if self.pending == 0:
            return
        self.optimizer.step()
        self.scheduler.step()
        self.tau = target_momentum(self.step, self.total_steps, self.opts.ema_momentum)
        ema_update(self.online_params, self.target_params, self.tau)
        self.step += 1
        self.pending = 0
        self.optimizer.zero_grad(set_to_none=True)

    def train_epoch(
        self,
        loader: DeviceLoader,
        cancel: threading.Event | None = None,
        on_step: Callable[[int, int], None] | None = None,
    ) -> dict[str, float]:
        loss_sum, steps, last = 0.0, 0, {}
        for x, _ in _batches(loader):
            if cancel is not None and cancel.is_set():
                raise SearchCancelled("search cancelled")
            before = self.step
            last = self.train_step(x)
            loss_sum += last["loss"]
            steps += 1
            if on_step is not None and self.step != before:
                on_step(self.step, self.total_steps)
        if self.pending:  # the epoch's last steps update now, so a checkpoint never holds partial gradients
            self.update()
            if on_step is not None:
                on_step(self.step, self.total_steps)
        self.epoch += 1
        return {
            "loss": loss_sum / max(1, steps),
            "lr": float(last.get("lr", 0.0)),
            "target_momentum": self.tau,
        }

    # --- state -------------------------------------------------------------------------------------------------
    def state_dict(self) -> dict[str, Any]:
        """The trainer's own state (the network's weights are saved by the caller)."""
        return {
            "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict(),
            "step": self.step,
            "tau": self.tau,
            "epoch": self.epoch,
            "path_rng": self.path_rng.getstate(),
            "augment": self.augment_generator.get_state(),
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        from nas.strategies.evolution import python_state

        self.optimizer.load_state_dict(state["optimizer"])
        self.scheduler.load_state_dict(state["scheduler"])
        self.step = int(state["step"])
        last = max(0, self.step - 1)  # checkpoints without "tau": the momentum of the last update
        self.tau = float(state.get("tau", target_momentum(last, self.total_steps, self.opts.ema_momentum)))
        self.pending = 0
        self.epoch = int(state["epoch"])
        self.path_rng.setstate(python_state(state["path_rng"]))
        self.augment_generator.set_state(torch.as_tensor(state["augment"], dtype=torch.uint8).cpu().clone())


def _batches(loader: DeviceLoader) -> Iterator[tuple[Tensor, Tensor]]:
    """The loader's batches, skipping a last batch of one image (BatchNorm cannot train on it)."""
    for x, y in loader:
        if len(x) > 1:
            yield x, y
