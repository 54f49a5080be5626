"""DICOM nodes of the lab: modality simulators, the workstation and the probes the checks use.

roles/dicom_node installs this file on modalities, workstations and the overlay gateway as
/usr/local/lib/pacslab/dicomsim.py, with pynetdicom 3.0.4 and pydicom 3.0.2 from the image.
Every command prints one JSON object, so tests and scenarios read outcomes, not log text: each
association says its ``outcome`` (established, rejected with the A-ASSOCIATE-RJ fields of PS3.8
9.3.4, tls-alert with the alert's name, aborted, closed, timeout, refused; see refusal()).

Services (PS3.4): Verification (C-ECHO), Storage (C-STORE), Study Root Query/Retrieve (C-FIND,
C-MOVE, C-GET) and Modality Worklist (C-FIND). Transport: DICOM TLS (PS3.15 B.1, the
"Basic TLS Secure Transport Connection Profile"), mutual, with the node's certificate; the peer is
checked against the node's trust bundle (the anchors of its enrolled peers) and its address.

Synthetic data only: patients come from the HL7 orders of the lab (``PACSLAB^...`` names); pixel
data is a computed phantom, never a real image.
"""

from __future__ import annotations

import argparse
import functools
import hashlib
import json
import logging
import math
import os
import re
import socket
import ssl
import struct
import sys
import threading
import time
from pathlib import Path
from typing import Any

from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import ExplicitVRLittleEndian, generate_uid
from pynetdicom import AE, build_role, evt
from pynetdicom.association import Association
from pynetdicom.sop_class import (  # type: ignore[attr-defined]
    CTImageStorage,
    ModalityWorklistInformationFind,
    MRImageStorage,
    StudyRootQueryRetrieveInformationModelFind,
    StudyRootQueryRetrieveInformationModelGet,
    StudyRootQueryRetrieveInformationModelMove,
    Verification,
)

log = logging.getLogger("dicomsim")
CONFIG = Path(os.environ.get("PACSLAB_DICOM_CONFIG", "/etc/pacslab/dicom.json"))
STATE = Path(os.environ.get("PACSLAB_DICOM_STATE", "/var/lib/pacslab"))
UID_ROOT = "1.2.826.0.1.3680043.10.1077."  # lab-local UIDs (pydicom's registered root + lab suffix)
STORAGE = {"CT": CTImageStorage, "MR": MRImageStorage}
GEOMETRY = {"CT": (512, 512, 0.7, 2.5), "MR": (256, 256, 0.9, 5.0)}  # rows, cols, pixel mm, slice mm


# ---------------------------------------------------------------------------------------------
# Configuration and TLS


def load_config(path: Path = CONFIG) -> dict[str, Any]:
    return json.loads(path.read_text()) if path.is_file() else {}


VERDICT_WAIT = 0.5  # seconds a probe waits, after its handshake, for the server's verdict on its certificate


class VerdictSocket(ssl.SSLSocket):
    """A client socket for negative probes: after its handshake it listens briefly before the
    caller writes. In TLS 1.3 the server judges the client certificate after the client's
    handshake is done; writing at once can lose its alert to the server's close. A DICOM server
    never speaks first, so whatever arrives in that time is the verdict: an alert (raised as
    ssl.SSLError), a close without one (ssl.SSLEOFError), or nothing (accepted)."""

    def do_handshake(self, block: bool = False) -> None:
        super().do_handshake(block)
        previous = self.gettimeout()
        self.settimeout(VERDICT_WAIT)
        try:
            early = self.recv(1)
        except TimeoutError:
            return  # only session tickets: the server accepted the certificate
        finally:
            self.settimeout(previous)
        if not early:
            raise ssl.SSLEOFError(8, "the server closed the TLS session without an alert")
        raise ssl.SSLError(1, "the server spoke first: not a DICOM acceptor")


def client_context(cfg: dict[str, Any], mode: str = "device", tls_version: str | None = None) -> ssl.SSLContext:
    """A TLS client context (SERVER_AUTH purpose: it verifies the server).

    mode: device (the node's certificate), nocert (no client certificate), or cert:<crt>:<key>
    (another certificate, for negative checks). tls_version pins TLSv1_1 etc. for probes.
    Negative probes (any mode but device, or a pinned version) wait for the server's verdict
    (VerdictSocket) so that its alert is always the one reported.
    """
    ctx = ssl.create_default_context(ssl.Purpose.SERVER_AUTH, cafile=cfg["tls"]["trusted"])
    if mode != "device" or tls_version:
        ctx.sslsocket_class = VerdictSocket
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    if mode == "device":
        ctx.load_cert_chain(cfg["tls"]["cert"], cfg["tls"]["key"])
    elif mode.startswith("cert:"):
        _, crt, key = mode.split(":", 2)
        ctx.load_cert_chain(crt, key)
    if tls_version:
        version = ssl.TLSVersion[tls_version]
        ctx.set_ciphers("ALL:@SECLEVEL=0")  # let the probe really offer an old version; the server must refuse
        ctx.minimum_version = ctx.maximum_version = version
    return ctx


HANDSHAKE_TIMEOUT = 10.0  # seconds an SCP waits for a peer's next handshake bytes before it drops the connection


class HandshakeInItsThread(ssl.SSLContext):
    """pynetdicom's server wraps each accepted socket in the one thread that accepts connections
    (AssociationServer.get_request): with the handshake done there, one peer that sent the first bytes
    of a handshake and then nothing kept every other peer from connecting (issue 10, item 9). Here the
    handshake is deferred to the association's own thread (its first read) and bounded by
    HANDSHAKE_TIMEOUT seconds of silence."""

    def wrap_socket(self, sock: socket.socket, server_side: bool = False, do_handshake_on_connect: bool = True,  # type: ignore[override]
                    suppress_ragged_eofs: bool = True, server_hostname: str | None = None, session: ssl.SSLSession | None = None
                    ) -> ssl.SSLSocket:
        sock.settimeout(HANDSHAKE_TIMEOUT)
        return super().wrap_socket(sock, server_side=server_side, do_handshake_on_connect=not server_side and do_handshake_on_connect,
                                   suppress_ragged_eofs=suppress_ragged_eofs, server_hostname=server_hostname, session=session)


def server_context(cfg: dict[str, Any]) -> ssl.SSLContext:
    """Mutual TLS for an SCP: a client certificate is required and checked against the bundle; TLS
    1.2 with the suites of the node's config (``tls.tls12_ciphers``, OpenSSL's spelling: the lab's TLS
    policy, as the stunnel fronts) or 1.3; each handshake happens in its association's thread,
    bounded in time (HandshakeInItsThread). KeyError when the config names no suites."""
    ctx = HandshakeInItsThread(ssl.PROTOCOL_TLS_SERVER)
    ctx.load_verify_locations(cafile=cfg["tls"]["trusted"])
    ctx.verify_mode = ssl.CERT_REQUIRED
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    ctx.set_ciphers(cfg["tls"]["tls12_ciphers"])
    ctx.load_cert_chain(cfg["tls"]["cert"], cfg["tls"]["key"])
    return ctx


def _peer(cfg: dict[str, Any], name: str) -> dict[str, Any]:
    peer: dict[str, Any] = cfg["peers"][name]
    return peer


# ---------------------------------------------------------------------------------------------
# Synthetic studies


@functools.lru_cache(maxsize=32)
def phantom_slice(rows: int, cols: int, index: int) -> bytes:
    """A 16-bit signed phantom: an ellipse whose inner disc moves with the slice (a realistic CT
    range: air -1000, soft tissue 40, bone-like 700), as little-endian bytes."""
    cy, cx = rows / 2, cols / 2
    inner = rows / 8 + (index % 7) * rows / 64
    row_values: list[bytes] = []
    for y in range(rows):
        dy = (y - cy) / (rows * 0.42)
        values = []
        for x in range(cols):
            dx = (x - cx) / (cols * 0.36)
            if dx * dx + dy * dy > 1:
                values.append(-1000)
            elif math.hypot(x - cx * 1.2, y - cy) < inner:
                values.append(700)
            else:
                values.append(40 + ((x * 7 + y * 3 + index) % 23))
        row_values.append(struct.pack(f"<{cols}h", *values))
    return b"".join(row_values)


def make_series(order: dict[str, str], modality: str, station_ae: str, images: int) -> list[Dataset]:
    """One series for a worklist item: Patient, Study (keeps the accession and Study UID), Series."""
    rows, cols, pixel_mm, slice_mm = GEOMETRY[modality]
    series_uid = generate_uid(UID_ROOT)
    now = time.strftime("%Y%m%d"), time.strftime("%H%M%S")
    datasets = []
    for i in range(images):
        ds = Dataset()
        ds.file_meta = FileMetaDataset()
        ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
        ds.file_meta.MediaStorageSOPClassUID = STORAGE[modality]
        ds.SOPClassUID = STORAGE[modality]
        ds.SOPInstanceUID = generate_uid(UID_ROOT)
        ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
        if order.get("charset"):  # a name beyond ASCII is stored in the character set the worklist gave it
            ds.SpecificCharacterSet = order["charset"]
        ds.PatientName = order["patient_name"]
        ds.PatientID = order["patient_id"]
        ds.PatientBirthDate = order.get("birth_date", "")
        ds.PatientSex = order.get("sex", "O")
        ds.AccessionNumber = order["accession"]
        ds.StudyInstanceUID = order["study_uid"]
        ds.StudyID = order["accession"][-16:]
        ds.StudyDate, ds.StudyTime = now
        ds.StudyDescription = order.get("procedure", "")
        ds.SeriesInstanceUID = series_uid
        ds.SeriesNumber = 1
        ds.SeriesDescription = f"pacslab synthetic {modality}"
        ds.Modality = modality
        ds.StationName = station_ae
        ds.Manufacturer = "pacslab"
        ds.InstanceNumber = i + 1
        ds.ImagePositionPatient = [-(cols * pixel_mm) / 2, -(rows * pixel_mm) / 2, i * slice_mm]
        ds.ImageOrientationPatient = [1, 0, 0, 0, 1, 0]
        ds.SliceThickness = slice_mm
        ds.PixelSpacing = [pixel_mm, pixel_mm]
        ds.Rows, ds.Columns = rows, cols
        ds.SamplesPerPixel = 1
        ds.PhotometricInterpretation = "MONOCHROME2"
        ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 16, 15, 1
        if modality == "CT":
            ds.RescaleIntercept, ds.RescaleSlope, ds.KVP = 0, 1, 120
        else:
            ds.MagneticFieldStrength, ds.EchoTime, ds.RepetitionTime = 1.5, 90, 4000
        ds.PixelData = phantom_slice(rows, cols, i)
        datasets.append(ds)
    return datasets


PRIVATE_CREATOR = "PACSLAB"  # (0009,0010): the private block of the lab's test payloads (PS3.5 7.8.1)


def carry(ds: Dataset, payload: bytes) -> None:
    """Put ``payload`` in ``ds`` as a private OB element, (0009,1000) in the block PACSLAB reserves:
    what a compromised modality would slip into an object (C-DET-02's checks)."""
    ds.private_block(0x0009, PRIVATE_CREATOR, create=True).add_new(0x00, "OB", payload)


def fingerprint(ds: Dataset) -> dict[str, str]:
    """What must survive every hop unchanged (C-DAT-03): pixel data and key tags."""
    return {
        "sop_instance_uid": str(ds.SOPInstanceUID),
        "pixel_md5": hashlib.md5(bytes(ds.PixelData)).hexdigest(),  # noqa: S324 (an identity check, not security)
        "accession": str(ds.get("AccessionNumber", "")),
        "patient_id": str(ds.get("PatientID", "")),
        "patient_name": str(ds.get("PatientName", "")),
        "study_uid": str(ds.get("StudyInstanceUID", "")),
    }


# ---------------------------------------------------------------------------------------------
# Associations


def _ae(cfg: dict[str, Any], calling: str | None) -> AE:
    ae = AE(ae_title=calling or cfg["ae_title"])
    ae.acse_timeout = ae.dimse_timeout = ae.network_timeout = 20
    ae.connection_timeout = 10
    return ae


# A-ASSOCIATE-RJ fields (PS3.8 9.3.4, Table 9-21): result, source, and the reason per source.
RJ_RESULTS = {1: "rejected-permanent", 2: "rejected-transient"}
RJ_SOURCES = {1: "service-user", 2: "service-provider-acse", 3: "service-provider-presentation"}
RJ_REASONS = {
    1: {1: "no-reason-given", 2: "application-context-name-not-supported", 3: "calling-AE-title-not-recognized",
        7: "called-AE-title-not-recognized"},
    2: {1: "no-reason-given", 2: "protocol-version-not-supported"},
    3: {1: "temporary-congestion", 2: "local-limit-exceeded"},
}
# A-ABORT source (PS3.8 9.3.8, Table 9-26).
ABORT_SOURCES = {0: "service-user", 1: "reserved", 2: "service-provider"}
# OpenSSL reports a TLS alert received from the peer as <version>_ALERT_<description> (RFC 8446 6.2).
ALERT_REASON = re.compile(r"^(?:SSLV3|TLSV1|TLSV13)_ALERT_(?P<alert>[A-Z_]+)$")
OUTCOMES = ("established", "rejected", "tls-alert", "tls-error", "aborted", "closed", "timeout", "refused", "unreachable")


class _Observer(logging.Handler):
    """Keeps what pynetdicom logs while it fails: it catches the transport's exceptions itself
    (OSError, ssl.SSLError) and reports them only through its log, with the exception attached
    (logger.exception) for TLS errors and for errors while reading a PDU."""

    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.messages: list[str] = []
        self.errors: list[BaseException] = []

    def emit(self, record: logging.LogRecord) -> None:
        thread = threading.current_thread()
        assoc = thread if isinstance(thread, Association) else getattr(thread, "assoc", None)
        if isinstance(assoc, Association) and assoc.is_acceptor:
            return  # an SCP of this process (a storage service, a test's peer): not the probe's association
        self.messages.append(record.getMessage())
        if record.exc_info and record.exc_info[1] is not None:
            self.errors.append(record.exc_info[1])


def tls_failure(exc: ssl.SSLError) -> dict[str, Any]:
    """An ssl.SSLError as data: the alert the peer sent (RFC 8446 6.2 description, e.g.
    certificate-required, unknown-ca) or, for an error detected locally, the OpenSSL reason."""
    reason = str(exc.reason or type(exc).__name__)
    m = ALERT_REASON.match(reason)
    return {
        "outcome": "tls-alert" if m else "tls-error",
        "tls_alert": m["alert"].lower().replace("_", "-") if m else None,
        "tls_reason": reason,
        "error": f"{type(exc).__name__}: {exc}",
    }


def refusal(seen: _Observer, pdus: list[Any], connected: bool) -> dict[str, Any]:
    """Why an association was not established, as one of OUTCOMES with its details.

    rejected: A-ASSOCIATE-RJ received, with result, source and reason (PS3.8 9.3.4);
    tls-alert / tls-error: the TLS handshake or the first read failed (ssl.SSLError);
    aborted: A-ABORT received (PS3.8 9.3.8); timeout: no TCP connection, or no answer, in time;
    refused: TCP reset; unreachable: another connect error; closed: the peer closed the connection
    without an A-ASSOCIATE response (``reset``: it reset it; ``unknown_pdu``: the first byte when it
    sent something that is not a PDU, e.g. 0x15, a TLS alert record). A reset that the kernel reports
    as the connect's own error (ECONNRESET: the peer accepted, then reset the connection before the
    connect returned, or during the TLS handshake) is the peer's cut too: closed, reset, with
    ``phase`` "connect".
    """
    rj = next((p for p in pdus if type(p).__name__ == "A_ASSOCIATE_RJ"), None)
    if rj is not None:
        result, source, reason = int(rj.result), int(rj.source), int(rj.reason_diagnostic)
        return {
            "outcome": "rejected",
            "reject": {
                "result": result, "source": source, "reason": reason,
                "result_name": RJ_RESULTS.get(result, "unknown"), "source_name": RJ_SOURCES.get(source, "unknown"),
                "reason_name": RJ_REASONS.get(source, {}).get(reason, "reserved"),
            },
        }
    tls_errors = [e for e in seen.errors if isinstance(e, ssl.SSLError)]
    if tls_errors:
        return tls_failure(tls_errors[0])
    abort = next((p for p in pdus if type(p).__name__ == "A_ABORT_RQ"), None)
    if abort is not None:
        source = int(abort.source)
        return {"outcome": "aborted", "abort": {"source": source, "source_name": ABORT_SOURCES.get(source, "unknown"),
                                                "reason": int(abort.reason_diagnostic)}}
    errors = [e for e in seen.errors if isinstance(e, OSError)]
    connect_error = next((m.split(": ", 1)[1] for m in seen.messages if m.startswith("TCP Initialisation Error: ")), None)
    if not connected:
        if connect_error is not None and connect_error.endswith("timed out"):
            return {"outcome": "timeout", "phase": "connect", "error": connect_error}
        if connect_error is not None and "Connection refused" in connect_error:
            return {"outcome": "refused", "error": connect_error}
        if connect_error is not None and "Connection reset by peer" in connect_error:
            return {"outcome": "closed", "pdus_received": [], "reset": True, "phase": "connect", "error": f"ConnectionResetError: {connect_error}"}
        return {"outcome": "unreachable", "error": connect_error}
    if any(m.startswith("ACSE timeout") for m in seen.messages) or any(isinstance(e, TimeoutError) for e in errors):
        return {"outcome": "timeout", "phase": "association"}
    out: dict[str, Any] = {
        "outcome": "closed", "pdus_received": [type(p).__name__ for p in pdus], "reset": any(isinstance(e, ConnectionResetError) for e in errors),
    }
    unknown = next((m for m in seen.messages if m.startswith("Unknown PDU type received")), None)
    if unknown:
        out["unknown_pdu"] = unknown.rsplit(" ", 1)[-1].strip("'")
    if errors:
        out["error"] = f"{type(errors[0]).__name__}: {errors[0]}"
    return out


def associate(
    cfg: dict[str, Any], peer: str, contexts: list[str], calling: str | None = None, called: str | None = None, tls: str | None = None,
    tls_version: str | None = None, host: str | None = None,
) -> tuple[Any, dict[str, Any]]:
    """Open an association; the result says which of OUTCOMES happened and why (see refusal())."""
    target = _peer(cfg, peer)
    # The legacy device's configuration says cleartext, and so does a peer's that takes cleartext DICOM.
    tls = tls or target.get("transport") or cfg.get("transport", "device")
    ae = _ae(cfg, calling)
    for c in contexts:
        ae.add_requested_context(c)
    addr, port = host or target["host"], int(target["port"])
    pdus: list[Any] = []
    opened: list[bool] = []
    kwargs: dict[str, Any] = {
        "ae_title": called or target["ae_title"],
        "evt_handlers": [
            (evt.EVT_PDU_RECV, lambda event: pdus.append(event.pdu)),
            (evt.EVT_CONN_OPEN, lambda event: opened.append(True)),
        ],
    }
    if tls != "cleartext":
        kwargs["tls_args"] = (client_context(cfg, tls, tls_version), target["host"])
    seen = _Observer()
    pnd_log = logging.getLogger("pynetdicom")
    pnd_log.addHandler(seen)
    try:
        assoc = ae.associate(addr, port, **kwargs)
    finally:
        pnd_log.removeHandler(seen)
    # What the peer sends later (an A-ABORT in answer to a request) is read by ended(); pynetdicom's
    # Association declares no such attribute, hence setattr.
    setattr(assoc, "pacslab_pdus", pdus)  # noqa: B010
    outcome = {
        "peer": peer,
        "established": assoc.is_established,
        "rejected": assoc.is_rejected,
        "aborted": assoc.is_aborted,
        "tls": tls,
    }
    if assoc.is_established:
        outcome["outcome"] = "established"
        if tls != "cleartext":
            sock = assoc.dul.socket.socket if assoc.dul.socket else None
            outcome["tls_version"] = sock.version() if isinstance(sock, ssl.SSLSocket) else None
    else:
        outcome.update(refusal(seen, pdus, bool(opened)))
    return assoc, outcome


def ended(assoc: Any, out: dict[str, Any]) -> dict[str, Any]:
    """After the requests of an established association: whether the peer aborted it (an A-ABORT
    in answer to a request it refuses, PS3.8 9.3.8) instead of answering and releasing."""
    abort = next((p for p in getattr(assoc, "pacslab_pdus", []) if type(p).__name__ == "A_ABORT_RQ"), None)
    out["aborted"] = bool(assoc.is_aborted)
    if abort is not None:
        source = int(abort.source)
        out["abort"] = {"source": source, "source_name": ABORT_SOURCES.get(source, "unknown"), "reason": int(abort.reason_diagnostic)}
    return out


def echo(cfg: dict[str, Any], peer: str, **kw: Any) -> dict[str, Any]:
    assoc, out = associate(cfg, peer, [Verification], **kw)
    if assoc.is_established:
        status = assoc.send_c_echo()
        out["status"] = f"0x{status.Status:04X}" if status else None
        assoc.release()
    return out


# Outcomes of an association attempt after which a modality tries again: the peer was not there
# (restarting: nothing listens), or the association it had accepted broke without an answer. After
# such a break, a TLS front that closes the connection without a reset also counts (the service
# behind it is restarting); before one, that close is the peer's answer (Orthanc closes on a SOP
# class it does not take). A rejection, an A-ABORT, a TLS alert or a reset is never retried, but a
# reset the connect itself reported (phase "connect": also one during the TLS handshake, as a front
# that is restarting may give): that one was tried again before it was told from an unreachable peer.
RETRY_OUTCOMES = ("refused", "unreachable", "established")
RETRIES, BACKOFF = 5, 1.0  # more associations after the first; seconds before the first retry, doubling (1, 2, 4, 8, 16)


def _retry(out: dict[str, Any], attempts: list[dict[str, Any]]) -> bool:
    broke = any(a["outcome"] == "established" and a.get("error") for a in attempts)
    last = attempts[-1]["outcome"]
    return last in RETRY_OUTCOMES or (last == "closed" and (out.get("phase") == "connect" or (out.get("reset") is False and broke)))


def _peer_aborted(assoc: Any) -> bool:
    return any(type(p).__name__ == "A_ABORT_RQ" for p in getattr(assoc, "pacslab_pdus", []))


def store(cfg: dict[str, Any], peer: str, datasets: list[Dataset], retries: int = RETRIES, backoff: float = BACKOFF,
          **kw: Any) -> dict[str, Any]:
    """C-STORE the datasets as a modality does (PS3.4 B.2): an instance is done once the peer answered
    it with a status (0x0000 in ``stored``, any other in ``failed``: the peer's answer, never re-sent;
    so is a SOP class the peer accepted no presentation context for: ``failed`` with status None).
    An instance left without an answer (the association broke, the peer went away) is kept and sent
    again on a new association, after ``backoff`` seconds, doubling, at most ``retries`` more times;
    a rejection, an A-ABORT or a TLS alert ends the attempts. The result: the last association's
    outcome (associate()), ``stored``/``failed`` per instance with its status, ``unacknowledged`` (the
    instances never answered), ``attempts`` (per association: outcome, sent, acknowledged, error)."""
    contexts = sorted({str(ds.SOPClassUID) for ds in datasets})
    started = time.monotonic()
    pending = list(datasets)
    stored: list[dict[str, Any]] = []
    failed: list[dict[str, Any]] = []
    latency: list[float] = []
    attempts: list[dict[str, Any]] = []
    out: dict[str, Any] = {}
    for attempt in range(retries + 1):
        if attempt:
            time.sleep(backoff * 2 ** (attempt - 1))
        try:
            assoc, out = associate(cfg, peer, contexts, **kw)
        except Exception as exc:  # noqa: BLE001 (pynetdicom raised instead of reporting: recorded as the attempt's end)
            assoc, out = None, {"peer": peer, "established": False, "outcome": "closed", "error": f"{type(exc).__name__}: {exc}"}
        record: dict[str, Any] = {"outcome": out["outcome"], "sent": 0, "acknowledged": 0}
        if assoc is not None and assoc.is_established:
            for ds in list(pending):
                t0 = time.monotonic()
                try:
                    status = assoc.send_c_store(ds)
                except ValueError as exc:  # the peer accepted no presentation context for its SOP class: its answer
                    pending.remove(ds)
                    failed.append({**fingerprint(ds), "status": None, "error": str(exc)[:200]})
                    continue
                except Exception as exc:  # noqa: BLE001 (the association ended under it: "must be established")
                    record["error"] = f"{type(exc).__name__}: {exc}"
                    break
                record["sent"] += 1
                code = status.Status if status else None  # an empty status: no answer, the association ended
                if code is None:
                    record["error"] = "no answer: the association ended"
                    break
                latency.append(round((time.monotonic() - t0) * 1000, 2))
                pending.remove(ds)
                record["acknowledged"] += 1
                (stored if code == 0 else failed).append({**fingerprint(ds), "status": code})
            if assoc.is_established:
                assoc.release()
            if _peer_aborted(assoc):
                record["outcome"] = "aborted"
            ended(assoc, out)
        attempts.append(record)
        if not pending or not _retry(out, attempts):
            break
        log.warning("association %d to %s: %s; %d instances not acknowledged, retrying", attempt + 1, peer, record.get("error", record["outcome"]),
                    len(pending))
    out.update(stored=stored, failed=failed, unacknowledged=[fingerprint(ds) for ds in pending], attempts=attempts, latency_ms=latency)
    out["seconds"] = round(time.monotonic() - started, 3)
    out["bytes"] = sum(len(ds.PixelData) for ds in datasets)
    return out


def find_studies(cfg: dict[str, Any], peer: str, accession: str = "", **kw: Any) -> dict[str, Any]:
    assoc, out = associate(cfg, peer, [StudyRootQueryRetrieveInformationModelFind], **kw)
    out["matches"], out["statuses"] = [], []
    if assoc.is_established:
        query = Dataset()
        query.QueryRetrieveLevel = "STUDY"
        query.AccessionNumber = accession
        query.StudyInstanceUID = ""
        query.PatientName = ""
        query.NumberOfStudyRelatedInstances = ""
        for status, ident in assoc.send_c_find(query, StudyRootQueryRetrieveInformationModelFind):
            out["statuses"].append(f"0x{status.Status:04X}" if status else None)
            if status and status.Status in (0xFF00, 0xFF01) and ident is not None:
                out["matches"].append({"study_uid": str(ident.StudyInstanceUID), "accession": str(ident.get("AccessionNumber", ""))})
        assoc.release()
        ended(assoc, out)
    return out


def move(cfg: dict[str, Any], peer: str, study_uid: str, destination: str, **kw: Any) -> dict[str, Any]:
    assoc, out = associate(cfg, peer, [StudyRootQueryRetrieveInformationModelMove], **kw)
    out["statuses"] = []
    if assoc.is_established:
        query = Dataset()
        query.QueryRetrieveLevel = "STUDY"
        query.StudyInstanceUID = study_uid
        for status, _ in assoc.send_c_move(query, destination, StudyRootQueryRetrieveInformationModelMove):
            if status:
                out["statuses"].append(f"0x{status.Status:04X}")
                out["completed"] = int(status.get("NumberOfCompletedSuboperations", 0) or 0)
                out["failed"] = int(status.get("NumberOfFailedSuboperations", 0) or 0)
        assoc.release()
        ended(assoc, out)
    return out


def get(cfg: dict[str, Any], peer: str, study_uid: str, **kw: Any) -> dict[str, Any]:
    """C-GET: the retrieved instances come back on the same association (no inbound port)."""
    got: list[dict[str, str]] = []

    def on_store(event: Any) -> int:
        ds = event.dataset
        ds.file_meta = event.file_meta
        got.append(fingerprint(ds))
        return 0x0000

    target = _peer(cfg, peer)
    ae = _ae(cfg, kw.pop("calling", None))
    ae.add_requested_context(StudyRootQueryRetrieveInformationModelGet)
    roles: list[Any] = []
    for uid in STORAGE.values():
        ae.add_requested_context(uid)
        roles.append(build_role(uid, scp_role=True))
    tls = target.get("transport") or cfg.get("transport", "device")  # as associate() chooses
    assoc = ae.associate(
        target["host"], int(target["port"]), ae_title=target["ae_title"], ext_neg=roles,
        evt_handlers=[(evt.EVT_C_STORE, on_store)], tls_args=None if tls == "cleartext" else (client_context(cfg), target["host"]),
    )
    out: dict[str, Any] = {"peer": peer, "established": assoc.is_established, "rejected": assoc.is_rejected, "statuses": []}
    if assoc.is_established:
        query = Dataset()
        query.QueryRetrieveLevel = "STUDY"
        query.StudyInstanceUID = study_uid
        for status, _ in assoc.send_c_get(query, StudyRootQueryRetrieveInformationModelGet):
            if status:
                out["statuses"].append(f"0x{status.Status:04X}")
        assoc.release()
    out["received"] = got
    return out


def _step(ident: Dataset) -> Dataset:
    """The first Scheduled Procedure Step of a worklist answer (an empty dataset when there is none)."""
    steps = ident.get("ScheduledProcedureStepSequence") or []
    return steps[0] if steps else Dataset()


def worklist(cfg: dict[str, Any], peer: str = "ris", modality: str | None = None, broad: bool = False, **kw: Any) -> dict[str, Any]:
    """Modality Worklist C-FIND (PS3.4 K): this station's scheduled procedure steps. ``broad``: ask
    for every station's and every modality's (Scheduled Station AE Title and Modality empty, the
    query a curious or compromised device makes); each item names its station and modality."""
    assoc, out = associate(cfg, peer, [ModalityWorklistInformationFind], **kw)
    out["items"] = []
    if assoc.is_established:
        query = Dataset()
        query.PatientName = ""
        query.PatientID = ""
        query.PatientBirthDate = ""
        query.PatientSex = ""
        query.AccessionNumber = ""
        query.StudyInstanceUID = ""
        query.RequestedProcedureDescription = ""
        step = Dataset()
        step.Modality = "" if broad else modality or cfg.get("modality", "")
        step.ScheduledStationAETitle = "" if broad or not cfg.get("station_filter", True) else cfg["ae_title"]
        step.ScheduledProcedureStepStartDate = ""
        step.ScheduledProcedureStepID = ""
        query.ScheduledProcedureStepSequence = [step]
        for status, ident in assoc.send_c_find(query, ModalityWorklistInformationFind):
            if status and status.Status in (0xFF00, 0xFF01) and ident is not None:
                out["items"].append(
                    {
                        "patient_name": str(ident.PatientName),
                        "charset": str(ident.get("SpecificCharacterSet", "")),  # what the name was sent in (PS3.3 C.12.1.1.2)
                        "patient_id": str(ident.PatientID),
                        "birth_date": str(ident.get("PatientBirthDate", "")),
                        "sex": str(ident.get("PatientSex", "")),
                        "accession": str(ident.AccessionNumber),
                        "study_uid": str(ident.StudyInstanceUID),
                        "procedure": str(ident.get("RequestedProcedureDescription", "")),
                        "station": str(_step(ident).get("ScheduledStationAETitle", "")),
                        "modality": str(_step(ident).get("Modality", "")),
                    }
                )
        assoc.release()
    return out


def acquire(cfg: dict[str, Any], images: int, accession: str | None = None, **kw: Any) -> dict[str, Any]:
    """The modality's day: read the worklist, acquire each new item, store it to the PACS.

    Items already acquired (state file) are skipped, so the service can run this in a loop.
    """
    wl = worklist(cfg, **kw)
    done_file = STATE / "acquired.json"
    done: list[str] = json.loads(done_file.read_text()) if done_file.is_file() else []
    results = []
    for item in wl["items"]:
        if (accession and item["accession"] != accession) or (not accession and item["accession"] in done):
            continue
        series = make_series(item, cfg["modality"], cfg["ae_title"], images)
        result = store(cfg, "pacs", series, **kw)
        results.append({"accession": item["accession"], "patient_id": str(series[0].PatientID),
                        "study_uid": str(series[0].StudyInstanceUID), **result})
        sent = STATE / "sent"
        sent.mkdir(parents=True, exist_ok=True)
        (sent / f"{item['accession']}.json").write_text(json.dumps([fingerprint(ds) for ds in series]))
        if result["stored"] and not result["failed"]:
            done.append(item["accession"])
            STATE.mkdir(parents=True, exist_ok=True)
            done_file.write_text(json.dumps(done))
    return {"worklist": {k: v for k, v in wl.items() if k != "items"}, "items": len(wl["items"]), "acquired": results}


# ---------------------------------------------------------------------------------------------
# Long-running services


# A text field of a record is cut to this many characters: the DICOM values a record holds are at
# most 64 long (PS3.5 6.2: UI 64, LO 64, AE 16), and a whole record stays far below the 64 KiB a
# syslog message may hold (roles/log_shipping maxMessageSize), where rsyslog would split it.
RECORD_FIELD_CHARS = 256


def record(event: str, **fields: Any) -> None:
    """One line of the node's log (INFO) for the siem (roles/log_shipping ships the file as
    dicom-node): the event and its fields as one JSON object, so that a value read off the wire (a
    UID, an AE title) cannot break the line or pose as another field. A text field longer than
    RECORD_FIELD_CHARS is cut there and named in the record's "truncated" list."""
    cut = sorted(k for k, v in fields.items() if isinstance(v, str) and len(v) > RECORD_FIELD_CHARS)
    fields = {k: v[:RECORD_FIELD_CHARS] if k in cut else v for k, v in fields.items()}
    log.info("%s", json.dumps({"event": event, **fields, **({"truncated": cut} if cut else {})}, sort_keys=True))


def serve_modality(cfg: dict[str, Any], every: float, images: int) -> None:
    """The modality as a service: poll the worklist every ``every`` seconds and acquire new items."""
    while True:
        try:
            result = acquire(cfg, images)
            for item in result["acquired"]:
                record("acquired", accession=item["accession"], patient_id=item["patient_id"], study_uid=item["study_uid"],
                       calling_ae=cfg["ae_title"], outcome=item["outcome"], stored=len(item["stored"]), failed=len(item["failed"]),
                       unacknowledged=len(item["unacknowledged"]))
        except Exception:  # a service keeps going; the next round retries
            log.exception("acquisition round failed")
        time.sleep(every)


def _association(event: Any, kind: str) -> None:
    """Record an association request the SCP received (``kind`` "association-received", before it
    decides) or rejected ("association-rejected", with the A-ASSOCIATE-RJ reason it sent, PS3.8
    9.3.4): the calling and called AE titles and the caller's address, as Orthanc's log names them
    on the PACS, so that the siem knows every AE title that called the node (C-AST-05)."""
    assoc, reason = event.assoc, None
    if kind == "association-rejected":
        rj = assoc.acceptor.primitive
        reason = RJ_REASONS.get(int(rj.result_source), {}).get(int(rj.diagnostic), "reserved") if rj is not None else None
    rq = assoc.requestor.primitive  # the A-ASSOCIATE-RQ as received (requestor.ae_title is set only once it is negotiated)
    record(kind, calling_ae=str(rq.calling_ae_title), called_ae=str(rq.called_ae_title),
           src_ip=str(assoc.requestor.address), **({"reason": reason} if kind == "association-rejected" else {}))


def _closed_before_request(event: Any) -> None:
    """The connection closed before any A-ASSOCIATE-RQ came (PS3.8 9.2's state machine, from Sta2
    or, after the acceptor's A-ABORT of a PDU out of place (AA-1), from Sta13, to Sta1: AA-5 a TLS
    handshake that failed or a peer that connected and left, AA-2 its A-ABORT or the ARTIM timer).
    pynetdicom's acceptor then still waits its ACSE timeout (30 s) for a request that cannot come,
    holding one of its maximum_associations: ten failed handshakes made the workstation refuse the
    PACS's C-MOVE as local-limit-exceeded for 30 s. An empty item on the DUL's queue to its user
    ends that wait at once, by pynetdicom's own path for an ACSE timeout (the association is
    killed, its socket shut). An association whose request was taken is left to its own course."""
    assoc = event.assoc
    if (assoc.is_acceptor and assoc.requestor.primitive is None and event.current_state in ("Sta2", "Sta13")
            and event.next_state == "Sta1"):
        assoc.dul.to_user_queue.put(None)


def serve_storage(cfg: dict[str, Any], port: int, folder: Path, allowed: list[str], block: bool = True) -> Any:
    """A storage SCP over mutual TLS (the workstation's C-MOVE destination). Only the AE titles in
    ``allowed`` may associate, and only by the node's own AE title; received instances are written as Part 10 files. A file's name never
    comes from what was received (a SOP Instance UID of "../../tmp/x" would have written outside the
    folder): it is the SHA-256 of the SOP Instance UID, so the same instance received twice is one file.
    Each association request is recorded when it arrives, and again if it is rejected (_association).
    A connection that closes before its request frees its association at once (_closed_before_request).
    ``block`` False: returns the running server (pynetdicom's ThreadedAssociationServer) at once."""
    folder.mkdir(parents=True, exist_ok=True)

    def on_store(event: Any) -> int:
        ds = event.dataset
        ds.file_meta = event.file_meta
        name = hashlib.sha256(str(ds.SOPInstanceUID).encode()).hexdigest()
        ds.save_as(folder / f"{name}.dcm", enforce_file_format=True)
        record("received", sop_instance_uid=str(ds.SOPInstanceUID), study_uid=str(ds.get("StudyInstanceUID", "")),
               patient_id=str(ds.get("PatientID", "")), calling_ae=str(event.assoc.requestor.ae_title),
               src_ip=str(event.assoc.requestor.address), file=f"{name}.dcm")
        return 0x0000

    ae = AE(ae_title=cfg["ae_title"])
    ae.require_calling_aet = allowed
    ae.require_called_aet = True  # the caller must name this node's AE title (PS3.8 9.3.4: called-AE-title-not-recognized)
    ae.add_supported_context(Verification)
    for uid in STORAGE.values():
        ae.add_supported_context(uid)
    return ae.start_server(("0.0.0.0", port), block=block, ssl_context=server_context(cfg), evt_handlers=[
        (evt.EVT_C_STORE, on_store), (evt.EVT_REQUESTED, lambda event: _association(event, "association-received")),
        (evt.EVT_REJECTED, lambda event: _association(event, "association-rejected")), (evt.EVT_FSM_TRANSITION, _closed_before_request)])


def serve_sink(port: int) -> None:
    """A bare storage SCP: cleartext, any AE title, answers Success without decoding or keeping
    anything. The ingest benchmark's ceiling: what the transport alone allows."""
    ae = AE(ae_title="SINK")
    ae.maximum_associations = 4
    ae.add_supported_context(Verification)
    for uid in STORAGE.values():
        ae.add_supported_context(uid)
    ae.start_server(("0.0.0.0", port), evt_handlers=[(evt.EVT_C_STORE, lambda event: 0x0000)])


def flood(cfg: dict[str, Any], peer: str, count: int, hold: float) -> dict[str, Any]:
    """Open ``count`` associations at once and hold them: what a misbehaving device does."""
    import concurrent.futures

    def one(_: int) -> bool:
        assoc, _out = associate(cfg, peer, [Verification])
        if not assoc.is_established:
            return False
        time.sleep(hold)
        assoc.release()
        return True

    started = time.monotonic()
    with concurrent.futures.ThreadPoolExecutor(max_workers=count) as pool:
        results = list(pool.map(one, range(count)))
    return {"attempted": count, "established": sum(results), "seconds": round(time.monotonic() - started, 2)}


def raw_send(host: str, port: int, payload: bytes, cfg: dict[str, Any] | None, hold: float = 2.0) -> dict[str, Any]:
    """Send bytes (garbage, a truncated PDU) over TLS with the device certificate, or cleartext
    when cfg is None; report what came back before the peer closed."""
    out: dict[str, Any] = {"sent": len(payload)}
    try:
        with socket.create_connection((host, port), timeout=10) as plain:
            sock: socket.socket = client_context(cfg).wrap_socket(plain, server_hostname=host) if cfg else plain
            sock.sendall(payload)
            sock.settimeout(hold)
            data = b""
            try:
                while chunk := sock.recv(4096):
                    data += chunk
            except TimeoutError:
                out["still_open"] = True
            out["received"] = data[:64].hex()
    except (OSError, ssl.SSLError) as exc:
        out["error"] = f"{type(exc).__name__}: {exc}"
    return out


# ---------------------------------------------------------------------------------------------
# Command line


def _conn_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--peer", default="pacs", help="a peer of /etc/pacslab/dicom.json (pacs, ris, ...)")
    p.add_argument("--calling", help="calling AE title (default: this node's)")
    p.add_argument("--called", help="called AE title (default: the peer's)")
    p.add_argument("--tls", help="device | nocert | cleartext | cert:<crt>:<key> (default: the node's transport)")
    p.add_argument("--tls-version", help="pin a TLS version (TLSv1_1 ...) for negative checks")
    p.add_argument("--host", help="connect to this address instead of the peer's (e.g. a gateway)")


def _kw(args: argparse.Namespace) -> dict[str, Any]:
    return {"calling": args.calling, "called": args.called, "tls": args.tls, "tls_version": args.tls_version, "host": args.host}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="dicomsim", description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--config", type=Path, default=CONFIG)
    sub = parser.add_subparsers(dest="command", required=True)
    for name, helptext in (("echo", "C-ECHO the peer (is an association accepted?); prints the outcome as JSON"),
                           ("worklist", "C-FIND the modality worklist (Modality Worklist Information Model - FIND, PS3.4 K)"),
                           ("find", "C-FIND studies at the peer (Study Root Query/Retrieve - FIND, PS3.4 C)")):
        _conn_args(sub.add_parser(name, help=helptext, description=helptext))
    sub.choices["find"].add_argument("--accession", default="", help="only the study with this Accession Number (0008,0050)")
    sub.choices["worklist"].add_argument("--broad", action="store_true",
                                         help="ask for every station's and modality's items (least-privilege checks)")
    p = sub.add_parser("store", help="generate and C-STORE a synthetic series")
    _conn_args(p)
    p.add_argument("--images", type=int, default=3, help="instances in the series")
    p.add_argument("--modality", choices=sorted(STORAGE), help="the series' modality (default: the node's)")
    p.add_argument("--patient-name", default="PACSLAB^PROBE", help="Patient's Name (0010,0010), DICOM PN: family^given")
    p.add_argument("--accession", default="PROBE", help="Accession Number (0008,0050)")
    p.add_argument("--repeat", type=int, default=1, help="store the series this many times, with fresh UIDs")
    p.add_argument("--studies", type=int, default=1, help="store this many studies (each its own Study Instance UID), one association")
    p.add_argument("--sop-instance-uid", help="reuse this SOP Instance UID (overwrite attempts)")
    p.add_argument("--sop-class-uid", help="claim another SOP class (unknown-class checks)")
    p.add_argument("--malformed", action="store_true", help="drop the Study/Series/SOP Instance UIDs (malformed-object checks)")
    p.add_argument("--payload-hex", help="carry these bytes (hex) in a private OB element of each instance (malware-scan checks)")
    p.add_argument("--retries", type=int, default=RETRIES,
                   help=f"new associations for instances left without an answer, after {BACKOFF:g} s, doubling (default {RETRIES})")
    p = sub.add_parser("flood", help="open many associations at once (robustness checks)")
    p.add_argument("--peer", default="pacs", help="the peer's name in the node's configuration")
    p.add_argument("--count", type=int, default=20, help="associations opened at once")
    p.add_argument("--hold", type=float, default=2.0, help="seconds each association is held open")
    p = sub.add_parser("acquire", help="worklist -> synthetic series -> store to the PACS (one round)")
    _conn_args(p)
    p.add_argument("--images", type=int, default=4, help="instances acquired per worklist item")
    p.add_argument("--accession", help="acquire only the item with this Accession Number")
    for name, helptext in (("move", "C-MOVE a study from the peer to a destination AE (Study Root Query/Retrieve - MOVE)"),
                           ("get", "C-GET a study from the peer into this node (Study Root Query/Retrieve - GET)")):
        p = sub.add_parser(name, help=helptext, description=helptext)
        _conn_args(p)
        p.add_argument("--study", required=True, help="the Study Instance UID (0020,000D)")
    sub.choices["move"].add_argument("--destination", required=True, help="the destination's AE title (the peer must know it)")
    p = sub.add_parser("serve-modality", help="the modality as a service: poll the worklist, acquire and store each new item")
    p.add_argument("--every", type=float, default=30, help="seconds between two worklist polls")
    p.add_argument("--images", type=int, default=4, help="instances acquired per worklist item")
    p = sub.add_parser("serve-storage", help="the workstation's storage SCP over TLS: keeps what allow-listed AEs send")
    p.add_argument("--port", type=int, default=2762, help="TCP port to listen on")
    p.add_argument("--folder", type=Path, default=STATE / "received", help="where received instances are written")
    p.add_argument("--allow", nargs="+", required=True, help="calling AE titles allowed")
    p = sub.add_parser("serve-sink", help="a bare cleartext storage SCP that keeps nothing (the benchmark's ceiling)")
    p.add_argument("--port", type=int, default=11112, help="TCP port to listen on")
    p = sub.add_parser("raw", help="send raw bytes (hex) and report the answer")
    p.add_argument("--peer", default="pacs", help="the peer's name in the node's configuration")
    p.add_argument("--hex", required=True, help="the bytes to send, in hex (e.g. a truncated PDU)")
    p.add_argument("--cleartext", action="store_true", help="without TLS (refusal checks)")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s dicomsim %(levelname)s %(message)s", stream=sys.stderr)
    logging.getLogger("pynetdicom").setLevel(logging.WARNING)
    if args.command == "serve-sink":  # needs no node configuration
        serve_sink(args.port)
        return 0
    cfg = load_config(args.config)
    try:
        result = _run(args, cfg)
    except Exception as exc:  # noqa: BLE001 (a one-shot command always ends with its JSON result)
        log.exception("%s failed", args.command)
        result = {"outcome": "error", "error": f"{type(exc).__name__}: {exc}"}
        json.dump(result, sys.stdout)
        print()
        return 1
    if result:
        json.dump(result, sys.stdout)
        print()
    return 0


def _run(args: argparse.Namespace, cfg: dict[str, Any]) -> dict[str, Any]:
    """The command's JSON result ({} for a service, which runs until stopped)."""
    result: dict[str, Any]
    if args.command == "echo":
        result = echo(cfg, args.peer, **_kw(args))
    elif args.command == "worklist":
        result = worklist(cfg, args.peer, broad=args.broad, **_kw(args))
    elif args.command == "find":
        result = find_studies(cfg, args.peer, args.accession, **_kw(args))
    elif args.command == "store":
        modality = args.modality or cfg.get("modality", "CT")
        orders = [{"patient_name": args.patient_name, "patient_id": "PROBE-1", "accession": args.accession, "study_uid": generate_uid(UID_ROOT)}
                  for _ in range(args.studies)]
        station = cfg.get("ae_title", "PROBE")
        series = [ds for order in orders for _ in range(args.repeat) for ds in make_series(order, modality, station, args.images)]
        for ds in series:
            if args.sop_instance_uid:
                ds.SOPInstanceUID = ds.file_meta.MediaStorageSOPInstanceUID = args.sop_instance_uid
            if args.sop_class_uid:
                ds.SOPClassUID = ds.file_meta.MediaStorageSOPClassUID = args.sop_class_uid
            if args.malformed:
                del ds.StudyInstanceUID, ds.SeriesInstanceUID
            if args.payload_hex:
                carry(ds, bytes.fromhex(args.payload_hex))
        result = store(cfg, args.peer, series, retries=args.retries, **_kw(args))
    elif args.command == "acquire":
        result = acquire(cfg, args.images, args.accession, **_kw(args))
    elif args.command == "move":
        result = move(cfg, args.peer, args.study, args.destination, **_kw(args))
    elif args.command == "get":
        result = get(cfg, args.peer, args.study, calling=args.calling)
    elif args.command == "flood":
        result = flood(cfg, args.peer, args.count, args.hold)
    elif args.command == "serve-modality":
        serve_modality(cfg, args.every, args.images)
        return {}
    elif args.command == "serve-storage":
        serve_storage(cfg, args.port, args.folder, args.allow)
        return {}
    else:
        peer = _peer(cfg, args.peer)
        result = raw_send(peer["host"], int(peer["port"]), bytes.fromhex(args.hex), None if args.cleartext else cfg)
    return result


if __name__ == "__main__":
    sys.exit(main())
