"""What an intruder does on a compromised server, for the host watch to see (roles/orthanc
pacslab-hids: C-PRT-04, C-PRT-02 kept after the build, C-DET-03). The integration checks
(tests/integration/test_hids.py) and the benchmark (bench/detection_latency.py --only host-watch)
run the same steps.

Each step runs inside the host's container as ``user`` (runuser: a compromised service acts as its
own user, not as root) and returns the PID of what it left running, in the background for
``seconds``; the caller ends it (``end``).
"""

from __future__ import annotations

from ..topology import Lab
from .imaging import exec_in

# Runs with argv[1] the port to listen on every address, argv[2] one to listen on loopback only ("0": none).
LISTENER = """\
import socket, sys, time
held = []
for address, port in (("0.0.0.0", int(sys.argv[1])), ("127.0.0.1", int(sys.argv[2]))):
    if port:
        s = socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1); s.bind((address, port)); s.listen()
        held.append(s)
time.sleep(float(sys.argv[3]))
"""


def as_user(lab: Lab, host: str, user: str, *argv: str) -> str:
    """``argv`` run in ``host``'s container as ``user``; its stdout, stripped (imaging.exec_in's errors)."""
    return exec_in(lab, host, "runuser", "-u", user, "--", *argv, timeout=60).strip()


def in_background(lab: Lab, host: str, user: str, program: str, *args: str) -> int:
    """``program args...`` started in the background as ``user``, its output discarded; its PID."""
    return int(as_user(lab, host, user, "sh", "-c", '"$@" >/dev/null 2>&1 & echo $!', "sh", program, *args))


def dropped_copy(lab: Lab, host: str, path: str, user: str, seconds: int = 60) -> int:
    """A copy of the packaged sleep written to ``path`` (a file no package installed, as a dropped tool
    would be) and run for ``seconds``; its PID."""
    as_user(lab, host, user, "cp", "/usr/bin/sleep", path)
    return in_background(lab, host, user, path, str(seconds))


def listener(lab: Lab, host: str, port: int, user: str, loopback_port: int = 0, seconds: int = 60) -> int:
    """The packaged python3 listening on TCP ``port`` on every address (a back door) and, if given,
    on ``loopback_port`` on 127.0.0.1 only (a local helper no other host reaches), for ``seconds``; its PID."""
    return in_background(lab, host, user, "python3", "-c", LISTENER, str(port), str(loopback_port), str(seconds))


def end(lab: Lab, host: str, *pids: int, remove: str = "") -> None:
    """The processes ended (as root; one already gone is no error) and the file ``remove``, if named, removed."""
    exec_in(lab, host, "sh", "-c", 'f=$1; shift; kill "$@" 2>/dev/null; [ -z "$f" ] || rm -f -- "$f"', "sh", remove, *map(str, pids), timeout=60)
