"""Forensic capture (issue 13, C-RSP-03, RS.AN-3): the packets around an alert, out of the fw's
capture ring (roles/firewall capture.yml), with their SHA-256 in the alert's case.

The alert is test_siem's `guessing`: five wrong passwords at the bastion from the vendor's
computer, each with a user name of this run. sshd's line for each names the client's source port
("from <address> port <n>"): the capture must hold the SYN of each of those five connections, from
the vendor's address and port to the bastion's SSH port, and nothing that is not to or from the
vendor's address or outside the span (the alert's first and last event, 300 s either side, up to
the moment it is asked for). The
file `pacslab capture` wrote is read here with dpkt and hashed with hashlib; the case holds that
hash. The twin: a capture for an alert the siem does not hold is refused, nothing written or
recorded.
"""

from __future__ import annotations

import hashlib
import io
import json
import re
from contextlib import redirect_stdout
from pathlib import Path
from typing import Any

import dpkt
import pytest

from pacslab import cli, forensics
from pacslab.plan import state_dir
from pacslab.topology import Lab

from .test_bastion import CLIENT, bastion
from .test_siem import guessing, siem_json  # noqa: F401 (guessing: a fixture)

PORT = re.compile(r" from (?P<address>[0-9.]+) port (?P<port>[0-9]+) ")


def pacslab_json(lab: Lab, *argv: str) -> tuple[int, Any]:
    """`pacslab ARGV --json --lab LAB` in this process: (exit code, what it printed, read as JSON or None)."""
    out = io.StringIO()
    with redirect_stdout(out):
        rc = cli.main([*argv, "--json", "--lab", str(lab.path)])
    return rc, json.loads(out.getvalue()) if out.getvalue().strip() else None


def packets(path: Path) -> list[tuple[float, str, str, int, int, int]]:
    """(time, source, destination, source port, destination port, TCP flags) of each TCP packet."""
    rows = []
    with path.open("rb") as f:
        reader = dpkt.pcap.Reader(f)
        for ts, raw in reader:
            cooked = dpkt.sll2.SLL2(raw) if reader.datalink() == dpkt.pcap.DLT_LINUX_SLL2 else dpkt.sll.SLL(raw)
            ip = cooked.data
            if isinstance(ip, dpkt.ip.IP) and isinstance(ip.data, dpkt.tcp.TCP):
                rows.append((ts, ".".join(map(str, ip.src)), ".".join(map(str, ip.dst)), ip.data.sport, ip.data.dport, ip.data.flags))
            elif isinstance(ip, dpkt.ip.IP):
                rows.append((ts, ".".join(map(str, ip.src)), ".".join(map(str, ip.dst)), 0, 0, 0))
    return rows


@pytest.mark.control("C-RSP-03")
def test_the_capture_around_an_alert_holds_its_connections_and_its_hash_is_in_the_case(
        running_lab: Lab, guessing: dict[str, Any], evidence) -> None:  # noqa: F811
    lab = running_lab
    alert, vendor, ssh = guessing["alert"], str(lab.hosts[CLIENT].address), bastion(lab)
    failures = [e for e in siem_json(lab, "events", "--contains", guessing["users"][0][:-1])
                if e["event_type"] == "ssh-login-failure" and e["user"] in guessing["users"]]
    ports = sorted({int(m["port"]) for e in failures if (m := PORT.search(e["message"])) and m["address"] == vendor})
    assert len(ports) == 5, [e["message"] for e in failures]

    rc, found = pacslab_json(lab, "capture", str(alert["id"]))
    assert rc == cli.EXIT_OK
    path = Path(found["file"])
    evidence.update(alert=alert["id"], capture={k: found[k] for k in ("file", "sha256", "packets", "bytes", "start", "end", "complete")},
                    ports=ports)
    assert path.parent == state_dir(lab) / "captures"
    digest = hashlib.sha256(path.read_bytes()).hexdigest()
    assert found["sha256"] == digest

    rows = packets(path)
    assert len(rows) == found["packets"] > 0
    syns = {(src, sport, dst, dport) for _, src, dst, sport, dport, flags in rows if flags & dpkt.tcp.TH_SYN and not flags & dpkt.tcp.TH_ACK}
    assert {(vendor, p, str(ssh.address), 22) for p in ports} <= syns
    assert all(vendor in (src, dst) for _, src, dst, *_ in rows)
    start, end = forensics._parse(found["start"]).timestamp(), forensics._parse(found["end"]).timestamp()
    assert all(start <= ts <= end for ts, *_ in rows)
    times = [e["time"] for e in failures]  # the alert may hold earlier guesses too (it grows while they go on): its span covers these
    # 300 s before the first event; after the last, 300 s or up to the moment the capture was asked for
    assert start <= forensics._parse(min(times)).timestamp() - 299 and forensics._parse(max(times)).timestamp() <= end

    (case,) = [c for c in siem_json(lab, "cases") if c["id"] == alert["case"]]
    recorded = [k for k in case["captures"] if k["file"] == path.name]
    evidence.update(recorded=recorded)
    assert [(k["alert"], k["sha256"], k["packets"], k["bytes"], k["complete"]) for k in recorded] == [
        (alert["id"], digest, len(rows), path.stat().st_size, found["complete"])]


@pytest.mark.control("C-RSP-03")
def test_a_capture_for_an_alert_the_siem_does_not_hold_is_refused_and_nothing_is_recorded(running_lab: Lab, evidence, capsys) -> None:
    """No file is written and nothing goes in any case; the refusal says the siem has no such alert.
    (A span the ring has turned past is refused the same way, with what the ring still holds: the
    unit suite's test_forensics, on ring files written packet by packet.)"""
    lab = running_lab
    before = len(siem_json(lab, "captures"))
    folder = state_dir(lab) / "captures"
    files = sorted(folder.glob("*.pcap")) if folder.is_dir() else []
    rc = cli.main(["capture", "999999999", "--lab", str(lab.path)])
    said = capsys.readouterr().err
    evidence.update(rc=rc, said=said.strip())
    assert rc == cli.EXIT_PHASE_FAILED
    assert "the siem has no window for alert 999999999" in said and "no alert 999999999" in said
    assert len(siem_json(lab, "captures")) == before
    assert (sorted(folder.glob("*.pcap")) if folder.is_dir() else []) == files
