"""pacslab: the front door. Verbs call the layers (topology, Ansible engine, pytest, report).

Exit codes (also in the README):
  0  success
  1  a phase failed (the failing task and its message are printed)
  2  usage error
  3  the lab definition was refused (file, key, reason); nothing was changed
  4  this machine lacks something (no Docker engine, no ansible-playbook ...); `pacslab doctor` says what
  5  verify ran and at least one check failed
  5  (scenario run) a step did not end as the scenario expects; (check) a control fails; (reset) the lab
     is not back to its state before the run
  6  another pacslab run (up, down, verify) holds this lab (/run/lock/pacslab-<lab>.lock); nothing was changed
  130 interrupted
"""

from __future__ import annotations

import argparse
import contextlib
import fcntl
import getpass
import json
import logging
import math
import os
import shlex
import shutil
import subprocess
import sys
import textwrap
import time
from collections.abc import Iterator
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any

from . import doctor as doctor_mod
from . import people
from .docker import DockerUnavailable, docker, engine_version, lab_objects
from .engine import EngineHostError, RunResult, ansible_playbook, engine_host_vars, host_chains, last_converged, run_playbook
from .plan import DIRECTORIES, SCANNERS, SIEM_USER, SIEMS, Plan, build_plan, state_dir
from .topology import REPO_ROOT, Lab, LabDefinitionError, load_lab

EXIT_OK = 0
EXIT_PHASE_FAILED = 1
EXIT_USAGE = 2
EXIT_BAD_LAB = 3
EXIT_MACHINE = 4
EXIT_CHECKS_FAILED = 5
EXIT_BUSY = 6
EXIT_INTERRUPTED = 130
MAX_MAINTENANCE_MINUTES = 7 * 24 * 60  # the siem's own bound (roles/siem pacslab_siem.py): longer is standing access

# The reference lab of this checkout, wherever pacslab is run from; a --lab given on the command
# line is a path like any other (relative to the current folder).
DEFAULT_LAB = REPO_ROOT / "inventories" / "default"
log = logging.getLogger("pacslab")


class Refused(Exception):
    def __init__(self, code: int, message: str):
        super().__init__(message)
        self.code = code


def _load(path: str) -> Lab:
    try:
        return load_lab(path)
    except LabDefinitionError as exc:
        lines = "\n".join(f"  {p}" for p in exc.problems)
        raise Refused(EXIT_BAD_LAB, f"lab definition {path} refused; nothing was changed:\n{lines}") from exc


# Set while a run holds its lab's lock (to the lock file's path): what it starts (verify's pytest,
# the `up` a check runs) works under the same lock instead of waiting for itself.
LOCK_ENV = "PACSLAB_LOCK_HELD"
LOCK_DIR = Path("/run/lock")


def lock_path(lab: Lab) -> Path:
    """One lock per lab name on the machine, whichever checkout drives it (two clones of the
    repository drive the same containers): /run/lock/pacslab-<lab>.lock, or the lab's state folder
    where /run/lock is not writable."""
    if LOCK_DIR.is_dir() and os.access(LOCK_DIR, os.W_OK):
        return LOCK_DIR / f"pacslab-{lab.name}.lock"
    return state_dir(lab) / "lock"


@contextlib.contextmanager
def lab_lock(lab: Lab, verb: str) -> Iterator[None]:
    """One changing run (up, down, verify, an integration session) per lab at a time: an
    exclusive flock on lock_path(lab), whose file names its holder. A second run is refused at once
    (EXIT_BUSY), before it changes anything; the kernel drops the lock when its holder ends, however
    it ends. A process started under the lock (LOCK_ENV) runs without taking it again."""
    path = lock_path(lab)
    if os.environ.get(LOCK_ENV) == str(path):
        yield
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        holder = path.read_text().strip() or "a process"
        os.close(fd)
        raise Refused(EXIT_BUSY, f"lab {lab.name!r} is busy: {holder} holds {path}; nothing was changed. "
                                 "Wait for it to end (one up, down or verify per lab at a time).") from None
    os.ftruncate(fd, 0)
    os.write(fd, f"pid {os.getpid()} (pacslab {verb}, since {datetime.now(UTC).isoformat(timespec='seconds')})".encode())
    outer = os.environ.get(LOCK_ENV)
    os.environ[LOCK_ENV] = str(path)
    try:
        yield
    finally:
        if outer is None:
            os.environ.pop(LOCK_ENV, None)
        else:
            os.environ[LOCK_ENV] = outer
        os.ftruncate(fd, 0)
        os.close(fd)


def _require_engine(may_install: bool) -> None:
    if ansible_playbook() is None:
        raise Refused(EXIT_MACHINE, "ansible-playbook not found: pip install -r requirements.txt")
    try:
        engine_host_vars()
    except EngineHostError as exc:
        raise Refused(EXIT_USAGE, str(exc)) from exc
    if engine_version() is not None:
        return
    finding = doctor_mod.engine_finding()
    if may_install and doctor_mod.can_install_engine():
        print(f"No Docker engine answers yet; the host phase will install and start it ({finding.fix}).")
        return
    raise Refused(EXIT_MACHINE, f"{finding.detail}.\n  fix: {finding.fix}\n  (pacslab doctor lists everything this machine lacks)")


def _report_run(verb: str, result: RunResult, seconds: float, lab: Lab) -> None:
    if result.failures:
        print(f"\n{verb} failed:", file=sys.stderr)
        for f in result.failures:
            print(f"  phase {f['phase'] or '?'}: {f['task']} [{f['host']}]\n    {f['msg']}", file=sys.stderr)
        print(f"  full log: {state_dir(lab) / 'ansible.log'}; re-running {verb} resumes.", file=sys.stderr)
    elif result.rc != 0:
        print(f"\n{verb} failed: ansible-playbook exited {result.rc} before any task ran (its message is above)", file=sys.stderr)
    print(f"{verb}: {seconds:.1f} s, {result.changed} change(s)")


def container_state(container: dict[str, Any] | None, converged: datetime | None) -> str:
    """Docker's state of a deployed host's container, with what `up` made of it: a running container
    is "unconverged" while no `up` has succeeded, and "restarted" when it started after the last one
    (an engine restart, a crash, `docker restart`): its routes fail closed until `up` runs again."""
    if container is None:
        return "absent"
    status: str = container["State"]["Status"]
    if status != "running":
        return status
    if converged is None:
        return "unconverged"
    started = datetime.fromisoformat(container["State"]["StartedAt"])
    return "restarted" if started > converged else "running"


def host_rows(lab: Lab) -> list[dict[str, Any]]:
    """One row per host of the definition with what Docker says about it: host, zone (None for
    the router, which stands in every zone), addresses ({zone: IPv4 address}), state (container_state,
    or "planned" for a host the definition lists without deploying it), container ("" when
    planned) and up (the state is "running"; None when planned)."""
    try:
        live = {c["Config"]["Labels"].get("pacslab.host"): c for c in lab_objects("container", lab.name)}
    except (DockerUnavailable, subprocess.CalledProcessError):
        live = {}
    converged = last_converged(state_dir(lab))
    rows = []
    for h in lab.hosts.values():
        if h.is_router:
            addresses, zone = {z.name: str(z.router) for z in lab.zones.values()}, None
        else:
            addresses, zone = {str(h.zone): str(h.address)}, str(h.zone)
        state = container_state(live.get(h.name), converged) if h.deployed else "planned"
        rows.append({"host": h.name, "zone": zone, "addresses": addresses, "state": state,
                     "container": lab.container_name(h.name) if h.deployed else "",
                     "up": None if state == "planned" else state == "running"})
    return rows


def hosts_up(rows: list[dict[str, Any]]) -> bool:
    """Every deployed host runs as the last successful `up` left it."""
    return all(r["state"] == "running" for r in rows if r["state"] != "planned")


def _commented(lines: list[str], comment: str, target: str) -> bool:
    """Some ``iptables -S`` line carries exactly ``--comment <comment>`` and jumps to ``target``
    (shlex undoes the quoting)."""
    for line in lines:
        tokens = shlex.split(line)
        pairs = list(zip(tokens, tokens[1:], strict=False))
        if ("--comment", comment) in pairs and ("-j", target) in pairs:
            return True
    return False


def host_rules(plan: Plan) -> dict[str, bool]:
    """Each of the lab's host rules -> present, found by the lab's comment and target
    (roles/docker_host): the DOCKER-USER accept for frames bridged inside a lab bridge; the
    DOCKER-USER drop of DNATed traffic from the lab's bridges (published ports), and the INPUT drop
    for IPv4 and, where the kernel has it, IPv6, that keep every zone off the Docker host (C-ACC-04).
    A host reboot loses them all until `up`."""
    try:
        chains = host_chains()  # on the engine's machine: this one, or PACSLAB_ENGINE_HOST's
    except EngineHostError as exc:
        raise Refused(EXIT_USAGE, str(exc)) from exc
    rules = {
        "DOCKER-USER": _commented(chains.get("DOCKER-USER", []), plan.docker_user_comment, "ACCEPT"),
        "DOCKER-USER-DNAT": _commented(chains.get("DOCKER-USER", []), plan.docker_user_comment, "DROP"),
        "INPUT": _commented(chains.get("INPUT", []), plan.docker_user_comment, "DROP"),
    }
    if "INPUT6" in chains:
        rules["INPUT6"] = _commented(chains["INPUT6"], plan.docker_user_comment, "DROP")
    return rules


def host_rule_present(plan: Plan) -> bool:
    """Every host rule of the lab is in place (see host_rules)."""
    return all(host_rules(plan).values())


def lab_is_up(lab: Lab) -> bool:
    """What `status` exits 0 for: every deployed host as the last `up` left it, and the host rule."""
    return hosts_up(host_rows(lab)) and host_rule_present(build_plan(lab))


def print_hosts(rows: list[dict[str, Any]]) -> None:
    print(f"\n{'host':<11} {'zone':<12} {'state':<11} address")
    for r in rows:
        zone = r["zone"] or "(all zones)"
        address = r["addresses"][r["zone"]] if r["zone"] else ", ".join(f"{z}={a}" for z, a in r["addresses"].items())
        print(f"{r['host']:<11} {zone:<12} {r['state']:<11} {address}")
    planned = sum(r["state"] == "planned" for r in rows)
    if planned:
        print(f"({planned} planned hosts: no container yet; the fw already holds their flows, and the checks probe them from stand-ins)")
    if any(r["state"] in ("restarted", "unconverged") for r in rows):
        print("(restarted/unconverged: started outside a successful `pacslab up`; their routes fail closed until `pacslab up` runs)")


# ------------------------------------------------------------------------------------------------
# Verbs


# `up --full` and the idempotence check: the skip cache (roles/lab_converged) skips no node, and
# every Docker object goes through its module (roles/lab_provision), not only those that differ.
FULL_CONVERGE = {"lab_converged_force": True, "lab_provision_force": True}


def cmd_up(args: argparse.Namespace) -> int:
    lab = _load(args.lab)
    with lab_lock(lab, "up"):
        _require_engine(may_install=True)
        plan = build_plan(lab)
        state = state_dir(lab)
        print(f"pacslab up: lab {lab.name!r} from {args.lab}" + (" (full: no node skipped)" if args.full else ""))
        print(f"  {'phase':<10} {'time':>9}   result")
        start = time.monotonic()
        result = run_playbook(lab, plan, "up.yml", state, extra=FULL_CONVERGE if args.full else None)
        _report_run("up", result, time.monotonic() - start, lab)
        if result.ok and state_dir(lab) / "overlay" not in lab.path.parents:  # a scenario's overlay is not the state to reset to
            after_up_snapshot(lab)
    if not result.ok:
        return EXIT_PHASE_FAILED
    print_hosts(host_rows(lab))
    return EXIT_OK


def after_up_snapshot(lab: Lab) -> None:
    """The first successful `up` of a lab saves its state as snapshot _up: what `pacslab reset`
    restores. Later runs keep it while the lab can still take it (same definition, same
    containers), and save it again when not; `down --volumes` forgets it with the volumes."""
    from . import snapshot

    meta_file = snapshot.snapshots_dir(lab) / snapshot.AFTER_UP / "meta.json"
    if meta_file.is_file() and snapshot.restorable(lab, json.loads(meta_file.read_text())) is None:
        return
    try:  # none yet, or one this lab can no longer take (another definition, containers made again): this up's state
        meta = snapshot.save(lab, snapshot.AFTER_UP, overwrite=True)
    except Exception as exc:  # the up itself succeeded: a snapshot that could not be taken is a warning, not a failed up
        print(f"  warning: the lab is up, but its state after up was not saved: {exc}", file=sys.stderr)
        return
    print(f"  saved the state after this up as snapshot {snapshot.AFTER_UP} ({meta['seconds']} s): `pacslab reset` returns to it")


def cmd_down(args: argparse.Namespace) -> int:
    lab = _load(args.lab)
    with lab_lock(lab, "down"):
        _require_engine(may_install=False)
        plan = build_plan(lab)
        start = time.monotonic()
        print(f"pacslab down: lab {lab.name!r}" + (" (volumes too)" if args.volumes else " (volumes kept; --volumes removes them)"))
        result = run_playbook(lab, plan, "down.yml", state_dir(lab), extra={"lab_provision_remove_volumes": args.volumes})
        _report_run("down", result, time.monotonic() - start, lab)
        if result.ok and args.volumes:
            from . import scenario, snapshot

            snapshot.remove_all(lab)  # they were of these volumes
            scenario.forget(lab)  # and so were the scenario runs' baselines
    return EXIT_OK if result.ok else EXIT_PHASE_FAILED


def cmd_status(args: argparse.Namespace) -> int:
    lab = _load(args.lab)
    if engine_version() is None:
        finding = doctor_mod.engine_finding()
        raise Refused(EXIT_MACHINE, f"{finding.detail}.\n  fix: {finding.fix}")
    plan = build_plan(lab)
    rows = host_rows(lab)
    rules = host_rules(plan)
    rule = all(rules.values())
    networks = {n["Name"] for n in lab_objects("network", lab.name)}
    if args.json:
        print(json.dumps(status_document(lab, plan, rows, rules, networks), indent=1))
    else:
        listed = ", ".join(f"{k} {'present' if v else 'absent'}" for k, v in rules.items())
        print(f"lab {lab.name!r}: {len(networks)}/{len(plan.networks)} zone networks, host rules: {listed}")
        print_hosts(rows)
    return EXIT_OK if hosts_up(rows) and rule else EXIT_PHASE_FAILED


def status_document(lab: Lab, plan: Plan, rows: list[dict[str, Any]], rules: dict[str, bool], networks: set[str]) -> dict[str, Any]:
    """What `status --json` prints: {lab, path, up, last_up, hosts: [host_rows], networks: {present,
    missing}, host_rules: {rule: present}}. up is what `status` exits 0 for; last_up is when the last
    successful `up` finished (ISO 8601, UTC) or None."""
    converged = last_converged(state_dir(lab))
    return {
        "lab": lab.name,
        "path": str(lab.path),
        "up": hosts_up(rows) and all(rules.values()),
        "last_up": converged.isoformat() if converged else None,
        "hosts": rows,
        "networks": {"present": sorted(networks), "missing": sorted({n.name for n in plan.networks} - networks)},
        "host_rules": rules,
    }


def cmd_users(args: argparse.Namespace) -> int:
    """The lab definition's people and service accounts (pacslab.people): what the directory holds
    after `up`. Reads the definition only; no secret is shown."""
    lab = _load(args.lab)
    doc = users_document(lab)
    if args.json:
        print(json.dumps(doc, indent=1))
        return EXIT_OK
    _print_table([("user", "name", "roles", "owner", "state", "expires")]
                 + [(p["name"], p["display_name"], ",".join(p["roles"]), p["owner"], p["status"], p["expires"] or "-") for p in doc["people"]])
    if doc["service_accounts"]:
        print()
        _print_table([("service account", "owner", "purpose (read-only directory bind)")]
                     + [(a["name"], a["owner"], a["purpose"]) for a in doc["service_accounts"]])
    if not any(DIRECTORIES in h.groups for h in lab.deployed_hosts()):
        print(f"(lab {lab.name!r} deploys no directory: nobody above can log in anywhere)")
    return EXIT_OK


def _print_table(rows: list[tuple[str, ...]]) -> None:
    """Columns padded to their widest cell, the last one as it is."""
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]) - 1)]
    for row in rows:
        print("  ".join(c.ljust(w) for c, w in zip(row, widths, strict=False)) + "  " + row[-1])


def cmd_totp(args: argparse.Namespace) -> int:
    """Print the person's current TOTP code (RFC 6238), computed from the seed `up` generated for
    them: what their authenticator app would show, for trainers and checks. The seed is not shown."""
    lab = _load(args.lab)
    known = {p.name: p for p in lab.people}
    if args.user not in known:
        raise Refused(EXIT_USAGE, f"no person {args.user!r} in lab {lab.name!r}; its people: {', '.join(sorted(known)) or 'none'}")
    try:
        seed = people.totp_seed(build_plan(lab).secrets_dir, args.user)
    except FileNotFoundError:
        raise Refused(EXIT_USAGE, f"lab {lab.name!r} has no TOTP seed for {args.user!r} yet: `pacslab up` generates it") from None
    status = known[args.user].status()
    print(people.totp_now(seed))
    if status != "enabled":
        print(f"({args.user} is {status}: the IdP refuses them whatever the code)", file=sys.stderr)
    return EXIT_OK


def users_document(lab: Lab, today: date | None = None) -> dict[str, Any]:
    """What `users --json` prints: {lab, people: [{name, display_name, roles, owner, state, status,
    expires}], service_accounts: [{name, owner, purpose}]}. state is the definition's (enabled |
    disabled); status what it means on ``today`` (UTC; default today): enabled | disabled | expired."""
    return {
        "lab": lab.name,
        "people": [{"name": p.name, "display_name": p.display_name, "roles": list(p.roles), "owner": p.owner, "state": p.state,
                    "status": p.status(today), "expires": p.expires.isoformat() if p.expires else None} for p in lab.people],
        "service_accounts": [{"name": a.name, "owner": a.owner, "purpose": a.purpose} for a in lab.service_accounts],
    }


def cmd_siem(args: argparse.Namespace) -> int:
    """`alerts`, `cases` and `events`: what the lab's siem holds (roles/siem), read on the siem host.
    Each alert: id, rule, title, severity, entities (the rule's group-by fields), events (ids in the
    store), first_seen and last_seen (UTC), case. Each case: id, host (empty for a person's case),
    person (who an alert that names no host or address is about, else null), status, severity,
    owner, zone, criticality, address, alerts. Each event (those after ``--since`` whose raw message holds
    ``--contains``, oldest first): id, the normalised fields (time, host, source, event_type, user,
    addresses, AE titles, patient and study, outcome ...), message (raw) and received (UTC)."""
    lab = _load(args.lab)
    siems = [h.name for h in lab.deployed_hosts() if SIEMS in h.groups]
    if not siems:
        raise Refused(EXIT_USAGE, f"lab {lab.name!r} deploys no siem (group {SIEMS}): nothing raises alerts")
    if engine_version() is None:
        finding = doctor_mod.engine_finding()
        raise Refused(EXIT_MACHINE, f"{finding.detail}.\n  fix: {finding.fix}")
    rows: list[dict[str, Any]] = []
    for siem in siems:
        search = ["--since-id", str(args.since), "--contains", args.contains] if args.verb == "events" else []
        proc = docker("exec", "-u", SIEM_USER, lab.container_name(siem), "pacslab-siem", args.verb, "--json", *search, check=False, timeout=60)
        if proc.returncode != 0:
            said = (proc.stderr or proc.stdout).strip()[-300:]
            raise Refused(EXIT_PHASE_FAILED, f"{siem}: pacslab-siem {args.verb} exited {proc.returncode} ({said}); is the lab up (`pacslab status`)?")
        rows += [r | {"siem": siem} for r in json.loads(proc.stdout)]
    if args.json:
        print(json.dumps(rows, indent=1))
    elif args.verb == "alerts":
        _print_table([("id", "severity", "rule", "entities", "events", "last seen", "case")]
                     + [(str(a["id"]), a["severity"], a["rule"], ",".join(f"{k}={v}" for k, v in a["entities"].items()),
                         str(len(a["events"])), a["last_seen"], str(a["case"])) for a in rows])
    elif args.verb == "events":
        _print_table([("id", "time", "host", "source", "event", "user", "outcome", "message")]
                     + [(str(e["id"]), e["time"] or "-", e["host"] or "-", e["source"] or "-", e["event_type"] or "-", e["user"] or "-",
                         e["outcome"] or "-", textwrap.shorten(e["message"] or "", 100, placeholder=" ...")) for e in rows])
    else:
        _print_table([("id", "status", "severity", "host", "person", "zone", "owner", "criticality", "alerts")]
                     + [(str(c["id"]), c["status"], c["severity"], c["host"] or "-", c.get("person") or "-", c["zone"] or "-",
                         c["owner"] or "-", c["criticality"] or "-", ",".join(map(str, c["alerts"]))) for c in rows])
    if not rows:
        print(f"(no {args.verb} on {', '.join(siems)})")
    return EXIT_OK


def cmd_discovery(args: argparse.Namespace) -> int:
    """`discovery`: what the scanner's newest sweep of each zone found, reconciled both ways with the
    lab definition, and the unknown addresses the fw, the IDS sensor, the TLS fronts and the overlay gateway saw in the last hour
    (pacslab.discovery, C-AST-01): exit 0 when every swept zone holds exactly its deployed hosts
    and nothing unknown was seen but a zone's probe address (the segmentation checks' stand-in),
    EXIT_CHECKS_FAILED when an address is unknown or a host missing."""
    from . import discovery

    lab = _load(args.lab)
    siems = [h.name for h in lab.deployed_hosts() if SIEMS in h.groups]
    if not siems or not any(SCANNERS in h.groups for h in lab.deployed_hosts()):
        raise Refused(EXIT_USAGE, f"lab {lab.name!r} deploys no scanner (group {SCANNERS}) or no siem (group {SIEMS}): nothing sweeps its zones")
    _require_up(lab)
    sweeps: dict[str, Any] = {}
    failed = []
    seen: list[dict[str, Any]] = []
    for siem in siems:
        proc = docker("exec", "-u", SIEM_USER, lab.container_name(siem), "pacslab-siem", "discovery", check=False, timeout=60)
        if proc.returncode != 0:
            said = (proc.stderr or proc.stdout).strip()[-300:]
            raise Refused(EXIT_PHASE_FAILED, f"{siem}: pacslab-siem discovery exited {proc.returncode} ({said})")
        found = json.loads(proc.stdout)
        for zone, sweep in found["zones"].items():  # the newest sweep of a zone, whichever siem holds it
            if zone not in sweeps or str(sweep["finished"]) > str(sweeps[zone]["finished"]):
                sweeps[zone] = sweep
        failed += [found["failed"] | {"siem": siem}] if found["failed"] else []
        seen += found.get("seen", [])
    rows = discovery.reconcile(lab, sweeps, seen)
    if args.json:
        print(json.dumps({"zones": rows, "failed": failed}, indent=1))
    else:
        _print_table([("zone", "subnet", "swept", "hosts", "unknown", "missing", "seen unknown (fw, sensor, TLS; last hour)")]
                     + [(r["zone"], r["subnet"], r["finished"] or "no", str(len(r["expected"])) if r["swept"] else "-",
                         ",".join(r["unknown"]) or "-", ",".join(m["host"] for m in r["missing"]) or "-",
                         ",".join(s["address"] + (" (probe)" if s["probe"] else "") for s in r["seen"]) or "-") for r in rows])
        not_swept = [r["zone"] for r in rows if not r["swept"]]
        if not_swept:
            print(f"not swept: {', '.join(not_swept)}: {discovery.NOT_SWEPT}")
        if any(s["probe"] for r in rows for s in r["seen"]):
            print("(probe): the zone's probe address, which the segmentation checks use as a stand-in device")
        for f in failed:
            print(f"newest failed sweep ({f['siem']}): {f['time']}: {f['error']}")
    seen_unknown = any(not s["probe"] for r in rows for s in r["seen"])  # the segmentation checks' stand-in: the lab's own
    return EXIT_CHECKS_FAILED if seen_unknown or any(r["unknown"] or r["missing"] for r in rows) else EXIT_OK


def cmd_quarantine(args: argparse.Namespace) -> int:
    """`quarantine HOST` / `release HOST`: containment on the fw (pacslab.response, C-RSP-02);
    `quarantine` alone lists the quarantined hosts."""
    from . import response

    lab = _load(args.lab)
    _require_up(lab)
    try:
        if args.host is None:
            record = response.quarantined(lab)
            if args.json:
                print(json.dumps(record, indent=1))
            elif record:
                _print_table([("host", "address", "since", "by", "enforced", "reason")]
                             + [(r["host"] or "(no lab host)", a, r["since"], r["by"], "yes" if r["enforced"] else "NO", r["reason"])
                                for a, r in record.items()])
            else:
                print("(no host in quarantine)")
            return EXIT_OK
        act = response.quarantine if args.verb == "quarantine" else response.release
        entry = act(lab, args.host, args.reason or f"by hand: pacslab {args.verb}")
    except response.ContainmentError as exc:
        raise Refused(EXIT_USAGE, str(exc)) from exc
    except response.FirewallError as exc:
        raise Refused(EXIT_PHASE_FAILED, str(exc)) from exc
    if args.json:
        print(json.dumps(entry, indent=1))
    else:
        done = "quarantined" if args.verb == "quarantine" else "released"
        who = args.host if args.host == entry["address"] else f"{args.host} ({entry['address']})"
        print(f"{who} {done}" if entry["changed"] else f"{who} was already {done}")
    return EXIT_OK


def cmd_maintenance(args: argparse.Namespace) -> int:
    """`maintenance open VENDOR`, `maintenance end ID`, `maintenance` (list): the vendors'
    maintenance windows on the lab's siem (C-DET-08). A vendor's sign-in outside every window of
    theirs raises vendor-outside-window. Only an enabled vendor of the lab definition gets a window."""
    lab = _load(args.lab)
    siems = [h.name for h in lab.deployed_hosts() if SIEMS in h.groups]
    if not siems:
        raise Refused(EXIT_USAGE, f"lab {lab.name!r} deploys no siem (group {SIEMS}): nothing watches the vendors' sign-ins")
    if args.action == "open":
        person = next((p for p in lab.people if p.name == args.vendor), None)
        vendors = [p.name for p in lab.people if "vendor" in p.roles]
        if person is None or "vendor" not in person.roles:
            raise Refused(EXIT_USAGE, f"{args.vendor!r} is no vendor of lab {lab.name!r} "
                                      f"(vendors: {', '.join(vendors) or 'none'}; see `pacslab users`)")
        if person.status() != "enabled":
            raise Refused(EXIT_USAGE, f"{person.name} is {person.status()} (people.yml): a window would cover sign-ins that must not happen")
        if not (math.isfinite(args.minutes) and 0 < args.minutes <= MAX_MAINTENANCE_MINUTES):
            raise Refused(EXIT_USAGE, f"--minutes {args.minutes:g}: more than 0 and at most {MAX_MAINTENANCE_MINUTES} (a week)")
        if not args.reason.strip():
            raise Refused(EXIT_USAGE, "--reason: the change ticket or the work the window is for")
        command = ["open", "--user", person.name, "--minutes", str(args.minutes), "--reason", args.reason, "--by", getpass.getuser()]
    elif args.action == "end":
        command = ["end", str(args.id), "--by", getpass.getuser()]
    else:
        command = ["list"]
    _require_up(lab)
    answers = {}
    for siem in siems:
        proc = docker("exec", "-u", SIEM_USER, lab.container_name(siem), "pacslab-siem", "maintenance", *command, check=False, timeout=60)
        if proc.returncode != 0:
            said = (proc.stderr or proc.stdout).strip()[-300:]
            raise Refused(EXIT_USAGE if proc.returncode in (1, 2) and said.startswith("pacslab-siem: ") else EXIT_PHASE_FAILED,
                          f"{siem}: {said or f'pacslab-siem maintenance exited {proc.returncode}'}")
        answers[siem] = json.loads(proc.stdout)
    if args.json:
        print(json.dumps(answers, indent=1))
    elif args.action == "open":
        print("\n".join(f"{siem}: window {a['window']} open for {args.vendor}, {args.minutes:g} min" for siem, a in answers.items()))
    elif args.action == "end":
        print("\n".join(f"{siem}: window {a['id']} of {a['user']} ended at {a['end']}" for siem, a in answers.items()))
    else:
        rows = [(siem, str(w["id"]), w["user"], w["start"], w["end"], w["by"], w["reason"]) for siem, ws in answers.items() for w in ws]
        _print_table([("siem", "id", "vendor", "start", "end", "by", "reason"), *rows])
        if not rows:
            print(f"(no maintenance window on {', '.join(siems)})")
    return EXIT_OK


def cmd_capture(args: argparse.Namespace) -> int:
    """`capture ALERT`: the packets around an alert out of the fw's capture ring, written under the
    lab's state folder, their SHA-256 recorded in the alert's case (pacslab.forensics, C-RSP-03)."""
    from . import forensics

    if not (math.isfinite(args.margin) and 0 <= args.margin <= forensics.MAX_MARGIN):
        raise Refused(EXIT_USAGE, f"--margin {args.margin}: seconds before and after the alert, 0 to {forensics.MAX_MARGIN}")
    lab = _load(args.lab)
    _require_up(lab)
    try:
        found = forensics.capture(lab, args.alert, state_dir(lab), margin=args.margin)
    except forensics.CaptureError as exc:
        raise Refused(EXIT_PHASE_FAILED, str(exc)) from exc
    if args.json:
        print(json.dumps(found.as_dict(), indent=1))
    else:
        print(f"{found.path}\n  {found.packets} packets, {found.size} bytes, {found.start:%Y-%m-%dT%H:%M:%SZ} to {found.end:%Y-%m-%dT%H:%M:%SZ}"
              f"{'' if found.complete else ' (the ring had turned: it no longer holds the start)'}\n  sha256 {found.sha256}, recorded in the case")
    return EXIT_OK


def cmd_verify(args: argparse.Namespace) -> int:
    lab = _load(args.lab)
    from .report import record_verify, write_report

    with lab_lock(lab, "verify"):
        _require_engine(may_install=True)
        out = state_dir(lab) / "verify"
        out.mkdir(parents=True, exist_ok=True)
        junit = out / "junit.xml"
        # Steady checks observe the running lab and leave it as it is; lifecycle checks take it down,
        # restart, revoke and re-enrol (minutes), and run after the steady ones.
        selection = [] if args.lifecycle else ["-m", "not lifecycle"]
        cmd = [
            sys.executable, "-m", "pytest", str(REPO_ROOT / "tests" / "integration"), *selection,
            "--lab", str(Path(args.lab).resolve()), f"--junitxml={junit}",
            f"--pacslab-results={out / 'results.json'}", *args.pytest_args,
        ]
        for stale in (out / "results.json", junit, out / "run.json"):  # a run that ends early must not show the last one's
            stale.unlink(missing_ok=True)
        shutil.rmtree(out / "evidence", ignore_errors=True)
        started = datetime.now(UTC)
        rc = subprocess.run(cmd, cwd=REPO_ROOT, check=False).returncode
        record_verify(out, started, datetime.now(UTC), lifecycle=args.lifecycle, pytest_exit=rc)
        html, js = write_report(lab, out / "results.json", out)
    print(f"report: {html}\n        {js}\n        {junit}")
    if rc == 0:
        return EXIT_OK
    return EXIT_CHECKS_FAILED if rc == 1 else EXIT_PHASE_FAILED


def cmd_doctor(args: argparse.Namespace) -> int:
    """The machine's findings, then whether the lab definition loads (exit 4 before 3)."""
    findings = doctor_mod.check()
    for f in findings:
        mark = "ok " if f.ok else ("MISSING" if f.required else "optional")
        print(f"  [{mark:^8}] {f.name:<28} {f.detail}")
        if not f.ok and f.fix:
            print(f"  {'':10} {'':<28} fix: {f.fix}")
    try:
        lab = load_lab(args.lab)
        print(f"  [{'ok ':^8}] {'lab definition':<28} {args.lab}: lab {lab.name!r}, "
              f"{len(lab.deployed_hosts())} deployed hosts, {len(lab.flows)} flows")
        refused = None
    except LabDefinitionError as exc:
        refused = exc
        print(f"  [{'REFUSED':^8}] {'lab definition':<28} {args.lab}")
        for problem in exc.problems:
            print(f"  {'':10} {'':<28} {problem}")
    missing = [f for f in findings if f.required and not f.ok]
    if missing:
        print(f"\n{len(missing)} required item(s) missing.")
        return EXIT_MACHINE
    if refused is not None:
        print("\nThis machine has what pacslab needs; the lab definition was refused.")
        return EXIT_BAD_LAB
    print("\nThis machine has what pacslab needs.")
    return EXIT_OK


def cmd_report(args: argparse.Namespace) -> int:
    """Rewrite the report from the last verify's results; exit 1 when there are none."""
    lab = _load(args.lab)
    from .report import write_report

    out = state_dir(lab) / "verify"
    if not (out / "results.json").is_file():
        raise Refused(EXIT_PHASE_FAILED, f"lab {lab.name!r} has no verify results ({out / 'results.json'}): run `pacslab verify` first")
    html, js = write_report(lab, out / "results.json", out)
    print(f"report: {html}\n        {js}")
    state = json.loads(js.read_text())["run"]
    if state["stale"]:
        print(f"note: {state['stale']}")
    return EXIT_OK


def cmd_export(args: argparse.Namespace) -> int:
    """The fw's ruleset and the flow matrix (CSV, Markdown) from the lab definition; no Docker."""
    lab = _load(args.lab)
    from .export import export

    out = Path(args.out) if args.out else state_dir(lab) / "export"
    for path in export(lab, out):
        print(path)
    return EXIT_OK


def _scenarios(lab: Lab, scenario_id: str | None, left_out: dict[str, tuple[str, ...]] | None = None) -> list[Any]:
    """The scenario named, or all of them that run in ``lab`` (those that need hosts it plans are
    named in ``left_out``); a refused scenario file or an unknown id is a usage error."""
    from . import scenario as sc

    try:
        if scenario_id is None:
            return sc.load_all(lab, left_out=left_out)
        return [sc.find(lab, scenario_id)]
    except sc.ScenarioError as exc:
        lines = "\n".join(f"  {p}" for p in exc.problems)
        raise Refused(EXIT_BAD_LAB, f"scenario refused; nothing ran:\n{lines}") from exc
    except KeyError as exc:
        raise Refused(EXIT_USAGE, str(exc.args[0])) from exc


def _table(rows: list[list[str]], header: list[str]) -> None:
    widths = [max(len(str(r[i])) for r in [header, *rows]) for i in range(len(header))]
    for row in [header, *rows]:
        print("  " + "  ".join(str(c).ljust(w) for c, w in zip(row, widths, strict=True)).rstrip())


def cmd_scenario(args: argparse.Namespace) -> int:
    """list | show ID | run ID [--vulnerable] | check ID | reset ID | sheets [ID] (pacslab.scenario).
    A run expects the defended outcomes (the lab as `up` leaves it); --vulnerable first brings the lab
    into the scenario's overlay and expects the attack to succeed; a reset after it brings the lab's
    own definition back."""
    from . import scenario as sc

    lab = _load(args.lab)
    if args.action not in ("list", "sheets") and not args.id:
        raise Refused(EXIT_USAGE, f"scenario {args.action} needs a scenario id (pacslab scenario list shows them)")
    left_out: dict[str, tuple[str, ...]] = {}
    found = _scenarios(lab, args.id if args.action not in ("list", "sheets") or args.id else None, left_out)
    if args.action == "sheets":
        out = Path(args.out) if args.out else state_dir(lab) / "sheets"
        for path in sc.write_sheets(found, out):
            print(path)
        return EXIT_OK
    if args.action == "list":
        if args.json:
            print(json.dumps([s.summary() for s in found], indent=1))
        else:
            _table([[s.id, s.title, ", ".join(s.category), ", ".join(sorted(s.controls)), s.attacker, "/".join(s.modes)] for s in found],
                   ["id", "title", "category", "controls", "attacker", "modes"])
            for sid, hosts in sorted(left_out.items(), key=lambda kv: int(kv[0][1:])):
                print(f"  ({sid} runs from {', '.join(hosts)}, planned in lab {lab.name!r}: not listed)")
        return EXIT_OK
    scenario = found[0]
    if args.action == "show":
        doc = scenario.document()
        if args.json:
            print(json.dumps(doc, indent=1))
            return EXIT_OK
        print(f"{scenario.id}: {scenario.title}\n  category: {', '.join(sc.CATEGORIES[c] for c in scenario.category)}"
              f"\n  attacker: {scenario.attacker}\n  controls: {', '.join(scenario.controls)}\n\n{scenario.story}\n")
        for i, step in enumerate(scenario.steps, 1):
            print(f"  {i}. {step.title} (from {step.host})")
            for mode, want in step.expect.items():
                print(f"       {mode}: {want.evidence}")
        return EXIT_OK
    mode = "vulnerable" if args.vulnerable else "defended"
    if args.vulnerable and args.action != "run":
        raise Refused(EXIT_USAGE, "--vulnerable goes with `scenario run` only")
    if mode not in scenario.modes:
        raise Refused(EXIT_USAGE, f"{scenario.id} has no vulnerable overlay: it runs {', '.join(scenario.modes)} only")
    with lab_lock(lab, f"scenario {args.action} {scenario.id}"):
        _require_up(lab)
        if args.action == "run":
            try:
                sc.refuse_other_open_runs(lab, scenario)
            except sc.ScenarioError as exc:
                raise Refused(EXIT_USAGE, "; ".join(str(p) for p in exc.problems)) from exc
        if args.action == "run" and args.vulnerable:
            try:
                overlay = sc.derive_overlay(lab, scenario)
            except sc.ScenarioError as exc:
                lines = "\n".join(f"  {p}" for p in exc.problems)
                raise Refused(EXIT_BAD_LAB, f"the vulnerable overlay of {scenario.id} was refused; nothing was changed:\n{lines}") from exc
            sc.ensure_baseline(lab, scenario)  # the defended state a reset returns to
            if not args.json:
                print(f"{scenario.id}: the lab takes the vulnerable overlay {overlay.path} (waives {', '.join(scenario.vulnerable.waives)})")
            if main(["up", "--lab", str(overlay.path)]) != EXIT_OK:
                return EXIT_PHASE_FAILED
        if args.action == "run":
            def progress(o: Any) -> None:
                if not args.json:
                    print(f"  [{'as expected' if o.as_expected else 'UNEXPECTED':^12}] {o.id} ({o.host}, {o.seconds} s): {o.title}", flush=True)

            if not args.json:
                print(f"pacslab scenario run {scenario.id} ({mode}) on lab {lab.name!r}")
            record = sc.run_scenario(lab, scenario, mode, progress)
            if args.json:
                print(json.dumps(record, indent=1))
            else:
                print()
                for step in record["steps"]:
                    print(f"  {step['id']}: {step['evidence'] if step['as_expected'] else '; '.join(step['problems'])}")
                print(f"\n{scenario.id} {mode}: {'every step as expected' if record['as_expected'] else 'NOT as expected'}; "
                      f"`pacslab scenario reset {scenario.id}` puts the lab back")
                if scenario.vulnerable and args.vulnerable:
                    print(f"\nBreak-and-fix: the lab runs {sc.overlay_dir(lab, scenario)}. Repair it there (or on the hosts): "
                          f"{scenario.vulnerable.repair}\nthen `pacslab up --lab {sc.overlay_dir(lab, scenario)}` and "
                          f"`pacslab scenario check {scenario.id}` says, per control, whether it is fixed.")
            return EXIT_OK if record["as_expected"] else EXIT_CHECKS_FAILED
        if args.action == "check":
            result = sc.check_scenario(lab, scenario)
            if args.json:
                print(json.dumps(result, indent=1))
            else:
                _table([[cid, "holds" if c["verdict"] == "holds" else "FAILS", str(len(c["tests"])),
                         "; ".join(f"{t['nodeid'].split('::')[-1]}: {t['message'][:80]}" for t in c["tests"] if t["outcome"] != "passed")]
                        for cid, c in result["controls"].items()], ["control", "verdict", "tests", "what failed"])
                if "error" in result:
                    print(f"\npytest ran no test:\n{result['error']}")
            return EXIT_OK if result["holds"] else EXIT_CHECKS_FAILED
        done: list[dict[str, Any]] = []
        if sc.last_mode(lab, scenario) == "vulnerable" or sc.overlay_dir(lab, scenario).is_dir():  # it took the overlay (or began to)
            done = sc.run_reset_actions(lab, scenario)  # before `up` records the hosts: what they undo is then as up left it
            if not args.json:
                print(f"{scenario.id}: the lab takes its own definition {lab.path} again")
            if main(["up", "--lab", str(lab.path)]) != EXIT_OK:
                return EXIT_PHASE_FAILED
        result = sc.reset_scenario(lab, scenario, done)
        if args.json:
            print(json.dumps(result, indent=1))
        elif result.get("nothing"):
            print(f"{scenario.id}: nothing to reset (no run since the last reset)")
        else:
            for a in result["actions"]:
                print(f"  [{'ok' if a['ok'] else 'FAILED':^6}] {a['id']} ({a['from']}): {a['title']}")
            for line in result["undone"]:
                print(f"  [{'ok':^6}] {line}")
            print(f"\n{scenario.id}: " + ("the lab's state fingerprint equals the one before the run" if result["equal"] else
                                          "NOT back to the state before the run:\n    " + "\n    ".join(result["differences"])
                                          + "\nA scenario reset removes what was added since the run; what went missing or changed otherwise"
                                            " comes back with `pacslab reset` (the state right after `up`) or `pacslab snapshot restore NAME`,"
                                            " and either closes the run."))
        return EXIT_OK if result["equal"] else EXIT_CHECKS_FAILED


def cmd_snapshot(args: argparse.Namespace) -> int:
    """save NAME | restore NAME | list (pacslab.snapshot)."""
    from . import snapshot

    lab = _load(args.lab)
    if args.action == "list":
        rows = snapshot.listing(lab)
        if args.json:
            print(json.dumps(rows, indent=1))
        else:
            _table([[r["name"], r["created"], f"{r['bytes'] / 1e6:.1f} MB", str(r["paths"])] for r in rows], ["name", "created", "size", "paths"])
        return EXIT_OK
    if not args.name:
        raise Refused(EXIT_USAGE, f"snapshot {args.action} needs a name")
    return _restore(lab, args.name, args.json) if args.action == "restore" else _save(lab, args.name, args.json, args.overwrite)


def _require_up(lab: Lab) -> None:
    if engine_version() is None or not lab_is_up(lab):
        raise Refused(EXIT_PHASE_FAILED, f"lab {lab.name!r} is not up: run `pacslab up` first")


def _save(lab: Lab, name: str, as_json: bool, overwrite: bool = False) -> int:
    from . import snapshot

    with lab_lock(lab, f"snapshot save {name}"):
        _require_up(lab)
        try:
            meta = snapshot.save(lab, name, overwrite=overwrite)
        except snapshot.SnapshotError as exc:
            raise Refused(EXIT_USAGE, str(exc)) from exc
    size = sum(p["bytes"] for p in meta["paths"])
    print(json.dumps({k: meta[k] for k in ("name", "created", "seconds", "paths")}, indent=1) if as_json else
          f"snapshot {name!r} of lab {lab.name!r}: {len(meta['paths'])} paths, {size / 1e6:.1f} MB, {meta['seconds']} s")
    return EXIT_OK


def _restore(lab: Lab, name: str, as_json: bool) -> int:
    from . import snapshot

    with lab_lock(lab, f"snapshot restore {name}"):
        _require_up(lab)
        try:
            result = snapshot.restore(lab, name)
        except snapshot.SnapshotError as exc:
            raise Refused(EXIT_USAGE if "nothing was changed" in str(exc) else EXIT_PHASE_FAILED, str(exc)) from exc
        from . import scenario

        scenario.forget(lab)  # the state the runs' baselines describe is gone
    if as_json:
        print(json.dumps(result, indent=1))
    else:
        print(f"lab {lab.name!r} restored to snapshot {name!r} in {result['seconds']} s: " +
              ("its state fingerprint equals the one saved" if result["equal"] else
               "its state fingerprint DIFFERS from the one saved:\n    " + "\n    ".join(result["differences"])))
    return EXIT_OK if result["equal"] else EXIT_CHECKS_FAILED


def cmd_reset(args: argparse.Namespace) -> int:
    """Restore the snapshot the lab's first `up` saved."""
    from . import snapshot

    lab = _load(args.lab)
    if not any(s["name"] == snapshot.AFTER_UP for s in snapshot.listing(lab)):
        raise Refused(EXIT_USAGE, f"lab {lab.name!r} has no snapshot {snapshot.AFTER_UP} (its first `up` saves it; "
                                  f"a lab that was up before this version: `pacslab snapshot save {snapshot.AFTER_UP}` on a state you trust)")
    return _restore(lab, snapshot.AFTER_UP, args.json)


def cmd_class(args: argparse.Namespace) -> int:
    """up --count N [--hosts FILE] | status [--check] | down (pacslab.classroom, playbooks/class.yml)."""
    from . import classroom

    lab = _load(args.lab)
    if args.action == "up":
        if not args.count:
            raise Refused(EXIT_USAGE, "class up needs --count N (the number of student labs)")
        try:
            hosts, text = classroom.docker_hosts(lab, Path(args.hosts) if args.hosts else None)
            classroom.keep_placement(lab)  # before derive_class writes class.json again: a class from before class files stays here
            students = classroom.derive_class(lab, args.count, hosts)
        except classroom.ClassError as exc:
            raise Refused(EXIT_BAD_LAB, str(exc)) from exc
        classroom.keep_docker_hosts(lab, text)
        print(f"pacslab class up: {len(students)} student lab(s) of {lab.name!r} on {len(hosts)} Docker host(s): "
              + ", ".join(f"{h.name} ({h.docker_host})" for h in hosts), flush=True)
        rc = _run_class(lab, students, "up")
        if rc == EXIT_INTERRUPTED:
            return rc
        rows = _class_rows(lab, students, check=False)
        failed = [r["lab"] for r in rows if not r["up"]]
        _table([[r["lab"], r["docker_host"], r["address_space"], "up" if r["up"] else "DOWN"] for r in rows],
               ["lab", "docker host", "addresses", "state"])
        print(f"\nclass of lab {lab.name!r}: {len(students) - len(failed)} of {len(students)} student labs up"
              + (f"; not up: {', '.join(failed)} (re-run `pacslab class up --count {args.count}`{' --hosts ' + args.hosts if args.hosts else ''})"
                 if failed else ""))
        return EXIT_PHASE_FAILED if failed or rc != 0 else EXIT_OK
    if args.hosts:
        raise Refused(EXIT_USAGE, "--hosts belongs to class up; status and down use the class's own")
    try:
        students = classroom.members(lab)
    except classroom.ClassError as exc:
        raise Refused(EXIT_BAD_LAB, str(exc)) from exc
    if not students:
        raise Refused(EXIT_USAGE, f"lab {lab.name!r} has no class: `pacslab class up --count N` derives one")
    if args.action == "down":
        if not classroom.hosts_file(lab).is_file():  # a class from before class files: this machine's engine
            classroom.keep_docker_hosts(lab, classroom.docker_hosts(lab, None)[1])
        rc = _run_class(lab, students, "down")
        if rc == EXIT_INTERRUPTED:
            return rc
        left = [s.name for s in students if _student_objects(lab, s)]
        if not left and rc == 0:
            classroom.forget(lab, students)
            print(f"class of lab {lab.name!r}: {len(students)} student lab(s) removed")
            return EXIT_OK
        print(f"class of lab {lab.name!r}: still there: {', '.join(left) or '(see the failure above)'}; re-run `pacslab class down`",
              file=sys.stderr)
        return EXIT_PHASE_FAILED
    rows = _class_rows(lab, students, check=args.check)
    if args.json:
        print(json.dumps(rows, indent=1))
    else:
        ids = sorted({i for r in rows for i in r.get("scenarios", {})}, key=lambda i: int(i[1:]))
        _table([[r["lab"], r["docker_host"], r["address_space"], "up" if r["up"] else "DOWN", f"{r['memory_mib']:.0f} MiB",
                 *[("holds" if r["scenarios"][i] else "FAILS") if i in r.get("scenarios", {}) else "-" for i in ids]] for r in rows],
               ["lab", "docker host", "addresses", "state", "memory", *ids])
    return EXIT_OK if all(r["up"] and all(r.get("scenarios", {}).values()) for r in rows) else EXIT_CHECKS_FAILED


def _run_class(lab: Lab, students: list[Lab], action: str) -> int:
    """playbooks/class.yml for ``action`` (pacslab.classroom.run_class): its exit status, or Refused
    when it cannot start (no ansible-playbook; the class's Docker hosts file unreadable)."""
    from . import classroom

    if ansible_playbook() is None:
        raise Refused(EXIT_MACHINE, "ansible-playbook not found: pip install -r requirements.txt")
    try:
        return classroom.run_class(lab, students, action)
    except classroom.ClassError as exc:
        raise Refused(EXIT_BAD_LAB, str(exc)) from exc


def _student_objects(lab: Lab, student: Lab) -> list[str]:
    """The containers, networks and volumes of ``student`` still on its Docker host's engine."""
    from . import classroom
    from .docker import lab_objects

    with classroom.on_engine(classroom.engine_of(lab, student)):
        if engine_version() is None:
            return []
        return [o.get("Name", "") for kind in ("container", "network", "volume") for o in lab_objects(kind, student.name)]


def _class_rows(lab: Lab, students: list[Lab], check: bool) -> list[dict[str, Any]]:
    """Per student lab: its Docker host, addresses, whether it is up, its memory, and with ``check``
    whether each scenario's controls hold there (each measured on the student's own engine)."""
    from . import classroom
    from . import scenario as sc

    rows = []
    for student in students:
        host = classroom.engine_of(lab, student)
        with classroom.on_engine(host):
            up = engine_version() is not None and lab_is_up(student)
            row: dict[str, Any] = {"lab": student.name, "path": str(student.path), "docker_host": host.name,
                                   "address_space": str(student.address_space), "up": up,
                                   "memory_mib": classroom.memory_mib(student) if up else 0.0}
            if check and up:
                with lab_lock(student, "class status --check"):
                    row["scenarios"] = {s.id: sc.check_scenario(student, s)["holds"] for s in sc.load_all(student)}
        rows.append(row)
    return rows


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="pacslab", description="NIST SP 1800-24 (Securing PACS) as a lab that runs.")
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    sub = parser.add_subparsers(dest="verb", required=True, metavar="VERB")

    def verb(name: str, helptext: str) -> argparse.ArgumentParser:
        p = sub.add_parser(name, help=helptext, description=helptext)
        p.add_argument("--lab", default=str(DEFAULT_LAB), metavar="PATH",
                       help="lab definition folder (default: this checkout's inventories/default, from any folder)")
        return p

    p = verb("up", "build images and bring the lab up (idempotent; re-run after a failure)")
    p.add_argument("--full", action="store_true",
                   help="run every role in full: no node skipped where it is as its last converge left it (roles/lab_converged), "
                   "every Docker object through its module (roles/lab_provision)")
    p.set_defaults(func=cmd_up)
    p = verb("down", "remove exactly what the lab created")
    p.add_argument("--volumes", action="store_true", help="also remove the lab's named volumes")
    p.set_defaults(func=cmd_down)
    p = verb("status", "hosts, zones, addresses and what runs")
    p.add_argument("--json", action="store_true", help="machine-readable output")
    p.set_defaults(func=cmd_status)
    p = verb("users", "the lab's people (roles, owner, state, end date) and service accounts, from its definition")
    p.add_argument("--json", action="store_true", help="machine-readable output")
    p.set_defaults(func=cmd_users)
    p = verb("totp", "a person's current TOTP code (from the seed up generated), for trainers and checks")
    p.add_argument("user", help="the person's user name (see `pacslab users`)")
    p.set_defaults(func=cmd_totp)
    for name, helptext in (("alerts", "the siem's alerts (rule, severity, entities, events, case)"),
                           ("cases", "the siem's cases (the host or the person, the owner, zone and criticality, the alerts)"),
                           ("events", "search the siem's stored events: those whose raw message holds a text (a vendor's typed "
                                      "command in the bastion's session recording, an accession, an AE title)")):
        p = verb(name, helptext)
        p.add_argument("--json", action="store_true", help="machine-readable output")
        if name == "events":
            p.add_argument("--contains", default="", metavar="TEXT", help="only events whose raw message holds TEXT (case matters)")
            p.add_argument("--since", type=int, default=0, metavar="ID", help="only events stored after the event ID")
        p.set_defaults(func=cmd_siem)
    p = verb("discovery", "asset discovery: what the scanner's newest sweeps found, reconciled both ways with the lab definition, "
             "and the unknown addresses the fw, the IDS sensor, the TLS fronts and the overlay gateway saw in the last hour "
             f"(exit {EXIT_CHECKS_FAILED} when an address is unknown or a host missing; a zone's probe address seen counts not)")
    p.add_argument("--json", action="store_true", help="machine-readable output")
    p.set_defaults(func=cmd_discovery)
    p = verb("quarantine", "containment: put a host in the fw's quarantine (it keeps the security zone only); no HOST: list them")
    p.add_argument("host", nargs="?", help="the lab host (see `pacslab status`)")
    p.add_argument("--reason", help="why, for the fw's response log (default: by hand)")
    p.add_argument("--json", action="store_true", help="machine-readable output")
    p.set_defaults(func=cmd_quarantine)
    p = verb("release", "containment: take a host out of the fw's quarantine (logged on the fw)")
    p.add_argument("host", help="the lab host, or an address no host has in a lab zone (a rogue device the siem quarantined)")
    p.add_argument("--reason", help="why, for the fw's response log (default: by hand)")
    p.add_argument("--json", action="store_true", help="machine-readable output")
    p.set_defaults(func=cmd_quarantine)
    p = verb("maintenance", "vendors' maintenance windows on the siem: a vendor's sign-in outside them raises vendor-outside-window")
    p.add_argument("--json", action="store_true", help="machine-readable output")
    msub = p.add_subparsers(dest="action", metavar="ACTION")
    p.set_defaults(func=cmd_maintenance, action="list")
    for action, helptext in (("open", "open a window for an enabled vendor of the lab definition, from now"), ("end", "close a window now")):
        m = msub.add_parser(action, help=helptext, description=helptext)
        # --lab and --json after the action too; SUPPRESS: given before it, they are not reset
        m.add_argument("--lab", default=argparse.SUPPRESS, metavar="PATH", help="lab definition folder (as before the action)")
        m.add_argument("--json", action="store_true", default=argparse.SUPPRESS, help="machine-readable output")
        if action == "open":
            m.add_argument("vendor", help="the vendor's user name (see `pacslab users`)")
            m.add_argument("--minutes", type=float, required=True, help=f"how long it stays open (at most {MAX_MAINTENANCE_MINUTES}, a week)")
            m.add_argument("--reason", required=True, help="the change ticket or the work")
        else:
            m.add_argument("id", type=int, help="the window's id (see `pacslab maintenance`)")
    p = verb("capture", "forensics: the packets around an alert, out of the fw's capture ring; their hash goes in the alert's case")
    p.add_argument("alert", type=int, help="the alert's id (see `pacslab alerts`)")
    p.add_argument("--margin", type=float, default=300, help="seconds kept before its first event and after its last (default 300)")
    p.add_argument("--json", action="store_true", help="machine-readable output")
    p.set_defaults(func=cmd_capture)
    p = verb("verify", "run the steady integration checks (they change nothing) and write the control report")
    p.add_argument("--lifecycle", action="store_true", help="also run the lifecycle checks (down, restart, revoke, re-enrol), after the steady ones")
    p.add_argument("pytest_args", nargs=argparse.REMAINDER, help="extra pytest arguments, after --")
    p.set_defaults(func=cmd_verify)
    verb("report", "rewrite the report from the last verify results").set_defaults(func=cmd_report)
    p = verb("export", "write the fw's nftables ruleset and the flow matrix (CSV, Markdown) from the lab definition, without Docker")
    p.add_argument("--out", metavar="DIR", help="folder to write ruleset.nft, flows.csv and flows.md into (default .pacslab/<lab>/export)")
    p.set_defaults(func=cmd_export)
    verb("doctor", "what this machine lacks and how to fix it, and whether the lab definition loads").set_defaults(func=cmd_doctor)
    p = verb("scenario", "workshop scenarios: list | show ID | run ID [--vulnerable] | check ID | reset ID | sheets [ID]")
    p.add_argument("action", choices=["list", "show", "run", "check", "reset", "sheets"])
    p.add_argument("id", nargs="?", help="the scenario id (W3 ...)")
    p.add_argument("--json", action="store_true", help="machine-readable output")
    p.add_argument("--vulnerable", action="store_true",
                   help="run: break-and-fix - the lab takes the scenario's overlay (its controls waived) and the attack is expected to succeed")
    p.add_argument("--out", metavar="DIR", help="sheets: where to write them (default .pacslab/<lab>/sheets)")
    p.set_defaults(func=cmd_scenario)
    p = verb("snapshot", "the running lab's state: save NAME | restore NAME | list")
    p.add_argument("action", choices=["save", "restore", "list"])
    p.add_argument("name", nargs="?", help="the snapshot's name")
    p.add_argument("--overwrite", action="store_true", help="save: replace a snapshot of that name")
    p.add_argument("--json", action="store_true", help="machine-readable output")
    p.set_defaults(func=cmd_snapshot)
    p = verb("class", "a class of student labs derived from this one: up --count N [--hosts FILE] | status [--check] | down")
    p.add_argument("action", choices=["up", "status", "down"])
    p.add_argument("--count", type=int, help="up: how many student labs")
    p.add_argument("--hosts", metavar="FILE",
                   help="up: the class file, an Ansible inventory whose group docker_hosts lists the Docker hosts (docker_host: the engine's "
                   "URL; the host's Ansible connection reaches its machine); default: this machine's engine")
    p.add_argument("--check", action="store_true", help="status: grade every scenario's controls in each student lab")
    p.add_argument("--json", action="store_true", help="machine-readable output")
    p.set_defaults(func=cmd_class)
    p = verb("reset", "return the lab to the state right after its first `up` (snapshot _up)")
    p.add_argument("--json", action="store_true", help="machine-readable output")
    p.set_defaults(func=cmd_reset)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    if getattr(args, "pytest_args", None) and args.pytest_args[:1] == ["--"]:
        args.pytest_args = args.pytest_args[1:]
    try:
        return int(args.func(args))
    except Refused as exc:
        print(f"pacslab: {exc}", file=sys.stderr)
        return exc.code
    except DockerUnavailable as exc:
        print(f"pacslab: {exc}", file=sys.stderr)
        return EXIT_MACHINE
    except BrokenPipeError:  # output piped into head or a closed pager: not an error
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return EXIT_OK
    except KeyboardInterrupt:
        print("pacslab: interrupted; re-run the same command to complete it", file=sys.stderr)
        return EXIT_INTERRUPTED


if __name__ == "__main__":
    sys.exit(main())
