"""Small read-only helpers over the docker CLI (status, tests, probes)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from typing import Any

from .plan import LABEL_LAB


class DockerUnavailable(RuntimeError):
    """No Docker engine answers; the message says where pacslab looked."""


def docker(*args: str, check: bool = True, timeout: float = 120, input: str | None = None) -> subprocess.CompletedProcess[str]:
    if shutil.which("docker") is None:
        raise DockerUnavailable("the docker command is not installed (Debian: apt-get install docker.io)")
    return subprocess.run(["docker", *args], capture_output=True, text=True, check=check, timeout=timeout, input=input)


def engine_version() -> str | None:
    """The engine's version, or None when no engine answers."""
    try:
        proc = docker("version", "--format", "{{.Server.Version}}", check=False, timeout=20)
    except (DockerUnavailable, subprocess.TimeoutExpired):
        return None
    return proc.stdout.strip() if proc.returncode == 0 and proc.stdout.strip() else None


def engine_location() -> str:
    return os.environ.get("DOCKER_HOST") or "unix:///var/run/docker.sock"


def lab_objects(kind: str, lab: str) -> list[dict[str, Any]]:
    """Inspect every container / network / volume that carries the lab's label."""
    listing = {
        "container": ["ps", "-aq"],
        "network": ["network", "ls", "-q"],
        "volume": ["volume", "ls", "-q"],
    }[kind]
    ids = docker(*listing, "--filter", f"label={LABEL_LAB}={lab}").stdout.split()
    if not ids:
        return []
    inspected: list[dict[str, Any]] = json.loads(docker(kind, "inspect", *ids).stdout)
    return inspected


def image_id(tag: str) -> str | None:
    proc = docker("image", "inspect", "--format", "{{.Id}}", tag, check=False)
    return proc.stdout.strip() if proc.returncode == 0 else None
