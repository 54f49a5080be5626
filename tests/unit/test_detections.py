"""The SIEM's Sigma rules (roles/siem/files/rules) compiled by pySigma and run by the siem's own
evaluator (roles/siem/files/pacslab_siem.py) over fixtures: each rule raises exactly the alerts its
true-positive cases name and stays silent on its true negatives (tests/unit/sigma/<rule>.yml);
also the normalisation of the sources' messages and the alert and case bookkeeping."""

from __future__ import annotations

import importlib.util
import json
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import yaml

from pacslab import detections

HERE = Path(__file__).parent
FIXTURES = sorted((HERE / "sigma").glob("*.yml"))
_spec = importlib.util.spec_from_file_location("pacslab_siem", HERE.parent.parent / "roles" / "siem" / "files" / "pacslab_siem.py")
assert _spec and _spec.loader
siem = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(siem)

T0 = datetime(2026, 11, 30, 10, 0, tzinfo=UTC)
ASSETS = {"addresses": {"10.77.90.11": {"host": "vendor-eng", "zone": "internet", "owner": "vendor", "criticality": "low",
                                        "address": "10.77.90.11"},
                        "10.77.70.10": {"host": "bastion", "zone": "vendor", "owner": "it-security", "criticality": "high",
                                        "address": "10.77.70.10"}},
          "hosts": {}}


@pytest.fixture(scope="module")
def rules() -> dict[str, dict[str, Any]]:
    return {r["name"]: r for r in detections.compile_rules()}


def _cases() -> list[Any]:
    out = []
    for path in FIXTURES:
        data = yaml.safe_load(path.read_text())
        for case in data["cases"]:
            out.append(pytest.param(data["rule"], case, id=f"{data['rule']}: {case['name']}"))
    return out


def _run(rule: dict[str, Any], events: list[dict[str, Any]]) -> list[dict[str, Any]]:
    db = siem.connect(Path(":memory:"))
    for e in events:
        row = {k: (str(v) if v is not None else None) for k, v in e.items() if k != "at"}
        row["time"] = (T0 + timedelta(seconds=e["at"])).isoformat(timespec="milliseconds").replace("+00:00", "Z")
        siem.store(db, row)
    last = max((e["at"] for e in events), default=0)
    siem.evaluate(db, [rule], ASSETS, at=T0 + timedelta(seconds=last + 1))
    siem.evaluate(db, [rule], ASSETS, at=T0 + timedelta(seconds=last + 2))  # a second run adds nothing
    return siem.alerts(db)


def test_every_rule_has_fixtures_and_every_fixture_a_rule(rules) -> None:
    named = {yaml.safe_load(p.read_text())["rule"] for p in FIXTURES}
    assert named == set(rules)


@pytest.mark.parametrize(("rule_name", "case"), _cases())
def test_rule_on_its_fixture(rules, rule_name: str, case: dict[str, Any]) -> None:
    raised = _run(rules[rule_name], case["events"])
    assert [a["entities"] for a in raised] == case["alerts"]
    assert all(a["rule"] == rule_name and a["case"] is not None for a in raised)


def test_a_rule_file_pysigma_refuses_is_named(tmp_path: Path) -> None:
    (tmp_path / "broken.yml").write_text("title: no detection\nlogsource: {product: pacslab}\n")
    with pytest.raises(detections.DetectionError, match=r"broken\.yml"):
        detections.compile_rules(tmp_path)


def test_an_alert_opens_a_case_enriched_from_the_lab_definition(rules) -> None:
    events = [{"at": i, "event_type": "ssh-login-failure", "user": "vendor1", "src_ip": "10.77.90.11"} for i in range(6)]
    db = siem.connect(Path(":memory:"))
    for e in events:
        siem.store(db, {"time": (T0 + timedelta(seconds=e["at"])).isoformat().replace("+00:00", "Z"), **{k: v for k, v in e.items() if k != "at"}})
    siem.evaluate(db, [rules["ssh-brute-force"]], ASSETS, at=T0 + timedelta(seconds=10))
    (case,) = siem.cases(db)
    (alert,) = siem.alerts(db)
    assert {k: case[k] for k in ("host", "status", "severity", "owner", "zone", "criticality", "address", "alerts")} == {
        "host": "vendor-eng", "status": "open", "severity": "medium", "owner": "vendor", "zone": "internet", "criticality": "low",
        "address": "10.77.90.11", "alerts": [alert["id"]]}
    assert len(alert["events"]) == 6


def _record(program: str, msg: str, peer: str = "10.77.70.10") -> dict[str, Any]:
    return {"time": "2026-11-30T11:00:00.123456+01:00", "fromhost_ip": peer, "hostname": "bastion", "programname": program, "msg": msg}


@pytest.mark.parametrize(("program", "msg", "expected"), [
    ("sshd", "Failed keyboard-interactive/pam for vendor1 from 10.77.90.11 port 40022 ssh2",
     {"event_type": "ssh-login-failure", "user": "vendor1", "src_ip": "10.77.90.11", "src_port": "40022", "outcome": "failure"}),
    ("sshd", "Failed keyboard-interactive/pam for invalid user w13x from 10.77.90.11 port 40023 ssh2",
     {"event_type": "ssh-login-failure", "user": "w13x", "src_ip": "10.77.90.11", "src_port": "40023", "outcome": "failure"}),
    ("sshd", "Accepted keyboard-interactive/pam for vendor1 from 10.77.90.11 port 40024 ssh2",
     {"event_type": "ssh-login-success", "user": "vendor1", "src_ip": "10.77.90.11", "src_port": "40024", "outcome": "success"}),
    ("sshd", "Invalid user admin from 10.77.90.11 port 40025",
     {"event_type": "ssh-invalid-user", "user": "admin", "src_ip": "10.77.90.11", "src_port": "40025", "outcome": "failure"}),
    # a user name cannot smuggle another address in: the address is the one sshd appends, at the end
    ("sshd", "Failed password for invalid user x from 10.0.0.1 from 10.77.90.11 port 1 ssh2",
     {"event_type": "ssh-login-failure", "user": "x from 10.0.0.1", "src_ip": "10.77.90.11", "src_port": "1"}),
    ("tlog", json.dumps({"ver": "2.3", "host": "bastion", "user": "vendor1", "session": 7, "id": 1}),
     {"event_type": "vendor-session", "user": "vendor1", "outcome": "recorded"}),
    ("tlog", "not json", {"event_type": "syslog", "user": None}),
    ("sudo", "vendor1 : TTY=pts/0 ; PWD=/ ; USER=pacslab-broker ; COMMAND=/usr/local/sbin/pacslab-maint pacs", {"event_type": "syslog"}),
    # the PACS's event log (roles/orthanc's plugin), one JSON object per line
    ("orthanc-events", json.dumps({"event": "integrity-failure", "host": "pacs", "instance": "4af8", "detail": "MD5 mismatch",
                                   "time": "2026-11-30T11:00:00+0100"}),
     {"event_type": "integrity-failure", "user": None, "calling_ae": None, "outcome": None}),
    ("orthanc-events", json.dumps({"event": "duplicate-sop-instance-refused", "calling_ae": "MR01", "status": "0x0111",
                                   "sop_instance_uid": "1.2.3", "study_uid": "1.2.4", "held_study_uid": "1.2.5"}),
     {"event_type": "duplicate-sop-instance-refused", "calling_ae": "MR01", "study_uid": "1.2.4", "outcome": "0x0111"}),
    ("orthanc-events", json.dumps({"event": "access-decision", "account": "svc-viewer", "user": "rad1", "verdict": "deny"}),
     {"event_type": "access-decision", "user": "rad1", "outcome": "deny"}),
    ("orthanc-events", json.dumps({"event": "access-decision", "account": "pacslab-admin", "user": None, "verdict": "allow"}),
     {"event_type": "access-decision", "user": "pacslab-admin", "outcome": "allow"}),
    ("orthanc-events", '["integrity-failure"]', {"event_type": "syslog", "user": None}),
    ("orthanc-events", '{"event": "integrity-failure"', {"event_type": "syslog"}),
])
def test_normalise(program: str, msg: str, expected: dict[str, Any]) -> None:
    event = siem.normalise(_record(program, msg), ASSETS)
    assert {k: event[k] for k in expected} == expected
    assert event["host"] == "bastion" and event["sender_host"] == "bastion" and event["source"] == program
    assert event["time"] == "2026-11-30T10:00:00.123Z" and event["message"] == msg


def test_the_host_is_the_connections_address_not_what_the_header_claims() -> None:
    event = siem.normalise(_record("sshd", "x") | {"hostname": "pacs"}, ASSETS)
    assert (event["host"], event["sender_host"]) == ("bastion", "pacs")
    assert siem.normalise(_record("sshd", "x", peer="10.9.9.9"), ASSETS)["host"] == "10.9.9.9"


def test_ingest_confirms_each_message_and_keeps_one_it_cannot_read() -> None:
    import io
    db = siem.connect(Path(":memory:"))
    out = io.StringIO()
    lines = [json.dumps(_record("sshd", "Accepted keyboard-interactive/pam for v from 10.77.90.11 port 1 ssh2")) + "\n", "{not json\n", "[1]\n"]
    siem.ingest(lines, out, db, ASSETS)
    assert out.getvalue() == "OK\nOK\nOK\nOK\n"
    stored = siem.events(db)
    assert [e["event_type"] for e in stored] == ["ssh-login-success", "unparsed", "unparsed"]
    assert [e["message"] for e in stored[1:]] == ["{not json", "[1]"]
