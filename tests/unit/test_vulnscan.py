"""Vulnerability scans (C-RSK-02, C-DET-04), offline: the scanner's program (roles/scanner/files/
pacslab_vulnscan.py) reading a report nmap 7.93 wrote on the lab (tests/unit/discovery/
nmap-vulnscan.xml: a modality's port 443 planted to accept TLS 1.0 only, the PACS's TLS 1.2 and 1.3
web server and its sshd), judging each open port and writing its lines; and the siem reading them.
The live scans are tests/integration/test_vulnscan.py."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from .test_detections import siem
from .test_discovery import SCANNER_ASSETS, scanner_program

HERE = Path(__file__).parent
program = scanner_program("pacslab_vulnscan")

REPORT = (HERE / "discovery" / "nmap-vulnscan.xml").read_text()
CONFIG = {"interval": 86400, "first_after": 120, "timeout": 900, "results": "/x", "least_strength": "A", "ports": [22, 443, 8443],
          "hosts": [{"name": "mod-mr", "zone": "modality", "address": "10.77.30.11"},
                    {"name": "pacs", "zone": "datacenter", "address": "10.77.40.10"}]}


def test_a_report_of_nmap_7_93_gives_each_open_port_with_its_tls_versions_and_grade() -> None:
    version, found, answered = program.read_report(REPORT)
    assert version == "7.93"
    assert found == {
        "10.77.30.11": [{"proto": "tcp", "port": 443, "tls": True, "service": "https", "product": None, "version": None,
                         "tls_versions": ["TLSv1.0"], "least_strength": "A"}],
        "10.77.40.10": [{"proto": "tcp", "port": 22, "tls": False, "service": "ssh", "product": "OpenSSH",
                         "version": "9.2p1 Debian 2+deb12u10", "tls_versions": [], "least_strength": None},
                        {"proto": "tcp", "port": 443, "tls": True, "service": "https", "product": None, "version": None,
                         "tls_versions": ["TLSv1.2", "TLSv1.3"], "least_strength": "A"}],
    }  # the closed ports (22 on the modality, 8443 on both) are in no list
    assert answered == {"10.77.30.11", "10.77.40.10"}


def test_a_host_whose_every_port_was_filtered_did_not_answer() -> None:
    open_tls = '<state state="open" reason="syn-ack" reason_ttl="0"/><service name="https" tunnel="ssl"'
    filtered = REPORT.replace('state="closed" reason="conn-refused"', 'state="filtered" reason="no-response"')
    filtered = filtered.replace(open_tls, open_tls.replace('state="open" reason="syn-ack"', 'state="filtered" reason="no-response"'), 1)
    assert program.read_report(filtered)[2] == {"10.77.40.10"}  # the modality's ports are all filtered now; the PACS's 22 and 443 open


def test_a_tls_port_whose_ciphers_could_not_be_enumerated_is_not_graded() -> None:
    start = REPORT.index('<script id="ssl-enum-ciphers"')
    ungraded = REPORT[:start] + REPORT[REPORT.index("</script>", start) + len("</script>"):]  # the modality's port: tunnel="ssl", no script
    assert program.read_report(ungraded)[1]["10.77.30.11"] == [
        {"proto": "tcp", "port": 443, "tls": True, "service": "https", "product": None, "version": None, "tls_versions": [], "least_strength": None}]


def test_an_unfinished_report_is_refused() -> None:
    with pytest.raises(ValueError, match="not a finished nmap run"):
        program.read_report(REPORT.replace(REPORT[REPORT.index("<runstats>"):REPORT.index("</runstats>") + 11], ""))


@pytest.mark.parametrize(("tls", "versions", "grade", "least", "expected"), [
    (True, ["TLSv1.2", "TLSv1.3"], "A", "A", []),
    (True, ["TLSv1.0"], "A", "A", ["tls-below-1.2"]),
    (True, ["TLSv1.1", "TLSv1.2"], "A", "A", ["tls-below-1.2"]),
    (True, ["SSLv3"], "F", "A", ["tls-below-1.2", "weak-cipher"]),
    (True, ["TLSv1.2"], "C", "A", ["weak-cipher"]),
    (True, ["TLSv1.2"], "C", "C", []),
    (True, [], None, "A", ["tls-not-graded"]),  # TLS, and no version or grade came back
    (True, ["TLSv1.2"], "unknown", "A", ["tls-not-graded"]),
    (False, [], None, "A", []),  # no TLS: nothing to judge here
])
def test_each_open_port_is_judged_by_its_tls_versions_and_its_weakest_suite(tls: bool, versions: list[str], grade: str | None, least: str,
                                                                           expected: list[str]) -> None:
    assert program.findings({"tls": tls, "tls_versions": versions, "least_strength": grade}, least) == expected


def test_a_scan_writes_each_open_port_each_finding_and_each_zones_end(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(program, "scan", lambda hosts, ports, timeout: program.read_report(REPORT))
    lines = program.scan_lines(7, CONFIG, CONFIG["hosts"])
    assert [(ln["event"], ln.get("host"), ln.get("port"), ln.get("finding")) for ln in lines] == [
        ("vuln-service", "pacs", 22, None),
        ("vuln-service", "pacs", 443, None),
        ("vuln-service", "mod-mr", 443, None),
        ("vuln-finding", "mod-mr", 443, "tls-below-1.2"),
        ("vuln-scan-finished", None, None, None),
        ("vuln-scan-finished", None, None, None),
    ]
    assert [(ln["zone"], ln["hosts"], ln["answered"]) for ln in lines[-2:]] == [("datacenter", ["pacs"], ["pacs"]),
                                                                             ("modality", ["mod-mr"], ["mod-mr"])]
    assert {k: lines[3][k] for k in ("scan", "zone", "address", "tls_versions", "least_strength")} == {
        "scan": 7, "zone": "modality", "address": "10.77.30.11", "tls_versions": ["TLSv1.0"], "least_strength": "A"}


def test_a_scan_that_fails_reports_nothing_but_the_failure(monkeypatch: pytest.MonkeyPatch) -> None:
    def failed(hosts: Any, ports: Any, timeout: Any) -> Any:
        raise RuntimeError("nmap did not finish within 900 s")
    monkeypatch.setattr(program, "scan", failed)
    assert [(ln["event"], ln["zones"], ln["error"]) for ln in program.scan_lines(8, CONFIG, CONFIG["hosts"])] == [
        ("vuln-scan-failed", ["datacenter", "modality"], "nmap did not finish within 900 s")]


@pytest.mark.parametrize(("change", "reason"), [
    ({"hosts": []}, "hosts: a list of at least one"),
    ({"hosts": [{"name": "pacs", "zone": "datacenter", "address": "10.77.40.300"}]}, "10.77.40.300"),
    ({"ports": [0]}, "ports: a list of TCP ports"),
    ({"interval": 0}, "interval: seconds"),
    ({"first_after": -1}, "first_after: seconds, 0 or more"),
    ({"least_strength": "G"}, "least_strength: one of A"),
])
def test_a_config_that_cannot_be_used_is_refused_with_its_reason(tmp_path: Path, capsys: Any, change: dict[str, Any], reason: str) -> None:
    path = tmp_path / "vulnscan.json"
    path.write_text(json.dumps(CONFIG | change))
    assert program.main([str(path), "--once"]) == 2
    assert reason in capsys.readouterr().err


def test_a_host_to_scan_must_be_a_configured_one(tmp_path: Path, capsys: Any) -> None:
    path = tmp_path / "vulnscan.json"
    path.write_text(json.dumps(CONFIG))
    assert program.main([str(path), "--once", "--host", "ws-rad"]) == 2
    assert "--host: ws-rad not among the configured hosts" in capsys.readouterr().err


def _record(line: dict[str, Any], peer: str = "10.77.50.12") -> dict[str, Any]:
    return {"time": "2026-12-05T08:00:00.500Z", "fromhost_ip": peer, "hostname": "scanner", "programname": "vulnscan", "msg": json.dumps(line)}


@pytest.mark.parametrize(("line", "expected"), [
    ({"event": "vuln-finding", "scan": 7, "time": "2026-12-05T08:00:00.123Z", "zone": "datacenter", "host": "pacs", "address": "10.77.40.10",
      "proto": "tcp", "port": 2762, "service": "dicom-tls", "finding": "weak-cipher", "tls_versions": ["TLSv1.2"], "least_strength": "C"},
     {"event_type": "vuln-finding", "src_ip": "10.77.40.10", "src_host": "pacs", "src_zone": "datacenter", "dst_port": "2762", "proto": "tcp",
      "outcome": "weak-cipher", "time": "2026-12-05T08:00:00.123Z", "host": "scanner"}),
    ({"event": "vuln-service", "scan": 7, "address": "10.77.40.10", "proto": "tcp", "port": 443, "service": "https"},
     {"event_type": "vuln-service", "src_ip": "10.77.40.10", "dst_port": "443", "outcome": "https"}),
    ({"event": "vuln-scan-finished", "scan": 7, "zone": "datacenter", "hosts": ["pacs"]}, {"event_type": "vuln-scan", "outcome": "finished"}),
    ({"event": "vuln-scan-failed", "scan": 8, "zones": ["modality"], "error": "x"}, {"event_type": "vuln-scan", "outcome": "failed"}),
    ({"event": "port-open", "address": "10.77.30.200"}, {"event_type": "syslog", "src_ip": None}),
])
def test_the_siem_reads_the_scans_lines(line: dict[str, Any], expected: dict[str, Any]) -> None:
    event = siem.normalise(_record(line), SCANNER_ASSETS)
    assert {k: event[k] for k in expected} == expected


def test_the_scans_lines_from_another_host_are_forged() -> None:
    line = {"event": "vuln-finding", "address": "10.77.30.11", "port": 443, "finding": "tls-below-1.2"}
    event = siem.normalise(_record(line, peer="10.77.70.10"), SCANNER_ASSETS)  # the bastion: a vendor's `logger -t vulnscan`
    assert (event["event_type"], event["src_ip"]) == ("forged-source", None)


@pytest.mark.parametrize(("argv", "timeout", "error"), [
    (["sh", "-c", "echo 'Failed to resolve' >&2; exit 1"], 10, "nmap exited 1: Failed to resolve"),
    (["sh", "-c", "echo '<nmaprun'"], 10, "nmap's report could not be read"),
    (["sleep", "5"], 0.2, "nmap did not finish within 0.2 s"),
    (["/nonexistent/nmap"], 10, "nmap could not start"),
])
def test_the_shared_nmap_run_says_why_it_failed(argv: list[str], timeout: float, error: str) -> None:
    """pacslab_scanning.run_nmap (both scanner programs' import of it), with a stand-in for nmap."""
    with pytest.raises(RuntimeError, match=error.replace(".", r"\.")):
        program.run_nmap(argv, program.read_report, timeout)


def test_one_scan_writes_its_lines_and_prints_its_id(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: Any) -> None:
    monkeypatch.setattr(program, "scan", lambda hosts, ports, timeout: program.read_report(REPORT))
    path = tmp_path / "vulnscan.json"
    path.write_text(json.dumps(CONFIG | {"results": str(tmp_path / "report.json")}))
    assert program.main([str(path), "--once", "--host", "mod-mr"]) == 0
    lines = [json.loads(ln) for ln in (tmp_path / "report.json").read_text().splitlines()]
    assert [(ln["event"], ln.get("host"), ln.get("finding")) for ln in lines] == [
        ("vuln-service", "mod-mr", None), ("vuln-finding", "mod-mr", "tls-below-1.2"), ("vuln-scan-finished", None, None)]
    assert capsys.readouterr().out.strip() == str(lines[0]["scan"])
