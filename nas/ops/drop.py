"""Drop path (stochastic depth on a branch) and the scheduled keep probability of NASNet ("v3" rule)."""

import torch
from torch import Tensor, nn


def drop_path(x: Tensor, keep_prob: float, training: bool = True) -> Tensor:
    """Zero whole samples of ``x`` with probability ``1 - keep_prob`` and rescale the kept ones by ``1/keep_prob``.

    One Bernoulli draw per sample (the mask has shape (N, 1, 1, ...)); identity outside training or when
    ``keep_prob >= 1``.
    """
    if not training or keep_prob >= 1.0:
        return x
    shape = (x.shape[0],) + (1,) * (x.dim() - 1)
    mask = torch.empty(shape, dtype=x.dtype, device=x.device).bernoulli_(keep_prob)
    return x / keep_prob * mask


def scheduled_keep_prob(
    keep_prob: float, cell_index: int, total_cells: int, progress: float, layer_scaled: bool = True
) -> float:
    """Keep probability of NASNet's ScheduledDropPath ("v3"): scaled by depth, then by training progress.

    ``keep = 1 - (cell_index + 1) / total_cells * (1 - keep_prob)`` (only when ``layer_scaled``), then
    ``keep = 1 - min(1, progress) * (1 - keep)``. At progress 0 nothing is dropped.
    """
    keep = keep_prob
    if layer_scaled:
        keep = 1.0 - (cell_index + 1) / float(total_cells) * (1.0 - keep)
    ratio = min(1.0, max(0.0, float(progress)))
    return 1.0 - ratio * (1.0 - keep)


class ScheduledDropPath(nn.Module):
    """Drop path whose keep probability follows :func:`scheduled_keep_prob`.

    ``progress`` (fraction of training done, 0..1) is a plain attribute that the owning network updates every step
    (``set_progress``); it is not part of the state dict. Active only in training mode.
    """

    def __init__(self, keep_prob: float, cell_index: int, total_cells: int, layer_scaled: bool = True) -> None:
        super().__init__()
        if not 0.0 < keep_prob <= 1.0:
            raise ValueError(f"keep_prob must be in (0, 1], got {keep_prob}")
        self.keep_prob = float(keep_prob)
        self.cell_index = int(cell_index)
        self.total_cells = int(total_cells)
        self.layer_scaled = bool(layer_scaled)
        self.progress = 0.0

    @property
    def keep(self) -> float:
        return scheduled_keep_prob(self.keep_prob, self.cell_index, self.total_cells, self.progress, self.layer_scaled)

    def forward(self, x: Tensor) -> Tensor:
        return drop_path(x, self.keep, self.training)

    def extra_repr(self) -> str:
        return f"keep_prob={self.keep_prob}, cell={self.cell_index}/{self.total_cells}"
