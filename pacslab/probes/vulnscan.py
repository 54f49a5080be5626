"""The scanner's scheduled vulnerability scans, from the checks and the benchmark: where its program
and configuration are (roles/scanner), and a weak TLS server to plant for a scan to find."""

from __future__ import annotations

from ..topology import Lab
from . import hostwatch

PROGRAM, CONFIG = "/usr/local/sbin/pacslab-vulnscan", "/etc/pacslab/vulnscan.json"  # roles/scanner's scanner_vuln_program, _config
SCANNER_USER = "pacslab-scanner"
WEAK_PORT = 443  # a port every scan tries (roles/scanner scanner_vuln_ports), where the planted server listens


def plant_tls10(lab: Lab, host: str) -> int:
    """On ``host``: an HTTPS server that accepts TLS 1.0 only (openssl s_server -tls1, its weakest
    suites allowed, with the host's lab certificate) on WEAK_PORT for at most ten minutes, as an old
    device's web page would. Its pid, for hostwatch.end."""
    return hostwatch.in_background(lab, host, "root", "timeout", "600", "openssl", "s_server", "-accept", str(WEAK_PORT),
                                   "-cert", "/etc/pacslab/tls/node.crt", "-key", "/etc/pacslab/tls/node.key", "-tls1",
                                   "-cipher", "DEFAULT@SECLEVEL=0", "-www", "-quiet")
