"""Snapshots of a running lab's state (issue 11): ``pacslab snapshot save NAME | restore NAME | list``,
and ``pacslab reset`` (restore ``_up``, the snapshot the lab's first ``up`` took).

What a snapshot holds, under ``.pacslab/<lab>/snapshots/<NAME>/``:

- ``state/<host>/<n>.tar``: every named volume of a host except its logs (Orthanc's storage and
  PostgreSQL index on the PACS and VNA, the RIS's worklists and SQLite index, the CA's state), and
  each DICOM node's state folder (images a workstation received, a modality's acquisition record),
  read with tar inside the container while the host's supervised programs are stopped (a
  consistent PostgreSQL data directory, no half-written file);
- ``fw-sets.json``: the elements of the fw's named sets, except those traffic fills (the rate limits);
- ``meta.json``: the lab's name, its configuration digest (a snapshot restores only into the lab
  definition it was taken from), when, the paths saved, and the state fingerprint taken right after
  the save (pacslab.fingerprint), which the restore must reproduce.

Logs are left out on purpose: a restore rolls the lab's state back, not its evidence.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from . import fingerprint
from .docker import docker
from .firewall import RUNTIME_SETS, TABLE
from .plan import build_plan, state_dir
from .probes import imaging as im
from .topology import Lab

AFTER_UP = "_up"  # the snapshot `up` takes when the lab has none: what `pacslab reset` restores
NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")
LOG_VOLUMES = ("log",)  # volume names left out: a restore rolls state back, not evidence
READY_TIMEOUT = 120.0  # seconds for each Orthanc to answer its REST API again after a restore


class SnapshotError(Exception):
    """A snapshot cannot be taken or restored as asked (the message says why); nothing was changed
    unless the message says otherwise."""


@dataclass(frozen=True)
class StatePath:
    host: str
    path: str
    source: str  # "volume <name>" or "node state"


def state_paths(lab: Lab) -> list[StatePath]:
    """Every path a snapshot saves, host by host (see the module docstring)."""
    out = []
    for host in lab.deployed_hosts():
        out += [StatePath(host.name, v.path, f"volume {v.name}") for v in host.volumes if v.name not in LOG_VOLUMES]
        if host.image == "dicom":
            out.append(StatePath(host.name, fingerprint.DICOM_NODE_STATE, "node state"))
    return out


def snapshots_dir(lab: Lab) -> Path:
    return state_dir(lab) / "snapshots"


def _supervised(lab: Lab, host: str, action: str) -> None:
    """supervisorctl stop|start all in the host, where it runs supervisor (every service host; a
    person's computer does not)."""
    docker("exec", lab.container_name(host), "sh", "-c", f"! command -v supervisorctl >/dev/null || supervisorctl {action} all >/dev/null",
           timeout=180)


def _each(hosts: list[str], work: Any) -> dict[str, str]:
    """``work(host)`` for every host at once (each waits on its own programs: one at a time, a save
    took 41 s); host -> error text for those that failed."""
    def attempt(host: str) -> str | None:
        try:
            work(host)
            return None
        except (subprocess.CalledProcessError, subprocess.TimeoutExpired, OSError) as exc:
            err = getattr(exc, "stderr", b"") or b""
            detail = err.decode(errors="replace").strip()[-300:] if isinstance(err, bytes) else str(err)[-300:]
            return f"{exc.__class__.__name__}: {detail or exc}"
    with ThreadPoolExecutor(len(hosts) or 1) as pool:
        return {h: e for h, e in zip(hosts, pool.map(attempt, hosts), strict=True) if e is not None}


def _stopped(lab: Lab, hosts: list[str], work: Any) -> dict[str, str]:
    """Every host's supervised programs stopped together, ``work(host)`` on each, then all started
    again (also after a failure): a barrier, so no program forwards or writes between two hosts'
    archives. host -> error text for the hosts whose work failed."""
    failed = _each(hosts, lambda h: _supervised(lab, h, "stop"))
    try:
        if not failed:
            failed = _each(hosts, work)
    finally:
        failed |= {h: f"start: {e}" for h, e in _each(hosts, lambda h: _supervised(lab, h, "start")).items()}
    return failed


# A process a stopped program started can outlive it by a moment: the siem's ingest, rsyslogd's
# child, closes its store after rsyslogd has ended, and SQLite then folds in and removes the WAL
# beside it. tar says so ("file changed as we read it", exit 1) and reads again, here, until one
# pass saw nothing change: that pass's archive is consistent.
ARCHIVE_TRIES = 5


def _archive(lab: Lab, host: str, path: str, target: Path) -> None:
    """``path`` in ``host``'s container as a tar file at ``target``, read again while tar reports a
    file changed during the read (at most ARCHIVE_TRIES reads, a second apart);
    subprocess.CalledProcessError for any other failure, or when nothing settles."""
    for attempt in range(1, ARCHIVE_TRIES + 1):
        with target.open("wb") as out:
            done = subprocess.run(["docker", "exec", lab.container_name(host), "tar", "-C", path, "-cf", "-", "."],
                                  stdout=out, stderr=subprocess.PIPE, check=False, timeout=900)
        changed = done.returncode == 1 and b"file changed as we read it" in done.stderr
        if not changed or attempt == ARCHIVE_TRIES:
            break
        time.sleep(1)
    done.check_returncode()


def _wait_ready(lab: Lab) -> None:
    deadline = time.monotonic() + READY_TIMEOUT
    for host in fingerprint.orthanc_hosts(lab):
        while True:
            try:
                im.orthanc(lab, host, "/system")
                break
            except Exception:
                if time.monotonic() > deadline:
                    raise SnapshotError(f"{host}: Orthanc did not answer within {READY_TIMEOUT:.0f} s after the restore") from None
                time.sleep(1)


def _containers(lab: Lab) -> dict[str, str]:
    """container name -> id of every container of the lab: a snapshot restores only into these."""
    from .docker import lab_objects

    return {o["Name"].lstrip("/"): o["Id"] for o in lab_objects("container", lab.name)}


def save(lab: Lab, name: str, overwrite: bool = False) -> dict[str, Any]:
    """Save the running lab's state as snapshot ``name``; its meta record. SnapshotError for a bad
    name, an existing snapshot (unless ``overwrite``), or a host whose state could not be read (the
    lab runs on, the partial snapshot is dropped). Files are readable by their owner only: the CA's
    keys are among them."""
    if not NAME.fullmatch(name) and name != AFTER_UP:
        raise SnapshotError(f"{name!r}: a snapshot name is letters, digits, '.', '_' and '-' (at most 64), starting with a letter or digit")
    final = snapshots_dir(lab) / name
    if final.exists() and not overwrite:
        raise SnapshotError(f"snapshot {name!r} exists ({final}); restore it, save under another name, or save with --overwrite")
    work = final.with_name(f".{name}.partial")
    shutil.rmtree(work, ignore_errors=True)
    started = time.monotonic()
    paths = state_paths(lab)
    hosts = sorted({p.host for p in paths})
    saved: list[dict[str, Any]] = []
    umask = os.umask(0o077)
    try:
        snapshots_dir(lab).mkdir(parents=True, exist_ok=True)
        snapshots_dir(lab).chmod(0o700)

        def save_host(host: str) -> None:
            for i, sp in enumerate(p for p in paths if p.host == host):
                target = work / "state" / host / f"{i}.tar"
                target.parent.mkdir(parents=True, exist_ok=True)
                _archive(lab, host, sp.path, target)
                saved.append({"host": host, "path": sp.path, "source": sp.source, "file": str(target.relative_to(work)),
                              "bytes": target.stat().st_size})

        failed = _stopped(lab, hosts, save_host)
        if failed:
            raise SnapshotError(f"snapshot {name!r} not saved (the lab runs on as before): "
                                + "; ".join(f"{h}: {e}" for h, e in sorted(failed.items())))
        (work / "fw-sets.json").write_text(json.dumps(fingerprint.fw_sets(lab)))
        _wait_ready(lab)
        meta = {"name": name, "lab": lab.name, "config_digest": build_plan(lab).config_digest, "containers": _containers(lab),
                "created": datetime.now(UTC).isoformat(timespec="seconds"), "paths": sorted(saved, key=lambda p: (p["host"], p["file"])),
                "fingerprint": fingerprint.take(lab), "seconds": 0.0}
        meta["seconds"] = round(time.monotonic() - started, 1)
        (work / "meta.json").write_text(json.dumps(meta, indent=1))
        shutil.rmtree(final, ignore_errors=True)
        work.rename(final)
    finally:
        os.umask(umask)
        shutil.rmtree(work, ignore_errors=True)
    return meta


def listing(lab: Lab) -> list[dict[str, Any]]:
    """The lab's snapshots: name, created, size in bytes, paths saved."""
    out = []
    folder = snapshots_dir(lab)
    for meta_file in sorted(folder.glob("*/meta.json")) if folder.is_dir() else []:
        meta = json.loads(meta_file.read_text())
        out.append({"name": meta["name"], "created": meta["created"], "bytes": sum(p["bytes"] for p in meta["paths"]),
                    "paths": len(meta["paths"]), "seconds": meta["seconds"]})
    return out


def restorable(lab: Lab, meta: dict[str, Any]) -> str | None:
    """Why snapshot ``meta`` cannot be restored into the running lab, or None. It must come from
    this lab definition, into the same containers (a container made again since has other keys and
    certificates than the CA state saved), with the paths this lab saves."""
    digest = build_plan(lab).config_digest
    if meta["lab"] != lab.name or meta["config_digest"] != digest:
        return f"it was taken from another definition of lab {meta['lab']!r} (configuration {meta['config_digest'][:12]}, now {digest[:12]})"
    if meta.get("containers") != _containers(lab):
        return "the lab's containers were made again since it was taken (down and up): their keys and certificates are not the saved ones"
    if sorted((p["host"], p["path"]) for p in meta["paths"]) != sorted((p.host, p.path) for p in state_paths(lab)):
        return "its paths are not the ones this lab saves"
    return None


def restore(lab: Lab, name: str) -> dict[str, Any]:
    """Put the running lab back to snapshot ``name``: every host's supervised programs stopped, its
    saved paths emptied and unpacked, all started again; the fw's sets as saved (one nft transaction
    per set); then the state fingerprint compared with the one taken at the save (converge records
    aside: a restore does not roll back the controller's own files). The record: {name, seconds,
    differences, equal}. SnapshotError when there is no such snapshot or restorable() says why not
    (nothing changed then), or when a host failed (the message names what was restored)."""
    if not NAME.fullmatch(name) and name != AFTER_UP:
        raise SnapshotError(f"{name!r} is not a snapshot name")
    folder = snapshots_dir(lab) / name
    if not (folder / "meta.json").is_file():
        there = ", ".join(s["name"] for s in listing(lab)) or "none"
        raise SnapshotError(f"lab {lab.name!r} has no snapshot {name!r} (there are: {there})")
    meta = json.loads((folder / "meta.json").read_text())
    why = restorable(lab, meta)
    if why:
        raise SnapshotError(f"snapshot {name!r} cannot be restored: {why}; nothing was changed")
    started = time.monotonic()

    def restore_host(host: str) -> None:
        for p in (p for p in meta["paths"] if p["host"] == host):
            with (folder / p["file"]).open("rb") as archive:
                subprocess.run(["docker", "exec", "-i", lab.container_name(host), "sh", "-c",
                                'find "$1" -mindepth 1 -delete && tar -C "$1" -xpf -', "restore", p["path"]],
                               stdin=archive, stderr=subprocess.PIPE, check=True, timeout=900)

    hosts = sorted({p["host"] for p in meta["paths"]})
    failed = _stopped(lab, hosts, restore_host)
    if failed:
        raise SnapshotError(f"snapshot {name!r} restored on {', '.join(h for h in hosts if h not in failed) or 'no host'} but not on "
                            + "; ".join(f"{h}: {e}" for h, e in sorted(failed.items())) + f" - restore {name!r} again")
    fw = lab.container_name(lab.router.name)
    now = fingerprint.fw_sets(lab)
    for key, elems in json.loads((folder / "fw-sets.json").read_text()).items():
        if now.get(key) == elems:
            continue  # as saved: a set the rules use is never emptied for nothing
        family, table, set_name = key.split("/")
        spec = {"family": family, "table": table, "name": set_name}
        batch = [{"flush": {"set": spec}}] + ([{"add": {"element": {**spec, "elem": elems}}}] if elems else [])
        docker("exec", "-i", fw, "nft", "-j", "-f", "-", input=json.dumps({"nftables": batch}))  # one transaction: all or nothing
    for set_name in RUNTIME_SETS:
        docker("exec", fw, "nft", "flush", "set", "inet", TABLE, set_name)
    _wait_ready(lab)
    diff = fingerprint.differences(meta["fingerprint"], fingerprint.take(lab), ignore=("converged",))
    return {"name": name, "seconds": round(time.monotonic() - started, 1), "differences": diff, "equal": not diff}


def remove(lab: Lab, name: str) -> None:
    shutil.rmtree(snapshots_dir(lab) / name, ignore_errors=True)


def remove_all(lab: Lab) -> None:
    """Forget every snapshot of the lab (its volumes are gone: `down --volumes`)."""
    shutil.rmtree(snapshots_dir(lab), ignore_errors=True)
