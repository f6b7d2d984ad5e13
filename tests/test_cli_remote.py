"""The client-side commands of `nas`: service commands against a fake service, admin/db commands on a SQLite dir."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml
from typer.testing import CliRunner

from nas import cli_remote
from nas.cli import app
from nas.client import Client
from tests.test_client import FINAL_DIR, SPEC, FakeService, event_json, problem, search_json

runner = CliRunner()


@pytest.fixture
def service(monkeypatch: pytest.MonkeyPatch) -> FakeService:
    """A fake service behind the commands; ``service.connects`` records the (url, token) each command used."""
    fake = FakeService()
    fake.connects = []  # type: ignore[attr-defined]

    def factory(url: str | None, token: str | None) -> Any:
        fake.connects.append((url, token))  # type: ignore[attr-defined]
        return fake.client(retries=1)

    monkeypatch.setattr(cli_remote, "client_factory", factory)
    monkeypatch.delenv("NAS_URL", raising=False)
    monkeypatch.delenv("NAS_TOKEN", raising=False)
    monkeypatch.setenv("COLUMNS", "200")
    return fake


def invoke(*args: str, **kwargs: Any) -> Any:
    return runner.invoke(app, list(args), **kwargs)


def one_error_line(result: Any) -> str:
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: "), result.stderr
    return lines[0]


def spec_file(tmp_path: Path, data: dict[str, Any] = SPEC) -> str:
    path = tmp_path / "spec.yaml"
    path.write_text(yaml.safe_dump(data))
    return str(path)


# ---------------------------------------------------------------- service commands


def test_submit_prints_the_id(service: FakeService, tmp_path: Path) -> None:
    result = invoke("submit", spec_file(tmp_path), "--priority", "7", "--max-attempts", "2")
    assert result.exit_code == 0, result.output
    assert result.stdout == "s1\n"
    assert "nas logs -f s1" in result.stderr
    body = json.loads(service.calls("POST", "/api/v1/searches")[0].content)
    assert body["priority"] == 7 and body["max_attempts"] == 2 and body["spec"]["name"] == "toy"
    as_json = invoke("submit", spec_file(tmp_path), "--json")
    assert as_json.exit_code == 0 and json.loads(as_json.stdout)["id"] == "s2"


def test_url_and_token_options_and_environment(service: FakeService, tmp_path: Path) -> None:
    assert invoke("submit", spec_file(tmp_path), "--url", "http://h:1", "--token", "nas_x").exit_code == 0
    assert invoke("ls", env={"NAS_URL": "http://env:2", "NAS_TOKEN": "nas_env"}).exit_code == 0
    assert service.connects == [("http://h:1", "nas_x"), ("http://env:2", "nas_env")]  # type: ignore[attr-defined]


@pytest.mark.parametrize(
    ("spec", "needle"),
    [
        ({**SPEC, "dataset": {"name": "imagefolder"}}, "error: spec.dataset.path: dataset 'imagefolder' needs 'path'"),
        ({**SPEC, "strategy": {"name": "spos", "extra": 1}}, "error: spec.strategy.extra: unknown field"),
    ],
)
def test_submit_invalid_spec_one_line_exit_2(service: FakeService, tmp_path: Path, spec: Any, needle: str) -> None:
    result = invoke("submit", spec_file(tmp_path, spec))
    assert result.exit_code == 2
    assert one_error_line(result).startswith(needle)
    assert service.requests == []


def test_submit_missing_file_and_server_side_refusal(service: FakeService, tmp_path: Path) -> None:
    result = invoke("submit", str(tmp_path / "nope.yaml"))
    assert result.exit_code == 2 and "error: spec: file" in one_error_line(result)
    service.routes[("POST", r"/api/v1/searches")] = lambda r, m: problem(
        422, "Unprocessable Content", "'/data' is outside the dataset roots (/srv/data)", field="spec.dataset.path"
    )
    result = invoke("submit", spec_file(tmp_path))
    assert result.exit_code == 2
    assert one_error_line(result) == "error: spec.dataset.path: '/data' is outside the dataset roots (/srv/data)"


def test_submit_wait_prints_the_result(service: FakeService, tmp_path: Path) -> None:
    service.ends_with["s1"] = "succeeded"
    result = invoke("submit", spec_file(tmp_path), "--wait")
    assert result.exit_code == 0, result.output
    assert result.stdout.startswith("s1\n")
    assert FINAL_DIR in result.stdout and "0.9100" in result.stdout
    assert "nas download s1" in result.stderr


def test_submit_wait_on_a_failing_search_exits_1(service: FakeService, tmp_path: Path) -> None:
    service.ends_with["s1"] = "failed"
    result = invoke("submit", spec_file(tmp_path), "-w", "--json")
    assert result.exit_code == 1
    assert json.loads(result.stdout)["status"] == "failed"
    assert one_error_line(result) == "error: search s1 failed: RuntimeError: CUDA out of memory"


def test_ls_table_json_and_filters(service: FakeService) -> None:
    service.add(search_json("a1", "running", name="first", progress={"phase": "supernet", "step": 3, "total": 10}))
    service.add(search_json("b2", "queued", name="second"))
    table = invoke("ls")
    assert table.exit_code == 0, table.output
    assert "a1" in table.stdout and "supernet 3/10" in table.stdout and "second" in table.stdout
    result = invoke("ls", "--status", "running", "--status", "queued", "--name", "fir", "--json", "--limit", "5")
    assert result.exit_code == 0
    assert [s["id"] for s in json.loads(result.stdout)] == ["a1"]
    request = service.calls("GET", "/api/v1/searches")[-1]
    assert request.url.params.get_list("status") == ["running", "queued"] and request.url.params["limit"] == "5"
    bad = invoke("ls", "--status", "bogus")
    assert bad.exit_code == 2
    assert one_error_line(bad).startswith("error: --status: 'bogus' is not allowed; allowed: queued, running")


def test_show_and_not_found(service: FakeService) -> None:
    service.add(search_json("s1", "succeeded"))
    result = invoke("show", "s1")
    assert result.exit_code == 0, result.output
    for needle in ("toy", "alice", "succeeded", "toyconv", "digits", "spos", FINAL_DIR):
        assert needle in result.stdout
    assert json.loads(invoke("show", "s1", "--json").stdout)["result"]["final"][0]["path"] == FINAL_DIR
    missing = invoke("show", "nope")
    assert missing.exit_code == 2 and one_error_line(missing) == "error: search_id: no search 'nope'"


def test_logs_lists_and_follows(service: FakeService) -> None:
    service.add(search_json("s1", "running"))
    service.events["s1"] = [event_json("s1", 1, "epoch", metrics={"val_accuracy": 0.5}), event_json("s1", 2, "log",
                            phase=None, step=None, metrics={}, message="retraining the winner")]  # fmt: skip
    result = invoke("logs", "s1")
    assert result.exit_code == 0, result.output
    lines = result.stdout.splitlines()
    assert len(lines) == 2
    assert "epoch  supernet  1/10  val_accuracy=0.5" in lines[0] and lines[0].split("  ")[1] == "#1"
    assert lines[1].endswith("log  retraining the winner")
    service.ends_with["s1"] = "succeeded"
    followed = invoke("logs", "-f", "s1", "--json")
    assert followed.exit_code == 0, followed.output
    assert [json.loads(line)["id"] for line in followed.stdout.splitlines()] == [1, 2]
    assert "search s1 succeeded" in followed.stderr
    assert service.calls("GET", "/api/v1/searches/s1/events/stream")


def test_cancel_retry_and_conflict(service: FakeService) -> None:
    service.add(search_json("s1", "queued"))
    result = invoke("cancel", "s1")
    assert result.exit_code == 0 and result.stdout == "search s1 cancelled\n"
    again = invoke("cancel", "s1")
    assert again.exit_code == 2 and one_error_line(again) == "error: status: search s1 is already cancelled"

    def retry(request: httpx.Request, _m: Any) -> httpx.Response:
        service.searches["s1"].update(status="queued", cancel_requested=False)
        return httpx.Response(202, json=service.searches["s1"])

    service.routes[("POST", r"/api/v1/searches/s1/retry")] = retry
    result = invoke("retry", "s1")
    assert result.exit_code == 0 and result.stdout == "search s1 queued again\n"
    service.searches["s1"]["status"] = "running"
    running = invoke("cancel", "s1")
    assert running.exit_code == 0  # the fake cancels at once; a real running search only gets the flag


def test_download_prints_the_model_folder(service: FakeService, tmp_path: Path) -> None:
    service.add(search_json("s1", "succeeded"))
    service.add_artifact("s1", f"{FINAL_DIR}/model.safetensors", b"weights" * 100)
    service.add_artifact("s1", "logs/run.log", b"log")
    result = invoke("download", "s1", "-o", str(tmp_path / "dl"))
    assert result.exit_code == 0, result.output
    folder = Path(result.stdout.strip())
    assert folder == tmp_path / "dl" / FINAL_DIR
    assert (folder / "model.safetensors").read_bytes() == b"weights" * 100
    assert not (tmp_path / "dl" / "logs").exists()
    assert invoke("download", "s1", "-o", str(tmp_path / "dl"), "--all").exit_code == 0
    assert (tmp_path / "dl" / "logs" / "run.log").read_bytes() == b"log"


def test_download_default_folder_and_corruption(
    service: FakeService, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    service.add(search_json("abcdef0123", "succeeded", name="my search/v1"))
    service.add_artifact("abcdef0123", f"{FINAL_DIR}/model.safetensors", b"good", served=b"evil")
    result = invoke("download", "abcdef0123")
    assert result.exit_code == 1
    assert "error: artifact final/1-abc123/model.safetensors: received 4 bytes" in one_error_line(result)
    assert not [p for p in tmp_path.rglob("*") if p.is_file()]  # nothing half-written
    service.artifacts.clear()
    service.add_artifact("abcdef0123", f"{FINAL_DIR}/model.safetensors", b"good")
    result = invoke("download", "abcdef0123")
    assert result.exit_code == 0
    assert result.stdout.strip() == str(Path("runs") / "my-search-v1-abcdef01" / FINAL_DIR)


def test_service_unreachable_exits_1_with_the_remedy(service: FakeService) -> None:
    service.failures = ["connect"] * 5
    result = invoke("ls")
    assert result.exit_code == 1
    line = one_error_line(result)
    assert "cannot reach the nas service at http://nas.test" in line and "nas up" in line


def test_rejected_token_exits_2(service: FakeService, monkeypatch: pytest.MonkeyPatch) -> None:
    transport = httpx.MockTransport(service)
    monkeypatch.setattr(
        cli_remote,
        "client_factory",
        lambda url, token: Client("http://nas.test", "nas_wrong", http=httpx.Client(transport=transport)),
    )
    result = invoke("show", "s1")
    assert result.exit_code == 2
    assert one_error_line(result).startswith("error: token: missing or invalid bearer token; pass a valid API token")


# ---------------------------------------------------------------- admin and db (directly on the database)


@pytest.fixture
def data_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("NAS_DATA_DIR", str(tmp_path))
    monkeypatch.delenv("NAS_DATABASE_URL", raising=False)
    monkeypatch.setenv("COLUMNS", "200")
    return tmp_path


def test_db_upgrade_and_current(data_dir: Path) -> None:
    before = invoke("db", "current")
    assert before.exit_code == 0, before.output
    assert "nas.db: none (not head" in before.stdout and "nas db upgrade" in before.stdout
    unmigrated = invoke("admin", "create-user", "alice")
    assert unmigrated.exit_code == 1
    assert "is at revision none (empty)" in one_error_line(unmigrated) and "nas db upgrade" in unmigrated.stderr
    up = invoke("db", "upgrade")
    assert up.exit_code == 0, up.output
    assert "upgraded from empty to" in up.stdout and (data_dir / "nas.db").is_file()
    again = invoke("db", "upgrade")
    assert again.exit_code == 0 and "already at" in again.stdout
    assert invoke("db", "current").stdout.rstrip().endswith("(head)")


def test_admin_users_and_tokens(data_dir: Path) -> None:
    from nas.store import Database, repo

    assert invoke("db", "upgrade").exit_code == 0
    created = invoke("admin", "create-user", "alice")
    assert created.exit_code == 0, created.output
    assert created.stdout == "created user alice\n" and "nas admin create-token alice" in created.stderr
    assert invoke("admin", "create-user", "root", "--admin").stdout == "created admin user root\n"
    duplicate = invoke("admin", "create-user", "alice")
    assert duplicate.exit_code == 2
    assert one_error_line(duplicate) == "error: name: a user named 'alice' already exists"
    bad = invoke("admin", "create-user", "no spaces!")
    assert bad.exit_code == 2 and one_error_line(bad).startswith("error: name: 'no spaces!' is not allowed")

    token_result = invoke("admin", "create-token", "alice", "--name", "laptop")
    assert token_result.exit_code == 0, token_result.output
    token = token_result.stdout.strip()
    assert token.startswith(repo.TOKEN_PREFIX) and "\n" not in token
    assert "cannot be shown again" in token_result.stderr
    db = Database(f"sqlite:///{data_dir / 'nas.db'}")  # the database of NAS_DATA_DIR
    try:
        with db.session() as s:
            user = repo.authenticate(s, token)
            assert user is not None and user.name == "alice" and not user.is_admin
    finally:
        db.dispose()
    unknown = invoke("admin", "create-token", "bob")
    assert unknown.exit_code == 2 and one_error_line(unknown) == "error: user: no user named 'bob'"

    listed = invoke("admin", "list-users", "--json")
    assert listed.exit_code == 0
    rows = {r["name"]: r for r in json.loads(listed.stdout)}
    assert (rows["alice"]["is_admin"], rows["alice"]["tokens"]) == (False, 1)
    assert (rows["root"]["is_admin"], rows["root"]["tokens"]) == (True, 0)
    table = invoke("admin", "list-users")
    assert table.exit_code == 0 and "alice" in table.stdout and "root" in table.stdout


def test_bad_settings_are_named(data_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("NAS_PORT", "not-a-port")
    result = invoke("db", "current")
    assert result.exit_code == 2 and one_error_line(result).startswith("error: NAS_PORT: ")


def test_unreachable_database_exits_1(data_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("NAS_DATABASE_URL", "postgresql+psycopg://nobody:secret@127.0.0.1:1/none?connect_timeout=2")
    result = invoke("db", "current")
    assert result.exit_code == 1
    line = one_error_line(result)
    assert line.startswith("error: database: ") and "secret" not in line
