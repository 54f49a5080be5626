"""What runs and what listens on the Orthanc hosts, as their own watch sees it (issue 13; roles/orthanc
pacslab-hids, roles/siem/files/rules/host-integrity.yml): unexpected-exec (C-PRT-04, application
allow-listing as detection), unexpected-listener (C-PRT-02 kept after the build), and one scripted
intrusion that raises five distinct alert types (C-DET-03, DE.CM-7).

Markers: the dropped file's name and the listening port of this run, the rogue AE title and the
rogue device's address and source ports.
"""

from __future__ import annotations

import json
import secrets
import time
from collections.abc import Iterator
from typing import Any

import pytest

from pacslab.listeners import expected_listeners
from pacslab.probes import hostwatch, portscan
from pacslab.probes import imaging as im
from pacslab.topology import Lab

from .test_devices import BASE, alerts_holding, drops_from, routed_rogue  # noqa: F401 (fixtures)
from .test_response import modalities, pacs, vna
from .test_siem import siem_json, wait_for

RUN = secrets.token_hex(3)
# Listening ports of this run, one per use, below the ephemeral range (32768-60999) that outgoing
# connections take theirs from; each use takes the next two (its listener and its loopback one).
PORTS = iter(range(30000 + secrets.randbelow(200) * 10, 32768, 2))


def hids_events(lab: Lab, kind: str, marker: str) -> list[dict[str, Any]]:
    """The siem's events of the host watch of ``kind`` whose raw message holds ``marker``."""
    return [e for e in siem_json(lab, "events", "--contains", marker) if e["source"] == "hids" and e["event_type"] == kind]


@pytest.fixture
def dropped(running_lab: Lab) -> Iterator[dict[str, Any]]:
    """On the PACS, as Orthanc's user (a compromised service): first the packaged sleep runs, then a
    copy of it under /tmp (a file no package installed, as a dropped tool would be). Both in the
    background for a minute: {"path", "packaged_pid", "dropped_pid", "sha256"}. Both ended and the
    file removed afterwards."""
    lab, host = running_lab, pacs(running_lab).name
    path = f"/tmp/pacslab-dropped-{RUN}-{secrets.token_hex(2)}"  # each use its own
    packaged_pid = hostwatch.in_background(lab, host, "orthanc", "/usr/bin/sleep", "60")
    dropped_pid = hostwatch.dropped_copy(lab, host, path, "orthanc")
    sha256 = im.exec_in(lab, host, "sha256sum", path).split()[0]
    try:
        yield {"path": path, "packaged_pid": packaged_pid, "dropped_pid": dropped_pid, "sha256": sha256}
    finally:
        hostwatch.end(lab, host, packaged_pid, dropped_pid, remove=path)


@pytest.mark.control("C-PRT-04")
def test_a_binary_dropped_on_the_pacs_raises_unexpected_exec_and_the_packaged_one_nothing(running_lab: Lab, dropped: dict[str, Any],
                                                                                          evidence) -> None:
    """The copy runs: the watch reports it (not-packaged: no package of the image installed
    /tmp/pacslab-dropped-<run>) with its PID, its user, its SHA-256 and its command line, and the siem
    raises unexpected-exec (high) about the PACS and Orthanc's user, in the PACS's case. The packaged
    sleep, running since before the copy started, is reported by no event (the watch judged both)."""
    lab = running_lab
    event = wait_for("event of the host watch", lambda: hids_events(lab, "unexpected-exec", dropped["path"]))[0]
    alert = wait_for("unexpected-exec", lambda: alerts_holding(lab, "unexpected-exec", event["id"]))[0]
    raw = json.loads(event["message"])
    cases = {c["id"]: c for c in siem_json(lab, "cases")}
    packaged = [e for e in siem_json(lab, "events", "--contains", f'"pid": {dropped["packaged_pid"]},')
                if e["source"] == "hids" and e["host"] == pacs(lab).name]
    evidence.update(dropped=dropped, event=raw, alert=alert, case=cases[alert["case"]], packaged_events=packaged)
    assert (event["host"], event["user"], event["outcome"]) == (pacs(lab).name, "orthanc", "not-packaged")
    assert {k: raw[k] for k in ("exe", "pid", "sha256", "cmdline", "reason", "user")} == {
        "exe": dropped["path"], "pid": dropped["dropped_pid"], "sha256": dropped["sha256"], "cmdline": f"{dropped['path']} 60",
        "reason": "not-packaged", "user": "orthanc"}
    assert (alert["severity"], alert["entities"]) == ("high", {"host": pacs(lab).name, "user": "orthanc"})
    assert (cases[alert["case"]]["host"], cases[alert["case"]]["owner"]) == (pacs(lab).name, pacs(lab).owner)
    assert packaged == []


@pytest.fixture
def listening(running_lab: Lab) -> Iterator[dict[str, int]]:
    """On the PACS, as Orthanc's user: a Python program listening on a port of this use's on every
    address and on the next one on loopback (a back door, and a local helper no other host can
    reach), for a minute. {"pid", "port"}; ended afterwards."""
    lab, host = running_lab, pacs(running_lab).name
    port = next(PORTS)
    pid = hostwatch.listener(lab, host, port, "orthanc", loopback_port=port + 1)
    try:
        yield {"pid": pid, "port": port}
    finally:
        hostwatch.end(lab, host, pid)


@pytest.mark.control("C-PRT-02")
def test_a_listener_the_lab_does_not_give_the_pacs_raises_unexpected_listener_and_loopback_nothing(
        running_lab: Lab, listening: dict[str, int], evidence) -> None:
    """The watch reports the listener on the port with its owner and its program (a packaged
    python3: no unexpected-exec), and the siem raises unexpected-listener (medium) about the PACS
    and the port. The same program's loopback listener on the next port is reported by no event,
    nor is any port the lab definition gives the PACS, ever."""
    lab = running_lab
    host = pacs(lab)
    port, pid = listening["port"], listening["pid"]
    event = wait_for("event of the host watch", lambda: [e for e in hids_events(lab, "unexpected-listener", f'"port": {port},')
                                                   if e["host"] == host.name])[0]
    alert = wait_for("unexpected-listener", lambda: alerts_holding(lab, "unexpected-listener", event["id"]))[0]
    raw = json.loads(event["message"])
    loopback = [e for e in hids_events(lab, "unexpected-listener", f'"port": {port + 1},') if e["host"] == host.name]
    given = {port for proto, port in expected_listeners(lab, host.name) if proto == "tcp"}
    reported_given = [e for e in hids_events(lab, "unexpected-listener", '"port": ')
                      if e["host"] == host.name and int(json.loads(e["message"])["port"]) in given]
    exec_of_python = [e for e in hids_events(lab, "unexpected-exec", f'"pid": {pid},') if e["host"] == host.name]
    evidence.update(pid=pid, event=raw, alert=alert, loopback=loopback, reported_given=reported_given)
    assert (event["host"], event["user"], event["proto"], str(event["dst_port"])) == (host.name, "orthanc", "tcp", str(port))
    assert {k: raw[k] for k in ("address", "port", "user", "pid", "exe")} == {"address": "0.0.0.0", "port": port, "user": "orthanc",
                                                                              "pid": pid, "exe": "/usr/bin/python3.11"}
    assert (alert["severity"], alert["entities"]) == ("medium", {"host": host.name, "proto": "tcp", "dst_port": str(port)})
    assert loopback == [] and reported_given == [] and exec_of_python == []


@pytest.mark.control("C-DET-03")
def test_one_scripted_intrusion_raises_five_distinct_alert_types(running_lab: Lab, routed_rogue: tuple[str, str],  # noqa: F811
                                                                  dropped: dict[str, Any], listening: dict[str, int], evidence) -> None:
    """An intruder in the modality zone: plugs in a device nobody registered (it knocks on the fw:
    unknown-device, C-AST-01), has the CT try the VNA outside its flows (device-anomaly, C-AST-03
    and C-DET-05), has the MR call the PACS with an AE title no host has (unknown-ae, C-AST-05), and
    on the PACS opens a listener (unexpected-listener, C-PRT-02) and runs a dropped binary
    (unexpected-exec, C-PRT-04). Each step's marked event is held by an alert of its own type: five
    distinct types, each with a case."""
    lab = running_lab
    name, address = routed_rogue
    ct, mr = modalities(lab)
    zone = lab.zones[ct.zone]
    rogue_ae = f"INTRUDER{RUN}".upper()[:16]
    assert portscan.scan_in(name, str(zone.router), (22,), BASE + 50) == ["unanswered"]
    assert portscan.scan(lab, ct.name, str(vna(lab).address), (22,), BASE + 51) == ["unanswered"]
    echo = im.dicomsim(lab, mr.name, "echo", "--calling", rogue_ae)
    host = pacs(lab)

    def held(rule: str, events: list[dict[str, Any]]) -> list[dict[str, Any]]:
        return [a for e in events for a in alerts_holding(lab, rule, e["id"])]

    steps: dict[str, Any] = {
        "unknown-device": lambda: drops_from(lab, address, BASE + 50),
        "device-anomaly": lambda: drops_from(lab, str(ct.address), BASE + 51),
        "unknown-ae": lambda: [e for e in siem_json(lab, "events", "--contains", f"AET {rogue_ae} on IP")
                               if e["event_type"] == "dicom-association-received"],
        "unexpected-listener": lambda: [e for e in hids_events(lab, "unexpected-listener", f'"port": {listening["port"]},')
                                        if e["host"] == host.name],
        "unexpected-exec": lambda: hids_events(lab, "unexpected-exec", dropped["path"]),
    }
    started = time.monotonic()
    alerts = {rule: wait_for(rule, lambda rule=rule, events=events: held(rule, events() or []))[0] for rule, events in steps.items()}
    cases = {c["id"] for c in siem_json(lab, "cases")}
    evidence.update(echo={k: echo.get(k) for k in ("outcome", "reject")}, seconds=round(time.monotonic() - started, 1),
                    alerts={rule: {k: a[k] for k in ("id", "severity", "entities", "case")} for rule, a in alerts.items()})
    assert echo["outcome"] == "rejected"
    assert {rule: a["entities"] for rule, a in alerts.items()} == {
        "unknown-device": {"src_ip": address, "src_zone": zone.name},
        "device-anomaly": {"src_ip": str(ct.address), "src_host": ct.name},
        "unknown-ae": {"host": host.name, "src_ip": str(mr.address), "calling_ae": rogue_ae},
        "unexpected-listener": {"host": host.name, "proto": "tcp", "dst_port": str(listening["port"])},
        "unexpected-exec": {"host": host.name, "user": "orthanc"},
    }
    assert len({a["rule"] for a in alerts.values()}) == 5
    assert all(a["case"] in cases for a in alerts.values())
