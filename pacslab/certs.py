"""Certificate lifecycle audit (C-DAT-05; CSF PR.AC-1, PR.DS-2): the expiry report.

Every certificate in use must chain to the lab root, keep at least 30 days and have a strong key
(RSA >= 2048 or EC >= 256 bits). ``audit`` names each problem; ``python -m pacslab.certs`` reads
the chain each deployed host presents from /etc/pacslab/tls and prints the report (exit 5 when a
certificate fails).
"""

from __future__ import annotations

import argparse
import datetime as dt
import sys

from cryptography import x509
from cryptography.exceptions import InvalidSignature

from .ca import MIN_DAYS_LEFT, key_strength, not_after, strong_key
from .docker import docker
from .topology import load_lab


def audit(chain_pem: str, root_pem: str, min_days: int = MIN_DAYS_LEFT) -> list[str]:
    """The problems of the chain's first certificate; an empty list passes."""
    chain = x509.load_pem_x509_certificates(chain_pem.encode())
    root = x509.load_pem_x509_certificate(root_pem.encode())
    leaf = chain[0]
    problems = []
    days = (not_after(leaf) - dt.datetime.now(dt.UTC)).days
    if days < min_days:
        problems.append(f"{'expired: ' if days < 0 else ''}{days} days left (at least {min_days} required)")
    if not strong_key(leaf):
        problems.append(f"weak key {key_strength(leaf)} (RSA >= 2048 or EC >= 256 required)")
    current, issuers = leaf, [*chain[1:], root]
    for _ in range(len(issuers)):
        parent = next((c for c in issuers if c.subject == current.issuer), None)
        try:
            if parent is None:
                raise InvalidSignature
            current.verify_directly_issued_by(parent)
        except (InvalidSignature, ValueError, TypeError):
            break
        if parent == root:
            return problems
        current = parent
    problems.append("not issued by the lab CA (no valid chain to the lab root)")
    return problems


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="pacslab-certs", description="expiry report of the certificates in use (C-DAT-05)")
    parser.add_argument("--lab", default="inventories/default")
    args = parser.parse_args(argv)
    lab = load_lab(args.lab)
    root = docker("exec", lab.container_name("ca"), "cat", "/var/lib/pacslab-ca/root.crt").stdout
    failed = 0
    print(f"{'host':<12} {'expires':<26} {'key':<10} verdict")
    for host in lab.deployed_hosts():
        proc = docker("exec", lab.container_name(host.name), "cat", "/etc/pacslab/tls/chain.pem", check=False)
        if proc.returncode != 0:
            continue
        leaf = x509.load_pem_x509_certificate(proc.stdout.encode())
        problems = audit(proc.stdout, root)
        failed += bool(problems)
        print(f"{host.name:<12} {not_after(leaf).isoformat():<26} {key_strength(leaf):<10} {'; '.join(problems) or 'ok'}")
    return 5 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
