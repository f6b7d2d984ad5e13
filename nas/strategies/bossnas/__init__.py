"""BossNAS: block-wise self-supervised neural architecture search (Li et al., ICCV 2021); see docs/bossnas.md.

Modules: ``options`` (the strategy's options), ``bootstrap`` (online/target networks, projector, predictor, loss,
momentum), ``blocks`` (one block's training step and epoch), ``rating`` (rating a block's candidates),
``run_block`` (train + rate one block with checkpoints), ``search`` (greedy and the rated space for evolution),
``parallel`` (the independent mode, on Ray or in this process), ``strategy`` (the Strategy).
"""

from nas.strategies.bossnas.options import BossNASOptions
from nas.strategies.bossnas.strategy import BossNASStrategy

__all__ = ["BossNASOptions", "BossNASStrategy"]
