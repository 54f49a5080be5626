"""CLI: argument errors, a missing Docker engine, documented exit codes."""

from __future__ import annotations

import subprocess
import sys

import pytest

from pacslab import cli
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
