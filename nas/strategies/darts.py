"""DARTS, first order (Liu, Simonyan & Yang, "DARTS: Differentiable Architecture Search", ICLR 2019).

The space's differentiable supernet mixes every candidate op of every edge by the softmax of architecture logits
(alphas). The training data is split in two halves: the network weights are trained on one (SGD, cosine schedule),
the alphas on the other (Adam), alternating one alpha step and one weight step per batch; first order: the alpha
gradient is taken at the current weights. After the last epoch the genotype is derived from the alphas.

Resume: a checkpoint after every epoch holds the supernet (weights and alphas), both optimizers, the schedule, both
loaders' shuffling state, every RNG and the genotype of every epoch; a resumed run ends where an uninterrupted one
would. Constraints cannot steer the relaxation: the derived architecture is measured and flagged infeasible when it
breaks them.
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Iterator
from typing import Any, ClassVar

import torch
from pydantic import Field
from torch import Tensor, nn

from nas.arch import Architecture
from nas.checkpoint import capture_rng, restore_rng
from nas.errors import InvalidInput
from nas.events import Event, EventType
from nas.objectives import mark_pareto, rank
from nas.spec import Candidate, SearchResult, TrainSpec
from nas.strategies.base import SearchContext, Strategy, StrategyOptions
from nas.supernet import Supernet
from nas.train import Trainer, autocast, evaluate

log = logging.getLogger(__name__)

PHASE = "darts"
CHECKPOINT = "darts"


def _darts_train() -> TrainSpec:
    return TrainSpec(
        epochs=50,
        batch_size=64,
        lr=0.025,
        lr_min=0.001,
        momentum=0.9,
        nesterov=False,
        weight_decay=3e-4,
        grad_clip=5.0,
    )


class DARTSOptions(StrategyOptions):
    train: TrainSpec = Field(
        default_factory=_darts_train,
        description="weights: epochs, batch size, SGD lr (cosine to lr_min), plain momentum, weight decay, gradient "
        "clipping (DARTS's: 50, 64, 0.025 -> 0.001, 0.9 without Nesterov, 3e-4, 5); a train given replaces all",
    )
    arch_lr: float = Field(3e-4, gt=0.0, le=1.0, description="Adam learning rate of the alphas")
    arch_betas: tuple[float, float] = Field((0.5, 0.999), description="Adam betas of the alphas")
    arch_weight_decay: float = Field(1e-3, ge=0.0, le=1.0, description="weight decay of the alphas")
    weight_share: float = Field(
        0.5, gt=0.0, lt=1.0, description="share of the training data for the weights; the rest trains the alphas"
    )
    macro: dict[str, Any] = Field(
        default_factory=lambda: {"layers": 8, "channels": 16},
        description="overrides of the space's macro for the search network",
    )
    eval_every: int = Field(1, ge=1, le=10_000, description="epochs between evaluations on the validation split")


def _check_options(opts: DARTSOptions) -> None:
    if opts.train.epochs < 1:
        raise InvalidInput("strategy.options.train.epochs", "DARTS needs at least 1 epoch")
    for k, beta in enumerate(opts.arch_betas):
        if not 0.0 <= beta < 1.0:
            raise InvalidInput(f"strategy.options.arch_betas.{k}", f"must be in [0, 1), got {beta}")


def split_training_data(data: Any, share: float, seed: int) -> tuple[Any, Any]:
    """Two datasets whose ``train`` split is a seeded random part of ``data.train``: ``share`` of it for the
    weights, the rest for the alphas (given as ``train`` too, so both loaders shuffle and augment alike)."""
    n = len(data.train)
    if n < 2:
        raise InvalidInput("dataset", f"DARTS needs at least 2 training images, got {n}")
    g = torch.Generator().manual_seed(seed)
    order = torch.randperm(n, generator=g)
    cut = min(n - 1, max(1, round(n * share)))
    weights = dataclasses.replace(data, train=data.train.subset(order[:cut]))
    alphas = dataclasses.replace(data, train=data.train.subset(order[cut:]))
    return weights, alphas


class DARTSStrategy(Strategy):
    """First-order DARTS on a space with a differentiable supernet (``space.supernet(mode="differentiable")``)."""

    name: ClassVar[str] = "darts"
    Options: ClassVar[type[StrategyOptions]] = DARTSOptions
    needs_differentiable: ClassVar[bool] = True

    def __init__(self, options: Any = None) -> None:
        super().__init__(options)
        _check_options(self.options)

    def build_supernet(self, ctx: SearchContext) -> Supernet:
        opts: DARTSOptions = self.options
        macro = ctx.space.macro(ctx.macro, **opts.macro)
        torch.manual_seed(ctx.seed)
        supernet = ctx.space.supernet(macro, mode="differentiable")
        if not supernet.arch_parameters():
            raise InvalidInput("strategy.name", f"space {ctx.space.name!r} gave a supernet without alphas")
        return supernet

    def run(self, ctx: SearchContext) -> SearchResult:
        opts: DARTSOptions = self.options
        cfg = opts.train
        self.check_space(ctx.space)
        supernet = self.build_supernet(ctx)
        weight_data, alpha_data = split_training_data(ctx.data, opts.weight_share, ctx.seed)
        device = ctx.device
        train_loader = weight_data.loader(
            "train", cfg.batch_size, shuffle=True, augment=cfg.augment, device=device, seed=ctx.seed + 1
        )
        alpha_loader = alpha_data.loader(
            "train", cfg.batch_size, shuffle=True, augment=cfg.augment, device=device, seed=ctx.seed + 2
        )
        val_loader = ctx.loader("val", cfg.batch_size, shuffle=False, augment=False)
        trainer = Trainer(
            supernet, cfg, device, steps_per_epoch=max(1, len(train_loader)), params=supernet.weight_parameters()
        )
        arch_opt = torch.optim.Adam(
            supernet.arch_parameters(), lr=opts.arch_lr, betas=opts.arch_betas, weight_decay=opts.arch_weight_decay
        )
        history: list[dict[str, Any]] = []  # per epoch: the derived arch and the supernet's metrics
        if (state := ctx.checkpoints.load(CHECKPOINT)) is not None:
            trainer.load_state_dict(state["trainer"])
            arch_opt.load_state_dict(state["arch_optimizer"])
            train_loader.load_state_dict(state["train_loader"])
            alpha_loader.load_state_dict(state["alpha_loader"])
            restore_rng(state["rng"])
            history = list(state["history"])
            ctx.reporter.log(f"resumed DARTS at epoch {trainer.epoch}/{cfg.epochs}", phase=PHASE)
        ctx.reporter.phase_started(PHASE, total=cfg.epochs)
        metrics: dict[str, float] = dict(history[-1]["metrics"]) if history else {}
        while trainer.epoch < cfg.epochs:
            ctx.check_cancelled()
            batches = self._alternate(ctx, supernet, trainer, arch_opt, train_loader, alpha_loader)
            metrics = trainer.train_epoch(batches, ctx.cancel)
            if trainer.epoch % opts.eval_every == 0 or trainer.epoch == cfg.epochs:
                val = evaluate(supernet, val_loader, device, trainer.amp)
                metrics.update(val_loss=val["loss"], val_accuracy=val["accuracy"])
            metrics["lr"] = trainer.optimizer.param_groups[0]["lr"]
            arch = supernet.derive()
            history.append({"arch": arch.model_dump(mode="json"), "metrics": dict(metrics)})
            ctx.reporter.epoch(PHASE, trainer.epoch, cfg.epochs, metrics)
            path = ctx.checkpoints.save(
                CHECKPOINT,
                {
                    "trainer": trainer.state_dict(),
                    "arch_optimizer": arch_opt.state_dict(),
                    "train_loader": train_loader.state_dict(),
                    "alpha_loader": alpha_loader.state_dict(),
                    "rng": capture_rng(),
                    "history": history,
                },
            )
            ctx.reporter.checkpoint(PHASE, str(path))
        ctx.reporter.phase_finished(PHASE, metrics)
        return self.result(ctx, supernet, history)

    def _alternate(
        self,
        ctx: SearchContext,
        supernet: Supernet,
        trainer: Trainer,
        arch_opt: torch.optim.Optimizer,
        train_loader: Any,
        alpha_loader: Any,
    ) -> Iterator[tuple[Tensor, Tensor]]:
        """One epoch of weight batches; before each, one first-order alpha step on the next alpha batch."""
        criterion = nn.CrossEntropyLoss()
        alpha_batches = iter(alpha_loader)
        n = len(train_loader)
        total = n * self.options.train.epochs
        for i, (x, y) in enumerate(train_loader):
            try:
                xa, ya = next(alpha_batches)
            except StopIteration:  # the alpha half ran out first: start another pass over it
                alpha_batches = iter(alpha_loader)
                xa, ya = next(alpha_batches)
            supernet.train()
            arch_opt.zero_grad(set_to_none=True)
            with autocast(trainer.amp, trainer.device):
                out = supernet(xa)
            logits = out[0] if isinstance(out, tuple) else out
            criterion(logits.float(), ya).backward()
            arch_opt.step()
            yield x, y
            ctx.reporter.progress(PHASE, trainer.epoch * n + i + 1, total)

    def result(self, ctx: SearchContext, supernet: Supernet, history: list[dict[str, Any]]) -> SearchResult:
        """The final genotype (best) and the genotype of every epoch (candidates), scored by the supernet."""
        final_arch = supernet.derive()
        last = history[-1]["metrics"] if history else {}
        final_metrics = {
            "accuracy": float(last.get("val_accuracy", 0.0)),
            "supernet_accuracy": float(last.get("val_accuracy", 0.0)),
            "epoch": float(len(history)),
        }
        final = ctx.candidate(final_arch, final_metrics)
        summary = getattr(supernet, "alphas_summary", None)
        alphas = summary() if callable(summary) else _softmax_alphas(supernet)
        ctx.reporter.emit(
            Event(
                type=EventType.CANDIDATE,
                phase=PHASE,
                step=len(history),
                metrics=final.metrics,
                data={"arch": final_arch.model_dump(mode="json"), "alphas": alphas, "final": True},
            )
        )
        candidates: list[Candidate] = []
        for epoch, h in enumerate(history[:-1], start=1):
            acc = float(h["metrics"].get("val_accuracy", 0.0))
            metrics = {"accuracy": acc, "supernet_accuracy": acc, "epoch": float(epoch)}
            candidates.append(ctx.candidate(Architecture.from_dict(h["arch"]), metrics))
        candidates.append(final)
        front = mark_pareto(candidates, ctx.objectives)
        others = [c for c in rank(candidates, ctx.objectives) if c.arch.hash != final.arch.hash]
        seen: set[str] = {final.arch.hash}
        best = [final]
        for c in others:  # one entry per architecture, the final genotype first
            if c.arch.hash not in seen:
                seen.add(c.arch.hash)
                best.append(c)
        return SearchResult(
            strategy=self.name,
            candidates=candidates,
            best=best,
            pareto=front,
            extra={"alphas": alphas, "genotypes": [h["arch"] for h in history]},
        )


def _softmax_alphas(supernet: Supernet) -> dict[str, Any]:
    return {
        f"alpha_{k}": torch.softmax(p.detach().cpu(), dim=-1).tolist() for k, p in enumerate(supernet.arch_parameters())
    }
