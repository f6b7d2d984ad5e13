"""Checks of a search request beyond its pydantic model, done before anything is stored.

1. Values the database cannot hold (NUL characters, lone surrogates, NaN/infinite numbers) anywhere in the spec.
2. ``nas.runner.plan_search``: the space, its options and macro settings, the strategy and its options.
3. A dataset named by path must resolve (symlinks and ``..`` resolved) inside the server's dataset roots.
4. On a local cluster, the resources asked for must fit the machine.

Each failure is a 422 problem whose field is the dotted path of the offending value in the request body.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from api.problems import ProblemError, format_loc
from nas.data.paths import FIELD as DATASET_PATH_FIELD
from nas.data.paths import PathGuard
from nas.errors import InvalidInput
from nas.spec import SearchSpec

if TYPE_CHECKING:
    from workers.executor import Executor

# dataset kinds read from one file; the others read a folder (see nas/data/: npz.py vs cifar.py, imagefolder.py)
FILE_DATASETS = {"npz"}


def invalid(field: str, message: str) -> ProblemError:
    return ProblemError(422, f"{field}: {message}", field=field, message=message)


def spec_field(engine_field: str) -> str:
    """An engine field name (relative to the spec, or to the space for macro settings) as a body field."""
    if engine_field == "space":
        return "spec.space.name"
    if engine_field == "macro" or engine_field.startswith(("macro.", "macro[")):
        return "spec.space." + engine_field
    return "spec." + engine_field


def check_storable(value: Any, where: list[str | int] | None = None) -> None:
    """Refuse NUL characters and non-finite numbers anywhere (the stores reject them; JSON has no NaN)."""
    where = where if where is not None else ["spec"]
    if isinstance(value, str):
        if "\x00" in value:
            raise invalid(format_loc(where), "must not contain NUL characters")
        if not _encodable(value):
            raise invalid(format_loc(where), "must be valid Unicode text (it contains a lone surrogate)")
    elif isinstance(value, float):
        if not math.isfinite(value):
            raise invalid(format_loc(where), "must be a finite number")
    elif isinstance(value, dict):
        for key, item in value.items():
            if "\x00" in str(key) or not _encodable(str(key)):
                raise invalid(format_loc(where), "keys must not contain NUL characters or lone surrogates")
            check_storable(item, [*where, str(key)])
    elif isinstance(value, list):
        for i, item in enumerate(value):
            check_storable(item, [*where, i])


def check_plan(spec: SearchSpec) -> tuple[float, float]:
    """Plan the search; returns the (CPUs, GPUs) it needs in all: its runner and the strategy's own workers."""
    from nas.runner import plan_search  # imports torch: only when a search is submitted

    try:
        plan = plan_search(spec)
    except InvalidInput as exc:
        raise invalid(spec_field(exc.field), exc.message) from exc
    cpus, gpus = plan.strategy.worker_resources(spec.resources.gpus)
    return spec.resources.cpus + cpus, spec.resources.gpus + gpus


def check_dataset_path(spec: SearchSpec, roots: Sequence[Path]) -> None:
    path = spec.dataset.path
    field = "spec." + DATASET_PATH_FIELD
    if path is None:
        return
    if not roots:
        raise invalid(
            field,
            "this server reads no dataset paths: no dataset roots are configured "
            "(NAS_DATASET_ROOTS configures them, a list of folders separated by the OS path separator)",
        )
    if not _encodable(path):
        raise invalid(field, "must be valid Unicode text (it contains a lone surrogate)")
    # the roots are never listed in these messages: users need not see the server's layout (admins know it)
    if not Path(path).is_absolute():
        raise invalid(field, f"{path!r} must be an absolute path inside the allowed dataset roots")
    kind = "file" if spec.dataset.name in FILE_DATASETS else "folder"
    try:
        PathGuard(roots).existing(path, kind)
    except InvalidInput as exc:
        raise invalid(field, exc.message) from exc
    except OSError as exc:  # e.g. a name too long, or one the filesystem refuses
        raise invalid(field, f"{path!r} cannot be read: {exc.strerror or type(exc).__name__}") from exc
    except (RuntimeError, ValueError) as exc:  # Path.resolve() on a symlink loop; a name the OS cannot encode
        raise invalid(field, f"{path!r} cannot be resolved (a symlink loop or an invalid name)") from exc


def _encodable(text: str) -> bool:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def check_resources(spec: SearchSpec, executor: Executor | None, need: tuple[float, float]) -> None:
    """On a local (single-machine) cluster a search asking for more than the machine has would wait forever.

    ``need`` is what the search reserves in all (its runner plus, e.g., data-parallel workers).
    """
    if executor is None or executor.mode != "local":
        return
    total = executor.cluster().total
    if not total:  # nothing known about the machine
        return
    for field, keys, want in (("cpus", ("CPU", "cpus"), need[0]), ("gpus", ("GPU", "gpus"), need[1])):
        have = next((float(total[k]) for k in keys if k in total), 0.0)  # Ray leaves out resources it has none of
        if want > have + 1e-9:
            raise invalid(
                f"spec.resources.{field}",
                f"the search needs {want:g} (its runner and the strategy's own workers) but this machine has "
                f"{have:g} in all; ask for at most {have:g}",
            )


def validate_search(spec: SearchSpec, *, roots: Sequence[Path], executor: Executor | None) -> tuple[float, float]:
    """Every check a submitted spec must pass; raises a 422 ProblemError naming the field.

    Returns the (CPUs, GPUs) the scheduler reserves for the search.
    """
    check_storable(spec.model_dump(mode="python"))
    need = check_plan(spec)
    check_dataset_path(spec, roots)
    check_resources(spec, executor, need)
    return need
