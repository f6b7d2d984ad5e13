"""Optimizers the engine needs beyond torch.optim (LARS for self-supervised training)."""

from nas.optim.lars import LARS, lars_param_groups

__all__ = ["LARS", "lars_param_groups"]
