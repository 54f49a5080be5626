#!/usr/bin/python3
"""pacslab-hids: an Orthanc host's own watch over what runs and what listens on it (roles/orthanc,
tasks/hids.yml): application allow-listing as detection (C-PRT-04; CSF PR.PT-3, DE.CM-4; SP 800-53
CM-7(5), SI-3) and least functionality kept after the build (C-PRT-02, CM-7), for C-DET-03 (DE.CM-7).

Every ``interval`` seconds it reads /proc (the host's own PID and network namespaces):
- every process's executable (/proc/PID/exe, or another thread's once the main thread has ended):
  a file that no Debian package of the image installed (dpkg's lists: /var/lib/dpkg/info/*.md5sums),
  a packaged file whose content differs from the MD5 dpkg recorded for it, an executable deleted
  after it started, one run from memory (memfd), or the dynamic loader run as a program (which
  runs a file of any name) is an ``unexpected-exec`` event, once per process and executable;
- every TCP socket in LISTEN and every unconnected UDP socket bound outside loopback (/proc/net/tcp,
  tcp6, udp, udp6): a (proto, port) the lab definition does not give the host (the configuration's
  ``listeners``, pacslab.listeners.expected_listeners) is an ``unexpected-listener`` event, naming
  the socket's owner and the program holding it (/proc/PID/fdinfo); TCP on the first pass that
  sees it, UDP on the second in a row (a client's short-lived UDP socket is not a listener).

Events are JSON objects, one per line, appended to ``events`` (roles/log_shipping ships the file to
the siem as ``hids``): {"time", "event", ...}. ``hids-started`` says what it watches (once per
start). A command line in an event has what looks like a credential redacted.

It runs as a user of its own holding CAP_SYS_PTRACE alone (supervisor starts it through setpriv;
the Orthanc containers hold the capability for it, pacslab.plan IMAGE_CAPABILITIES): reading the
executable of another user's process takes it, and without it a process could hide its executable
by making itself non-dumpable. The capability lets its user trace any process of the container,
root's too: the watch's user is as strong as root there (it reads /proc and nothing from the
network). An executable it may not read is reported without a SHA-256. What it does not see: a
script run by a packaged interpreter (``sh x.sh``, ``python3 x.py``: the executable is the
interpreter), a process that starts and ends between two passes, and anything while it is stopped
(root, or its own user, can stop it; supervisor starts it again, and ``hids-started`` says so in
the siem; a pass that fails is reported on stderr and the next one runs).

Usage: pacslab_hids.py --config /etc/pacslab/hids.json
The configuration: {"listeners": ["tcp/2762", "udp/123", ...], "interval": 1.0,
"events": "/var/log/pacslab/hids.json", "dpkg_info": "/var/lib/dpkg/info"}.
"""

from __future__ import annotations

import argparse
import fnmatch
import hashlib
import ipaddress
import json
import os
import re
import socket
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
LOADERS = "ld-linux*.so*"  # glibc's dynamic loader (libc6: /usr/lib/x86_64-linux-gnu/ld-linux-x86-64.so.2)
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
    path: Path | None = None  # where its exe, fdinfo and cmdline read: /proc/PID, or a thread's once the main one has ended


def _exe(entry: Path) -> tuple[str, Path]:
    """What the process runs and the folder that says it: /proc/PID, or, once its main thread has
    ended while others run on (pthread_exit), another thread's /proc/PID/task/TID (whose exe,
    fdinfo and cmdline still read). OSError when none can be read."""
    try:
        return os.readlink(entry / "exe"), entry
    except OSError:
        for task in sorted(os.scandir(entry / "task"), key=lambda t: t.name):
            try:
                return os.readlink(Path(task.path) / "exe"), Path(task.path)
            except OSError:
                continue
        raise


def processes(proc: Path) -> Iterator[Process]:
    """Every process whose executable can be read (kernel threads have none; one that ended
    meanwhile, or whose files do not read as /proc writes them, is skipped). Names and paths are
    bytes to the kernel: any that is not UTF-8 keeps its bytes as surrogate escapes."""
    for entry in proc.iterdir():
        if not entry.name.isdigit():
            continue
        try:
            exe, path = _exe(entry)
            stat = (entry / "stat").read_bytes().decode("utf-8", "surrogateescape")
            status = (entry / "status").read_bytes().decode("utf-8", "surrogateescape")
            fields = stat[stat.rfind(")") + 2:].split()  # after the command name, which may hold spaces and brackets
            uid = next((int(ln.split()[1]) for ln in status.splitlines() if ln.startswith("Uid:")), -1)
            yield Process(int(entry.name), int(fields[1]), uid, int(fields[19]), exe, path)
        except (OSError, ValueError, IndexError):
            continue


def _folder(proc: Path, p: Process) -> Path:
    return p.path if p.path is not None else proc / str(p.pid)


def _ended(folder: Path) -> bool:
    """Whether the process of ``folder`` has ended: gone, or a zombie its parent has not reaped yet."""
    try:
        stat = (folder / "stat").read_bytes()
    except OSError:
        return True
    return stat[stat.rfind(b")") + 2:stat.rfind(b")") + 3] == b"Z"


def verdict(p: Process, packaged: dict[str, str], digest_of: Any) -> str | None:
    """Why ``p``'s executable is not one the image's packages installed, or None when it is:
    "memory" (run from a memfd), "deleted", "not-packaged", "loader" (the dynamic loader run as a
    program: ``ld-linux-x86-64.so.2 /tmp/x`` runs a file of any name), "modified" (its MD5 differs
    from dpkg's), "unreadable" (a packaged path whose content the watch may not read; dpkg installs
    none such on the Orthanc image). runc's own init for `docker exec` is none of these.
    ``digest_of(p)``: the MD5 hex of what the process runs, None when it cannot be read."""
    if _runc_init(p):
        return None
    if p.exe.startswith("/memfd:"):
        return "memory"
    if p.exe.endswith(DELETED):
        return "deleted"
    expected = packaged.get(p.exe)
    if expected is None:
        return "not-packaged"
    if fnmatch.fnmatch(os.path.basename(p.exe), LOADERS):
        return "loader"
    digest = digest_of(p)
    if digest is None:
        return "unreadable"
    return None if digest == expected else "modified"


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


Listener = tuple[str, str, int]  # (proto, address, port)


class Watch:
    """One host's watch: ``step()`` is one pass and returns the events it found (each once).

    A TCP listener outside the lab definition is reported on the pass that first sees it (no client
    opens one), an unconnected UDP socket once two passes in a row see its (address, port) (a
    client's own socket lives shorter); either again only after a pass without it. A program that
    closes and opens its socket between passes is the same listener."""

    def __init__(self, listeners: set[tuple[str, int]], packaged: dict[str, str], proc: Path = Path("/proc"),
                 sockfs: int | None = None) -> None:
        self.listeners = listeners
        self.sockfs = sockfs if sockfs is not None else sockfs_mount()
        self.packaged = packaged
        self.proc = proc
        # (pid, started, executable) -> verdict: an exec keeps the PID and its start, not the executable
        self.judged: dict[tuple[int, int, str], str | None] = {}
        self.digests: dict[tuple[int, int, int, int, int], str] = {}  # (dev, inode, size, mtime, ctime) -> MD5
        self.pending: set[Listener] = set()  # UDP, unexpected on the last pass
        self.reported: set[Listener] = set()

    def _digest(self, p: Process) -> str | None:
        path = _folder(self.proc, p) / "exe"
        try:
            st = os.stat(path)
            key = (st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns)  # ctime: a rewrite that restores mtime
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
            why = verdict(p, self.packaged, self._digest)
            if why == "unreadable" and _ended(_folder(self.proc, p)):
                continue  # it ended while it was read: nothing to judge (the next pass no longer lists it)
            self.judged[key] = why
            if why is not None:
                events.append(self._exec_event(p, why))
        for key in set(self.judged) - seen:
            del self.judged[key]
        unexpected = {s for s in sockets(self.proc) if (s.proto, s.port) not in self.listeners}
        now_keys = {(s.proto, s.address, s.port) for s in unexpected}
        due = sorted({s for s in unexpected if (s.proto, s.address, s.port) not in self.reported
                      and (s.proto == "tcp" or (s.proto, s.address, s.port) in self.pending)},
                     key=lambda s: (s.proto, s.port, s.address, s.inode))
        owners = socket_owners(self.proc, {s.inode for s in due}, self.sockfs) if due else {}
        for s in due:
            listener = (s.proto, s.address, s.port)
            if listener in self.reported:
                continue  # a second socket on the same address and port (SO_REUSEPORT)
            self.reported.add(listener)
            owner = owners.get(s.inode)
            events.append({"time": now(), "event": "unexpected-listener", "proto": s.proto, "address": s.address, "port": s.port,
                           "user": _user(s.uid), "inode": s.inode, "pid": owner.pid if owner else None,
                           "exe": owner.exe if owner else None, "cmdline": _cmdline(_folder(self.proc, owner)) if owner else None})
        self.reported &= now_keys
        self.pending = {k for k in now_keys if k[0] == "udp"}
        return events

    def _exec_event(self, p: Process, why: str) -> dict[str, Any]:
        try:
            sha256 = _hash(_folder(self.proc, p) / "exe", hashlib.sha256)
        except OSError:
            sha256 = None  # ended meanwhile, or not readable by the watch's user
        return {"time": now(), "event": "unexpected-exec", "reason": why, "pid": p.pid, "ppid": p.ppid, "user": _user(p.uid),
                "exe": p.exe, "sha256": sha256, "cmdline": _cmdline(_folder(self.proc, p))}


def sockfs_mount() -> int | None:
    """The mount id of the kernel's socket file system (sockfs), read from the fdinfo of a socket of
    the watch's own; None where fdinfo has no mnt_id."""
    with socket.socket() as own:
        return _fdinfo(Path(f"/proc/self/fdinfo/{own.fileno()}")).get("mnt_id")


def _fdinfo(path: Path) -> dict[str, int]:
    """mnt_id and ino of a /proc/PID/fdinfo/N file, those it has."""
    fields: dict[str, int] = {}
    with open(path, "rb") as f:
        for line in f:
            key, _, value = line.decode("ascii", "replace").partition(":")
            if key in ("mnt_id", "ino"):
                fields[key] = int(value.split()[0])
    return fields


def socket_owners(proc: Path, inodes: set[int], sockfs: int | None) -> dict[int, Process]:
    """{socket inode: a process holding it}, from each process's fdinfo ("ino:" and "mnt_id:",
    Linux 5.14 on; readable with ptrace access, unlike the fd links of another user's process). A
    socket's ino is the inode column of /proc/net/tcp; a file's is another file system's number, so
    only a descriptor on sockfs (``sockfs``, its mount id) counts."""
    owners: dict[int, Process] = {}
    for p in processes(proc):
        try:
            for info in os.scandir(_folder(proc, p) / "fdinfo"):
                fields = _fdinfo(Path(info.path))
                if fields.get("ino") in inodes and (sockfs is None or fields.get("mnt_id") == sockfs):
                    owners.setdefault(fields["ino"], p)
        except (OSError, ValueError, IndexError):
            continue
        if owners.keys() >= inodes:
            break
    return owners


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


# What looks like a credential in a command line, each with what stays before <redacted>: a value
# after a keyword and = or : (password=, "token": "x", key:x), after an option named so
# (--password x), after Bearer, a curl -u user's password, a URL's password. A keyword starts a word
# (bypass:1 is not one); --sort-key=name is redacted too (better one too many).
_KEYWORD = r"(?<![A-Za-z0-9])(?:pass(?:word|wd|phrase)?|pwd|secret|token|auth|api[-_]?key|key)"
_CREDENTIALS = [re.compile(rf"(?i)({_KEYWORD}[\"']?\s*[=:]\s*[\"']?)[^\s\"',}}]+"),
                re.compile(rf"(?i)(--?{_KEYWORD}\s+)\S+"),
                re.compile(r"(?i)(\bBearer\s+)\S+"),
                re.compile(r"((?:^|\s)-u\s*[^\s:]+:)\S+"),
                re.compile(r"(://[^/@\s:]*:)[^/@\s]+(?=@)")]


def redact(cmdline: str) -> str:
    """``cmdline`` with what looks like a credential replaced by <redacted>: the watch ships the
    command lines of programs nobody installed, whose arguments nobody vetted."""
    for pattern in _CREDENTIALS:
        cmdline = pattern.sub(lambda m: f"{m[1]}<redacted>", cmdline)
    return cmdline


def _cmdline(folder: Path) -> str | None:
    """The arguments of the process of ``folder``, space-joined, credentials redacted, at most 200 characters (None when it ended)."""
    try:
        raw = (folder / "cmdline").read_bytes()
    except OSError:
        return None
    return redact(raw.rstrip(b"\0").replace(b"\0", b" ").decode(errors="replace"))[:200]


class EventLog:
    """The event file, opened for each write: a rotation (roles/log_rotation) moves it away and
    creates the next one. While it cannot be opened (between the rotation's rename and its create,
    in a folder only root may create files in) the events wait for the next write."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.waiting = bytearray()

    def write(self, events: list[dict[str, Any]]) -> None:
        self.waiting += b"".join((json.dumps(e, sort_keys=True) + "\n").encode() for e in events)
        if not self.waiting:
            return
        try:
            fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o640)
        except OSError as exc:
            print(f"pacslab-hids: {self.path}: {exc}; {len(self.waiting)} bytes wait", file=sys.stderr, flush=True)
            return
        try:
            while self.waiting:  # what one write() took is gone from the wait: a short write (a full disk) repeats nothing
                del self.waiting[:os.write(fd, self.waiting)]
        except OSError as exc:
            print(f"pacslab-hids: {self.path}: {exc}; {len(self.waiting)} bytes wait", file=sys.stderr, flush=True)
        finally:
            os.close(fd)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="pacslab-hids", description=__doc__.split("\n\n")[0])
    parser.add_argument("--config", type=Path, required=True)
    args = parser.parse_args(argv)
    os.umask(0o027)  # its event file is created by roles/orthanc and by the rotation (its folder is root's)
    config = json.loads(args.config.read_text())
    listeners = set()
    for spec in config["listeners"]:
        proto, _, port = str(spec).partition("/")
        listeners.add((proto, int(port)))
    packaged = packaged_files(Path(config.get("dpkg_info", "/var/lib/dpkg/info")))
    watch = Watch(listeners, packaged)
    interval = float(config.get("interval", 1.0))
    log = EventLog(Path(config["events"]))
    log.write([{"time": now(), "event": "hids-started", "packaged_files": len(packaged), "listeners": sorted(config["listeners"]),
                "interval": interval}])
    while True:
        try:
            log.write(watch.step())
        except Exception as exc:  # one pass that fails (a process no reader here expected) is not the watch's end
            print(f"pacslab-hids: pass failed: {type(exc).__name__}: {exc}", file=sys.stderr, flush=True)
        time.sleep(interval)


if __name__ == "__main__":
    sys.exit(main())
