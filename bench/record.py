"""The part of a benchmark's result that every benchmark writes the same way: when it ran, on what
(cores, machine) and at which commit; results are appended as JSON lines to bench/results/<name>.jsonl."""

from __future__ import annotations

import datetime as dt
import json
import os
import platform
import subprocess
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent


def append_result(path: Path, fields: dict[str, Any]) -> dict[str, Any]:
    """{when, cores, machine, git} and ``fields``, appended to ``path`` as one JSON line; the record."""
    record = {
        "when": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "cores": os.cpu_count(),
        "machine": platform.machine(),
        "git": subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=REPO, capture_output=True, text=True).stdout.strip(),
        **fields,
    }
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("a") as fh:
        fh.write(json.dumps(record) + "\n")
    return record
