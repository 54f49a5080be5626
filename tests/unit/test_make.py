"""Every make target a user may call does what its name says: each target the Makefile declares
phony has a recipe (a phony target without one prints "Nothing to be done" and exits 0, so a CI step
that calls it is always green), and every target the README names is declared."""

from __future__ import annotations

import re
import shutil
import subprocess

import pytest

from pacslab.topology import REPO_ROOT

MAKEFILE = (REPO_ROOT / "Makefile").read_text()
PHONY = sorted({t for line in re.findall(r"^\.PHONY:(.*)$", MAKEFILE, re.M) for t in line.split()})


def test_the_makefile_declares_its_targets_phony() -> None:
    assert {"up", "test", "verify", "lint", "unit", "down", "status", "doctor"} <= set(PHONY)


@pytest.mark.skipif(shutil.which("make") is None, reason="make is not installed")
@pytest.mark.parametrize("target", PHONY)
def test_each_phony_target_has_a_recipe(target: str) -> None:
    proc = subprocess.run(["make", "-n", target], cwd=REPO_ROOT, capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    assert "Nothing to be done" not in proc.stdout + proc.stderr
    assert proc.stdout.strip(), f"make -n {target} runs nothing"


def test_every_make_target_the_readme_names_exists() -> None:
    readme = (REPO_ROOT / "README.md").read_text()
    named = set(re.findall(r"`make ([a-z-]+)`", readme))
    assert named, "the README names no make target"
    assert named <= set(PHONY), f"README names targets the Makefile lacks: {sorted(named - set(PHONY))}"
