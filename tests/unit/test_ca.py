"""pacslab-ca: its trust state (what a node's converge record depends on changes only with what it
trusts) and its event log (each change, and nothing else)."""

from __future__ import annotations

import json
import os
import re
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec

from pacslab.ca import Authority


def csr(name: str, key: ec.EllipticCurvePrivateKey) -> bytes:
    subject = x509.Name([x509.NameAttribute(x509.oid.NameOID.COMMON_NAME, name)])
    request = x509.CertificateSigningRequestBuilder().subject_name(subject).sign(key, hashes.SHA256())
    return request.public_bytes(serialization.Encoding.PEM)


def test_revoking_a_node_changes_only_its_own_entry(tmp_path: Path) -> None:
    ca = Authority(tmp_path)
    ca.init("unit", "ec-p256", 30)
    keys = {n: ec.generate_private_key(ec.SECP256R1()) for n in ("pacs", "mod-ct", "mod-mr")}
    for n, key in keys.items():
        assert ca.issue(n, csr(n, key), f"DNS:{n}", 397)["changed"]
    before = ca.trust()
    assert set(before["nodes"]) == set(keys)

    # the same request again issues nothing and changes nothing
    assert not ca.issue("mod-ct", csr("mod-ct", keys["mod-ct"]), "DNS:mod-ct", 397)["changed"]
    assert ca.trust() == before

    ca.revoke("mod-mr")
    revoked = ca.trust()
    assert revoked["root"] == before["root"]
    assert {n for n in keys if revoked["nodes"][n] != before["nodes"][n]} == {"mod-mr"}

    ca.reenrol("mod-mr")
    ca.issue("mod-mr", csr("mod-mr", keys["mod-mr"]), "DNS:mod-mr", 397)
    again = ca.trust()
    assert again["nodes"]["mod-mr"] not in (before["nodes"]["mod-mr"], revoked["nodes"]["mod-mr"])  # a new anchor
    assert {n: again["nodes"][n] for n in ("pacs", "mod-ct")} == {n: before["nodes"][n] for n in ("pacs", "mod-ct")}


def test_every_change_is_journalled_and_a_call_that_changes_nothing_is_not(tmp_path: Path) -> None:
    journal = tmp_path / "log" / "ca-events.json"
    ca = Authority(tmp_path / "state", journal)
    ca.init("unit", "ec-p256", 30)
    ca.init("unit", "ec-p256", 30)  # the root exists: nothing changes, nothing is written
    key = ec.generate_private_key(ec.SECP256R1())
    first = ca.issue("mod-ct", csr("mod-ct", key), "DNS:mod-ct,IP:10.77.30.10", 397)
    ca.issue("mod-ct", csr("mod-ct", key), "DNS:mod-ct,IP:10.77.30.10", 397)  # unchanged
    ca.bundle(["mod-ct", "pacs"])  # reads
    ca.trust()
    ca.inventory()
    ca.reenrol("mod-ct")  # a valid node: nothing to allow
    renewed = ca.issue("mod-ct", csr("mod-ct", key), "DNS:mod-ct,IP:10.77.30.10,DNS:ct", 397)  # new SANs: a new certificate
    ca.revoke("mod-ct")
    ca.revoke("mod-ct")  # already revoked
    ca.reenrol("mod-ct")
    serial = {n: format(x509.load_pem_x509_certificate(r["cert"].encode()).serial_number, "x") for n, r in (("first", first), ("renewed", renewed))}

    lines = journal.read_text().splitlines()
    events = [json.loads(line) for line in lines]
    assert [(e["event"], e["name"]) for e in events] == [
        ("root-created", "root"), ("certificate-issued", "mod-ct"), ("certificate-issued", "mod-ct"),
        ("certificate-revoked", "mod-ct"), ("re-enrolment", "mod-ct")]
    assert events[0]["subject"] == "CN=pacslab unit root CA,O=pacslab unit" and events[0]["key"] == "ec-p256"
    first = (events[1]["serial"], events[1]["replaces"], events[1]["sans"], events[1]["expired"])
    assert first == (serial["first"], [], "DNS:mod-ct,IP:10.77.30.10", False)
    assert (events[2]["serial"], events[2]["replaces"]) == (serial["renewed"], [serial["first"]])
    assert events[3]["serials"] == [serial["first"], serial["renewed"]]
    assert events[4]["serial"] == serial["renewed"]
    assert all(re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ", e["time"]) for e in events)
    assert journal.stat().st_mode & 0o007 == 0  # root's, and its group's to read (os.open's 0640, less the umask)


def test_a_ca_without_a_journal_writes_none(tmp_path: Path) -> None:
    ca = Authority(tmp_path)
    ca.init("unit", "ec-p256", 30)
    assert sorted(p.name for p in tmp_path.iterdir()) == [".lock", "meta.json", "root.crt", "root.key"]


def test_the_tool_journals_where_its_state_is(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    """`pacslab-ca init` (main) writes its change to the journal, in the CA's log volume (a snapshot's
    restore leaves it: evidence is not rolled back)."""
    from pacslab import ca as tool

    if "PACSLAB_CA_EVENTS" not in os.environ and "PACSLAB_CA_STATE" not in os.environ:
        assert tool.JOURNAL == Path("/var/log/pacslab/ca-events.json")
    monkeypatch.setattr(tool, "STATE", tmp_path / "state")
    monkeypatch.setattr(tool, "JOURNAL", tmp_path / "log" / "ca-events.json")
    assert tool.main(["init", "--lab", "unit"]) == 0
    assert json.loads(capsys.readouterr().out)["changed"] is True
    assert [json.loads(line)["event"] for line in (tmp_path / "log" / "ca-events.json").read_text().splitlines()] == ["root-created"]
