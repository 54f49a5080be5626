"""Stand-ins and probe runs for the segmentation check.

A stand-in is a tools-image container at a planned host's address (or a zone's probe address)
that answers on the ports the matrix needs. Stand-ins are provisioned by the same role tasks as
lab hosts (playbooks/standins.yml: fixed address, default route through the fw set from outside,
no NET_ADMIN), carry the lab's label, and are removed after the check and by `pacslab down`.
"""

from __future__ import annotations

import json
import subprocess
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import replace
from pathlib import Path
from xml.etree import ElementTree

from ..docker import docker
from ..engine import RunResult, run_playbook
from ..plan import LABEL_LAB, LABEL_ROLE, WORKLOAD_SYSCTLS, Attachment, ContainerPlan, Plan
from ..topology import Lab
from .segmentation import Case, Peer, listeners

AGENT = (Path(__file__).parent / "agent.py").read_text()
DROP_LOG = "/var/log/pacslab/fw-drops.json"


def container_for(lab: Lab, peer: Peer) -> str:
    """The container that plays a peer: the deployed host itself, else its stand-in."""
    host = lab.hosts.get(peer.name)
    if host is not None and host.deployed:
        return lab.container_name(host.name)
    return f"{lab.prefix}-standin-{peer.name.replace('zone:', 'zone-')}"


def standin_plans(lab: Lab, plan: Plan, cases: list[Case]) -> list[ContainerPlan]:
    ports = listeners(cases)
    peers = {c.src for c in cases} | set(ports)
    out = []
    for peer in sorted(peers, key=lambda p: p.name):
        host = lab.hosts.get(peer.name)
        if host is not None and host.deployed:
            continue
        p = ports.get(peer, {"tcp": set(), "udp": set()})
        zone = lab.zones[peer.zone]
        out.append(
            ContainerPlan(
                name=container_for(lab, peer),
                host=peer.name.replace("zone:", "zone-"),
                image=plan.tools_image,
                networks=[Attachment(lab.network_name(zone.name), peer.address)],
                router=str(zone.router),
                sysctls=dict(WORKLOAD_SYSCTLS),
                command=[
                    "python3", "-c", AGENT, "listen", peer.name,
                    "--tcp", ",".join(map(str, sorted(p["tcp"]))), "--udp", ",".join(map(str, sorted(p["udp"]))),
                ],
                role="standin",
            )
        )
    return out


def start(lab: Lab, plan: Plan, cases: list[Case], state: Path) -> RunResult:
    standins = standin_plans(lab, plan, cases)
    return run_playbook(lab, replace(plan, containers=standins, volumes=[]), "standins.yml", state, quiet=True)


def remove(lab: Lab) -> None:
    ids = docker("ps", "-aq", "--filter", f"label={LABEL_LAB}={lab.name}", "--filter", f"label={LABEL_ROLE}=standin").stdout.split()
    if ids:
        docker("rm", "-f", *ids)


def wait_listening(lab: Lab, plan: Plan, cases: list[Case], timeout: float = 60) -> None:
    """Each stand-in prints 'listening' once its sockets are bound."""
    deadline = time.monotonic() + timeout
    pending = {s.name for s in standin_plans(lab, plan, cases)}
    while pending and time.monotonic() < deadline:
        for name in list(pending):
            if "listening" in docker("logs", name, check=False).stdout:
                pending.discard(name)
        if pending:
            time.sleep(0.5)
    if pending:
        raise RuntimeError(f"stand-ins not listening after {timeout:.0f} s: {', '.join(sorted(pending))}")


def probe(container: str, targets: list[dict[str, object]], timeout: float = 2.0) -> dict[str, str]:
    """Run the agent's connect in one container; target id -> outcome."""
    proc = docker("exec", "-i", container, "python3", "-c", AGENT, "connect", str(timeout),
                  input=json.dumps(targets), timeout=120 + timeout * 4)
    result: dict[str, str] = json.loads(proc.stdout)
    return result


def scan(container: str, addresses: list[str], ports: str = "1-65535", timeout: float = 2.0,
         processes: int = 2) -> dict[str, dict[str, list[int]]]:
    """A TCP connect scan of lab addresses from one container: address -> open, dropped, error ports.
    The range ("first-last") is cut into ``processes`` parts, each scanned by its own agent process
    at the same time (one agent is bound by one CPU)."""
    first, last = (int(p) for p in ports.split("-"))
    step = -(-(last - first + 1) // processes)
    parts = [f"{lo}-{min(lo + step - 1, last)}" for lo in range(first, last + 1, step)]

    def one(part: str) -> dict[str, dict[str, list[int]]]:
        proc = docker("exec", container, "python3", "-c", AGENT, "scan", str(timeout), part, *addresses, timeout=1800)
        result: dict[str, dict[str, list[int]]] = json.loads(proc.stdout)
        return result

    with ThreadPoolExecutor(max_workers=len(parts)) as pool:
        results = list(pool.map(one, parts))
    return {a: {k: sorted(p for r in results for p in r[a][k]) for k in ("open", "dropped", "error")} for a in addresses}


def nmap_scan(container: str, addresses: list[str], ports: str = "1-65535", user: str = "pacslab-scanner") -> dict[str, dict[str, list[int]]]:
    """The same answer as ``scan`` from nmap's TCP connect scan (``-sT``: no privilege, no raw
    socket) in a container that has it (the scanner, roles/scanner), as ``user``: address -> open,
    dropped (nmap's filtered: no answer) and error (any state but open, filtered and closed; a port
    nmap did not account for) ports. Its XML report is read with ElementTree. Lab addresses only."""
    first, last = (int(p) for p in ports.split("-"))
    proc = docker("exec", "-u", user, container, "nmap", "-sT", "-n", "-Pn", "-T4", "-p", ports, "-oX", "-", *addresses, timeout=1800)
    root = ElementTree.fromstring(proc.stdout)
    found: dict[str, dict[str, list[int]]] = {a: {"open": [], "dropped": [], "error": list(range(first, last + 1))} for a in addresses}
    for host in root.iter("host"):
        address = next((a.get("addr") for a in host.findall("address") if a.get("addrtype") == "ipv4"), None)
        if address not in found:
            continue
        listed = {int(p.get("portid", "0")): p.find("state").get("state") for p in host.iter("port")}  # type: ignore[union-attr]
        closed = sum(int(e.get("count", "0")) for e in host.iter("extraports") if e.get("state") == "closed")
        if closed + len(listed) != last - first + 1 or any(e.get("state") != "closed" for e in host.iter("extraports")):
            continue  # nmap did not account for every port as closed or listed: every port stays an error
        found[address] = {"open": sorted(p for p, s in listed.items() if s == "open"),
                          "dropped": sorted(p for p, s in listed.items() if s == "filtered"),
                          "error": sorted(p for p, s in listed.items() if s not in ("open", "filtered", "closed"))}
    return found


def run_cases(lab: Lab, cases: list[Case], timeout: float = 2.0) -> dict[str, str]:
    """Run every case from its source container, every source at the same time (a source's
    dropped cases each wait ``timeout`` seconds: the run lasts about as long as its slowest
    source); case id -> outcome."""
    by_source: dict[str, list[Case]] = {}
    for c in cases:
        by_source.setdefault(container_for(lab, c.src), []).append(c)

    def one(container: str) -> dict[str, str]:
        targets: list[dict[str, object]] = [
            {"id": c.id, "addr": c.dst.address, "port": c.port, "proto": c.proto} for c in by_source[container]
        ]
        return probe(container, targets, timeout)

    results: dict[str, str] = {}
    with ThreadPoolExecutor(max_workers=len(by_source) or 1) as pool:
        for part in pool.map(one, sorted(by_source)):
            results.update(part)
    return results


def drop_log_mark(lab: Lab) -> tuple[int, int]:
    """Where the fw's drop log ends now: (its inode, its size in bytes); (0, 0) when there is none."""
    fw = lab.container_name(lab.router.name)
    proc = docker("exec", fw, "sh", "-c", f"stat -c '%i %s' {DROP_LOG} 2>/dev/null || echo 0 0")
    inode, size = proc.stdout.split()
    return int(inode), int(size)


def read_drop_log(lab: Lab, mark: tuple[int, int]) -> str:
    """The fw's NFLOG JSON lines written after ``mark`` (drop_log_mark). If the log was rotated since
    (roles/log_rotation renames it to .1, ulogd starts a new one), the rest of the renamed file, then
    all of the new one."""
    fw = lab.container_name(lab.router.name)
    inode, size = mark
    script = (f'f={DROP_LOG}; if [ "$(stat -c %i $f 2>/dev/null)" = "{inode}" ]; then tail -c +{size + 1} $f; '
              f'else if [ "$(stat -c %i $f.1 2>/dev/null)" = "{inode}" ]; then tail -c +{size + 1} $f.1; fi; cat $f 2>/dev/null; fi')
    try:
        return docker("exec", fw, "sh", "-c", script, timeout=60).stdout
    except subprocess.CalledProcessError:
        return ""
