"""The command line of issue 12 against the real API app (tests.live_service): `nas ls` at 80 columns, `--wide` and
`--json`; unique id prefixes wherever a search id is taken; the result table's arch column; `nas arch-svg`."""

from __future__ import annotations

import json
import random
import xml.etree.ElementTree as ET
from pathlib import Path
from typing import Any

import pytest

from nas.arch import Architecture
from nas.cli_common import age
from nas.space import get_space
from tests import test_cli_sdk
from tests.cli_helpers import invoke, one_error_line
from tests.conftest import wide_consoles
from tests.live_service import SPEC, LiveService, Proxy

proxy = test_cli_sdk.proxy  # the fixture: the commands' SDK client, pointed at `live`, recording requests

NASNET_SPEC: dict[str, Any] = {
    **SPEC,
    "name": "a rather long search name that cannot fit",
    "space": {"name": "bossnas-mbconv", "macro": {}},
    "strategy": {"name": "evolution", "options": {}},
}


def nasnet(seed: int) -> dict[str, Any]:
    return get_space("nasnet").sample(random.Random(seed)).model_dump(mode="json")


def test_ls_is_readable_at_80_columns(
    live: LiveService,
    user: tuple[str, str],
    proxy: Proxy,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    wide_consoles(monkeypatch, 80)
    sid = live.create_search(user[0], NASNET_SPEC, status="running", phase="supernet", progress_step=12,
                             progress_total=50)  # fmt: skip
    live.add_candidates(sid, [{"arch": nasnet(0), "metrics": {"accuracy": 0.8125}}])
    live.create_search(user[0], status="succeeded")
    result = invoke("ls")
    assert result.exit_code == 0, result.output
    lines = result.stdout.splitlines()
    assert max(len(line) for line in lines) <= 80
    header = next(line for line in lines if " status " in f" {line} ")
    for column in ("id", "name", "space", "strategy", "status", "progress", "best", "age"):
        assert column in header.split(), header
    row = next(line for line in lines if sid[:8] in line)
    assert sid not in result.stdout
    for value in ("running", "0.8125", "0s"):
        assert value in row, row
    assert "a rather" in row and "…" in row  # the long name is shortened, not the other columns
    assert "toyconv" in result.stdout and "succeeded" in result.stdout

    wide = invoke("ls", "--wide")
    assert wide.exit_code == 0 and sid in wide.stdout and user[0] in wide.stdout
    listed = json.loads(invoke("ls", "--json").stdout)
    mine = next(item for item in listed if item["id"] == sid)
    assert (mine["space"], mine["strategy"], mine["best_accuracy"], mine["candidates"]) == (
        "bossnas-mbconv", "evolution", 0.8125, 1)  # fmt: skip
    assert mine["progress"]["phase"] == "supernet" and "spec" not in mine


def test_age_is_short() -> None:
    import datetime as dt

    now = dt.datetime(2026, 11, 28, 12, 0, tzinfo=dt.UTC)
    ago = [dt.timedelta(seconds=5), dt.timedelta(minutes=3), dt.timedelta(hours=5), dt.timedelta(days=3),
           dt.timedelta(days=20), dt.timedelta(days=800)]  # fmt: skip
    assert [age(now - d, now) for d in ago] == ["5s", "3m", "5h", "3d", "2w", "2y"]
    assert age(None) == "" and age(now + dt.timedelta(seconds=9), now) == "0s"


def test_every_command_takes_a_unique_prefix(
    live: LiveService,
    user: tuple[str, str],
    proxy: Proxy,
    tmp_path: Path,
) -> None:
    sid = live.create_search(user[0])
    live.set_search(sid, id="61b4b523" + "0" * 24)
    sid = "61b4b523" + "0" * 24
    other = live.create_search(user[0])
    live.set_search(other, id="61b4b599" + "9" * 24)
    shown = invoke("show", "61b4b523")  # the example
    assert shown.exit_code == 0, shown.output
    assert sid in shown.stdout
    assert invoke("logs", "61b4b523").exit_code == 0
    assert invoke("cancel", "61b4b523").stdout == f"search {sid} cancelled\n"
    assert invoke("retry", "61b4b52").stdout == f"search {sid} queued again\n"
    ambiguous = invoke("show", "61b4b5")
    assert ambiguous.exit_code == 2
    line = one_error_line(ambiguous)
    assert "ambiguous" in line and sid in line and "61b4b599" + "9" * 24 in line
    short = invoke("show", "61b4b")
    assert short.exit_code == 2 and "at least 6 characters" in one_error_line(short)


def test_result_table_shows_the_arch_hashes(live: LiveService, user: tuple[str, str], proxy: Proxy) -> None:
    arch = nasnet(3)  # as the runner stores it: an Architecture's fields, no "hash" key
    digest = Architecture.model_validate(arch).hash
    result = {"elapsed_s": 3.0, "best": arch,
              "final": [{"arch": arch, "metrics": {"test_accuracy": 0.9}, "path": "final/1-x"}]}  # fmt: skip
    sid = live.create_search(user[0], status="succeeded", result=result)
    shown = invoke("show", sid[:10])
    assert shown.exit_code == 0, shown.output
    table = shown.stdout.split("search 'toy' succeeded")[1]
    row = next(line for line in table.splitlines() if "0.9000" in line)
    assert digest in row  # the arch column
    assert digest in shown.stdout.split("search 'toy' succeeded")[0]  # the "best" row


def test_arch_svg_saves_diagrams(
    live: LiveService,
    user: tuple[str, str],
    proxy: Proxy,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.chdir(tmp_path)
    arch = nasnet(1)
    digest = Architecture.model_validate(arch).hash
    sid = live.create_search(user[0], {**SPEC, "space": {"name": "nasnet", "macro": {}}}, status="succeeded",
                             result={"elapsed_s": 1.0, "best": arch, "final": []})  # fmt: skip
    live.add_candidates(sid, [{"arch": arch, "metrics": {"accuracy": 0.5}},
                              {"arch": nasnet(2), "metrics": {"accuracy": 0.9}}])  # fmt: skip
    explicit = invoke("arch-svg", sid[:8], digest[:8], "-o", "out/a.svg")
    assert explicit.exit_code == 0, explicit.output
    assert explicit.stdout.strip() == str(Path("out/a.svg"))
    root = ET.parse(tmp_path / "out" / "a.svg").getroot()
    assert root.get("data-testid") == "arch-diagram"
    best = invoke("arch-svg", sid[:8])  # no candidate: the search's best
    assert best.exit_code == 0 and best.stdout.strip() == f"arch-{digest}.svg"
    assert (tmp_path / f"arch-{digest}.svg").read_text() == (tmp_path / "out" / "a.svg").read_text()

    local = invoke("arch-svg", "--arch", "nasnet:nasnet-a-cifar", "--local", "-o", "-")
    assert local.exit_code == 0 and ET.fromstring(local.stdout).get("data-kind") == "nasnet-cells"
    (tmp_path / "arch.json").write_text(json.dumps({"architecture": arch, "space_options": {}}))
    remote = invoke("arch-svg", "--arch", "arch.json", "-o", "-")
    assert remote.exit_code == 0 and remote.stdout == (tmp_path / "out" / "a.svg").read_text()
    assert proxy.calls("POST", "/api/v1/spaces/nasnet/architecture.svg")

    for args, needle in [((), "give a search id"), ((sid, "--arch", "arch.json"), "not both"),
                         ((sid, "--local"), "--local"), ((sid, "0" * 16), "no candidate")]:  # fmt: skip
        bad = invoke("arch-svg", *args)
        assert bad.exit_code == 2 and needle in one_error_line(bad), (args, bad.output)
