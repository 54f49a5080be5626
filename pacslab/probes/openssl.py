"""One TLS handshake with OpenSSL's ``s_client`` (OpenSSL 3.0, Debian bookworm) from a lab host, and
what it reports: the version and suite negotiated, the certificate verification, the alert the
server sent, or that the server closed the connection without one.
"""

from __future__ import annotations

import re

from ..topology import Lab
from . import imaging as im

CA = "/etc/pacslab/tls/root.pem"
# s_client's arguments per case: TLS 1.3; TLS 1.2 with an AEAD suite and with a CBC one (the lab's
# keys are ECDSA P-256); TLS 1.1 (the client allows it at security level 0 only, so that it is the
# server that refuses).
CASES = {
    "tls1.3": ["-tls1_3"],
    "tls1.2-aead": ["-tls1_2", "-cipher", "ECDHE-ECDSA-AES128-GCM-SHA256"],
    "tls1.2-cbc": ["-tls1_2", "-cipher", "ECDHE-ECDSA-AES128-SHA256"],
    "tls1.1": ["-tls1_1", "-cipher", "DEFAULT@SECLEVEL=0"],
}
PATTERNS = (("protocol", r"^Protocol version: (\S+)"), ("cipher", r"^Ciphersuite: (\S+)"), ("alert", r"alert ([a-z ]+?)(?::|\n| \(|$)"),
            ("verify", r"^Verification: (\S+)"), ("closed", r"(unexpected eof) while reading"))


def s_client(lab: Lab, from_host: str, address: str, port: int, *args: str) -> dict[str, str]:
    """Handshake from ``from_host`` with ``address:port``, verifying against the lab root. Returns
    the keys PATTERNS finds in s_client's brief output: protocol, cipher, verify ("OK"), alert (its
    description, "protocol version"), closed ("unexpected eof")."""
    out = im.exec_in(lab, from_host, "sh", "-c", 'openssl s_client "$@" </dev/null 2>&1; true', "s_client", "-brief",
                     "-connect", f"{address}:{port}", "-CAfile", CA, "-verify_return_error", *args, timeout=60)
    return {k: m[1].strip() for k, pat in PATTERNS if (m := re.search(pat, out, re.M))}
