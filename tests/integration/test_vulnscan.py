"""The scanner's vulnerability scans (issue 13, C-RSK-02 and C-DET-04; roles/scanner pacslab-vulnscan,
roles/siem/files/rules/vulnerabilities.yml): a report less than a day old for every zone the
scanner reaches, with each of the zone's hosts; a planted weak target flagged, the PACS not; and
the sensor quiet about the scanner's own authorised scan while it still sees the weak server.

Markers: this run's scan id (the scan the check starts) and its TLS 1.0 server's lifetime.
"""

from __future__ import annotations

import json
import time
from collections import Counter
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from pacslab.probes import hostwatch
from pacslab.probes import imaging as im
from pacslab.probes.vulnscan import CONFIG, PROGRAM, SCANNER_USER, WEAK_PORT, plant_tls10
from pacslab.topology import Host, Lab

from .test_devices import scanning, swept_zones
from .test_siem import pacs_of, siem_json, wait_for

REPORT = "/var/log/pacslab/vulnscan.json"  # the scans' report on the scanner (pacslab_vulnscan_results)
# seconds from the end of one scan to the start of the check's own: a full scan right after another
# graded no TLS port (measured once; the fw's DICOM limits per source, C-PRT-05, drop part of the
# many connections ssl-enum-ciphers opens), while scans two minutes apart were graded
SETTLED = 150
FIRST_SCAN_WITHIN = 300  # seconds: the first scan starts 120 s after the program (scanner_vuln_first_after) and takes about 25 s


def weak_target(lab: Lab) -> Host:
    """A modality the scanner reaches with no service on WEAK_PORT (the MR of the reference lab)."""
    found = [h for h in lab.deployed_hosts() if "modalities" in h.groups and h.zone in swept_zones(lab)
             and all(s.port != WEAK_PORT for s in h.services)]
    if not found:
        pytest.skip(f"lab {lab.name!r} deploys no modality the scanner reaches without a service on port {WEAK_PORT}")
    return found[-1]


def report(lab: Lab) -> list[dict[str, Any]]:
    """The scans' report on the scanner, line by line, the renamed file a rotation left first (what
    pacslab-vulnscan wrote; the siem's copy may have been rewound since: `pacslab reset` puts the
    siem back to its state after the first up)."""
    text = im.exec_in(lab, scanning(lab).name, "sh", "-c", 'cat -- "$1.1" "$1" 2>/dev/null || true', "sh", REPORT)
    return [json.loads(line) for line in text.splitlines()]


def scanned_within_a_day(lab: Lab) -> dict[str, dict[str, str]]:
    """What the scans of the last 24 hours reached, as their ends in the report say: {zone: {host
    that answered on some port, open or closed: the time its newest scan there ended}}."""
    day_ago = (datetime.now(UTC) - timedelta(hours=24)).isoformat(timespec="milliseconds").replace("+00:00", "Z")
    covered: dict[str, dict[str, str]] = {}
    for line in report(lab):
        if line["event"] == "vuln-scan-finished" and line["time"] > day_ago:
            for host in line["answered"]:
                covered.setdefault(line["zone"], {})[host] = max(line["time"], covered.get(line["zone"], {}).get(host, ""))
    return covered


@pytest.mark.control("C-DET-04")
def test_every_zone_the_scanner_reaches_has_a_scan_less_than_a_day_old_with_each_of_its_hosts(running_lab: Lab, evidence) -> None:
    """The scans of the last 24 hours (the daily one, its first two minutes after the program
    starts) reached each zone the sweeps cover (the scanner's own and each a flow opens to it on
    any port) and in each every deployed host of the lab definition but the scanner itself: each
    answered on some port. A zone no flow opens to the scanner has no scan. The scanner's report
    is read: that its lines reach the siem is the next check's."""
    lab = running_lab
    me = scanning(lab)
    zones = swept_zones(lab)
    expected = {z: sorted(h.name for h in lab.deployed_hosts() if h.zone == z and h.name != me.name and h.image != "fw") for z in zones}
    deadline = time.monotonic() + FIRST_SCAN_WITHIN
    covered = scanned_within_a_day(lab)
    while {z: sorted(c) for z, c in covered.items()} != expected and time.monotonic() < deadline:
        time.sleep(5)
        covered = scanned_within_a_day(lab)
    evidence.update(zones=sorted(zones), covered=covered)
    assert set(covered) == zones, f"zones without a scan: {sorted(zones - set(covered))}; scanned outside them: {sorted(set(covered) - zones)}"
    assert {z: sorted(c) for z, c in covered.items()} == expected


@pytest.fixture
def planted(running_lab: Lab) -> Iterator[Host]:
    """On the weak target: an HTTPS server that accepts TLS 1.0 only (openssl s_server -tls1, its
    weakest suites allowed, with the host's lab certificate) on WEAK_PORT for at most ten minutes,
    as an old device's web page would; ended afterwards."""
    lab = running_lab
    host = weak_target(lab)
    pid = plant_tls10(lab, host.name)
    try:
        yield host
    finally:
        hostwatch.end(lab, host.name, pid)


def scan_now(lab: Lab, *hosts: str) -> tuple[int, str, str, list[dict[str, Any]]]:
    """One scan of ``hosts`` by the scanner's program, as its user (what its daily pass runs), once
    SETTLED seconds have passed since the last scan ended: (its scan id, its start and end times
    as the report gives them, its lines in the report). The program waits for a scan running
    meanwhile (flock)."""
    scanner_host = scanning(lab).name
    last = max((e["time"] for e in report(lab) if e["event"] == "vuln-scan-finished"), default=None)
    if last:
        since = (datetime.now(UTC) - datetime.fromisoformat(last.replace("Z", "+00:00"))).total_seconds()
        time.sleep(max(0.0, SETTLED - since))
    scan = int(im.exec_in(lab, scanner_host, "runuser", "-u", SCANNER_USER, "--", PROGRAM, CONFIG, "--once",
                          *(a for h in hosts for a in ("--host", h)), timeout=600).strip())
    mine = [e for e in report(lab) if e["scan"] == scan]
    ends = [e for e in mine if e["event"] == "vuln-scan-finished"]
    assert ends, f"scan {scan}: no end in the report (its lines: {mine})"
    return scan, str(ends[0]["started"]), str(ends[0]["time"]), mine


@pytest.mark.control("C-RSK-02")
def test_a_planted_tls_1_0_server_is_flagged_and_the_pacs_is_not(running_lab: Lab, planted: Host, evidence) -> None:
    """A scan of the weak target and the PACS: the target's port is reported with TLS 1.0 as the
    only version and the finding tls-below-1.2; the PACS answered, its web and DICOM ports are
    reported with TLS 1.2 and 1.3, every suite graded A, and it has no finding in that scan (the
    scanner's report). Every line of the scan reaches the siem, and the target's finding raises
    weak-tls-service (medium) about its address and port, in the target's case. The sensor, which
    sees the scan cross the fw, alerts on the target's TLS 1.0 ServerHello (sid 9000012, about the
    target) and on nothing the scanner sent (sids 9000011 and 9000021 are suppressed for it,
    roles/sensor; a modality offering TLS 1.1 still raises ids-weak-tls: test_sensor.py)."""
    lab = running_lab
    pacs, me = pacs_of(lab), scanning(lab)
    scan, started, ended, written = scan_now(lab, planted.name, pacs.name)
    answered = sorted(h for e in written if e["event"] == "vuln-scan-finished" for h in e["answered"])
    weak = [(e["port"], e["finding"], e["tls_versions"]) for e in written if e["event"] == "vuln-finding" and e["host"] == planted.name]
    pacs_ports = {e["port"]: (e["tls_versions"], e["least_strength"]) for e in written if e["event"] == "vuln-service" and e["host"] == pacs.name}
    pacs_findings = [e for e in written if e["event"] == "vuln-finding" and e["host"] == pacs.name]
    evidence.update(scan=scan, answered=answered, weak=weak, pacs_ports=pacs_ports, pacs_findings=pacs_findings)
    assert answered == sorted([planted.name, pacs.name]), f"scan {scan}: the hosts that answered on some port"
    assert weak == [(WEAK_PORT, "tls-below-1.2", ["TLSv1.0"])]
    assert {p: pacs_ports.get(p) for p in (443, 2762)} == {443: (["TLSv1.2", "TLSv1.3"], "A"), 2762: (["TLSv1.2", "TLSv1.3"], "A")}
    assert pacs_findings == []

    def as_written(line: dict[str, Any]) -> str:
        return json.dumps(line, sort_keys=True)

    def shipped() -> list[dict[str, Any]]:  # the siem's events of this scan, once every line written has arrived
        found = [e for e in siem_json(lab, "events", "--contains", f'"scan": {scan},') if e["source"] == "vulnscan"]
        evidence["siem_lacks"] = sorted((Counter(map(as_written, written)) - Counter(as_written(json.loads(e["message"])) for e in found)).elements())
        return [] if evidence["siem_lacks"] else found
    mine = wait_for(f"all {len(written)} lines of scan {scan} in the siem", shipped)
    assert sorted(as_written(json.loads(e["message"])) for e in mine) == sorted(map(as_written, written))  # each once, nothing else
    finding = [e for e in mine if e["event_type"] == "vuln-finding" and e["src_ip"] == str(planted.address)]
    alert = wait_for("weak-tls-service", lambda: [a for a in siem_json(lab, "alerts")
                                                  if a["rule"] == "weak-tls-service" and {e["id"] for e in finding} & set(a["events"])])[0]
    cases = {c["id"]: c for c in siem_json(lab, "cases")}

    def ids_alerts(contains: str) -> list[dict[str, Any]]:  # the sensor's alerts (EVE, compact JSON) during the scan
        return [e for e in siem_json(lab, "events", "--contains", contains)
                if e["source"] == "suricata" and e["event_type"] == "ids-alert" and started <= e["time"] <= ended]
    from_target = wait_for("the sensor's alert on the TLS 1.0 ServerHello", lambda: [
        e for e in ids_alerts('"signature_id":9000012') if e["src_ip"] == str(planted.address)])
    from_scanner = [e for e in ids_alerts(f'"src_ip":"{me.address}"') if e["src_ip"] == str(me.address)]  # not a flow's to the scanner
    evidence.update(alert=alert, ids_from_scanner=from_scanner, ids_from_target=len(from_target))
    assert (alert["severity"], alert["entities"]) == ("medium", {"src_ip": str(planted.address), "dst_port": str(WEAK_PORT),
                                                                 "outcome": "tls-below-1.2"})
    assert cases[alert["case"]]["host"] == planted.name
    assert from_target and from_scanner == []
