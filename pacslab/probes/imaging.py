"""Probes of the imaging core, run inside lab containers (the source address is the device's own).

Each helper drives a real peer: dicomsim.py on a DICOM node (pynetdicom associations over the
node's own TLS identity), orders.py on the order-entry station, Orthanc's REST API through its HTTPS
front (stunnel) with the lab's generated credentials, the CA tool on ``ca``.
"""

from __future__ import annotations

import base64
import json
import re
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

from ..docker import docker
from ..redact import redact
from ..topology import REPO_ROOT, Lab

T = TypeVar("T")
DICOMSIM = "/usr/local/lib/pacslab/dicomsim.py"
ORDERS = "/usr/local/lib/pacslab/orders.py"
ADMIN = "pacslab-admin"


def _json(text: str) -> Any:
    lines = [ln for ln in text.splitlines() if ln.strip()]
    if not lines:
        raise RuntimeError("no output")
    return json.loads(lines[-1])


def exec_in(lab: Lab, host: str, *argv: str, timeout: float = 180, input: str | None = None,
            check: bool | tuple[int, ...] = True) -> str:
    """Run ``argv`` inside ``host``'s container (stdin from ``input``); its stdout.

    ``check``: True accepts exit code 0 only, False any, a tuple the exit codes that are answers
    (orders.py send: 0 accepted, 1 refused). Raises RuntimeError on any other. The message names the host,
    the program (argv[0] only: arguments may be secrets) and its exit code, with the tail of its
    stderr, every known lab secret redacted (pacslab.redact). Pass credentials on stdin, never in
    argv: a container's argv is visible to every process in it.
    """
    proc = docker("exec", "-i", lab.container_name(host), *argv, check=False, timeout=timeout, input=input)
    answers = (0,) if check is True else () if check is False else check
    if answers and proc.returncode not in answers:
        raise RuntimeError(f"{host}: {argv[0]} exited {proc.returncode}: {redact(proc.stderr.strip()[-800:])}")
    return proc.stdout


def dicomsim(lab: Lab, host: str, *args: str, timeout: float = 180) -> dict[str, Any]:
    """Run one dicomsim command on a DICOM node; its JSON result."""
    result: dict[str, Any] = _json(exec_in(lab, host, "python3", DICOMSIM, *args, timeout=timeout))
    return result


def send_order(
    lab: Lab, sender: str, accession: str, station: str, modality: str, patient: str, patient_id: str, *extra: str,
) -> dict[str, Any]:
    """An HL7 order (ORM^O01) from the order-entry host ``sender`` for the station's AE title; extra
    arguments pick another client certificate. The answer: {"ack": "AA", ...}, or, when the RIS
    refuses the connection, {"ack": "", "error": ..., "error_type": "SSLError", "tls_alert": "unknown-ca"}
    (error_type names the exception; tls_alert the alert the RIS sent, or None)."""
    out = exec_in(
        lab, sender, "python3", ORDERS, "send", "--patient-id", patient_id, "--patient-name", patient,
        "--accession", accession, "--modality", modality, "--station", station, *extra, check=(0, 1),
    )  # exit 1 on a refusal (AE/AR, or the TLS front's): the JSON says which, and the caller asserts it
    result: dict[str, Any] = _json(out)
    return result


def send_raw(lab: Lab, sender: str, messages: list[bytes], connections: str = "one") -> list[dict[str, Any]]:
    """HL7 messages as bytes from ``sender`` (orders.py send-raw): all on one connection, or with
    connections="each" each on its own, all at once. One ACK per message, as orders.read_ack reads it
    ({"ack": "AE", "control_id": ..., "error_code": "100", "error": ...})."""
    batch = json.dumps({"messages": [base64.b64encode(m).decode() for m in messages], "connections": connections})
    result: list[dict[str, Any]] = _json(exec_in(lab, sender, "python3", ORDERS, "send-raw", input=batch))
    return result


def admin_password(lab: Lab, host: str) -> str:
    return (REPO_ROOT / ".pacslab" / lab.name / "secrets" / f"orthanc-{host}").read_text().split()[0]


def curl_user(lab: Lab, host: str) -> str:
    """curl configuration (for ``curl -K -``, fed on stdin) holding ``host``'s REST credentials, so
    that the password never appears in an argv."""
    return f'user = "{ADMIN}:{admin_password(lab, host)}"\n'


def orthanc_call(lab: Lab, host: str, path: str, method: str = "GET", body: str | None = None, max_time: int = 60,
                 authenticated: bool = True) -> tuple[int, str]:
    """One Orthanc REST request through the host's HTTPS front, from inside the host (loopback, the
    lab root as trust), answered within ``max_time`` seconds: (HTTP status, body). The lab's REST
    administrator's credentials go to curl on stdin; ``authenticated`` False sends none. Raises
    RuntimeError when curl gets no answer (exec_in's message)."""
    argv = ["curl", "-sS", "--max-time", str(max_time), "--cacert", "/etc/pacslab/tls/root.pem", "--resolve", f"{host}:443:127.0.0.1",
            "-X", method, "-w", "\n%{http_code}"]
    argv += ["-K", "-"] if authenticated else []
    argv += ["--data-binary", body] if body is not None else []
    out = exec_in(lab, host, *argv, f"https://{host}{path}", timeout=max_time + 30, input=curl_user(lab, host) if authenticated else "")
    answer, _, status = out.rpartition("\n")
    return int(status), answer


def orthanc(lab: Lab, host: str, path: str, method: str = "GET", body: str | None = None, raw: bool = False,
            max_time: int = 60) -> Any:
    """Orthanc REST through its HTTPS front as the lab's REST administrator (orthanc_call): the
    body, parsed as JSON unless ``raw``, whatever the status."""
    _, answer = orthanc_call(lab, host, path, method, body, max_time)
    return answer if raw else json.loads(answer)


def rescan(lab: Lab, host: str, max_time: int = 60, busy_for: float = 600) -> dict[str, Any]:
    """One whole pass of the Orthanc plugin's archive rescan (POST /pacslab/rescan, roles/orthanc,
    C-DET-02), answered within ``max_time`` seconds: {"scanned": n, "found": [instance ids],
    "failed": [instance ids], "complete": bool}. While another pass runs (the hourly one) the
    plugin answers 409 and queues nothing: asked again every 2 s for at most ``busy_for`` seconds,
    then RuntimeError."""
    deadline = time.monotonic() + busy_for
    while True:
        status, body = orthanc_call(lab, host, "/pacslab/rescan", "POST", "", max_time)
        if status != 409:
            if status != 200:
                raise RuntimeError(f"POST /pacslab/rescan on {host}: HTTP {status}: {body[:200]}")
            answer: dict[str, Any] = json.loads(body)
            return answer
        if time.monotonic() > deadline:
            raise RuntimeError(f"POST /pacslab/rescan on {host}: another pass still ran after {busy_for:.0f} s: {body[:200]}")
        time.sleep(2)


def instance_count(lab: Lab, host: str) -> int:
    return int(orthanc(lab, host, "/statistics")["CountInstances"])


# The lab plugin's event log on an Orthanc host (roles/orthanc): one JSON record per line.
ORTHANC_EVENTS = "/var/log/pacslab/orthanc-events.json"


def orthanc_events(lab: Lab, host: str, since: int = 0) -> list[dict[str, Any]]:
    """The plugin's event records on ``host`` after the first ``since`` (whole records only: a line
    the plugin is still writing is not one yet)."""
    return [json.loads(line) for line in read_from(lab, host, ORTHANC_EVENTS).split("\n")[since:-1]]


def orthanc_event_count(lab: Lab, host: str) -> int:
    """How many whole records the plugin's event log on ``host`` holds (``since`` for orthanc_events)."""
    return read_from(lab, host, ORTHANC_EVENTS).count("\n")


def instance_ids(lab: Lab, host: str) -> set[str]:
    """The Orthanc ids of every instance ``host`` holds."""
    return set(orthanc(lab, host, "/instances"))


def instance_origin(lab: Lab, host: str, instance: str) -> str:
    """How ``instance`` arrived, as Orthanc recorded it with the instance (its "Origin" metadata):
    "DicomProtocol" (C-STORE), "RestApi", "Plugins", "Lua", "WebDav" or "Unknown"."""
    return str(orthanc(lab, host, f"/instances/{instance}/metadata/Origin", raw=True)).strip()


def find_study(lab: Lab, host: str, accession: str) -> list[str]:
    body = json.dumps({"Level": "Study", "Query": {"AccessionNumber": accession}})
    ids: list[str] = orthanc(lab, host, "/tools/find", "POST", body)
    return ids


def study_instances(lab: Lab, host: str, study: str) -> list[dict[str, Any]]:
    """Each instance: Orthanc id, SOP Instance UID, stored MD5 of the DICOM attachment."""
    rows = []
    for inst in orthanc(lab, host, f"/studies/{study}/instances"):
        md5 = orthanc(lab, host, f"/instances/{inst['ID']}/attachments/dicom/md5", raw=True).strip()
        rows.append({"id": inst["ID"], "sop_instance_uid": inst["MainDicomTags"]["SOPInstanceUID"], "md5": md5})
    return rows


def wait_for(what: str, fn: Callable[[], T | None], timeout: float = 120, every: float = 2) -> T:
    deadline = time.monotonic() + timeout
    while True:
        value = fn()
        if value:
            return value
        if time.monotonic() > deadline:
            raise TimeoutError(f"waited {timeout:.0f} s for {what}")
        time.sleep(every)


def ca_host(lab: Lab) -> str:
    """The host that runs the lab CA: the deployed host of the group pki_servers."""
    hosts = [h.name for h in lab.group("pki_servers") if h.deployed]
    if len(hosts) != 1:
        raise LookupError(f"expected one deployed host in group pki_servers, found {hosts}")
    return hosts[0]


def ca(lab: Lab, *args: str, input: str | None = None) -> Any:
    """Run the CA tool (pacslab/ca.py) on the lab's CA host; its JSON answer."""
    return _json(exec_in(lab, ca_host(lab), "pacslab-ca", *args, input=input))


def copy_into(lab: Lab, host: str, path: str, content: str) -> None:
    exec_in(lab, host, "sh", "-c", f"cat > {path}", input=content)


def read_from(lab: Lab, host: str, path: str) -> str:
    return exec_in(lab, host, "cat", path)


def received_fingerprints(lab: Lab, host: str, folder: str = "/var/lib/pacslab/received") -> list[dict[str, str]]:
    """Fingerprints (pixel MD5 and key tags) of the Part 10 files a workstation received."""
    script = (
        "import json,sys,pathlib;sys.path.insert(0,'/usr/local/lib/pacslab');import dicomsim,pydicom;"
        f"print(json.dumps([dicomsim.fingerprint(pydicom.dcmread(p)) for p in sorted(pathlib.Path('{folder}').glob('*.dcm'))]))"
    )
    rows: list[dict[str, str]] = _json(exec_in(lab, host, "python3", "-c", script))
    return rows


# The kernel's capture buffer, KiB (libpcap's TPACKET_V3 ring of blocks, filled packet after packet):
# the default 2 MB lost packets on the fw even when little crossed it (1 to 548 per capture, seen),
# and a capture that lacks packets proves no absence.
CAPTURE_BUFFER_KIB = 65536
# libpcap hands a block of that ring over once it is full or after its timeout (tcpdump's 1000 ms):
# a capture is stopped that long after the last packet it must hold, and a little more.
CAPTURE_SETTLE = 1.5


@dataclass(frozen=True)
class Capture:
    """A pcap's bytes and the packets the kernel dropped while it ran (tcpdump's count; None when
    tcpdump did not say). A check that a capture does not hold something asserts dropped == 0 too."""
    data: bytes
    dropped: int | None


def capture_start(lab: Lab, name: str, netns_of: str, image: str) -> None:
    """tcpdump in a container's network namespace (the fw sees every inter-zone link), on every
    interface, whole packets, with a CAPTURE_BUFFER_KIB buffer. Returns once tcpdump says it
    listens (a fixed 1.5 s once ended before it did), at most 30 s, else RuntimeError."""
    container = f"{lab.prefix}-capture-{name}"
    docker("rm", "-f", container, check=False)  # a capture a crashed run left behind
    docker(
        "run", "-d", "--name", container, "--label", f"pacslab.lab={lab.name}",
        "--network", f"container:{lab.container_name(netns_of)}", "--cap-add", "NET_RAW", "--cap-add", "NET_ADMIN",
        "--entrypoint", "tcpdump", image, "-i", "any", "-s", "0", "-U", "-B", str(CAPTURE_BUFFER_KIB), "-w", f"/tmp/{name}.pcap",
    )
    deadline = time.monotonic() + 30
    while "listening on" not in docker("logs", container, check=False).stderr:
        if time.monotonic() > deadline:
            docker("rm", "-f", container, check=False)
            raise RuntimeError(f"tcpdump in {netns_of}'s network did not start capturing within 30 s")
        time.sleep(0.2)
    time.sleep(0.5)


def capture_stop(lab: Lab, name: str, dest: Path) -> Capture:
    """Stop the capture ``name`` CAPTURE_SETTLE seconds from now (tcpdump ends on SIGINT and counts
    what the kernel dropped), copy its pcap to ``dest`` and remove its container, whatever fails."""
    container = f"{lab.prefix}-capture-{name}"
    try:
        time.sleep(CAPTURE_SETTLE)
        docker("kill", "-s", "INT", container, check=False)
        docker("wait", container, check=False, timeout=30)
        said = docker("logs", container, check=False).stderr
        docker("cp", f"{container}:/tmp/{name}.pcap", str(dest), check=False)
    finally:
        docker("rm", "-f", container, check=False)
    return Capture(dest.read_bytes() if dest.is_file() else b"", kernel_drops(said))


def kernel_drops(said: str) -> int | None:
    """The packets tcpdump says the kernel dropped ("N packet(s) dropped by kernel", on its stderr as
    it ends), None when it says nothing of it."""
    found = re.search(r"^(\d+) packets? dropped by kernel$", said, re.MULTILINE)
    return int(found.group(1)) if found else None
