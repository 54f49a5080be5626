"""Active discovery (C-AST-01, C-DET-04), offline: the scanner's program (roles/scanner/files/
pacslab_discovery.py) reading a report nmap 7.93 wrote on the lab (tests/unit/discovery/nmap-sweep.xml)
and choosing its targets; the siem reading the scanner's lines and keeping each zone's newest
sweep (roles/siem/files/pacslab_siem.py); and pacslab.discovery's reconciliation with the
reference lab definition. The live sweeps are tests/integration/test_devices.py."""

from __future__ import annotations

import importlib.util
import json
import sys
from datetime import UTC, datetime
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

from pacslab import discovery
from pacslab.topology import REPO_ROOT, load_lab

from .test_detections import ASSETS, siem

HERE = Path(__file__).parent
SCANNER_FILES = REPO_ROOT / "roles" / "scanner" / "files"
sys.path.insert(0, str(SCANNER_FILES))  # what the programs share (pacslab_scanning.py)


def scanner_program(name: str) -> ModuleType:
    """One of roles/scanner's programs (files/<name>.py), loaded as a module."""
    spec = importlib.util.spec_from_file_location(name, SCANNER_FILES / f"{name}.py")
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


program = scanner_program("pacslab_discovery")

SCANNER = {"host": "scanner", "zone": "security", "owner": "it-security", "criticality": "medium", "address": "10.77.50.12", "image": "scanner"}
SCANNER_ASSETS = ASSETS | {"addresses": ASSETS["addresses"] | {"10.77.50.12": SCANNER}}


def test_the_targets_are_every_host_address_but_the_excluded() -> None:
    found = program.targets([{"name": "security", "subnet": "10.77.50.0/24", "exclude": ["10.77.50.1"]},
                             {"name": "datacenter", "subnet": "10.77.40.0/30", "exclude": []}])
    assert len(found) == 253 + 2
    assert (found[0], found[252], found[253:]) == ("10.77.50.2", "10.77.50.254", ["10.77.40.1", "10.77.40.2"])
    assert "10.77.50.1" not in found and "10.77.50.0" not in found and "10.77.50.255" not in found


def test_a_report_of_nmap_7_93_gives_the_addresses_that_answered() -> None:
    version, up = program.read_report((HERE / "discovery" / "nmap-sweep.xml").read_text())
    assert version == "7.93"
    assert up == [
        {"address": "10.77.50.10", "mac": "02:42:0A:4D:32:0A", "reason": "arp-response"},
        {"address": "10.77.50.254", "mac": "02:42:0A:4D:32:FE", "reason": "arp-response"},
        {"address": "10.77.50.12", "mac": None, "reason": "localhost-response"},
        {"address": "10.77.40.10", "mac": None, "reason": "echo-reply"},
        {"address": "10.77.30.11", "mac": None, "reason": "echo-reply"},
    ]  # 10.77.40.99 (no container) did not answer


def test_an_unfinished_report_is_refused() -> None:
    whole = (HERE / "discovery" / "nmap-sweep.xml").read_text()
    with pytest.raises(ValueError, match="not a finished nmap run"):
        program.read_report(whole.replace(whole[whole.index("<runstats>"):whole.index("</runstats>") + 11], ""))


@pytest.mark.parametrize(("config", "reason"), [
    ({"interval": 30, "timeout": 120, "results": "/x", "zones": []}, "zones: a list of at least one"),
    ({"interval": 0, "timeout": 120, "results": "/x", "zones": [{"name": "a", "subnet": "10.0.0.0/24"}]}, "interval: seconds"),
    ({"interval": 30, "timeout": 120, "zones": [{"name": "a", "subnet": "10.0.0.0/24"}]}, "results: the path"),
    ({"interval": 30, "timeout": 120, "results": "/x", "zones": [{"name": "a", "subnet": "10.0.0.0/33"}]}, "10.0.0.0/33"),
])
def test_a_config_that_cannot_be_used_is_refused_with_its_reason(tmp_path: Path, capsys: Any, config: dict[str, Any], reason: str) -> None:
    path = tmp_path / "discovery.json"
    path.write_text(json.dumps(config))
    assert program.main([str(path), "--once"]) == 2
    assert reason in capsys.readouterr().err


def _record(line: dict[str, Any], peer: str = "10.77.50.12") -> dict[str, Any]:
    return {"time": "2026-12-03T04:00:00.500Z", "fromhost_ip": peer, "hostname": "scanner", "programname": "discovery", "msg": json.dumps(line)}


@pytest.mark.parametrize(("line", "expected"), [
    ({"event": "host-up", "round": 1, "time": "2026-12-03T04:00:00.123Z", "zone": "modality", "address": "10.77.30.200", "mac": None,
      "reason": "echo-reply"},
     {"event_type": "discovered-address", "src_ip": "10.77.30.200", "src_host": None, "src_zone": "modality", "outcome": "echo-reply",
      "time": "2026-12-03T04:00:00.123Z", "host": "scanner"}),
    ({"event": "host-up", "round": 1, "time": "2026-12-03T04:00:00.123Z", "zone": "security", "address": "10.77.50.10",
      "mac": "02:42:0A:4D:32:0A", "reason": "arp-response"},
     {"event_type": "discovered-address", "src_ip": "10.77.50.10", "src_host": "siem", "src_zone": "security", "outcome": "arp-response"}),
    ({"event": "sweep-finished", "round": 1, "time": "2026-12-03T04:00:01.000Z", "zone": "modality", "up": ["10.77.30.10"]},
     {"event_type": "discovery-sweep", "outcome": "finished", "src_ip": None}),
    ({"event": "sweep-failed", "round": 2, "time": "2026-12-03T04:00:31.000Z", "zones": ["modality"], "error": "nmap exited 1: x"},
     {"event_type": "discovery-sweep", "outcome": "failed"}),
    ({"event": "port-open", "address": "10.77.30.200"}, {"event_type": "syslog", "src_ip": None}),
])
def test_the_siem_reads_the_scanners_lines(line: dict[str, Any], expected: dict[str, Any]) -> None:
    event = siem.normalise(_record(line), SCANNER_ASSETS)
    assert {k: event[k] for k in expected} == expected


def test_the_scanners_lines_from_another_host_are_forged() -> None:
    line = {"event": "host-up", "address": "10.77.30.200", "reason": "echo-reply"}
    event = siem.normalise(_record(line, peer="10.77.70.10"), SCANNER_ASSETS)  # the bastion: a vendor's `logger -t discovery`
    assert (event["event_type"], event["src_ip"]) == ("forged-source", None)


def test_the_siem_keeps_each_zones_newest_sweep_and_the_newest_failure() -> None:
    db = siem.connect(Path(":memory:"))
    lines = [
        {"event": "sweep-finished", "round": 1, "time": "2026-12-03T04:00:01.000Z", "zone": "modality", "subnet": "10.77.30.0/24",
         "exclude": ["10.77.30.1"], "started": "2026-12-03T04:00:00.000Z", "up": ["10.77.30.10", "10.77.30.11"], "nmap": "7.93"},
        {"event": "sweep-finished", "round": 1, "time": "2026-12-03T04:00:01.000Z", "zone": "security", "subnet": "10.77.50.0/24",
         "exclude": ["10.77.50.1"], "started": "2026-12-03T04:00:00.000Z", "up": ["10.77.50.10"], "nmap": "7.93"},
        {"event": "sweep-failed", "round": 2, "time": "2026-12-03T04:00:31.000Z", "zones": ["modality", "security"], "error": "nmap exited 1"},
        {"event": "sweep-finished", "round": 3, "time": "2026-12-03T04:01:01.000Z", "zone": "modality", "subnet": "10.77.30.0/24",
         "exclude": ["10.77.30.1"], "started": "2026-12-03T04:01:00.000Z", "up": ["10.77.30.10", "10.77.30.200"], "nmap": "7.93"},
    ]
    for line in lines:
        siem.store(db, siem.normalise(_record(line), SCANNER_ASSETS))
    siem.store(db, siem.normalise(_record(lines[0] | {"zone": "datacenter"}, peer="10.77.70.10"), SCANNER_ASSETS))  # forged: not read
    found = siem.discovery(db)
    assert found == {
        "zones": {
            "modality": {"round": 3, "started": "2026-12-03T04:01:00.000Z", "finished": "2026-12-03T04:01:01.000Z", "subnet": "10.77.30.0/24",
                         "exclude": ["10.77.30.1"], "up": ["10.77.30.10", "10.77.30.200"], "nmap": "7.93", "scanner": "scanner"},
            "security": {"round": 1, "started": "2026-12-03T04:00:00.000Z", "finished": "2026-12-03T04:00:01.000Z", "subnet": "10.77.50.0/24",
                         "exclude": ["10.77.50.1"], "up": ["10.77.50.10"], "nmap": "7.93", "scanner": "scanner"},
        },
        "failed": {"round": 2, "time": "2026-12-03T04:00:31.000Z", "zones": ["modality", "security"], "error": "nmap exited 1",
                   "scanner": "scanner"},
        "seen": [],
    }


def _seen(source: str, event_type: str, address: str, zone: str | None, at: str, host: str | None = None, outcome: str | None = None
          ) -> dict[str, Any]:
    return {"time": at, "host": {"fw-drops": "fw", "overlay-gateway": "ovl-gw"}.get(source, "sensor"), "source": source,
            "event_type": event_type, "src_ip": address,
            "src_zone": zone, "src_host": host, "outcome": outcome}


def test_passive_discovery_lists_the_unknown_addresses_the_fw_and_the_sensor_saw_in_the_last_hour() -> None:
    """`pacslab-siem discovery` "seen": per address and zone, which of the fw's drops, the
    sensor's records and the TLS fronts' and overlay gateway's connections saw it, and when first
    and last, within the hour before now. Left out: a lab host's address, the internet zone, an
    address outside every zone, a spoofed source (the fw's reverse-path check), an event of another
    kind (a gateway's certificate line), and anything older than the hour."""
    db = siem.connect(Path(":memory:"))
    at = datetime(2026, 12, 6, 3, 0, tzinfo=UTC)
    for event in [
        _seen("fw-drops", "fw-drop", "10.77.30.200", "modality", "2026-12-06T02:10:00.000Z", outcome="drop"),
        _seen("suricata", "ids-tls", "10.77.30.200", "modality", "2026-12-06T02:20:00.000Z"),
        _seen("fw-drops", "fw-drop", "10.77.30.200", "modality", "2026-12-06T02:30:00.000Z", outcome="drop"),
        _seen("suricata", "ids-alert", "10.77.20.99", "clinical", "2026-12-06T02:59:00.000Z"),
        _seen("fw-drops", "fw-drop", "10.77.30.201", "modality", "2026-12-06T01:59:00.000Z", outcome="drop"),  # over an hour ago
        _seen("fw-drops", "fw-drop", "10.77.30.10", "modality", "2026-12-06T02:40:00.000Z", host="mod-ct", outcome="drop"),
        _seen("suricata", "ids-tls", "10.77.90.66", "internet", "2026-12-06T02:40:00.000Z"),
        _seen("fw-drops", "fw-drop", "192.0.2.1", None, "2026-12-06T02:40:00.000Z", outcome="drop"),
        _seen("fw-drops", "fw-drop", "10.77.30.202", "modality", "2026-12-06T02:40:00.000Z", outcome="spoof"),
        _seen("suricata", "ids-flow", "10.77.30.203", "modality", "2026-12-06T02:40:00.000Z"),
        _seen("discovery", "discovered-address", "10.77.30.204", "modality", "2026-12-06T02:40:00.000Z"),
        _seen("overlay-gateway", "tls-connection", "10.77.31.200", "legacy", "2026-12-06T02:45:00.000Z", outcome="refused"),
        _seen("overlay-gateway", "tls-server-certificate", "10.77.31.205", "legacy", "2026-12-06T02:45:00.000Z", outcome="accepted"),
        _seen("overlay-gateway", "tls-connection", "10.77.31.10", "legacy", "2026-12-06T02:45:00.000Z", host="mod-legacy", outcome="accepted"),
    ]:
        siem.store(db, event)
    assert siem.seen_unknown(db, at) == [
        {"address": "10.77.20.99", "zone": "clinical", "seen_by": {"suricata": 1}, "first": "2026-12-06T02:59:00.000Z",
         "last": "2026-12-06T02:59:00.000Z"},
        {"address": "10.77.31.200", "zone": "legacy", "seen_by": {"overlay-gateway": 1}, "first": "2026-12-06T02:45:00.000Z",
         "last": "2026-12-06T02:45:00.000Z"},
        {"address": "10.77.30.200", "zone": "modality", "seen_by": {"fw-drops": 2, "suricata": 1}, "first": "2026-12-06T02:10:00.000Z",
         "last": "2026-12-06T02:30:00.000Z"},
    ]
    assert siem.seen_unknown(db, datetime(2026, 12, 6, 4, 0, tzinfo=UTC)) == []  # an hour after the last


def test_the_reconciliation_names_unknown_addresses_and_missing_hosts_per_zone() -> None:
    lab = load_lab(REPO_ROOT / "inventories" / "default")
    sweeps = {
        "modality": {"finished": "2026-12-03T04:01:01.000Z", "exclude": ["10.77.30.1", "10.77.30.254"],
                     "up": ["10.77.30.200", "10.77.30.10", "10.77.31.10"]},  # an address of another zone is not this zone's
        "security": {"finished": "2026-12-03T04:01:01.000Z", "exclude": ["10.77.50.1"],
                     "up": ["10.77.50.10", "10.77.50.11", "10.77.50.12", "10.77.50.254"]},
    }
    rows = {r["zone"]: r for r in discovery.reconcile(lab, sweeps)}
    assert list(rows) == list(lab.zones)
    assert {k: rows["modality"][k] for k in ("swept", "expected", "unknown", "missing", "reason")} == {
        "swept": True, "expected": {"10.77.30.10": "mod-ct", "10.77.30.11": "mod-mr"}, "unknown": ["10.77.30.200"],
        "missing": [{"host": "mod-mr", "address": "10.77.30.11"}], "reason": None}
    assert {k: rows["security"][k] for k in ("swept", "unknown", "missing")} == {"swept": True, "unknown": [], "missing": []}
    assert rows["security"]["expected"] == {"10.77.50.10": "siem", "10.77.50.11": "sensor", "10.77.50.12": "scanner", "10.77.50.254": "fw"}
    assert {k: rows["datacenter"][k] for k in ("swept", "finished", "unknown", "missing", "reason")} == {
        "swept": False, "finished": None, "unknown": [], "missing": [], "reason": discovery.NOT_SWEPT}


def test_the_reconciliation_lists_the_passive_finds_of_every_zone_swept_or_not() -> None:
    """The sensor's and the fw's unknown addresses land in their zone's row, swept or not (the
    clinical zone is never swept): the zone's probe address is marked as such; an address a host of
    the definition has (a planned one too), the fw's or the Docker bridge's, or one outside the zone's
    subnet, is no find."""
    lab = load_lab(REPO_ROOT / "inventories" / "default")
    seen = [{"address": a, "zone": z, "seen_by": {"suricata": 1}, "first": "2026-12-06T02:00:00.000Z", "last": "2026-12-06T02:01:00.000Z"}
            for a, z in [("10.77.20.99", "clinical"), (str(lab.zones["modality"].probe), "modality"), ("10.77.10.13", "enterprise"),
                         ("10.77.30.1", "modality"), ("10.77.30.254", "modality"),
                         ("10.77.31.99", "modality")]]
    seen.append({"address": "10.77.20.99", "zone": "clinical", "seen_by": {"fw-drops": 2, "suricata": 1}, "first": "2026-12-06T01:59:00.000Z",
                 "last": "2026-12-06T02:00:30.000Z"})  # a second siem's: one row, the counts added
    rows = {r["zone"]: r for r in discovery.reconcile(lab, {}, seen)}
    assert (rows["clinical"]["swept"], rows["clinical"]["seen"]) == (False, [
        {"address": "10.77.20.99", "seen_by": {"suricata": 2, "fw-drops": 2}, "first": "2026-12-06T01:59:00.000Z",
         "last": "2026-12-06T02:01:00.000Z", "probe": False}])
    assert [(s["address"], s["probe"]) for s in rows["modality"]["seen"]] == [(str(lab.zones["modality"].probe), True)]
    assert rows["enterprise"]["seen"] == []  # ntp, planned: a host of the definition
    assert all(r["seen"] == [] for z, r in rows.items() if z not in ("clinical", "modality"))
