"""CLI: argument errors, a missing Docker engine, documented exit codes, what counts as up."""

from __future__ import annotations

import subprocess
import sys
from datetime import UTC, datetime

import pytest

from pacslab import cli
from pacslab.engine import RunResult, last_converged, record_up
from pacslab.topology import REPO_ROOT


def run(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    import os

    return subprocess.run([sys.executable, "-m", "pacslab.cli", *args], cwd=REPO_ROOT, capture_output=True, text=True,
                          env=os.environ | (env or {}), timeout=120)


@pytest.mark.parametrize("args", [[], ["launch"], ["up", "--nope"], ["down", "--lab"]])
def test_usage_errors_exit_2(args: list[str]) -> None:
    proc = run(*args)
    assert proc.returncode == cli.EXIT_USAGE
    assert "usage: pacslab" in proc.stderr


def test_up_without_a_reachable_engine_says_so_and_changes_nothing(tmp_path) -> None:
    sock = tmp_path / "no-engine.sock"
    proc = run("up", env={"DOCKER_HOST": f"unix://{sock}"})
    assert proc.returncode == cli.EXIT_MACHINE
    assert f"no engine answers at unix://{sock}" in proc.stderr
    assert "fix: start the engine at DOCKER_HOST" in proc.stderr
    assert not sock.exists()


def test_exit_codes_are_documented_in_the_readme() -> None:
    readme = (REPO_ROOT / "README.md").read_text()
    for code in (cli.EXIT_OK, cli.EXIT_PHASE_FAILED, cli.EXIT_USAGE, cli.EXIT_BAD_LAB, cli.EXIT_MACHINE, cli.EXIT_CHECKS_FAILED):
        assert f"| {code} |" in readme, f"exit code {code} missing from README"


UP_DONE = datetime(2026, 11, 23, 17, 0, tzinfo=UTC)


def container(status: str, started: str) -> dict:
    return {"State": {"Status": status, "StartedAt": started}}


@pytest.mark.parametrize(
    ("live", "converged", "state"),
    [
        (container("running", "2026-11-23T16:59:59.900000000Z"), UP_DONE, "running"),
        # dockerd came back (or `docker restart`): the container lost the route `up` gave it
        (container("running", "2026-11-23T17:04:55.758500712Z"), UP_DONE, "restarted"),
        (container("running", "2026-11-23T16:59:59Z"), None, "unconverged"),
        (container("exited", "2026-11-23T16:59:59Z"), UP_DONE, "exited"),
        (None, UP_DONE, "absent"),
    ],
)
def test_a_container_started_after_the_last_up_is_not_taken_as_up(live, converged, state) -> None:
    assert cli.container_state(live, converged) == state
    assert cli.hosts_up([{"state": state}]) is (state == "running")


def test_only_a_successful_up_dates_the_converged_lab(tmp_path) -> None:
    record_up(tmp_path, RunResult(rc=2), 3.0)
    assert last_converged(tmp_path) is None
    record_up(tmp_path, RunResult(rc=0), 3.0)
    finished = last_converged(tmp_path)
    assert finished is not None and finished.tzinfo is not None
    assert last_converged(tmp_path / "nowhere") is None


@pytest.mark.parametrize(("flags", "selection"), [([], ["-m", "not lifecycle"]), (["--lifecycle"], [])], ids=["steady", "lifecycle"])
def test_verify_runs_the_steady_checks_unless_asked_for_the_lifecycle_ones(flags, selection, monkeypatch, tmp_path) -> None:
    """`pacslab verify` leaves the lab as it found it; `--lifecycle` adds the checks that take it down."""
    seen: list[list[str]] = []

    def fake_run(cmd, **kwargs):
        seen.append(list(cmd))
        return subprocess.CompletedProcess(cmd, 0)

    monkeypatch.setattr(cli, "_require_engine", lambda may_install: None)
    monkeypatch.setattr(cli, "state_dir", lambda lab: tmp_path)
    monkeypatch.setattr(cli.subprocess, "run", fake_run)
    monkeypatch.setattr("pacslab.report.write_report", lambda lab, results, out: (out / "report.html", out / "report.json"))
    assert cli.main(["verify", *flags]) == cli.EXIT_OK
    [cmd] = seen
    assert cmd[2:4] == ["pytest", str(REPO_ROOT / "tests" / "integration")]
    assert cmd[4 : 4 + len(selection)] == selection and cmd[4 + len(selection)] == "--lab"
