#!/usr/bin/env python3
"""pacslab-ca: the lab's certificate authority (C-DAT-05; trust anchors for C-ACC-06).

Runs on the ``ca`` host (roles/pki installs this file there as /usr/local/sbin/pacslab-ca); the
root key and every issuing key stay in its state folder. Node keys never come here: a node sends a
certificate signing request and gets its certificate back.

Why one issuing CA per node. Orthanc 1.10.1 verifies DICOM TLS peers with OpenSSL and no partial
chains: a trust bundle holding the lab root accepts every certificate the root ever signed, and a
bundle of leaf certificates accepts none (measured on this platform). So each node's leaf is signed
by an issuing key of its own, and that issuer exists twice with the same name and key: once signed
by the lab root (the *cross* certificate; audits verify leaf -> cross -> root) and once self-signed
(the *anchor*). A consumer's trust bundle holds the anchors of the peers it may talk to, and only
those: removing a node's anchor from the bundles revokes exactly that node (PR.AC-1, PR.DS-2).

Commands print JSON. The inventory (``inventory.json``) records every certificate issued, with its
status, so ``bundle`` never hands out a revoked node; ``inventory`` lists it (the C-DAT-05 checks
read it).

Every change is also appended to the CA's event log (``JOURNAL``, one JSON object per line, in the
CA's log volume: kept when its container is made again, and, like every host's logs, never rolled
back by a snapshot's restore), which roles/log_shipping ships to the siem as ``ca-events`` (C-PRT-01): ``{"time", "event", "name", ...}``
with event one of ``root-created``, ``certificate-issued`` (serial, subject, sans, not_after, key,
spki_sha256, expired; ``replaces``: the serials it supersedes), ``certificate-revoked`` (serials) and
``re-enrolment`` (the serial of the revoked certificate). Times are UTC, RFC 3339, to the second.
"""

from __future__ import annotations

import argparse
import datetime as dt
import fcntl
import hashlib
import ipaddress
import json
import os
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

STATE = Path(os.environ.get("PACSLAB_CA_STATE", "/var/lib/pacslab-ca"))
JOURNAL = Path(os.environ.get("PACSLAB_CA_EVENTS", "/var/log/pacslab/ca-events.json"))
MIN_DAYS_LEFT = 30  # C-DAT-05: a certificate in use keeps at least this many days
RENEW_DAYS_LEFT = 60  # `issue` renews earlier than the check would complain
KEY_TYPES = ("ec-p256", "rsa-3072")

PrivateKey = ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey


def _now() -> dt.datetime:
    return dt.datetime.now(dt.UTC).replace(microsecond=0)


def not_after(cert: x509.Certificate) -> dt.datetime:
    """The expiry as an aware UTC time (cryptography >= 42 has *_utc; Debian's 38 has naive UTC)."""
    value = getattr(cert, "not_valid_after_utc", None)
    return value if value is not None else cert.not_valid_after.replace(tzinfo=dt.UTC)


def key_strength(cert: x509.Certificate) -> str:
    """'ec-p256', 'rsa-3072' ... ; C-DAT-05 wants RSA >= 2048 or an EC curve of >= 256 bits."""
    key = cert.public_key()
    if isinstance(key, rsa.RSAPublicKey):
        return f"rsa-{key.key_size}"
    if isinstance(key, ec.EllipticCurvePublicKey):
        return f"ec-p{key.curve.key_size}"
    return type(key).__name__


def strong_key(cert: x509.Certificate) -> bool:
    key = cert.public_key()
    if isinstance(key, rsa.RSAPublicKey):
        return key.key_size >= 2048
    if isinstance(key, ec.EllipticCurvePublicKey):
        return key.curve.key_size >= 256
    return False


def spki_sha256(cert_or_key: x509.Certificate | x509.CertificateSigningRequest) -> str:
    der = cert_or_key.public_key().public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
    return hashlib.sha256(der).hexdigest()


def _new_key(key_type: str) -> PrivateKey:
    if key_type == "rsa-3072":
        return rsa.generate_private_key(public_exponent=65537, key_size=3072)
    return ec.generate_private_key(ec.SECP256R1())


def _pem(cert: x509.Certificate) -> str:
    return cert.public_bytes(serialization.Encoding.PEM).decode()


def _write_key(path: Path, key: PrivateKey) -> None:
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as f:
        f.write(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()))


def _read_key(path: Path) -> PrivateKey:
    key = serialization.load_pem_private_key(path.read_bytes(), password=None)
    assert isinstance(key, ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey)
    return key


def _ca_cert(subject: x509.Name, key: PrivateKey, issuer: x509.Name, signer: PrivateKey, days: int, path_length: int | None) -> x509.Certificate:
    now = _now()
    return (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(issuer)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=days))
        .add_extension(x509.BasicConstraints(ca=True, path_length=path_length), critical=True)
        .add_extension(
            x509.KeyUsage(False, False, False, False, False, True, True, False, False),  # keyCertSign, cRLSign
            critical=True,
        )
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .sign(signer, hashes.SHA256())
    )


def _name(cn: str, lab: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.ORGANIZATION_NAME, f"pacslab {lab}"), x509.NameAttribute(NameOID.COMMON_NAME, cn)])


def parse_sans(text: str) -> list[x509.GeneralName]:
    """'DNS:pacs,IP:10.77.40.10' -> general names (RFC 5280 4.2.1.6)."""
    names: list[x509.GeneralName] = []
    for item in filter(None, (s.strip() for s in text.split(","))):
        kind, _, value = item.partition(":")
        if kind == "DNS":
            names.append(x509.DNSName(value))
        elif kind == "IP":
            names.append(x509.IPAddress(ipaddress.ip_address(value)))
        else:
            raise SystemExit(f"pacslab-ca: SAN {item!r}: use DNS:<name> or IP:<address>")
    return names


class Authority:
    """The CA's state folder: root, per-node issuers, inventory. Every change holds the lock, and
    is appended to ``journal`` (one JSON object per line) when one is given."""

    def __init__(self, state: Path = STATE, journal: Path | None = None):
        self.state = state
        self.inventory_path = state / "inventory.json"
        self.journal = journal

    def _record(self, event: str, name: str, **details: Any) -> None:
        """Append one change to the journal, under the lock of the change it records, once the state
        holds it: a change the state did not keep is never journalled (a crash between the two leaves
        one unjournalled, which the inventory still lists)."""
        if self.journal is None:
            return
        self.journal.parent.mkdir(parents=True, exist_ok=True)
        line = json.dumps({"time": _now().isoformat().replace("+00:00", "Z"), "event": event, "name": name, **details}, sort_keys=True)
        fd = os.open(self.journal, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o640)
        try:
            os.write(fd, (line + "\n").encode())
        finally:
            os.close(fd)

    @contextmanager
    def locked(self) -> Iterator[None]:
        self.state.mkdir(parents=True, exist_ok=True, mode=0o700)
        with open(self.state / ".lock", "w") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            yield

    # -- state -----------------------------------------------------------------------------------
    def inventory(self) -> list[dict[str, Any]]:
        return json.loads(self.inventory_path.read_text()) if self.inventory_path.is_file() else []

    def _save(self, records: list[dict[str, Any]]) -> None:
        tmp = self.inventory_path.with_suffix(".tmp")
        tmp.write_text(json.dumps(records, indent=1, sort_keys=True))
        tmp.replace(self.inventory_path)

    def meta(self) -> dict[str, str]:
        meta: dict[str, str] = json.loads((self.state / "meta.json").read_text())
        return meta

    def root(self) -> x509.Certificate:
        return x509.load_pem_x509_certificate((self.state / "root.crt").read_bytes())

    def current(self, name: str) -> dict[str, Any] | None:
        """The newest certificate issued to a node (a revoked one included)."""
        records = [r for r in self.inventory() if r["name"] == name]
        return records[-1] if records else None

    # -- commands --------------------------------------------------------------------------------
    def init(self, lab: str, key_type: str, days: int) -> dict[str, Any]:
        with self.locked():
            if (self.state / "root.crt").is_file():
                return {"changed": False, "root": _pem(self.root())}
            key = _new_key(key_type)
            _write_key(self.state / "root.key", key)
            subject = _name(f"pacslab {lab} root CA", lab)
            cert = _ca_cert(subject, key, subject, key, days, path_length=1)
            (self.state / "root.crt").write_text(_pem(cert))
            (self.state / "meta.json").write_text(json.dumps({"lab": lab, "key_type": key_type}))
            self._record("root-created", "root", serial=format(cert.serial_number, "x"), subject=subject.rfc4514_string(),
                         key=key_strength(cert), not_after=not_after(cert).isoformat())
            return {"changed": True, "root": _pem(cert)}

    def _issuer(self, name: str) -> tuple[PrivateKey, x509.Certificate, x509.Certificate]:
        """The node's issuing key, its cross certificate (root-signed) and its anchor (self-signed)."""
        folder = self.state / "nodes" / name
        meta = self.meta()
        if not (folder / "issuer.key").is_file():
            key = _new_key(meta["key_type"])
            _write_key(folder / "issuer.key", key)
            subject = _name(f"pacslab {meta['lab']} issuer for {name}", meta["lab"])
            root = self.root()
            cross = _ca_cert(subject, key, root.subject, _read_key(self.state / "root.key"), 3650, path_length=0)
            anchor = _ca_cert(subject, key, subject, key, 3650, path_length=0)
            (folder / "cross.crt").write_text(_pem(cross))
            (folder / "anchor.crt").write_text(_pem(anchor))
        load = x509.load_pem_x509_certificate
        return _read_key(folder / "issuer.key"), load((folder / "cross.crt").read_bytes()), load((folder / "anchor.crt").read_bytes())

    def issue(self, name: str, csr_pem: bytes, sans: str, days: int, expired: bool = False) -> dict[str, Any]:
        """Sign the node's CSR, unless its current certificate is valid for the same key and SANs.

        ``expired`` issues a certificate that ended yesterday (negative checks of C-ACC-06 and
        C-DAT-05); it is recorded like any other.
        """
        csr = x509.load_pem_x509_csr(csr_pem)
        if not csr.is_signature_valid:
            raise SystemExit(f"pacslab-ca: the request for {name} has a bad signature")
        with self.locked():
            current = self.current(name)
            if current and current["status"] == "revoked" and not expired:
                # A revoked node gets nothing until an operator enrols it again (reenrol).
                return {"changed": False, "revoked": True, "name": name}
            key, cross, anchor = self._issuer(name)
            if (
                current
                and not expired
                and current["status"] == "valid"
                and current["spki_sha256"] == spki_sha256(csr)
                and current["sans"] == sans
                and dt.datetime.fromisoformat(current["not_after"]) - _now() > dt.timedelta(days=RENEW_DAYS_LEFT)
            ):
                return {"changed": False, **self._bundle_for(name, current["pem"], cross, anchor)}
            now = _now()
            if expired:
                start, end = now - dt.timedelta(days=30), now - dt.timedelta(days=1)
            else:
                start, end = now - dt.timedelta(minutes=5), now + dt.timedelta(days=days)
            cn = csr.subject.get_attributes_for_oid(NameOID.COMMON_NAME)
            cert = (
                x509.CertificateBuilder()
                .subject_name(_name(str(cn[0].value) if cn else name, self.meta()["lab"]))
                .issuer_name(anchor.subject)
                .public_key(csr.public_key())
                .serial_number(x509.random_serial_number())
                .not_valid_before(start)
                .not_valid_after(end)
                .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
                .add_extension(x509.KeyUsage(True, False, True, False, True, False, False, False, False), critical=True)
                .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH]), critical=False)
                .add_extension(x509.SubjectAlternativeName(parse_sans(sans)), critical=False)
                .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(key.public_key()), critical=False)
                .sign(key, hashes.SHA256())
            )
            record = {
                "name": name if not expired else f"{name}+expired",
                "serial": format(cert.serial_number, "x"),
                "subject": cert.subject.rfc4514_string(),
                "sans": sans,
                "not_after": not_after(cert).isoformat(),
                "key": key_strength(cert),
                "spki_sha256": spki_sha256(cert),
                "status": "valid",
                "issued": now.isoformat(),
                "pem": _pem(cert),
            }
            records = self.inventory()
            replaced = []
            if not expired:
                for r in records:
                    if r["name"] == name and r["status"] == "valid":
                        r["status"] = "superseded"
                        replaced.append(r["serial"])
            self._save([*records, record])
            self._record("certificate-issued", name, expired=expired, replaces=replaced,
                         **{k: record[k] for k in ("serial", "subject", "sans", "not_after", "key", "spki_sha256")})
            return {"changed": True, **self._bundle_for(name, record["pem"], cross, anchor)}

    def _bundle_for(self, name: str, leaf: str, cross: x509.Certificate, anchor: x509.Certificate) -> dict[str, Any]:
        return {"name": name, "cert": leaf, "chain": leaf + _pem(cross), "anchor": _pem(anchor), "root": _pem(self.root())}

    def revoke(self, name: str) -> dict[str, Any]:
        """Mark the node's certificates revoked; consumers drop its anchor when their bundles are rebuilt."""
        with self.locked():
            records = self.inventory()
            serials = []
            for r in records:
                if r["name"] == name and r["status"] in ("valid", "superseded"):
                    r["status"], r["revoked"] = "revoked", _now().isoformat()
                    serials.append(r["serial"])
            if serials:
                self._save(records)
                self._record("certificate-revoked", name, serials=serials)
            return {"changed": bool(serials), "name": name}

    def reenrol(self, name: str) -> dict[str, Any]:
        """Allow a revoked node to enrol again, with a new issuing key (its old anchor stays out)."""
        with self.locked():
            current = self.current(name)
            if not current or current["status"] != "revoked":
                return {"changed": False, "name": name}
            folder = self.state / "nodes" / name
            for f in ("issuer.key", "cross.crt", "anchor.crt"):
                (folder / f).unlink(missing_ok=True)
            records = self.inventory()
            records.append({**current, "status": "re-enrolment", "pem": ""})
            self._save(records)
            self._record("re-enrolment", name, serial=current["serial"])
            return {"changed": True, "name": name}

    def bundle(self, names: list[str]) -> dict[str, Any]:
        """The anchors of the named nodes whose newest certificate is valid, and the names left out."""
        anchors, left_out = [], []
        for name in names:
            current = self.current(name)
            anchor = self.state / "nodes" / name / "anchor.crt"
            if current and current["status"] == "valid" and anchor.is_file():
                anchors.append(anchor.read_text())
            else:
                left_out.append(name)
        return {"pem": "".join(anchors), "included": [n for n in names if n not in left_out], "left_out": left_out}

    def trust(self) -> dict[str, Any]:
        """What trust bundles depend on: a digest of the root, and per node a digest of its current
        status and anchor. Renewing a leaf changes neither; revoking or re-enrolling a node changes
        its entry, and so only the nodes that trust it re-converge (roles/lab_converged)."""
        root = _pem(self.root()).encode() if (self.state / "root.crt").is_file() else b""
        nodes = {}
        for name in sorted({r["name"] for r in self.inventory()}):
            status = (self.current(name) or {}).get("status")
            anchor = self.state / "nodes" / name / "anchor.crt"
            state = f"{status}\0{anchor.read_text() if anchor.is_file() else ''}".encode()
            nodes[name] = hashlib.sha256(state).hexdigest()[:16]
        return {"root": hashlib.sha256(root).hexdigest()[:16], "nodes": nodes}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="pacslab-ca", description=__doc__.splitlines()[0] if __doc__ else None)
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("init", help="create the lab root (once)")
    p.add_argument("--lab", required=True, help="the lab's name, in the root's subject")
    p.add_argument("--key-type", choices=KEY_TYPES, default="ec-p256", help="the root's key")
    p.add_argument("--days", type=int, default=3650, help="the root's validity")
    p = sub.add_parser("issue", help="sign the CSR read from stdin for one node")
    p.add_argument("name", help="the node's host name in the lab")
    p.add_argument("--sans", required=True, help="DNS:<name>,IP:<address>,...")
    p.add_argument("--days", type=int, default=397, help="the certificate's validity (CA/B: at most 397)")
    p.add_argument("--expired", action="store_true", help="issue an already expired certificate (negative checks)")
    for verb, helptext in (("revoke", "revoke the node: its issuer leaves every trust bundle at the next `pacslab up`"),
                           ("reenrol", "let a revoked node enrol again, with a new issuer (its old anchor stays out)")):
        sub.add_parser(verb, help=helptext, description=helptext).add_argument("name", help="the node's host name in the lab")
    sub.add_parser("bundle", help="trust bundle: anchors of the named nodes still valid").add_argument("names", nargs="+")
    sub.add_parser("inventory", help="every certificate issued, with its status")
    sub.add_parser("trust", help="digests of the root and of each node's status and anchor (what trust bundles depend on)")
    args = parser.parse_args(argv)
    ca = Authority(STATE, JOURNAL)
    result: Any
    if args.command == "init":
        result = ca.init(args.lab, args.key_type, args.days)
    elif args.command == "issue":
        result = ca.issue(args.name, sys.stdin.buffer.read(), args.sans, args.days, args.expired)
    elif args.command == "revoke":
        result = ca.revoke(args.name)
    elif args.command == "reenrol":
        result = ca.reenrol(args.name)
    elif args.command == "bundle":
        result = ca.bundle(args.names)
    elif args.command == "trust":
        result = ca.trust()
    else:
        result = [{k: v for k, v in r.items() if k != "pem"} for r in ca.inventory()]
    json.dump(result, sys.stdout)
    return 0


if __name__ == "__main__":
    sys.exit(main())
