"""pacslab-ca trust: what a node's converge record depends on changes only with what it trusts."""

from __future__ import annotations

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
