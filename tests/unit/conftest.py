"""Unit fixtures: a writable copy of the reference lab to break in controlled ways."""

from __future__ import annotations

import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import yaml

from pacslab.topology import REPO_ROOT

DEFAULT_LAB = REPO_ROOT / "inventories" / "default"


@pytest.fixture
def lab_copy(tmp_path: Path) -> Path:
    dest = tmp_path / "lab"
    shutil.copytree(DEFAULT_LAB, dest)
    return dest


Mutator = Callable[[dict[str, Any], dict[str, Any], dict[str, Any]], None]


def mutate(lab: Path, change: Mutator) -> None:
    """change(hosts, lab_vars, flow_vars) edits the parsed YAML in place; the files are rewritten."""
    files = {
        "hosts": lab / "hosts.yml",
        "lab": lab / "group_vars" / "all" / "lab.yml",
        "flows": lab / "group_vars" / "all" / "flows.yml",
    }
    data = {k: yaml.safe_load(p.read_text()) for k, p in files.items()}
    change(data["hosts"], data["lab"], data["flows"])
    for k, p in files.items():
        p.write_text(yaml.safe_dump(data[k], sort_keys=False))


def host(hosts: dict[str, Any], name: str) -> dict[str, Any]:
    for group in hosts["all"]["children"].values():
        if name in (group.get("hosts") or {}):
            body: dict[str, Any] = group["hosts"][name]
            return body
    raise KeyError(name)
