"""Lint configuration really checks the Ansible content: a lint step whose patterns leave out the
roles, playbooks or lab folders would pass on anything (hooks and CI must really
check files). `make lint` runs the linters themselves; these tests guard what they are pointed at."""

from __future__ import annotations

import fnmatch
import subprocess

import pytest
import yaml
from yamllint.config import YamlLintConfig

from pacslab.topology import REPO_ROOT

# The Ansible content and every lab folder of the repository; each must exist and be linted.
CHECKED = ["roles", "playbooks", "inventories", "bench/labs", "tests/labs"]


def tracked_yaml() -> list[str]:
    out = subprocess.run(["git", "ls-files", "*.yml", "*.yaml"], cwd=REPO_ROOT, capture_output=True, text=True, check=True).stdout
    return out.split()


def test_every_checked_folder_holds_yaml() -> None:
    files = tracked_yaml()
    for folder in ("roles", "playbooks", "inventories", "bench/labs"):
        assert any(f.startswith(folder + "/") for f in files), f"no YAML under {folder}/: the lint patterns would match nothing"


@pytest.mark.parametrize("path", [f for f in tracked_yaml() if f.startswith(tuple(c + "/" for c in CHECKED))])
def test_yamllint_checks_every_ansible_file(path: str) -> None:
    config = YamlLintConfig(file=str(REPO_ROOT / ".yamllint"))
    assert config.is_yaml_file(path) and not config.is_file_ignored(path)
    assert "line-length" in {r.ID for r in config.enabled_rules(path)} or path.endswith("hosts.yml")


def test_yamllint_leaves_out_the_virtual_environment_only_by_name() -> None:
    config = YamlLintConfig(file=str(REPO_ROOT / ".yamllint"))
    assert config.is_file_ignored(".venv/lib/python3.11/site-packages/ansible/config/base.yml")
    assert config.is_file_ignored(".pacslab/default/plan-up.json.yml")


@pytest.mark.parametrize("path", [f for f in tracked_yaml() if f.startswith(tuple(c + "/" for c in CHECKED))])
def test_ansible_lint_excludes_no_ansible_file(path: str) -> None:
    config = yaml.safe_load((REPO_ROOT / ".ansible-lint").read_text())
    assert config["profile"] == "production" and config["offline"] is True
    for pattern in config["exclude_paths"]:
        assert not path.startswith(pattern.rstrip("/") + "/") and not fnmatch.fnmatch(path, pattern), (path, pattern)
