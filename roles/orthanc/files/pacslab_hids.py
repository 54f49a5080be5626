#!/usr/bin/python3
"""pacslab-hids: an Orthanc host's own watch over what runs and what listens on it (roles/orthanc,
tasks/hids.yml): application allow-listing as detection (C-PRT-04; CSF PR.PT-3, DE.CM-4; SP 800-53
CM-7(5), SI-3) and least functionality kept after the build (C-PRT-02, CM-7), for C-DET-03 (DE.CM-7).

Every ``interval`` seconds it reads /proc (the host's own PID and network namespaces):
- every process's executable (/proc/PID/exe): a file that no Debian package of the image installed
  (dpkg's lists: /var/lib/dpkg/info/*.md5sums), a packaged file whose content differs from the MD5
  dpkg recorded for it, an executable deleted after it started, or one run from memory (memfd)
  is an ``unexpected-exec`` event, once per process and executable;
- every TCP socket in LISTEN and every unconnected UDP socket bound outside loopback (/proc/net/tcp,
  tcp6, udp, udp6): a (proto, port) the lab definition does not give the host (the configuration's
  ``listeners``, pacslab.listeners.expected_listeners) is an ``unexpected-listener`` event, once
  per socket, after two passes in a row (a client's short-lived UDP socket is not a listener),
  naming the socket's owner. Not its program: which process holds a socket shows only in that
  process's file descriptors, which another user's watch cannot list without CAP_DAC_READ_SEARCH,
  a capability no lab container holds (it reads files by handle, past the container's root).

Events are JSON objects, one per line, appended to ``events`` (roles/log_shipping ships the file to
the siem as ``hids``): {"time", "event", ...}. ``hids-started`` says what it watches (once per start).

It runs as a user of its own holding CAP_SYS_PTRACE alone (supervisor starts it through setpriv;
the Orthanc containers hold the capability for it, pacslab.plan IMAGE_CAPABILITIES): reading the
executable of another user's process takes it, and without it a process could hide its executable
by making itself non-dumpable. An executable its user may not read is reported without a SHA-256
(and, when it stands at a packaged path, as modified). What it does not see: a script run by a packaged
interpreter (``sh x.sh``, ``python3 x.py``: the executable is the interpreter), a process that
starts and ends between two passes, and anything after root in the container stops it (supervisor
starts it again, and ``hids-started`` says so in the siem).

Usage: pacslab_hids.py --config /etc/pacslab/hids.json
The configuration: {"listeners": ["tcp/2762", "udp/123", ...], "interval": 1.0,
"events": "/var/log/pacslab/hids.json", "dpkg_info": "/var/lib/dpkg/info"}.
"""

from __future__ import annotations

import argparse
import hashlib
import ipaddress
import json
import os
import sys
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

TCP_LISTEN = "0A"  # include/net/tcp_states.h: TCP_LISTEN
UDP_UNCONNECTED = "07"  # an unconnected UDP socket shows TCP_CLOSE
DELETED = " (deleted)"
# What runc runs inside the container for `docker exec` before it execs the command: itself, a
# binary of the Docker host's that the container's file system does not hold (its path reads "/"),
# or a copy of it in memory. Its parent is outside the container's PID namespace (PPid 0 here),
# which no process inside can arrange: only the Docker host's administrator enters that way.
RUNC_INIT = ("/memfd:runc_cloned:", "/memfd:runc-cloned:")


def _runc_init(p: Process) -> bool:
    return p.ppid == 0 and (p.exe == "/" or p.exe.startswith(RUNC_INIT))


def now() -> str:
    return datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


# ---------------------------------------------------------------------------------------------
# What the image's packages installed


def packaged_files(dpkg_info: Path) -> dict[str, str]:
    """{real path: MD5 hex} of every file a package installed, from dpkg's ``*.md5sums`` lists
    (lines "<md5>  <path without the leading slash>"); a path through a symlinked folder
    (bookworm's merged /usr: /bin -> usr/bin) is resolved. A line that is no MD5 and a path is skipped."""
    files: dict[str, str] = {}
    for listing in sorted(dpkg_info.glob("*.md5sums")):
        for line in listing.read_text(errors="replace").splitlines():
            digest, _, path = line.partition("  ")
            if len(digest) != 32 or not path:
                continue
            files[os.path.realpath("/" + path)] = digest.lower()
    return files


# ---------------------------------------------------------------------------------------------
# Processes


@dataclass(frozen=True)
class Process:
    pid: int
    ppid: int
    uid: int
    started: int  # clock ticks after boot (/proc/PID/stat field 22): with the PID, one process (an exec keeps both)
    exe: str  # what /proc/PID/exe points at, " (deleted)" included


def processes(proc: Path) -> Iterator[Process]:
    """Every process whose executable can be read (kernel threads have none; one that ended
    meanwhile is skipped)."""
    for entry in proc.iterdir():
        if not entry.name.isdigit():
            continue
        try:
            exe = os.readlink(entry / "exe")
            stat = (entry / "stat").read_text()
            status = (entry / "status").read_text()
        except OSError:
            continue
        fields = stat[stat.rfind(")") + 2:].split()  # after the command name, which may hold spaces and brackets
        uid = next((int(ln.split()[1]) for ln in status.splitlines() if ln.startswith("Uid:")), -1)
        yield Process(int(entry.name), int(fields[1]), uid, int(fields[19]), exe)


def verdict(p: Process, packaged: dict[str, str], digest_of: Any) -> str | None:
    """Why ``p``'s executable is not one the image's packages installed, or None when it is:
    "memory" (run from a memfd), "deleted", "not-packaged",
    "modified" (its MD5 differs from dpkg's). ``digest_of(p)``: the MD5 hex of what the process runs."""
    if _runc_init(p):
        return None
    if p.exe.startswith("/memfd:"):
        return "memory"
    if p.exe.endswith(DELETED):
        return "deleted"
    expected = packaged.get(p.exe)
    if expected is None:
        return "not-packaged"
    return None if digest_of(p) == expected else "modified"


# ---------------------------------------------------------------------------------------------
# Listening sockets


@dataclass(frozen=True)
class Socket:
    proto: str  # "tcp" | "udp"
    address: str
    port: int
    uid: int  # the socket's owner (the table's uid column)
    inode: int


def _address(hex_address: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address:
    """An address as /proc/net/{tcp,udp}[6] writes it: the kernel's 32-bit words in host order (little-endian here)."""
    raw = bytes.fromhex(hex_address)
    words = b"".join(raw[i:i + 4][::-1] for i in range(0, len(raw), 4))
    return ipaddress.ip_address(words)


def listening(lines: Iterable[str], proto: str) -> list[Socket]:
    """The sockets of a /proc/net/{tcp,tcp6,udp,udp6} table that wait for peers outside loopback:
    TCP in LISTEN, UDP unconnected (no remote address) and bound to a port."""
    found = []
    for line in lines:
        cols = line.split()
        if len(cols) < 10 or ":" not in cols[1] or cols[0] == "sl":
            continue
        local, remote, state, uid, inode = cols[1], cols[2], cols[3], int(cols[7]), int(cols[9])
        address_hex, port_hex = local.rsplit(":", 1)
        port = int(port_hex, 16)
        if proto == "tcp" and state != TCP_LISTEN:
            continue
        if proto == "udp" and (state != UDP_UNCONNECTED or int(remote.rsplit(":", 1)[0], 16) != 0 or port == 0):
            continue
        ip = _address(address_hex)
        mapped = ip.ipv4_mapped if isinstance(ip, ipaddress.IPv6Address) else None
        if ip.is_loopback or (mapped is not None and mapped.is_loopback):
            continue
        found.append(Socket(proto, str(ip), port, uid, inode))
    return found


def sockets(proc: Path) -> list[Socket]:
    found: list[Socket] = []
    for name, proto in (("tcp", "tcp"), ("tcp6", "tcp"), ("udp", "udp"), ("udp6", "udp")):
        try:
            found += listening((proc / "net" / name).read_text().splitlines(), proto)
        except OSError:
            continue  # no IPv6 in this namespace
    return found


# ---------------------------------------------------------------------------------------------
# The watch


class Watch:
    """One host's watch: ``step()`` is one pass and returns the events it found (each once)."""

    def __init__(self, listeners: set[tuple[str, int]], packaged: dict[str, str], proc: Path = Path("/proc")) -> None:
        self.listeners = listeners
        self.packaged = packaged
        self.proc = proc
        # (pid, started, executable) -> verdict: an exec keeps the PID and its start, not the executable
        self.judged: dict[tuple[int, int, str], str | None] = {}
        self.digests: dict[tuple[int, int, int, int], str] = {}  # (dev, inode, size, mtime) -> MD5
        self.pending: set[Socket] = set()  # unexpected on the last pass, not yet reported
        self.reported: set[Socket] = set()

    def _digest(self, p: Process) -> str | None:
        path = self.proc / str(p.pid) / "exe"
        try:
            st = os.stat(path)
            key = (st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns)
            if key not in self.digests:
                self.digests[key] = _hash(path, hashlib.md5)
            return self.digests[key]
        except OSError:
            return None

    def step(self) -> list[dict[str, Any]]:
        events: list[dict[str, Any]] = []
        seen: set[tuple[int, int, str]] = set()
        for p in processes(self.proc):
            key = (p.pid, p.started, p.exe)
            seen.add(key)
            if key in self.judged:
                continue
            why = self.judged[key] = verdict(p, self.packaged, self._digest)
            if why is not None:
                events.append(self._exec_event(p, why))
        for key in set(self.judged) - seen:
            del self.judged[key]
        now_unexpected = {s for s in sockets(self.proc) if (s.proto, s.port) not in self.listeners}
        due = (now_unexpected & self.pending) - self.reported
        for s in sorted(due, key=lambda s: (s.proto, s.port, s.address)):
            events.append({"time": now(), "event": "unexpected-listener", "proto": s.proto, "address": s.address, "port": s.port,
                           "user": _user(s.uid), "inode": s.inode})
        self.reported = (self.reported & now_unexpected) | due
        self.pending = now_unexpected
        return events

    def _exec_event(self, p: Process, why: str) -> dict[str, Any]:
        try:
            sha256 = _hash(self.proc / str(p.pid) / "exe", hashlib.sha256)
        except OSError:
            sha256 = None  # ended meanwhile
        return {"time": now(), "event": "unexpected-exec", "reason": why, "pid": p.pid, "ppid": p.ppid, "user": _user(p.uid),
                "exe": p.exe, "sha256": sha256, "cmdline": _cmdline(self.proc, p.pid)}


def _hash(path: Path, algorithm: Any) -> str:
    h = algorithm()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return str(h.hexdigest())


def _user(uid: int) -> str:
    import pwd

    try:
        return pwd.getpwuid(uid).pw_name
    except KeyError:
        return str(uid)


def _cmdline(proc: Path, pid: int) -> str | None:
    """The process's arguments, space-joined, at most 200 characters (None when it ended)."""
    try:
        raw = (proc / str(pid) / "cmdline").read_bytes()
    except OSError:
        return None
    return raw.rstrip(b"\0").replace(b"\0", b" ").decode(errors="replace")[:200]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="pacslab-hids", description=__doc__.split("\n\n")[0])
    parser.add_argument("--config", type=Path, required=True)
    args = parser.parse_args(argv)
    os.umask(0o027)  # its event file (created by roles/orthanc, or by the first event after a rotation): read by rsyslogd (root) alone
    config = json.loads(args.config.read_text())
    listeners = set()
    for spec in config["listeners"]:
        proto, _, port = str(spec).partition("/")
        listeners.add((proto, int(port)))
    packaged = packaged_files(Path(config.get("dpkg_info", "/var/lib/dpkg/info")))
    watch = Watch(listeners, packaged)
    interval = float(config.get("interval", 1.0))
    def write(event: dict[str, Any]) -> None:  # opened for each event: a rotation (roles/log_rotation) moves the file away
        with open(config["events"], "a", encoding="utf-8") as out:
            out.write(json.dumps(event, sort_keys=True) + "\n")

    write({"time": now(), "event": "hids-started", "packaged_files": len(packaged), "listeners": sorted(config["listeners"]),
           "interval": interval})
    while True:
        for event in watch.step():
            write(event)
        time.sleep(interval)

if __name__ == "__main__":
    sys.exit(main())
