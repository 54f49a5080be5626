"""A signature update on an Orthanc host's malware scanner (roles/orthanc: clamd with the lab's own
signatures, C-DET-02), as a feed would bring one: a database file of its own beside the lab's
(pacslab.ndb, which the role writes) and clamd told to reload. The integration check of the
archive's rescan (tests/integration/test_siem.py) and the benchmark (bench/detection_latency.py
--only archive-rescan) use it; ``started`` brings clamd back after a check stopped it.

A signature is ClamAV's extended format (signatures(5), .ndb): ``name:0:*:hex``, the bytes
matched anywhere in any file; clamd reports it as ``<name>.UNOFFICIAL``.
"""

from __future__ import annotations

from pathlib import PurePosixPath

from ..listeners import role_var
from ..topology import Lab
from .imaging import exec_in

# Run as root: clamd (argv[1] its socket) told to reload its signatures (RELOAD: it scans on with
# the old ones until the new are loaded), then asked every half second, for at most a minute, what
# it makes of argv[2] (hex) until its verdict is argv[3] (OK or FOUND). Prints the last verdict.
RELOADED = """\
import io, sys, time
from clamav_client.clamd import ClamdUnixSocket
clamd = ClamdUnixSocket(path=sys.argv[1], timeout=30)
clamd.reload()
for _ in range(120):
    time.sleep(0.5)
    verdict = clamd.instream(io.BytesIO(bytes.fromhex(sys.argv[2])))["stream"][0]
    if verdict == sys.argv[3]:
        break
print(verdict)
"""


# Run as root: clamd (argv[1] its socket) asked every half second, for at most a minute, until it answers PING.
PINGED = """\
import sys, time
from clamav_client.clamd import ClamdUnixSocket
for _ in range(120):
    try:
        ClamdUnixSocket(path=sys.argv[1], timeout=5).ping()
        break
    except Exception:
        time.sleep(0.5)
else:
    sys.exit("clamd did not answer PING within a minute")
"""


def started(lab: Lab, host: str) -> None:
    """``host``'s clamd started again where it is stopped (supervisor), returned once it answers;
    RuntimeError when it does not within a minute."""
    exec_in(lab, host, "sh", "-c", "supervisorctl status clamd >/dev/null || supervisorctl start clamd || true")
    exec_in(lab, host, "python3", "-c", PINGED, str(role_var(lab, host, "orthanc", "orthanc_clamd_socket")), timeout=90)


def _reloaded(lab: Lab, host: str, probe_hex: str, verdict: str) -> None:
    socket = str(role_var(lab, host, "orthanc", "orthanc_clamd_socket"))
    got = exec_in(lab, host, "python3", "-c", RELOADED, socket, probe_hex, verdict, timeout=120).strip()
    if got != verdict:
        raise RuntimeError(f"{host}: clamd answered {got} for the probe bytes, not {verdict}, a minute after it was told to reload")


def add_signature(lab: Lab, host: str, name: str, hex_bytes: str) -> str:
    """Signature ``name`` for ``hex_bytes`` (hex, at least 4 bytes) given to ``host``'s clamd in a
    file of its own (root:clamav, 0640), returned once clamd finds those bytes; its path (for
    remove_signature). Raises RuntimeError when clamd does not within a minute."""
    folder = PurePosixPath(str(role_var(lab, host, "orthanc", "orthanc_clamd_conf"))).parent
    path = str(folder / f"pacslab-update-{name.lower()}.ndb")
    exec_in(lab, host, "sh", "-c", 'umask 027 && cat > "$1" && chgrp clamav "$1"', "sh", path, input=f"{name}:0:*:{hex_bytes}\n")
    _reloaded(lab, host, hex_bytes, "FOUND")
    return path


def remove_signature(lab: Lab, host: str, path: str, hex_bytes: str) -> None:
    """The file add_signature wrote removed, returned once clamd no longer finds ``hex_bytes``."""
    exec_in(lab, host, "rm", "-f", "--", path)
    _reloaded(lab, host, hex_bytes, "OK")
