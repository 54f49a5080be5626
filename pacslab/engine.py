"""Run the Ansible engine (docs/architecture.md section 3): pacslab calls playbooks, it does not redo them."""

from __future__ import annotations

import json
import logging
import os
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from .plan import Plan
from .topology import REPO_ROOT, Lab

log = logging.getLogger(__name__)

PLAYBOOKS = REPO_ROOT / "playbooks"
UP_RECORD = "last-up.json"  # the last `up` run: its phases, and when it finished converging the lab


@dataclass
class RunResult:
    rc: int
    phases: list[dict[str, Any]] = field(default_factory=list)
    failures: list[dict[str, Any]] = field(default_factory=list)

    @property
    def changed(self) -> int:
        return sum(int(p["changed"]) for p in self.phases)

    @property
    def ok(self) -> bool:
        return self.rc == 0 and not self.failures


def ansible_playbook() -> str | None:
    """The ansible-playbook next to this interpreter (the requirements' install), else on PATH."""
    beside = Path(sys.executable).parent / "ansible-playbook"
    return str(beside) if beside.is_file() else shutil.which("ansible-playbook")


def run_playbook(
    lab: Lab,
    plan: Plan,
    playbook: str,
    state: Path,
    extra: dict[str, Any] | None = None,
    quiet: bool = False,
) -> RunResult:
    """Run playbooks/<playbook> against the lab folder with the plan as extra vars."""
    exe = ansible_playbook()
    if exe is None:
        raise FileNotFoundError("ansible-playbook not found: pip install -r requirements.txt")
    plan_file = state / f"plan-{playbook.removesuffix('.yml')}.json"
    variables = plan.to_vars() | (extra or {})
    plan_file.write_text(json.dumps(variables, indent=1))
    summary = state / f"summary-{playbook.removesuffix('.yml')}.json"
    summary.unlink(missing_ok=True)
    env = os.environ | {
        "ANSIBLE_CONFIG": str(REPO_ROOT / "ansible.cfg"),
        "PACSLAB_SUMMARY": str(summary),
        "ANSIBLE_LOG_PATH": str(state / "ansible.log"),
        "ANSIBLE_NOCOLOR": os.environ.get("ANSIBLE_NOCOLOR", "1" if not sys.stdout.isatty() else "0"),
    }
    cmd = [exe, "-i", str(lab.path), "-e", f"@{plan_file}", str(PLAYBOOKS / playbook)]
    log.debug("running %s", " ".join(cmd))
    start = time.monotonic()
    proc = subprocess.run(
        cmd,
        cwd=REPO_ROOT,
        env=env,
        stdout=subprocess.PIPE if quiet else None,
        stderr=subprocess.STDOUT if quiet else None,
        text=True,
        check=False,
    )
    result = RunResult(rc=proc.returncode)
    if summary.is_file():
        data = json.loads(summary.read_text())
        result.phases = data.get("phases", [])
        result.failures = data.get("failures", [])
    elif quiet and proc.stdout:
        result.failures = [{"phase": "", "task": "ansible-playbook", "host": "localhost", "msg": proc.stdout[-2000:]}]
    if playbook == "up.yml":
        record_up(state, result, time.monotonic() - start)
    return result


def record_up(state: Path, result: RunResult, seconds: float) -> None:
    """Write the `up` record. `finished` (UTC) dates the converged lab: a container started after
    it was restarted outside `up` and came back fail-closed (docs/architecture.md section 5), see last_converged."""
    record = {
        "rc": result.rc,
        "ok": result.ok,
        "finished": datetime.now(UTC).isoformat(),
        "seconds": round(seconds, 2),
        "changed": result.changed,
        "phases": result.phases,
    }
    (state / UP_RECORD).write_text(json.dumps(record, indent=1))


def last_converged(state: Path) -> datetime | None:
    """When the last `up` finished, if it succeeded; None when there is no successful record."""
    try:
        record = json.loads((state / UP_RECORD).read_text())
    except (OSError, ValueError):
        return None
    if not record.get("ok") or "finished" not in record:
        return None
    return datetime.fromisoformat(record["finished"])
