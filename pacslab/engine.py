"""Run the Ansible engine (docs/architecture.md section 3): pacslab calls playbooks, it does not redo them."""

from __future__ import annotations

import json
import logging
import os
import shutil
import subprocess
import sys
import tempfile
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


# How Ansible reaches the machine that runs the Docker engine, when that is not this one: a JSON
# object of Ansible connection variables (ansible_connection, ansible_host, ansible_user, ...), set
# next to DOCKER_HOST. The docker_host role (engine, DOCKER-USER and INPUT rules) runs there: the
# rules belong to the machine whose bridges carry the lab. `pacslab class` sets both per Docker host.
ENGINE_HOST_ENV = "PACSLAB_ENGINE_HOST"
ENGINE_HOST = "pacslab-engine"


class EngineHostError(ValueError):
    """PACSLAB_ENGINE_HOST is not a JSON object of Ansible connection variables."""


def engine_host_value(name: str, connection: dict[str, Any]) -> str:
    """PACSLAB_ENGINE_HOST for the machine an Ansible inventory names ``name``, reached with the
    ``connection`` variables it gives it: "" for a local connection (this machine, the default);
    else their JSON with Ansible's own defaults written out (ssh, the inventory name as host), the
    two engine_host_vars requires."""
    full = {"ansible_connection": "ssh", "ansible_host": name} | connection
    return "" if full["ansible_connection"] == "local" else json.dumps(full, sort_keys=True)


def engine_host_vars() -> dict[str, str]:
    """The Ansible variables of the engine's machine: PACSLAB_ENGINE_HOST's, else this machine
    (local connection, this interpreter). EngineHostError names what is wrong with the variable."""
    raw = os.environ.get(ENGINE_HOST_ENV, "").strip()
    if not raw:
        return {"ansible_connection": "local", "ansible_python_interpreter": sys.executable}
    try:
        data = json.loads(raw)
    except ValueError as exc:
        raise EngineHostError(f"{ENGINE_HOST_ENV}: not JSON ({exc})") from exc
    if not isinstance(data, dict) or not data:
        raise EngineHostError(f"{ENGINE_HOST_ENV}: must be a JSON object of Ansible connection variables, like "
                              '{"ansible_connection": "ssh", "ansible_host": "docker2.example.org"}')
    bad = [k for k, v in data.items() if not (isinstance(k, str) and k.startswith("ansible_") and isinstance(v, str | int))]
    if bad:
        raise EngineHostError(f"{ENGINE_HOST_ENV}: {', '.join(map(str, bad))}: only ansible_* variables with string or number values")
    secret = [k for k in data if k in SECRET_VARS]
    if secret:
        raise EngineHostError(f"{ENGINE_HOST_ENV}: {', '.join(secret)}: no password in an environment variable; use an SSH key")
    # Both always: the lab folder is an inventory too, and its group_vars/all (a lab host's Docker
    # connection, ansible_host from the container name) would fill in whichever is missing.
    missing = [k for k in ("ansible_connection", "ansible_host") if k not in data]
    if missing:
        raise EngineHostError(f"{ENGINE_HOST_ENV}: {', '.join(missing)} missing: say how to reach the engine's machine, like "
                              '{"ansible_connection": "ssh", "ansible_host": "docker2.example.org"}')
    return {k: str(v) for k, v in data.items()}


# Ansible variables that hold a password: refused wherever they would travel in an environment.
SECRET_VARS = ("ansible_password", "ansible_ssh_pass", "ansible_ssh_password", "ansible_become_password", "ansible_become_pass",
               "ansible_sudo_pass", "ansible_su_pass")


# The host-rule chains of the engine's machine (roles/docker_host), read with one command there.
HOST_CHAINS_SCRIPT = ("iptables -S DOCKER-USER; echo '#--'; iptables -S INPUT; echo '#--'; "
                      "if [ -d /proc/sys/net/ipv6 ]; then ip6tables -S INPUT; else echo '#no-ipv6'; fi")


def host_chains() -> dict[str, list[str]]:
    """The engine machine's DOCKER-USER, INPUT and (where its kernel has IPv6) INPUT6 chains as
    ``iptables -S`` lines; a chain that cannot be read has no lines. Read here, or on the machine
    PACSLAB_ENGINE_HOST names (through Ansible, as the docker_host role reaches it)."""
    machine = engine_host_vars()
    if machine.get("ansible_connection") == "local":
        proc = subprocess.run(["sh", "-c", HOST_CHAINS_SCRIPT], capture_output=True, text=True, check=False)
        out = proc.stdout
    else:
        exe = ansible_playbook()
        adhoc = str(Path(exe).with_name("ansible")) if exe else "ansible"
        inventory = {"pacslab_engine": {"hosts": {ENGINE_HOST: machine}}}
        env = os.environ | {"ANSIBLE_CONFIG": str(REPO_ROOT / "ansible.cfg"), "ANSIBLE_LOAD_CALLBACK_PLUGINS": "1",
                            "ANSIBLE_STDOUT_CALLBACK": "json"}
        with tempfile.NamedTemporaryFile("w", suffix=".json") as inv:
            json.dump(inventory, inv)
            inv.flush()
            proc = subprocess.run([adhoc, ENGINE_HOST, "-i", inv.name, "-m", "ansible.builtin.shell", "-a", HOST_CHAINS_SCRIPT],
                                  capture_output=True, text=True, check=False, cwd=REPO_ROOT, env=env)
        try:
            answer = json.loads(proc.stdout)["plays"][0]["tasks"][0]["hosts"][ENGINE_HOST]
        except (ValueError, KeyError, IndexError):
            answer = {"unreachable": True, "msg": (proc.stderr or proc.stdout)[-300:]}
        if answer.get("unreachable") or answer.get("failed"):  # the rules then count as missing: say why
            log.warning("the host rules could not be read on %s: %s", machine.get("ansible_host"), str(answer.get("msg", "")).strip())
        out = answer.get("stdout", "")
    parts = out.split("#--\n") if out else []
    names = ("DOCKER-USER", "INPUT", "INPUT6")
    chains = {name: [ln for ln in part.splitlines() if ln.startswith("-")] for name, part in zip(names, parts[:3], strict=False)}
    if "#no-ipv6" in out:
        chains.pop("INPUT6", None)
    return chains


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
    engine = state / "engine-host.yml"  # the engine's machine, group pacslab_engine (playbooks/up.yml, down.yml)
    engine.write_text(json.dumps({"pacslab_engine": {"hosts": {ENGINE_HOST: engine_host_vars()}}}, indent=1))
    cmd = [exe, "-i", str(lab.path), "-i", str(engine), "-e", f"@{plan_file}", str(PLAYBOOKS / playbook)]
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
