"""The service commands of `nas` (nas.cli_sdk) against the real API app served on 127.0.0.1 (tests.live_service).

The commands reach the service with the URL and token of ``--url``/``--token`` or ``NAS_URL``/``NAS_TOKEN``, as a user
runs them; only the SDK client they build is given the recording ``Proxy`` as transport (and one retry, no back-off).
The tests play the runner's part through the store. (The administration commands are tested in test_cli_remote.py.)
"""

from __future__ import annotations

import json
import re
import socket
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from nas import cli_sdk
from nas.client import Client
from tests.cli_helpers import invoke, one_error_line
from tests.conftest import wide_consoles
from tests.live_service import (
    FINAL_DIR,
    SPEC,
    STREAM,
    LiveService,
    Proxy,
    event,
    finish_when_followed,
)


@pytest.fixture
def proxy(live: LiveService, user: tuple[str, str], monkeypatch: pytest.MonkeyPatch) -> Iterator[Proxy]:
    """The transport of the commands' SDK client; ``proxy.connects`` records the (url, token) each command used."""
    p = Proxy()
    p.connects = []  # type: ignore[attr-defined]

    def factory(url: str | None, token: str | None) -> Client:
        p.connects.append((url, token))  # type: ignore[attr-defined]
        return Client(url, token, transport=p, retries=1, backoff=0)

    monkeypatch.setattr(cli_sdk, "client_factory", factory)
    monkeypatch.setenv("NAS_URL", live.url)
    monkeypatch.setenv("NAS_TOKEN", user[1])
    wide_consoles(monkeypatch)
    yield p
    p.close()


def spec_file(tmp_path: Path, data: dict[str, Any] = SPEC) -> str:
    path = tmp_path / "spec.yaml"
    path.write_text(yaml.safe_dump(data))
    return str(path)


def searches_of(live: LiveService, token: str) -> list[str]:
    """The ids of the searches the token's user sees, newest first."""
    with Client(live.url, token) as c:
        return [s.id for s in c.searches(limit=None)]


# ---------------------------------------------------------------- submit


def test_submit_prints_the_id(live: LiveService, user: tuple[str, str], proxy: Proxy, tmp_path: Path) -> None:
    result = invoke("submit", spec_file(tmp_path), "--priority", "7", "--max-attempts", "2")
    assert result.exit_code == 0, result.output
    [search_id] = searches_of(live, user[1])
    assert result.stdout == f"{search_id}\n"
    assert f"nas logs -f {search_id}" in result.stderr
    body = json.loads(proxy.calls("POST", "/api/v1/searches")[0].content)
    assert body["priority"] == 7 and body["max_attempts"] == 2 and body["spec"]["name"] == "toy"
    as_json = invoke("submit", spec_file(tmp_path), "--json")
    assert as_json.exit_code == 0
    info = json.loads(as_json.stdout)
    assert info["id"] == searches_of(live, user[1])[0] != search_id
    assert (info["status"], info["owner"], info["priority"]) == ("queued", user[0], 0)


def test_url_and_token_options_and_environment(live: LiveService, proxy: Proxy, tmp_path: Path) -> None:
    alice, bob = live.new_user("alice"), live.new_user("bob")
    submitted = invoke("submit", spec_file(tmp_path), "--url", live.url, "--token", alice[1])
    assert submitted.exit_code == 0, submitted.output
    assert searches_of(live, alice[1]) == [submitted.stdout.strip()]  # submitted as alice
    listed = invoke("ls", "--json", env={"NAS_URL": live.url + "/", "NAS_TOKEN": bob[1]})
    assert listed.exit_code == 0, listed.output
    assert json.loads(listed.stdout) == []  # bob sees none of alice's searches
    assert proxy.connects == [(live.url, alice[1]), (live.url + "/", bob[1])]  # type: ignore[attr-defined]


@pytest.mark.parametrize(
    ("spec", "needle"),
    [
        ({**SPEC, "dataset": {"name": "imagefolder"}}, "error: spec.dataset.path: dataset 'imagefolder' needs 'path'"),
        ({**SPEC, "strategy": {"name": "spos", "extra": 1}}, "error: spec.strategy.extra: unknown field"),
    ],
)
def test_submit_invalid_spec_one_line_exit_2(proxy: Proxy, tmp_path: Path, spec: Any, needle: str) -> None:
    result = invoke("submit", spec_file(tmp_path, spec))
    assert result.exit_code == 2
    assert one_error_line(result).startswith(needle)
    assert proxy.requests == []


def test_submit_missing_file_and_server_side_refusal(
    live: LiveService, user: tuple[str, str], proxy: Proxy, tmp_path: Path
) -> None:
    result = invoke("submit", str(tmp_path / "nope.yaml"))
    assert result.exit_code == 2 and "error: spec: file" in one_error_line(result)
    assert proxy.requests == []
    outside = {**SPEC, "dataset": {"name": "imagefolder", "path": "/data"}}  # valid here, refused by the service
    result = invoke("submit", spec_file(tmp_path, outside))
    assert result.exit_code == 2
    assert one_error_line(result) == (
        "error: spec.dataset.path: '/data' is outside the allowed dataset roots"  # the roots are not revealed
    )
    assert searches_of(live, user[1]) == []


def test_submit_wait_prints_the_result(live: LiveService, user: tuple[str, str], proxy: Proxy, tmp_path: Path) -> None:
    finish_when_followed(live, proxy, "succeeded")
    result = invoke("submit", spec_file(tmp_path), "--wait")
    assert result.exit_code == 0, result.output
    [search_id] = searches_of(live, user[1])
    assert result.stdout.startswith(f"{search_id}\n")
    assert FINAL_DIR in result.stdout and "0.9100" in result.stdout
    assert f"nas download {search_id}" in result.stderr
    assert f"{search_id} (toy): queued" in result.stderr and f"{search_id} (toy): succeeded" in result.stderr


def test_submit_wait_on_a_failing_search_exits_1(
    live: LiveService, user: tuple[str, str], proxy: Proxy, tmp_path: Path
) -> None:
    finish_when_followed(live, proxy, "failed")
    result = invoke("submit", spec_file(tmp_path), "-w", "--json")
    assert result.exit_code == 1
    [search_id] = searches_of(live, user[1])
    assert json.loads(result.stdout)["status"] == "failed"
    assert one_error_line(result) == f"error: search {search_id} failed: RuntimeError: CUDA out of memory"


# ---------------------------------------------------------------- ls, show, logs


def test_ls_table_json_and_filters(live: LiveService, user: tuple[str, str], proxy: Proxy) -> None:
    first = live.create_search(user[0], {**SPEC, "name": "first"}, status="running", phase="supernet",
                               progress_step=3, progress_total=10)  # fmt: skip
    live.create_search(user[0], {**SPEC, "name": "second"})
    table = invoke("ls")
    assert table.exit_code == 0, table.output
    assert first[:8] in table.stdout and first not in table.stdout  # short ids; --wide and --json have them whole
    assert "supernet 3/10" in table.stdout and "second" in table.stdout
    assert "2 searches" in table.stdout
    assert first in invoke("ls", "--wide").stdout
    result = invoke("ls", "--status", "running", "--status", "queued", "--name", "fir", "--json", "--limit", "5")
    assert result.exit_code == 0
    assert [s["id"] for s in json.loads(result.stdout)] == [first]
    request = proxy.calls("GET", "/api/v1/searches")[-1]
    assert request.url.params.get_list("status") == ["running", "queued"] and request.url.params["limit"] == "5"
    bad = invoke("ls", "--status", "bogus")
    assert bad.exit_code == 2
    assert one_error_line(bad).startswith("error: --status: 'bogus' is not allowed; allowed: queued, running")


def test_show_and_not_found(live: LiveService, user: tuple[str, str], proxy: Proxy) -> None:
    search_id = live.create_search(user[0])
    live.start(search_id)
    live.finish(search_id, "succeeded")
    result = invoke("show", search_id)
    assert result.exit_code == 0, result.output
    for needle in (search_id, "toy", user[0], "succeeded", "toyconv", "digits", "spos", FINAL_DIR, "abc123"):
        assert needle in result.stdout
    assert json.loads(invoke("show", search_id, "--json").stdout)["result"]["final"][0]["path"] == FINAL_DIR
    missing = invoke("show", "nope")
    assert missing.exit_code == 2 and one_error_line(missing) == "error: search_id: no search 'nope'"


def test_logs_lists_and_follows(live: LiveService, user: tuple[str, str], proxy: Proxy) -> None:
    search_id = live.create_search(user[0])
    live.start(search_id)
    ids = live.add_events(search_id, [event(1, "epoch", metrics={"val_accuracy": 0.5}),
                                      event(2, "log", phase=None, step=None, metrics={},
                                            message="retraining the winner")])  # fmt: skip
    result = invoke("logs", search_id)
    assert result.exit_code == 0, result.output
    lines = result.stdout.splitlines()
    assert len(lines) == 2
    assert "epoch  supernet  1/10  val_accuracy=0.5" in lines[0] and lines[0].split("  ")[1] == "#1"
    assert lines[1].endswith("log  retraining the winner")
    finish_when_followed(live, proxy, "succeeded", events=[event(3)])
    followed = invoke("logs", "-f", search_id, "--json")
    assert followed.exit_code == 0, followed.output
    assert [json.loads(line)["id"] for line in followed.stdout.splitlines()] == live.event_ids(search_id)
    assert len(live.event_ids(search_id)) == 3 and live.event_ids(search_id)[:2] == ids
    assert f"search {search_id} succeeded" in followed.stderr
    assert [r.url.path for r in proxy.requests if re.fullmatch(STREAM, r.url.path)] == [
        f"/api/v1/searches/{search_id}/events/stream"
    ]


# ---------------------------------------------------------------- cancel, retry, download


def test_cancel_retry_and_conflict(live: LiveService, user: tuple[str, str], proxy: Proxy) -> None:
    search_id = live.create_search(user[0])
    result = invoke("cancel", search_id)
    assert result.exit_code == 0 and result.stdout == f"search {search_id} cancelled\n"
    again = invoke("cancel", search_id)
    assert again.exit_code == 2 and one_error_line(again) == f"error: status: search {search_id} is already cancelled"
    result = invoke("retry", search_id)
    assert result.exit_code == 0 and result.stdout == f"search {search_id} queued again\n"
    queued = invoke("retry", search_id)
    assert queued.exit_code == 2 and "only failed or cancelled searches can be retried" in one_error_line(queued)
    live.start(search_id)
    running = invoke("cancel", search_id)
    assert running.exit_code == 0  # a running search only gets the flag; its runner stops it
    assert running.stdout == f"cancel requested for search {search_id} (running); it stops within seconds\n"
    shown = json.loads(invoke("show", search_id, "--json").stdout)
    assert (shown["status"], shown["cancel_requested"]) == ("running", True)


def test_download_prints_the_model_folder(
    live: LiveService, user: tuple[str, str], proxy: Proxy, tmp_path: Path
) -> None:
    search_id = live.create_search(user[0])
    live.start(search_id)
    live.finish(search_id, "succeeded")
    live.add_artifact(search_id, f"{FINAL_DIR}/model.safetensors", b"weights" * 100)
    live.add_artifact(search_id, "logs/run.log", b"log", kind="log")
    result = invoke("download", search_id, "-o", str(tmp_path / "dl"))
    assert result.exit_code == 0, result.output
    folder = Path(result.stdout.strip())
    assert folder == tmp_path / "dl" / FINAL_DIR
    assert (folder / "model.safetensors").read_bytes() == b"weights" * 100
    assert not (tmp_path / "dl" / "logs").exists()
    assert invoke("download", search_id, "-o", str(tmp_path / "dl"), "--all").exit_code == 0
    assert (tmp_path / "dl" / "logs" / "run.log").read_bytes() == b"log"


def test_download_default_folder_and_corruption(
    live: LiveService, user: tuple[str, str], proxy: Proxy, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    search_id = live.create_search(user[0], {**SPEC, "name": "my search/v1"})
    live.start(search_id)
    live.finish(search_id, "succeeded")
    name = f"{FINAL_DIR}/model.safetensors"
    live.add_artifact(search_id, name, b"good")
    live.overwrite_artifact(search_id, name, b"evil")  # what the service sends no longer matches its listing
    result = invoke("download", search_id)
    assert result.exit_code == 1
    assert "error: artifact final/1-abc123/model.safetensors: received 4 bytes" in one_error_line(result)
    assert not [p for p in tmp_path.rglob("*") if p.is_file()]  # nothing half-written
    live.overwrite_artifact(search_id, name, b"good")
    result = invoke("download", search_id)
    assert result.exit_code == 0
    assert result.stdout.strip() == str(Path("runs") / f"my-search-v1-{search_id[:8]}" / FINAL_DIR)
    assert (tmp_path / result.stdout.strip() / "model.safetensors").read_bytes() == b"good"


# ---------------------------------------------------------------- reaching the service


def test_service_unreachable_exits_1_with_the_remedy(proxy: Proxy, monkeypatch: pytest.MonkeyPatch) -> None:
    with socket.socket() as s:  # a port where nothing listens: connections are refused
        s.bind(("127.0.0.1", 0))
        url = f"http://127.0.0.1:{s.getsockname()[1]}"
    monkeypatch.setenv("NAS_URL", url)
    result = invoke("ls")
    assert result.exit_code == 1
    line = one_error_line(result)
    assert f"cannot reach the nas service at {url}" in line and "nas up" in line
    assert len(proxy.requests) == 2  # one retry


def test_rejected_token_exits_2(live: LiveService, user: tuple[str, str], proxy: Proxy) -> None:
    search_id = live.create_search(user[0])
    result = invoke("show", search_id, "--token", "nas_wrong")
    assert result.exit_code == 2
    assert one_error_line(result).startswith(
        "error: Authorization: the API token is unknown, revoked or expired, or its user is disabled; "
        "pass a valid API token"
    )
