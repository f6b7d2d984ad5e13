"""Options of the BossNAS strategy (``strategy.options``), validated with bounds; errors name the field."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, ValidationInfo, field_validator

from nas.strategies.base import StrategyOptions
from nas.strategies.evolution import EvolutionOptions
from nas.strategies.ray_local import ray_available


class BossNASOptions(StrategyOptions):
    """Defaults follow BossNAS's public configuration at full size (spec section 2)."""

    mode: Literal["sequential", "independent"] = Field(
        "sequential",
        description="sequential: block k trains on the best paths of blocks < k (faithful); independent: on fixed "
        "reference paths, so all blocks train at once",
    )
    parallel: Literal["auto", "ray", "none"] = Field(
        "auto",
        description="independent mode: blocks as Ray tasks ('ray'), in this process ('none'); auto: Ray if installed",
    )
    epochs_per_block: int = Field(6, ge=1, le=10_000, description="training epochs of each block (public: 6)")
    batch_size: int = Field(256, ge=2, le=65_536, description="images per step (each path sees two views of them)")
    lr: float = Field(
        0.3,
        gt=0.0,
        le=100.0,
        description="LARS learning rate per 256 images of an update, scaled by batch_size x update_interval / 256 "
        "(4.8 at 4096 = 64 x 8 GPUs x 8)",
    )
    momentum: float = Field(0.9, ge=0.0, lt=1.0, description="LARS momentum")
    weight_decay: float = Field(1e-6, ge=0.0, le=1.0, description="LARS weight decay (none on BatchNorm and biases)")
    trust_coefficient: float = Field(0.001, gt=0.0, le=1.0, description="LARS trust coefficient eta")
    warmup_epochs: float = Field(1.0, ge=0.0, le=10_000.0, description="linear warm-up at the start of every block")
    ema_momentum: float = Field(
        0.99, ge=0.0, lt=1.0, description="target momentum at the start of a block (cosine to 1 at its end)"
    )
    paths_per_step: int = Field(4, ge=1, le=64, description="candidate paths sampled per step (population)")
    update_interval: int = Field(
        1,
        ge=1,
        le=1024,
        description="steps (batches, each with its own sample of paths) whose gradients are summed before one "
        "optimizer and target update (public code: 8); the LARS lr scales with batch_size x update_interval",
    )
    view_order: Literal["bossnas", "byol"] = Field(
        "bossnas",
        description="bossnas: view 1 blur p 0.1, view 2 blur p 1.0 and solarize p 0.2 (public code); byol: view 1 "
        "blur 1.0, view 2 blur 0.1 and solarize 0.2 (BYOL paper)",
    )
    rating_center: Literal["normalized", "raw"] = Field(
        "normalized",
        description="population center of the rating: mean over the block's candidates of the L2-normalised "
        "target projections (as in training) or of the raw ones (public code's val_hook)",
    )
    proj_hidden: int | None = Field(
        None, ge=1, le=65_536, description="projector/predictor hidden width; None: 2 x last width (4096 at 2048)"
    )
    proj_dim: int | None = Field(
        None, ge=1, le=65_536, description="projection width; None: last width / 8, at least 16 (256 at 2048)"
    )
    crop_min_scale: float = Field(0.08, gt=0.0, le=1.0, description="smallest area share of the random resized crop")
    amp: bool = Field(True, description="bf16 autocast (CUDA only)")
    bn_batches: int = Field(1, ge=1, le=10_000, description="training batches for BatchNorm recalibration (rating)")
    rating_batches: int | None = Field(None, ge=1, le=1_000_000, description="val batches for rating; None: all")
    eval_batch_size: int = Field(256, ge=2, le=65_536, description="batch size of rating")
    search: Literal["greedy", "evolution"] = Field(
        "greedy", description="greedy: best path block by block (public code); evolution: whole architectures"
    )
    evolution: EvolutionOptions = Field(default_factory=EvolutionOptions)
    cpus_per_block: float = Field(1.0, gt=0.0, le=1024.0, description="Ray: CPUs reserved by one block's task")
    gpus_per_block: float | None = Field(None, ge=0.0, le=64.0, description="Ray: GPUs per block (None: 1 on CUDA)")

    @field_validator("parallel")
    @classmethod
    def _check_parallel(cls, value: str, info: ValidationInfo) -> str:
        if value == "ray":
            if info.data.get("mode") != "independent":
                raise ValueError(
                    "'ray' trains blocks concurrently, which needs mode 'independent'; allowed: auto, none"
                )
            if not ray_available():
                raise ValueError("'ray' needs Ray installed (pip install 'nas-service[ray]'); allowed here: auto, none")
        return value

    @field_validator("warmup_epochs")
    @classmethod
    def _check_warmup(cls, value: float, info: ValidationInfo) -> float:
        epochs = info.data.get("epochs_per_block")
        if epochs is not None and value > epochs:
            raise ValueError(f"must not exceed epochs_per_block ({epochs}); the warm-up restarts in every block")
        return value

    def use_ray(self) -> bool:
        """Whether the independent mode runs its blocks as Ray tasks."""
        if self.mode != "independent" or self.parallel == "none":
            return False
        return self.parallel == "ray" or ray_available()
