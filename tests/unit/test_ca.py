"""pacslab-ca trust: what a node's converge record depends on changes only with what it trusts."""

from __future__ import annotations

import json
import re
from pathlib import Path

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


def test_every_change_and_no_other_call_is_journalled(tmp_path: Path) -> None:
    journal = tmp_path / "log" / "ca-events.json"
    ca = Authority(tmp_path / "state", journal)
    ca.init("unit", "ec-p256", 30)
    ca.init("unit", "ec-p256", 30)  # the root exists: nothing changes, nothing is written
    key = ec.generate_private_key(ec.SECP256R1())
    first = ca.issue("mod-ct", csr("mod-ct", key), "DNS:mod-ct,IP:10.77.30.10", 397)
    ca.issue("mod-ct", csr("mod-ct", key), "DNS:mod-ct,IP:10.77.30.10", 397)  # unchanged
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
    assert oct(journal.stat().st_mode & 0o777) == "0o640"


def test_a_ca_without_a_journal_writes_none(tmp_path: Path) -> None:
    ca = Authority(tmp_path)
    ca.init("unit", "ec-p256", 30)
    assert sorted(p.name for p in tmp_path.iterdir()) == [".lock", "meta.json", "root.crt", "root.key"]
