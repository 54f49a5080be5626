"""HL7 v2 orders for the lab's RIS: ORM^O01 over MLLP, wrapped in TLS (flow F03, C-DAT-02).

On ``ris`` (roles/ris) this file runs as the order listener behind stunnel: stunnel terminates TLS
on 2575 (client certificate required) and hands the cleartext MLLP stream to 127.0.0.1:2576 inside
the container. Each new order (ORC-1 = NW) becomes one modality worklist file that Orthanc's
worklists plugin serves (PS3.4 K); the answer is an ACK with AA, or AE/AR and the reason.
On an order-entry station (``ws-tech``) the same file sends orders: ``hl7.py send``.

MLLP framing (HL7 v2 Appendix C): <VT> message <FS><CR>. Segments end with <CR>.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import re
import socket
import socketserver
import ssl
import sys
import time
from pathlib import Path
from typing import Any

log = logging.getLogger("hl7")
VT, FS, CR = b"\x0b", b"\x1c", b"\x0d"
ACCESSION_RE = re.compile(r"^[A-Za-z0-9-]{1,16}$")  # DICOM SH, and safe as a file name
# OpenSSL reports a TLS alert received from the peer as <version>_ALERT_<description> (RFC 8446 6.2).
ALERT_REASON = re.compile(r"^(?:SSLV3|TLSV1|TLSV13)_ALERT_(?P<alert>[A-Z_]+)$")
VERDICT_WAIT = 0.5  # seconds a sender waits, after its handshake, for the server's verdict on its certificate
WORKLISTS = Path(os.environ.get("PACSLAB_WORKLISTS", "/var/lib/orthanc/worklists"))


class OrderError(ValueError):
    """The message is not an order the RIS accepts; the ACK carries this reason."""


def frame(message: str) -> bytes:
    return VT + message.replace("\n", "\r").encode() + FS + CR


def unframe(data: bytes) -> str:
    start, end = data.find(VT), data.find(FS + CR)
    if start < 0 or end < 0:
        raise OrderError("not an MLLP frame")
    return data[start + 1 : end].decode("utf-8", errors="replace")


def build_orm(order: dict[str, str], control_id: str) -> str:
    """ORM^O01: MSH, PID, ORC (NW), OBR with the accession number (OBR-18) and modality (OBR-24)."""
    stamp = time.strftime("%Y%m%d%H%M%S")
    return "\r".join(
        [
            f"MSH|^~\\&|ORDERS|PACSLAB|RIS|PACSLAB|{stamp}||ORM^O01|{control_id}|P|2.3",
            f"PID|1||{order['patient_id']}||{order['patient_name']}||{order.get('birth_date', '')}|{order.get('sex', 'O')}",
            f"ORC|NW|{order['accession']}",
            f"OBR|1|{order['accession']}||{order.get('procedure_code', 'CTCHEST')}^{order.get('procedure', 'CT chest')}|||{stamp}"
            f"|||||||||||{order['accession']}||||||{order['modality']}||||||||||||||||{order['station']}",
        ]
    )


def parse_orm(message: str) -> dict[str, str]:
    """The fields a worklist entry needs; OrderError when a required one is missing."""
    segments = {line.split("|", 1)[0]: line.split("|") for line in message.replace("\n", "\r").split("\r") if line}
    msh = segments.get("MSH")
    if not msh or len(msh) < 10 or not msh[8].startswith("ORM^O01"):
        raise OrderError("not an ORM^O01 message")
    pid, orc, obr = segments.get("PID"), segments.get("ORC"), segments.get("OBR")
    if not (pid and orc and obr):
        raise OrderError("PID, ORC and OBR segments are required")
    if orc[1] != "NW":
        raise OrderError(f"order control {orc[1]!r} is not supported (only NW)")

    def field(seg: list[str], i: int) -> str:
        return seg[i] if len(seg) > i else ""

    order = {
        "control_id": field(msh, 9),
        "patient_id": field(pid, 3).split("^")[0],
        "patient_name": field(pid, 5),
        "birth_date": field(pid, 7),
        "sex": field(pid, 8) or "O",
        "accession": field(obr, 18) or field(orc, 2),
        "procedure": field(obr, 4).split("^")[-1],
        "modality": field(obr, 24),
        "station": field(obr, 40),
    }
    for key in ("patient_id", "patient_name", "accession", "modality", "station"):
        if not order[key]:
            raise OrderError(f"{key} is missing")
    if not ACCESSION_RE.match(order["accession"]):
        raise OrderError("the accession number must be 1-16 letters, digits or '-'")
    return order


def ack(message: str, code: str, text: str = "") -> str:
    control = ""
    for line in message.split("\r"):
        if line.startswith("MSH"):
            parts = line.split("|")
            control = parts[9] if len(parts) > 9 else ""
    stamp = time.strftime("%Y%m%d%H%M%S")
    return f"MSH|^~\\&|RIS|PACSLAB|ORDERS|PACSLAB|{stamp}||ACK^O01|A{control}|P|2.3\rMSA|{code}|{control}|{text[:80]}"


def write_worklist(order: dict[str, str], folder: Path = WORKLISTS) -> Path:
    """One worklist file per accession (PS3.4 K.6 attributes), written atomically; the Study
    Instance UID is fixed here so that the acquired study keeps it."""
    from pydicom.dataset import Dataset, FileMetaDataset
    from pydicom.uid import UID, ExplicitVRLittleEndian, generate_uid

    ds = Dataset()
    ds.file_meta = FileMetaDataset()
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.file_meta.MediaStorageSOPClassUID = UID("1.2.840.10008.5.1.4.31")  # Modality Worklist Information Model - FIND
    ds.file_meta.MediaStorageSOPInstanceUID = generate_uid()
    ds.SpecificCharacterSet = "ISO_IR 100"
    ds.PatientName = order["patient_name"]
    ds.PatientID = order["patient_id"]
    ds.PatientBirthDate = order["birth_date"]
    ds.PatientSex = order["sex"]
    ds.AccessionNumber = order["accession"]
    ds.StudyInstanceUID = generate_uid("1.2.826.0.1.3680043.10.1077.")
    ds.RequestedProcedureID = order["accession"]
    ds.RequestedProcedureDescription = order["procedure"]
    step = Dataset()
    step.Modality = order["modality"]
    step.ScheduledStationAETitle = order["station"]
    step.ScheduledProcedureStepStartDate = time.strftime("%Y%m%d")
    step.ScheduledProcedureStepStartTime = time.strftime("%H%M%S")
    step.ScheduledProcedureStepID = order["accession"]
    step.ScheduledProcedureStepDescription = order["procedure"]
    ds.ScheduledProcedureStepSequence = [step]
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{order['accession']}.wl"
    tmp = folder / f".{order['accession']}.tmp"
    ds.is_little_endian, ds.is_implicit_VR = True, False  # pydicom 2.3 (Debian) needs these to write
    ds.save_as(tmp, write_like_original=False)
    tmp.replace(path)
    return path


def handle(message: str, folder: Path = WORKLISTS) -> str:
    """Order in, ACK out. An accession already scheduled is refused (AR), never overwritten."""
    try:
        order = parse_orm(message)
        if (folder / f"{order['accession']}.wl").exists():
            raise OrderError(f"accession {order['accession']} is already scheduled")
        path = write_worklist(order, folder)
        log.info("order %s: accession %s scheduled for %s (%s)", order["control_id"], order["accession"], order["station"], path.name)
        return ack(message, "AA")
    except OrderError as exc:
        log.warning("order refused: %s", exc)
        return ack(message, "AR", str(exc))


class _Handler(socketserver.StreamRequestHandler):
    def handle(self) -> None:
        buffer = b""
        while chunk := self.request.recv(65536):
            buffer += chunk
            while FS + CR in buffer:
                end = buffer.index(FS + CR) + 2
                message, buffer = buffer[:end], buffer[end:]
                try:
                    text = unframe(message)
                except OrderError:
                    log.warning("dropped bytes that are not an MLLP frame from %s", self.client_address[0])
                    continue
                self.request.sendall(frame(handle(text, getattr(self.server, "worklists", WORKLISTS))))
            if len(buffer) > 1 << 20:
                log.warning("closed a connection sending more than 1 MiB without a frame end")
                return


def send(host: str, port: int, message: str, cafile: str, cert: str | None, key: str | None) -> str:
    """Send one message over MLLP inside TLS (the RIS checks our certificate; we check its).
    Without cert, no client certificate is offered (a negative check: the RIS must refuse)."""
    ctx = ssl.create_default_context(ssl.Purpose.SERVER_AUTH, cafile=cafile)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    if cert:
        ctx.load_cert_chain(cert, key)
    with socket.create_connection((host, port), timeout=15) as plain, ctx.wrap_socket(plain, server_hostname=host) as sock:
        # TLS 1.3: the server judges our certificate after our handshake is done. Listen briefly
        # before sending, so that its verdict (an alert, or session tickets and silence) is read
        # before our data can race it.
        sock.settimeout(VERDICT_WAIT)
        try:
            early = sock.recv(65536)
        except TimeoutError:
            early = b"-"  # nothing but session tickets: the server accepted us
        finally:
            sock.settimeout(15)
        if not early:
            raise ssl.SSLEOFError("the server closed the TLS session without an alert, before any data")
        sock.sendall(frame(message))
        data = b""
        while FS + CR not in data:
            chunk = sock.recv(65536)
            if not chunk:
                break
            data += chunk
    return unframe(data)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="hl7", description=__doc__.splitlines()[0] if __doc__ else None)
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("listen", help="the RIS order listener (cleartext MLLP on loopback, behind stunnel)")
    p.add_argument("--bind", default="127.0.0.1", help="address to listen on (stunnel forwards to it)")
    p.add_argument("--port", type=int, default=2576, help="TCP port to listen on")
    p.add_argument("--worklists", type=Path, default=WORKLISTS, help="folder of the worklist items the orders become")
    p = sub.add_parser("send", help="send one new order; prints the ACK as JSON; exits 1 unless the RIS accepts it (AA)")
    p.add_argument("--config", type=Path, default=Path("/etc/pacslab/dicom.json"), help="the node's DICOM/HL7 configuration")
    for k, helptext in (("patient-id", "PID-3, the patient identifier"), ("patient-name", "PID-5, family^given"),
                        ("accession", "the order's accession number (unique per order)"), ("modality", "CT, MR ..."),
                        ("station", "the AE title of the modality that performs it")):
        p.add_argument(f"--{k}", required=True, help=helptext)
    p.add_argument("--procedure", default="synthetic study", help="requested procedure description")
    p.add_argument("--birth-date", default="19700101", help="PID-7, YYYYMMDD")
    p.add_argument("--sex", default="O", help="PID-8: F, M, O or U")
    p.add_argument("--cert", help="client certificate chain (default: the node's, from --config)")
    p.add_argument("--key", help="its key (default: the node's)")
    p.add_argument("--no-cert", action="store_true", help="offer no client certificate (negative checks)")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s hl7 %(levelname)s %(message)s", stream=sys.stderr)
    if args.command == "listen":
        socketserver.ThreadingTCPServer.allow_reuse_address = True
        with socketserver.ThreadingTCPServer((args.bind, args.port), _Handler) as server:
            server.worklists = args.worklists  # type: ignore[attr-defined]
            server.serve_forever()
        return 0
    cfg: dict[str, Any] = json.loads(args.config.read_text())
    ris = cfg["peers"]["ris-hl7"]
    fields = ("patient_id", "patient_name", "accession", "modality", "station", "procedure", "birth_date", "sex")
    order = {k: getattr(args, k) for k in fields}
    message = build_orm(order, f"{int(time.time() * 1000) % 10**10}")
    cert, key = (None, None) if args.no_cert else (args.cert or cfg["tls"]["cert"], args.key or cfg["tls"]["key"])
    alert, kind = None, "no-answer"
    try:
        answer = send(ris["host"], int(ris["port"]), message, cfg["tls"]["trusted"], cert, key)
        error = "" if answer else "connection closed without an answer"  # stunnel refused the certificate
    except OSError as exc:  # ssl.SSLError included: a refused handshake is an answer, not a crash
        answer, error, kind = "", f"{type(exc).__name__}: {exc}", type(exc).__name__
        if isinstance(exc, ssl.SSLError) and (m := ALERT_REASON.match(str(exc.reason))):
            alert = m["alert"].lower().replace("_", "-")  # the alert the RIS's TLS front sent (RFC 8446 6.2)
    if error:
        # error_type: SSLError (with tls_alert), SSLEOFError (closed inside TLS without an alert),
        # ConnectionRefusedError, TimeoutError ...; no-answer: TLS up, closed without an ACK
        json.dump({"ack": "", "error": error, "error_type": kind, "tls_alert": alert}, sys.stdout)
        print()
        return 1
    msa = next((line.split("|") for line in answer.split("\r") if line.startswith("MSA")), ["MSA", ""])
    json.dump({"ack": msa[1], "text": msa[3] if len(msa) > 3 else "", "raw": answer}, sys.stdout)
    print()
    return 0 if msa[1] == "AA" else 1  # AE/AR: the RIS refused the order (the JSON says why)


if __name__ == "__main__":
    sys.exit(main())
