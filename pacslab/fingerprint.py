"""The lab's state fingerprint: what a scenario's reset must put back exactly.

Sections, each a plain JSON value:

- ``orthanc:<host>`` for each Orthanc host (PACS, VNA, RIS): ``instances``, the sorted Orthanc ids of
  every stored instance (its REST API), and ``files``, the MD5 of every file of its storage area
  (relative path -> hex digest; the SQLite index files are left out, the instance list covers the
  index), so a byte changed at rest shows.
- ``worklists:<host>`` for each RIS: worklist file name -> SHA-256.
- ``dicom_node:<host>`` for each DICOM node that is not Orthanc (modalities, the gateway, the
  workstations): its state folder (DICOM_NODE_STATE: images a workstation received, a modality's
  acquisition record), relative path -> SHA-256.
- ``converged``: the converge records of every node (``.pacslab/<lab>/converged/<host>``: inputs and
  observed digests; roles/lab_converged).
- ``fw``: the SHA-256 of the fw's ruleset without set contents (``nft -s -t``), and the elements of
  every named set except those that traffic fills (pacslab.firewall.RUNTIME_SETS).

``take(lab)`` reads them, several at once (seconds: one REST call and one md5sum per Orthanc host); ``differences(a, b)``
lists what changed, per section, in words.
"""

from __future__ import annotations

import hashlib
import json
import subprocess
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from functools import partial
from typing import Any

from . import listeners
from .docker import docker
from .firewall import RUNTIME_SETS
from .plan import state_dir
from .probes import imaging as im
from .topology import Lab

SQLITE_INDEX = ("index", "index-shm", "index-wal")  # Orthanc's SQLite index (the RIS), beside its storage
DICOM_NODE_STATE = "/var/lib/pacslab"  # dicomsim's STATE, the home of the node's service user (roles/dicom_node)


def orthanc_hosts(lab: Lab) -> list[str]:
    return [h.name for h in lab.deployed_hosts() if h.image == "orthanc"]


def dicom_node_hosts(lab: Lab) -> list[str]:
    return [h.name for h in lab.deployed_hosts() if h.image == "dicom"]


def ris_hosts(lab: Lab) -> list[str]:
    return [h.name for h in lab.deployed_hosts() if "ris_servers" in h.groups]


def _digests(lab: Lab, host: str, folder: str, algorithm: str) -> dict[str, str]:
    """relative path -> digest of every regular file under ``folder`` in ``host`` (one exec)."""
    # A file removed between find and the sum (a forward, a worklist poll) is skipped, not an error; no folder, no files.
    out = docker("exec", lab.container_name(host), "sh", "-c",
                 f'cd "$1" 2>/dev/null || exit 0; find . -type f -print0 | xargs -0 -r {algorithm}sum 2>/dev/null; exit 0',
                 "digests", folder, timeout=300).stdout
    found = {}
    for line in out.splitlines():
        digest, _, path = line.partition("  ")
        found[path.removeprefix("./")] = digest
    return found


def fw_sets(lab: Lab) -> dict[str, list[Any]]:
    """"family/table/name" -> elements (nft's JSON) of every named set of the fw, except those
    traffic fills (pacslab.firewall.RUNTIME_SETS)."""
    fw = lab.container_name(lab.router.name)
    found = {}
    for entry in json.loads(docker("exec", fw, "nft", "-j", "list", "sets").stdout)["nftables"]:
        body = entry.get("set")
        if body and body["name"] not in RUNTIME_SETS:
            found[f"{body['family']}/{body['table']}/{body['name']}"] = body.get("elem", [])
    return found


def _fw(lab: Lab) -> dict[str, Any]:
    ruleset = docker("exec", lab.container_name(lab.router.name), "nft", "-s", "-t", "list", "ruleset").stdout
    sets = {name: sorted(json.dumps(e, sort_keys=True) for e in elems) for name, elems in fw_sets(lab).items()}
    return {"ruleset_sha256": hashlib.sha256(ruleset.encode()).hexdigest(), "sets": sets}


def role_var(lab: Lab, host: str, role: str, name: str) -> str:
    """A role variable of ``host`` as text (pacslab.listeners.role_var)."""
    return str(listeners.role_var(lab, host, role, name))


def _orthanc(lab: Lab, host: str) -> dict[str, Any]:
    storage = role_var(lab, host, "orthanc", "orthanc_storage_dir")
    files = {p: d for p, d in _digests(lab, host, storage, "md5").items() if p not in SQLITE_INDEX}
    return {"instances": sorted(im.orthanc(lab, host, "/instances")), "files": files}


# Sections read at once: each is a docker exec or two that waits on its container, not on this
# process (a fingerprint of the reference lab takes about a third of the time it takes one by one).
READERS = 8


BUSY_JOBS = ("Pending", "Running", "Retry")  # Orthanc's job states of work still to be done (REST /jobs?expand)


def in_flight(lab: Lab, host: str) -> list[str]:
    """What Orthanc ``host`` still has to do that will change a fingerprint soon, in words: its
    studies not yet stable (a PACS forwards a study once it is stable: Orthanc's StableAge after
    its last image) and its jobs pending, running or waiting to retry (a forward, a modify)."""
    unstable = [s["ID"] for s in im.orthanc(lab, host, "/studies?expand") if not s.get("IsStable", True)]
    jobs = [j["ID"] for j in im.orthanc(lab, host, "/jobs?expand") if j.get("State") in BUSY_JOBS]
    return ([f"{host}: {len(unstable)} stud{'y' if len(unstable) == 1 else 'ies'} not stable yet"] if unstable else []) + (
        [f"{host}: {len(jobs)} job(s) not done"] if jobs else [])


def in_flight_everywhere(lab: Lab) -> list[str]:
    """``in_flight`` of every Orthanc host of the lab, one poll; an Orthanc that does not answer
    (restarting, an up) counts as busy."""
    return [line for host in orthanc_hosts(lab) for line in _in_flight_or_silent(lab, host)]


def _in_flight_or_silent(lab: Lab, host: str) -> list[str]:
    try:
        return in_flight(lab, host)
    except (RuntimeError, ValueError, subprocess.SubprocessError) as exc:  # Orthanc restarting: asked again on the next poll
        return [f"{host}: not answering ({type(exc).__name__})"]


# Seconds settle waits beyond two of the lab's longest StableAge (a study stable on the PACS after
# its StableAge, forwarded, then stable on the VNA after its own): 60 s in all with Orthanc's 5 s.
SETTLE_MARGIN = 50.0


def settle_timeout(lab: Lab) -> float:
    """How long settle waits by default (seconds): SETTLE_MARGIN plus twice the longest
    orthanc_stable_age of the lab's Orthanc hosts (0 without one; a value that is no number here,
    a Jinja expression Ansible would resolve, counts as the role's default)."""
    default = float(listeners.role_default("orthanc", "orthanc_stable_age"))

    def age(host: str) -> float:
        try:
            return float(role_var(lab, host, "orthanc", "orthanc_stable_age"))
        except (TypeError, ValueError):
            return default

    return SETTLE_MARGIN + 2 * max((age(host) for host in orthanc_hosts(lab)), default=0.0)


def settle(lab: Lab, timeout: float | None = None, every: float = 0.5) -> list[str]:
    """Wait until no Orthanc host has work in flight (``in_flight``) on two polls ``every`` seconds
    apart (a study just stable has its forward submitted a moment later), so that a fingerprint
    taken next holds what was already on its way: a study stored just before a scenario's run,
    forwarded to the VNA during it, would otherwise be taken for an addition of the run, and its
    reset would delete the VNA's copy. Returns [] once settled, else what was still in flight
    when ``timeout`` (seconds; settle_timeout(lab) when None) ran out (the caller goes on: a lab
    that is never quiet still runs)."""
    deadline, quiet = time.monotonic() + (settle_timeout(lab) if timeout is None else timeout), 0
    while True:
        busy = in_flight_everywhere(lab)
        quiet = 0 if busy else quiet + 1
        if quiet >= 2 or time.monotonic() >= deadline:
            return busy
        time.sleep(every)


def take(lab: Lab) -> dict[str, Any]:
    """The fingerprint of the running lab (see the module docstring)."""
    readers: dict[str, Callable[[], Any]] = {}
    for host in orthanc_hosts(lab):
        readers[f"orthanc:{host}"] = partial(_orthanc, lab, host)
    for host in ris_hosts(lab):
        readers[f"worklists:{host}"] = partial(_digests, lab, host, role_var(lab, host, "ris", "ris_worklists_dir"), "sha256")
    for host in dicom_node_hosts(lab):
        readers[f"dicom_node:{host}"] = partial(_digests, lab, host, DICOM_NODE_STATE, "sha256")
    readers["fw"] = partial(_fw, lab)
    with ThreadPoolExecutor(READERS) as pool:
        running = {name: pool.submit(read) for name, read in readers.items()}
        sections: dict[str, Any] = {name: future.result() for name, future in running.items()}
    records = state_dir(lab) / "converged"
    sections["converged"] = {p.name: p.read_text().strip() for p in sorted(records.glob("*"))} if records.is_dir() else {}
    return sections


def added_files(before: dict[str, Any], after: dict[str, Any], section: str) -> list[str]:
    """Files of a worklists: or dicom_node: section that ``after`` has and ``before`` has not."""
    return sorted(set(after.get(section, {})) - set(before.get(section, {})))


def differences(before: dict[str, Any], after: dict[str, Any], ignore: tuple[str, ...] = ()) -> list[str]:
    """What differs between two fingerprints, one line per difference (sections in ``ignore``
    left out); empty when equal."""
    out = []
    for section in sorted((set(before) | set(after)) - set(ignore)):
        a, b = before.get(section), after.get(section)
        if a == b:
            continue
        if a is None or b is None:
            out.append(f"{section}: {'appeared' if a is None else 'gone'}")
            continue
        if section.startswith("orthanc:"):
            added, gone = sorted(set(b["instances"]) - set(a["instances"])), sorted(set(a["instances"]) - set(b["instances"]))
            changed = sorted(p for p in set(a["files"]) & set(b["files"]) if a["files"][p] != b["files"][p])
            new_files, lost = sorted(set(b["files"]) - set(a["files"])), sorted(set(a["files"]) - set(b["files"]))
            for label, items in (("instances added", added), ("instances gone", gone), ("files changed", changed),
                                 ("files added", new_files), ("files gone", lost)):
                if items:
                    out.append(f"{section}: {len(items)} {label} ({', '.join(items[:3])}{', ...' if len(items) > 3 else ''})")
        elif section == "converged":
            out += _converged_differences(a, b)
        elif isinstance(a, dict) and isinstance(b, dict):
            keys = sorted(k for k in set(a) | set(b) if a.get(k) != b.get(k))
            out.append(f"{section}: {', '.join(keys)} differ")
        else:
            out.append(f"{section}: differs")
    return out


def _converged_differences(before: dict[str, str], after: dict[str, str]) -> list[str]:
    """The converge records that differ, in words. A record is "<shared digest>/<host inputs>:<CA
    state> <observed digest>" (roles/lab_converged); a node whose shared digest changed is
    configured from another checkout or lab definition than when ``before`` was taken (the roles,
    the playbooks or the lab folder were edited): no scenario reset can put that back, and the line
    says so."""
    keys = sorted(k for k in set(before) | set(after) if before.get(k) != after.get(k))
    shared = {k: (before.get(k, "").split("/", 1)[0], after.get(k, "").split("/", 1)[0]) for k in keys}
    edited = [k for k in keys if all(shared[k]) and shared[k][0] != shared[k][1]]
    rest = [k for k in keys if k not in edited]
    out = []
    if edited:
        out.append(f"converged: {', '.join(edited)} now configured from a changed checkout or lab definition (the roles, playbooks or "
                   "lab folder were edited since the fingerprint): no scenario reset puts that back; `pacslab reset` closes the run")
    if rest:
        out.append(f"converged: {', '.join(rest)} differ")
    return out
