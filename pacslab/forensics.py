"""Forensic capture (C-RSP-03, CSF RS.AN-3): the packets around an alert, out of the fw's capture ring.

The fw runs tcpdump on every interface (roles/firewall capture.yml): every packet between two zones
passes it twice (in on one zone's interface, out on the other's, or in and dropped), and tcpdump
keeps them in a ring of files of bounded size (``-C`` MB, ``-W`` files, the oldest overwritten).
``capture`` asks the siem for the alert's window (its first and last event) and the addresses it is
about, copies the ring files that may hold that window off the fw, and keeps the packets within
``margin`` seconds of the window that come from or go to those addresses: one pcap file (libpcap
format, the ring's link type: Linux cooked capture), written under the lab's state folder. Its
SHA-256 is recorded in the alert's case at the siem (``pacslab-siem record-capture``), so the file
handed to an investigator can be checked against the case.

Packets are read and written with dpkt (pcap files, Linux cooked headers v1 and v2, IPv4); nothing
here parses a packet format by hand.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import subprocess
import tempfile
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from ipaddress import IPv4Address
from pathlib import Path
from typing import Any, BinaryIO

import dpkt

from .docker import docker
from .plan import SIEM_USER, SIEMS
from .topology import Lab

RING_DIR = "/var/lib/pacslab/pcap"  # roles/firewall defaults: firewall_capture_dir
RING_NAME = "ring.pcap"  # tcpdump -w ring.pcap -W N: ring.pcap0, ring.pcap1, ...
MARGIN = 300  # seconds kept before the alert's first event and after its last (the catalogue's +-5 min)


class CaptureError(Exception):
    """The capture cannot be retrieved; the message says why and what to do."""


@dataclass(frozen=True)
class Window:
    """What the siem says of an alert: its id, its first and last event (UTC) and the lab addresses
    it is about."""

    alert: int
    start: datetime
    end: datetime
    addresses: frozenset[str]


@dataclass(frozen=True)
class Capture:
    """A retrieved capture: where it was written, its SHA-256 (hex), how many packets and bytes it
    holds, the span it covers (UTC) and whether the ring still held the whole span."""

    path: Path
    sha256: str
    packets: int
    size: int
    start: datetime
    end: datetime
    complete: bool

    def as_dict(self) -> dict[str, Any]:
        return {"file": str(self.path), "sha256": self.sha256, "packets": self.packets, "bytes": self.size,
                "start": _stamp(self.start), "end": _stamp(self.end), "complete": self.complete}


def _stamp(moment: datetime) -> str:
    return moment.isoformat(timespec="milliseconds").replace("+00:00", "Z")


def _parse(stamp: str) -> datetime:
    return datetime.fromisoformat(stamp.replace("Z", "+00:00"))


def _siem(lab: Lab) -> str:
    found = [h.name for h in lab.deployed_hosts() if SIEMS in h.groups]
    if not found:
        raise CaptureError(f"lab {lab.name!r} deploys no siem (group {SIEMS}): there are no alerts to capture around")
    return lab.container_name(found[0])


def window(lab: Lab, alert: int) -> Window:
    """The siem's window of ``alert`` (``pacslab-siem window``). Raises CaptureError when the siem
    has no such alert or the alert names no lab address."""
    proc = docker("exec", "-u", SIEM_USER, _siem(lab), "pacslab-siem", "window", "--alert", str(alert), check=False, timeout=60)
    if proc.returncode != 0:
        raise CaptureError(f"the siem has no window for alert {alert}: {(proc.stderr or proc.stdout).strip()[-300:]}")
    found = json.loads(proc.stdout)
    if not found["addresses"]:
        raise CaptureError(f"alert {alert} names no lab address (entities {found['entities']}): no packet can be told to be about it")
    return Window(alert=alert, start=_parse(found["start"]), end=_parse(found["end"]),
                  addresses=frozenset(found["addresses"]))


def ring_files(lab: Lab) -> list[tuple[float, str]]:
    """The ring's files on the fw: (last write, epoch seconds; path), oldest first."""
    proc = docker("exec", lab.container_name(lab.router.name), "find", RING_DIR, "-maxdepth", "1", "-name", f"{RING_NAME}*",
                  "-printf", r"%T@ %p\n", check=False, timeout=60)
    if proc.returncode != 0:
        raise CaptureError(f"the fw has no capture ring at {RING_DIR}: {proc.stderr.strip()[-300:]} (is the lab up: `pacslab status`?)")
    files = sorted((float(t), p) for t, p in (line.split(" ", 1) for line in proc.stdout.splitlines() if " " in line))
    if not files:
        raise CaptureError(f"the fw's capture ring ({RING_DIR}) holds no file yet")
    return files


def _packets(stream: BinaryIO) -> Iterator[tuple[float, bytes, int]]:
    """(timestamp, raw frame, link type) of each packet of a pcap stream. A ring file is read while
    tcpdump writes it: an empty one (just opened) holds nothing, a last record whose header is cut
    short ends it, and one whose frame is cut short is kept as far as it goes (dpkt's reader)."""
    try:
        reader = dpkt.pcap.Reader(stream)
    except (ValueError, dpkt.NeedData):  # no complete file header yet
        return
    linktype = reader.datalink()
    try:
        for ts, frame in reader:
            yield float(ts), frame, linktype
    except dpkt.NeedData:
        return


def addresses_of(frame: bytes, linktype: int) -> tuple[str, str] | None:
    """(source, destination) IPv4 addresses of a Linux cooked frame, or None when it carries no IPv4."""
    try:
        cooked = dpkt.sll2.SLL2(frame) if linktype == dpkt.pcap.DLT_LINUX_SLL2 else dpkt.sll.SLL(frame)
    except dpkt.UnpackError:  # a frame shorter than its cooked header
        return None
    ip = cooked.data
    if not isinstance(ip, dpkt.ip.IP):
        return None
    return str(IPv4Address(ip.src)), str(IPv4Address(ip.dst))


def select(streams: Iterable[BinaryIO], out: BinaryIO, addresses: frozenset[str], start: float, end: float) -> tuple[int, float | None]:
    """Write to ``out`` (pcap) the packets of ``streams`` whose time is within [start, end] (epoch
    seconds) and whose source or destination is one of ``addresses``, in time order; (how many,
    the earliest time any stream holds or None)."""
    kept: list[tuple[float, bytes]] = []
    earliest: float | None = None
    linktypes = set()
    for stream in streams:
        for ts, frame, linktype in _packets(stream):
            earliest = ts if earliest is None else min(earliest, ts)
            if not start <= ts <= end:
                continue
            pair = addresses_of(frame, linktype)
            if pair and (pair[0] in addresses or pair[1] in addresses):
                kept.append((ts, frame))
                linktypes.add(linktype)
    if len(linktypes) > 1:
        raise CaptureError(f"the ring's files have different link types ({sorted(linktypes)}): they cannot go in one pcap file")
    writer = dpkt.pcap.Writer(out, snaplen=262144, linktype=next(iter(linktypes), dpkt.pcap.DLT_LINUX_SLL2))
    for ts, frame in sorted(kept, key=lambda k: k[0]):
        writer.writepkt(frame, ts=ts)
    return len(kept), earliest


MAX_MARGIN = 86400  # seconds: a day either side is the most a capture asks for


def capture(lab: Lab, alert: int, state_dir: Path, margin: float = MARGIN) -> Capture:
    """Retrieve the capture around ``alert`` into ``state_dir``/captures (a folder of the lab's
    owner alone, the file 0600: it holds clinical traffic) and record its SHA-256 in the alert's
    case. The span ends at the alert's last event plus ``margin``, or now if that is later than now.
    Raises CaptureError when ``margin`` is not 0..MAX_MARGIN seconds, when the siem has no such
    alert, or when the ring holds nothing of the span (it has turned since, or tcpdump is not
    running); then nothing is written or recorded."""
    if not (math.isfinite(margin) and 0 <= margin <= MAX_MARGIN):
        raise CaptureError(f"margin {margin}: seconds before and after the alert, 0 to {MAX_MARGIN}")
    found = window(lab, alert)
    asked = time.time()
    start, end = found.start.timestamp() - margin, min(found.end.timestamp() + margin, asked)
    files = ring_files(lab)
    # a file last written before the span began holds nothing of it, except the newest such, in which the span may begin
    before = [path for (written, path) in files if written < start][-1:]
    wanted = before + [path for (written, path) in files if written >= start]
    folder = state_dir / "captures"
    folder.mkdir(mode=0o700, parents=True, exist_ok=True)
    target = folder / f"alert-{alert}-{datetime.fromtimestamp(asked, UTC).strftime('%Y%m%dT%H%M%SZ')}.pcap"
    with tempfile.TemporaryDirectory(prefix="pacslab-capture-") as tmp:
        copies = [_copy_off(lab, path, Path(tmp)) for path in wanted]
        handles = [c.open("rb") for c in copies]
        cut = Path(tmp) / "capture.pcap"
        try:
            with os.fdopen(os.open(cut, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600), "wb") as out:
                packets, earliest = select(handles, out, found.addresses, start, end)
        finally:
            for h in handles:
                h.close()
        if packets == 0:
            newest = files[-1][0]  # ring_files is oldest first and never empty
            held = (f"packets from {_stamp(datetime.fromtimestamp(earliest, UTC))} on" if earliest is not None else "no packet")
            raise CaptureError(
                f"the fw's capture ring holds {held} (its newest file was last written {_stamp(datetime.fromtimestamp(newest, UTC))}: "
                f"is its tcpdump running?); alert {alert}'s span is {_stamp(datetime.fromtimestamp(start, UTC))} to "
                f"{_stamp(datetime.fromtimestamp(end, UTC))} and no packet of it to or from {', '.join(sorted(found.addresses))} is left")
        os.replace(cut, target)
    complete = earliest is not None and earliest <= start
    digest = hashlib.sha256(target.read_bytes()).hexdigest()
    result = Capture(path=target, sha256=digest, packets=packets, size=target.stat().st_size,
                     start=datetime.fromtimestamp(start, UTC), end=datetime.fromtimestamp(end, UTC), complete=complete)
    record = docker("exec", "-u", SIEM_USER, _siem(lab), "pacslab-siem", "record-capture", "--alert", str(alert),
                    "--sha256", digest, "--packets", str(packets), "--bytes", str(result.size), "--file", target.name,
                    "--start", _stamp(result.start), "--end", _stamp(result.end), *([] if complete else ["--partial"]),
                    check=False, timeout=60)
    if record.returncode != 0:
        raise CaptureError(f"the capture is at {target} (sha256 {digest}) but the siem did not record it: {record.stderr.strip()[-300:]}")
    return result


def _copy_off(lab: Lab, path: str, folder: Path) -> Path:
    """A ring file copied off the fw into ``folder``: first to a file of its own inside the fw (one
    read of the file tcpdump may be writing), then out of the container, then removed there."""
    fw = lab.container_name(lab.router.name)
    inside = f"/tmp/pacslab-capture-{os.getpid()}-{Path(path).name}"
    local = folder / Path(path).name
    try:
        docker("exec", fw, "cp", path, inside, timeout=120)
        docker("cp", f"{fw}:{inside}", str(local), timeout=300)
    except (subprocess.CalledProcessError, subprocess.TimeoutExpired) as exc:
        raise CaptureError(f"could not copy {path} off the fw: {exc}") from exc
    finally:
        docker("exec", fw, "rm", "-f", inside, check=False, timeout=60)
    return local
