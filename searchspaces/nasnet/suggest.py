"""Define-by-run proposals of NASNet architectures for Optuna (used by ``NASNetSpace.suggest``).

Each block of each cell is four categorical parameters named ``{cell}.b{block}.{in1,op1,in2,op2}``: the inputs
allowed for that block (0 = cell k-2, 1 = cell k-1, 2.. = earlier blocks) and the space's ops. The concatenated
states are the unused ones (the paper's rule), so they are implied, not suggested. The search space is static (the
same parameters for every trial), which suits TPE's multivariate mode and NSGA-II.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from nas.arch import Architecture
from searchspaces.nasnet.genotype import CELL_TYPES, NUM_BLOCKS, NUM_INPUTS, unused_states

if TYPE_CHECKING:
    import optuna

    from searchspaces.nasnet.space import NASNetSpace


def param_name(cell: str, block: int, slot: str) -> str:
    return f"{cell}.b{block}.{slot}"


def suggest_nasnet(space: NASNetSpace, trial: optuna.Trial) -> Architecture:
    """An architecture of ``space`` proposed by ``trial``'s sampler."""
    ops = list(space.op_names)
    choices: dict[str, Any] = {}
    for cell in CELL_TYPES:
        blocks: list[list[Any]] = []
        for b in range(NUM_BLOCKS):
            inputs = list(range(NUM_INPUTS + b))
            blocks.append(
                [
                    trial.suggest_categorical(param_name(cell, b, "in1"), inputs),
                    trial.suggest_categorical(param_name(cell, b, "op1"), ops),
                    trial.suggest_categorical(param_name(cell, b, "in2"), inputs),
                    trial.suggest_categorical(param_name(cell, b, "op2"), ops),
                ]
            )
        choices[cell] = {"blocks": blocks, "concat": unused_states(blocks)}
    return space.make(choices)


def nasnet_params(arch: Architecture) -> dict[str, Any]:
    """The trial parameters that propose ``arch`` (for ``study.enqueue_trial``, e.g. to seed a study with presets).

    Only architectures whose concat set is the unused states can be proposed this way.
    """
    params: dict[str, Any] = {}
    for cell in CELL_TYPES:
        for b, (i1, o1, i2, o2) in enumerate(arch.choices[cell]["blocks"]):
            params.update(
                {
                    param_name(cell, b, "in1"): i1,
                    param_name(cell, b, "op1"): o1,
                    param_name(cell, b, "in2"): i2,
                    param_name(cell, b, "op2"): o2,
                }
            )
    return params
