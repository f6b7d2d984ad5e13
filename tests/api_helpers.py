"""Shared by the API tests: a small spec the API accepts (plan_search passes, nothing needs data)."""

from __future__ import annotations

import copy
from typing import Any

SPEC: dict[str, Any] = {
    "name": "t",
    "space": {"name": "nasnet", "macro": {"cells_per_stack": 1, "filters": 8}},
    "dataset": {"name": "digits"},
    "strategy": {"name": "random", "options": {}},
}


def spec(**changes: Any) -> dict[str, Any]:
    return {**copy.deepcopy(SPEC), **changes}
