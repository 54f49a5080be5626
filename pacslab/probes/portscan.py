"""A TCP connect scan from inside a lab host, for the port-scan detection and containment checks
(C-DET-01, C-RSP-02): one connection to each port at once, each from its own source port counting
up from a base that marks the run in the fw's drop log. Probes aim at lab addresses only."""

from __future__ import annotations

import json

from ..docker import docker
from ..topology import Lab
from .imaging import exec_in

# Runs in the scanning host: argv base, address, ports...; prints each port's answer as a JSON list:
# "open", "refused" (a reset) or "unanswered" (dropped: no answer within 0.9 s). One SYN per probe: under
# Linux's initial retransmission timeout (1 s, RFC 6298 2.1), so no SYN is sent again into a quarantine
# the scan itself brought on (its reset would read as "refused" where the fw dropped the scan).
AGENT = """
import json, socket, sys
from concurrent.futures import ThreadPoolExecutor
base, address, ports = int(sys.argv[1]), sys.argv[2], [int(p) for p in sys.argv[3:]]
def probe(i):
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("", base + i))
    sock.settimeout(0.9)
    try:
        sock.connect((address, ports[i]))
        return "open"
    except ConnectionRefusedError:
        return "refused"
    except OSError:
        return "unanswered"
    finally:
        sock.close()
with ThreadPoolExecutor(len(ports)) as pool:
    print(json.dumps(list(pool.map(probe, range(len(ports))))))
"""


def scan(lab: Lab, host: str, address: str, ports: tuple[int, ...], base: int) -> list[str]:
    """Scan ``ports`` of ``address`` from ``host``, source ports base .. base+len(ports)-1; the answers."""
    answers: list[str] = json.loads(exec_in(lab, host, "python3", "-c", AGENT, str(base), address, *map(str, ports)))
    return answers


def scan_in(container: str, address: str, ports: tuple[int, ...], base: int) -> list[str]:
    """The same from a container that is no host of the lab definition (a rogue device a check plugs in)."""
    answers: list[str] = json.loads(docker("exec", container, "python3", "-c", AGENT, str(base), address, *map(str, ports), timeout=60).stdout)
    return answers
