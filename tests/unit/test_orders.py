"""HL7 v2 order intake (pacslab/orders.py) against the inputs real feeds send (issue 10, items 1-5):
each message goes through ``handle`` (bytes in, ACK bytes out) into a real worklist folder, and the
worklist files are read back with pydicom. The listener itself is driven over a real TCP socket.

Expected values are written out: the ACK code, the HL7 error code (table 0357), the DICOM values.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import hl7
import pydicom
import pytest

from pacslab import orders

MSH = "MSH|^~\\&|ORDERS|PACSLAB|RIS|PACSLAB|20261130120000||ORM^O01|{control}|P|2.3"
PID = "PID|1||{pid}^^^HOSP||{name}||19700101|F"
GROUP = "ORC|NW|{acc}\rOBR|1|{acc}||CTCHEST^CT chest" + "|" * 14 + "{acc}" + "|" * 6 + "CT" + "|" * 16 + "CT01"


def message(*segments: str, control: str = "C1", charset: str = "") -> str:
    head = MSH.format(control=control) + ("|" * 6 + charset if charset else "")
    return "\r".join([head, *segments]) + "\r"


def order(acc: str = "A1", pid: str = "P1", name: str = "DOE^JANE", control: str = "C1", charset: str = "") -> str:
    return message(PID.format(pid=pid, name=name), GROUP.format(acc=acc), control=control, charset=charset)


def answer(raw: bytes) -> dict[str, str]:
    """MSA-1, MSA-2, ERR-3.1 and ERR-8 of an ACK, read with the library."""
    return {k: v for k, v in orders.read_ack(raw.decode("ascii")).items() if k in ("ack", "control_id", "error_code", "error")}


def item(folder: Path, acc: str) -> pydicom.Dataset:
    return pydicom.dcmread(folder / f"{acc}.wl")


@pytest.fixture
def wl(tmp_path: Path) -> Path:
    return tmp_path / "worklists"


# --- the order that should pass, and the mapping (IHE RAD order -> worklist) -------------------------------


def test_an_order_is_scheduled_with_every_mapped_value(wl: Path) -> None:
    raw = message("PID|1||P77^^^HOSP-A||DOE^JOHN^Q^JR^DR||19641231|M", GROUP.format(acc="A77").replace("|CT chest", "|CT chest|LN"))
    assert answer(orders.handle(raw.encode(), wl)) == {"ack": "AA", "control_id": "C1"}
    ds = item(wl, "A77")
    assert "SpecificCharacterSet" not in ds  # ASCII: the default repertoire
    assert str(ds.PatientName) == "DOE^JOHN^Q^DR^JR"  # XPN suffix^prefix -> PN prefix^suffix
    assert (ds.PatientID, ds.IssuerOfPatientID, ds.PatientBirthDate, ds.PatientSex) == ("P77", "HOSP-A", "19641231", "M")
    assert (ds.AccessionNumber, ds.RequestedProcedureID, ds.RequestedProcedureDescription) == ("A77", "A77", "CT chest")
    step = ds.ScheduledProcedureStepSequence[0]
    assert (step.Modality, step.ScheduledStationAETitle, step.ScheduledProcedureStepID) == ("CT", "CT01", "A77")


def test_an_unknown_sex_becomes_other(wl: Path) -> None:
    assert answer(orders.handle(order(name="DOE^JANE").replace("|F\r", "|U\r").encode(), wl))["ack"] == "AA"
    assert item(wl, "A1").PatientSex == "O"


# --- item 1: a segment that is only its name ---------------------------------------------------------------


@pytest.mark.parametrize("bare", ["ORC", "PID", "OBR", "ORC|"])
def test_a_segment_without_fields_gets_an_error_ack(wl: Path, bare: str) -> None:
    raw = order().replace(bare.rstrip("|") + "|", bare + "\r" + bare.rstrip("|") + "|", 1) if bare != "ORC|" else order().replace("ORC|NW|A1", "ORC|")
    result = answer(orders.handle(raw.encode(), wl))
    assert result["ack"] == "AE" and result["error_code"] == "100", result
    assert f"segment {bare.rstrip('|')} " in result["error"]
    assert not wl.exists() or not list(wl.iterdir())


# --- item 2: two ORC/OBR groups ----------------------------------------------------------------------------


def test_every_order_group_of_a_message_is_scheduled(wl: Path) -> None:
    raw = message(PID.format(pid="P2", name="DOE^JANE"), GROUP.format(acc="A21"), GROUP.format(acc="A22"))
    assert answer(orders.handle(raw.encode(), wl))["ack"] == "AA"
    assert sorted(p.name for p in wl.iterdir()) == ["A21.wl", "A22.wl"]
    assert item(wl, "A21").PatientID == item(wl, "A22").PatientID == "P2"
    assert item(wl, "A21").StudyInstanceUID != item(wl, "A22").StudyInstanceUID


def test_a_message_with_one_taken_accession_schedules_none(wl: Path) -> None:
    assert answer(orders.handle(order(acc="A32", pid="P31").encode(), wl))["ack"] == "AA"
    raw = message(PID.format(pid="P3", name="DOE^JANE"), GROUP.format(acc="A31"), GROUP.format(acc="A32"))
    result = answer(orders.handle(raw.encode(), wl))
    assert result["ack"] == "AE" and result["error_code"] == "205" and "A32" in result["error"]
    assert sorted(p.name for p in wl.iterdir()) == ["A32.wl"]
    assert item(wl, "A32").PatientID == "P31"


def test_an_orc_without_its_obr_is_refused(wl: Path) -> None:
    raw = message(PID.format(pid="P4", name="DOE^JANE"), GROUP.format(acc="A41"), "ORC|NW|A42")
    result = answer(orders.handle(raw.encode(), wl))
    assert (result["ack"], result["error_code"]) == ("AE", "100")
    assert not list(wl.iterdir()) if wl.exists() else True


# --- item 3: character sets --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("charset", "codec", "name", "dicom_charset"),
    [
        ("8859/1", "latin-1", "MÜLLER^JÖRG", "ISO_IR 100"),
        ("UNICODE UTF-8", "utf-8", "ΠΑΠΑΔΟΠΟΥΛΟΣ^ΓΙΩΡΓΟΣ", "ISO_IR 192"),
        ("UNICODE UTF-8", "utf-8", "MÜLLER^JÖRG", "ISO_IR 192"),
        ("", "ascii", "DOE^JANE", None),
    ],
)
def test_a_name_reaches_the_worklist_exactly_as_sent(wl: Path, charset: str, codec: str, name: str, dicom_charset: str | None) -> None:
    raw = order(name=name, charset=charset).encode(codec)
    assert answer(orders.handle(raw, wl))["ack"] == "AA"
    on_disk = pydicom.dcmread(wl / "A1.wl")
    assert on_disk.get("SpecificCharacterSet") == dicom_charset
    assert str(on_disk.PatientName) == name


def test_bytes_beyond_ascii_without_msh18_are_refused(wl: Path) -> None:
    result = answer(orders.handle(order(name="MÜLLER^JÖRG").encode("latin-1"), wl))
    assert (result["ack"], result["error_code"]) == ("AR", "102")
    assert "0xdc" in result["error"] and "MSH-18" in result["error"]


def test_bytes_that_are_not_the_declared_charset_are_refused(wl: Path) -> None:
    result = answer(orders.handle(order(name="MÜLLER^JÖRG", charset="UNICODE UTF-8").encode("latin-1"), wl))
    assert (result["ack"], result["error_code"]) == ("AR", "102")


def test_an_unknown_charset_is_refused(wl: Path) -> None:
    result = answer(orders.handle(order(charset="ISO IR87").encode(), wl))
    assert (result["ack"], result["error_code"]) == ("AR", "103")
    assert "'ISO IR87'" in result["error"]


# --- item 4: a line feed is data, not a segment end --------------------------------------------------------


def test_a_line_feed_in_a_comment_cannot_change_the_patient(wl: Path) -> None:
    note = "NTE|1||call ward 4 first\nPID|1||EVIL^^^HOSP||INTRUDER^EVE||19990101|M"
    raw = message(PID.format(pid="P5", name="DOE^JANE"), note, GROUP.format(acc="A5"))
    assert answer(orders.handle(raw.encode(), wl))["ack"] == "AA"
    ds = item(wl, "A5")
    assert (ds.PatientID, str(ds.PatientName)) == ("P5", "DOE^JANE")


def test_a_control_character_in_a_mapped_value_is_refused(wl: Path) -> None:
    result = answer(orders.handle(order(name="DOE^JANE\nPID").encode(), wl))
    assert (result["ack"], result["error_code"]) == ("AE", "102")
    assert "PID-5" in result["error"]


def test_segments_ended_by_line_feeds_are_one_segment_and_refused(wl: Path) -> None:
    result = answer(orders.handle(order().replace("\r", "\n").encode(), wl))
    assert (result["ack"], result["error_code"]) == ("AE", "100")


# --- item 5: one accession, many senders at once -----------------------------------------------------------


def test_concurrent_orders_for_one_accession_schedule_exactly_one(wl: Path) -> None:
    raws = [order(acc="A6", pid=f"P6{i}", name=f"RACE^NUMBER{i}", control=f"C6{i}").encode() for i in range(8)]
    results: list[dict[str, str]] = [{} for _ in raws]
    start = threading.Barrier(len(raws))

    def send(i: int) -> None:
        start.wait()
        results[i] = answer(orders.handle(raws[i], wl))

    threads = [threading.Thread(target=send, args=(i,)) for i in range(len(raws))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    accepted = [i for i, r in enumerate(results) if r["ack"] == "AA"]
    assert len(accepted) == 1, results
    assert all((r["ack"], r["error_code"]) == ("AE", "205") for i, r in enumerate(results) if i not in accepted)
    assert item(wl, "A6").PatientID == f"P6{accepted[0]}"
    assert [p.name for p in wl.iterdir()] == ["A6.wl"]  # nothing staged is left behind


# --- values DICOM cannot hold are refused ------------------------------------------------------------------


@pytest.mark.parametrize(
    ("edit", "code", "where"),
    [
        (("19700101", "19701345"), "102", "PID-7"),
        (("|F\r", "|Q\r"), "103", "PID-8"),
        (("DOE^JANE", "DOE=X^JANE"), "102", "PID-5"),
        (("DOE^JANE", ""), "101", "PID-5"),
        (("P1^^^HOSP", ""), "101", "PID-3"),
        (("|CT|", "|ct|"), "102", "OBR-24"),
        (("|CT01", "|CT01CT01CT01CT01X"), "102", "OBR-40"),
        (("|CT01", "|"), "101", "OBR-40"),
        (("ORC|NW", "ORC|CA"), "103", "ORC-1"),
        (("A1||||||CT", "A1/../x||||||CT"), "102", "OBR-18"),
    ],
    ids=["birth-date", "sex", "name-group", "no-name", "no-patient-id", "modality", "station", "no-station", "cancel", "accession"],
)
def test_a_value_dicom_cannot_hold_is_refused(wl: Path, edit: tuple[str, str], code: str, where: str) -> None:
    raw = order().replace(*edit)
    result = answer(orders.handle(raw.encode(), wl))
    assert (result["ack"], result["error_code"]) == ("AE", code), result
    assert where in result["error"]
    assert not wl.exists() or not list(wl.iterdir())


def test_a_message_that_is_not_an_order_gets_ar_with_its_control_id(wl: Path) -> None:
    raw = order().replace("ORM^O01", "ADT^A08")
    assert answer(orders.handle(raw.encode(), wl)) | {"error": ""} == {"ack": "AR", "control_id": "C1", "error_code": "200", "error": ""}


@pytest.mark.parametrize("raw", [b"", b"garbage", b"MSH", b"MSH|^~\\&|A|B|RIS|P|1||ADT|7|P|2.3", b"\x00\xff" * 40, b"MSH|^~\\&|" + b"|" * 30])
def test_no_input_crashes_the_handler(wl: Path, raw: bytes) -> None:
    result = answer(orders.handle(raw, wl))
    assert result["ack"] == "AR" and result["error"], result


# --- the ACK itself (HL7 v2.5 2.9.2) -----------------------------------------------------------------------


def test_the_ack_is_conformant_and_escapes_its_text(wl: Path) -> None:
    ack = orders.handle(order(charset="X^Y&Z|").encode(), wl).decode("ascii")
    assert ack.endswith("\r") and ack.count("\r") == 3  # MSH, MSA, ERR, each ended by <CR>
    msg = hl7.parse(ack)
    assert [str(s[0]) for s in msg] == ["MSH", "MSA", "ERR"]
    msh = msg.segment("MSH")
    assert (str(msh[3]), str(msh[5]), str(msh[9]), str(msh[12])) == ("RIS", "ORDERS", "ACK^O01^ACK", "2.3")
    assert str(msh[10]) != "C1"  # the ACK's own control id
    err = msg.segment("ERR")
    assert len(err) == 9  # the delimiters in the quoted value are escaped, so no field is split
    assert msg.unescape(str(err[8])) == "character set 'X^Y&Z' (MSH-18) is not supported"
    assert str(msg.segment("MSA")[1]) == "AR" and str(err[3]) == "103^Table value not found^HL70357"
    assert str(err[4]) == "E"


def test_a_built_order_round_trips_through_the_parser(wl: Path) -> None:
    sent = {"patient_id": "P|8", "patient_name": "ΠΑΠΑΔΟΠΟΥΛΟΣ^ΓΙΩΡΓΟΣ", "accession": "A8", "modality": "MR", "station": "MR01",
            "procedure": "MR head & neck | contrast", "birth_date": "19800229", "sex": "F"}
    raw = orders.encode(orders.build_orm(sent, "C8"))
    assert b"\n" not in raw and raw.endswith(b"\r")
    [parsed] = orders.parse_orm(*orders.decode(raw, orders.header(raw)))
    assert (parsed.patient_id, parsed.patient_name, parsed.procedure, parsed.charset) == (
        "P|8", "ΠΑΠΑΔΟΠΟΥΛΟΣ^ΓΙΩΡΓΟΣ", "MR head & neck | contrast", "ISO_IR 192")


# --- the listener: one connection, many messages -----------------------------------------------------------


@contextlib.contextmanager
def listening(wl: Path, proxied: bool = False, front_uid: int | None = None) -> Iterator[int]:
    """orders.serve on a free loopback port, in a thread of its own, until the block ends."""
    port_holder = socket.socket()
    port_holder.bind(("127.0.0.1", 0))
    port = port_holder.getsockname()[1]
    port_holder.close()
    loop = asyncio.new_event_loop()
    task = loop.create_task(orders.serve("127.0.0.1", port, wl, proxied=proxied, front_uid=front_uid))

    def run() -> None:
        try:
            loop.run_until_complete(task)
        except asyncio.CancelledError:
            pass

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=1) as probe:
                if proxied:  # a header, then the end: a sender that closed, nothing to record
                    probe.sendall(b"PROXY TCP4 127.0.0.1 127.0.0.1 1 1\r\n")
            break
        except OSError:
            time.sleep(0.05)
    try:
        yield port
    finally:
        loop.call_soon_threadsafe(task.cancel)
        thread.join(10)
        loop.close()


@pytest.fixture
def listener(wl: Path) -> Iterator[int]:
    with listening(wl) as port:
        yield port


@pytest.fixture
def proxied_listener(wl: Path) -> Iterator[int]:
    """The listener as the RIS runs it behind stunnel (``protocol = proxy``, and the front's user:
    here this test's own, which connects as the front would)."""
    with listening(wl, proxied=True, front_uid=os.getuid()) as port:
        yield port


def _exchange(sock: socket.socket, data: bytes) -> dict[str, str]:
    sock.sendall(data)
    got = b""
    while orders.FS + orders.CR not in got:
        chunk = sock.recv(65536)
        assert chunk, "the listener closed the connection"
        got += chunk
    return answer(got[got.index(orders.VT) + 1 : got.index(orders.FS)])


def test_the_connection_stays_usable_after_a_broken_message(listener: int, wl: Path) -> None:
    broken = message("ORC", control="C91")
    with socket.create_connection(("127.0.0.1", listener), timeout=10) as sock:
        first = _exchange(sock, orders.frame(broken.encode()))
        assert (first["ack"], first["control_id"], first["error_code"]) == ("AE", "C91", "100")
        garbage = _exchange(sock, b"no start block" + orders.FS + orders.CR)
        assert garbage["ack"] == "AR"
        second = _exchange(sock, orders.frame(order(acc="A92", control="C92").encode()))
        assert (second["ack"], second["control_id"]) == ("AA", "C92")
    assert item(wl, "A92").PatientID == "P1"


# --- the listener's record for the siem (orders.audit): the sender stunnel names, the verdict, the patient ---------


def records(caplog: pytest.LogCaptureFixture) -> list[dict[str, object]]:
    return [{k: v for k, v in json.loads(r.getMessage()).items() if k != "time"} for r in caplog.records if r.name == "orders.audit"]


def test_each_scheduled_order_is_recorded_with_its_sender_and_patient(wl: Path, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="orders.audit")
    raw = message(PID.format(pid="P5", name="DOE^JANE"), GROUP.format(acc="A51"), GROUP.format(acc="A52"), control="C5")
    assert answer(orders.handle(raw.encode(), wl, ("10.77.20.11", 40001)))["ack"] == "AA"
    assert records(caplog) == [
        {"event": "order-scheduled", "src_ip": "10.77.20.11", "src_port": 40001, "control_id": "C5", "ack": "AA", "accession": acc,
         "patient_id": "P5", "issuer": "HOSP", "station": "CT01", "modality": "CT", "study_uid": str(item(wl, acc).StudyInstanceUID)}
        for acc in ("A51", "A52")]


def test_a_refused_message_is_recorded_with_why_and_no_patient(wl: Path, caplog: pytest.LogCaptureFixture) -> None:
    """Nothing of a refused message is taken as true: its record names no patient, even one it held."""
    caplog.set_level(logging.INFO, logger="orders.audit")
    raw = message(PID.format(pid="P6", name="DOE^JANE"), GROUP.format(acc="A6").replace("|CT|", "|C T!|"), control="C6")
    result = answer(orders.handle(raw.encode(), wl, ("10.77.20.11", 40002)))
    assert (result["ack"], result["error_code"]) == ("AE", "102")
    assert records(caplog) == [{"event": "message-refused", "src_ip": "10.77.20.11", "src_port": 40002, "control_id": "C6", "ack": "AE",
                                "code": 102, "where": "OBR^1^24", "error": "Data type error"}]


def test_the_record_of_a_refused_message_holds_none_of_its_values(wl: Path, caplog: pytest.LogCaptureFixture) -> None:
    """The error the sender's ACK explains (a birth date that is no date, quoted) is named only by
    its HL7 code in the record; a control id that is no plain identifier is left out."""
    caplog.set_level(logging.INFO, logger="orders.audit")
    raw = order(pid="P7", control="C7 DOE^JANE").replace("|19700101|", "|19701301|")
    result = answer(orders.handle(raw.encode(), wl, ("10.77.20.11", 40004)))
    lines = [r.getMessage() for r in caplog.records if r.name == "orders.audit"]
    assert (result["ack"], "19701301" in result["error"]) == ("AE", True)
    assert len(lines) == 1 and all(value not in lines[0] for value in ("19701301", "P7", "DOE", "JANE"))
    assert json.loads(lines[0])["control_id"] is None


def test_a_fault_of_the_ris_is_recorded_as_the_ar_the_sender_gets(wl: Path, caplog: pytest.LogCaptureFixture,
                                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    caplog.set_level(logging.INFO, logger="orders.audit")

    def broken(orders_: list[orders.Order], folder: Path) -> list[Path]:
        raise RuntimeError("disk on fire")

    monkeypatch.setattr(orders, "schedule", broken)
    result = answer(orders.handle(order(acc="A8", control="C8").encode(), wl, ("10.77.20.11", 40005)))
    assert (result["ack"], result["error_code"]) == ("AR", "207")
    assert [(r["ack"], r["code"], r["error"]) for r in records(caplog)] == [("AR", 207, "Application internal error")]


def test_an_order_is_answered_and_kept_when_its_record_cannot_be_written(wl: Path, caplog: pytest.LogCaptureFixture) -> None:
    """A record file logrotate renamed and has not created yet cannot be reopened by the listener's
    user: the handler raises out of logging. The order is scheduled and acknowledged all the same,
    and the record goes to the listener's own log."""
    class Unwritable(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            raise PermissionError(13, "Permission denied", "/var/log/pacslab/hl7-orders.json")

    handler = Unwritable()
    orders.audit.addHandler(handler)
    try:
        with caplog.at_level(logging.INFO, logger="orders"):
            result = answer(orders.handle(order(acc="A9", control="C9").encode(), wl, ("10.77.20.11", 40006)))
    finally:
        orders.audit.removeHandler(handler)
    assert (result["ack"], item(wl, "A9").PatientID) == ("AA", "P1")
    fallback = [r.getMessage() for r in caplog.records if r.name == "orders" and r.levelno == logging.ERROR]
    assert len(fallback) == 1 and '"accession": "A9"' in fallback[0] and "PermissionError" in fallback[0]


@pytest.mark.parametrize(("header", "sender"), [
    (b"PROXY TCP4 10.77.20.11 10.77.40.12 40001 2575\r\n", ("10.77.20.11", 40001)),
    (b"PROXY TCP6 fd00::11 fd00::12 40001 2575\r\n", ("fd00::11", 40001)),
    (b"PROXY TCP4 10.77.20.11 10.77.40.12 40001 2575\n", None),  # a bare LF
    (b"PROXY UNKNOWN\r\n", None),
    (b"PROXY TCP4 10.77.20.300 10.77.40.12 40001 2575\r\n", None),
    (b"PROXY TCP4 10.77.20.11 10.77.40.12 0 2575\r\n", None),
    (b"PROXY TCP4 10.77.20.11 10.77.40.12 70000 2575\r\n", None),
    (b"PROXY TCP4 " + b"1" * 120 + b"\r\n", None),
    (b"PROXY TCP4 10.77.20.11 10.77.40.12 40001 2575\r\nPROXY TCP4 10.77.20.66 10.77.40.12 1 2575\r\n", ("10.77.20.11", 40001)),
    (orders.frame(b"MSH|^~\\&|"), None),
])
def test_the_proxy_header_names_the_sender_or_nothing(header: bytes, sender: tuple[str, int] | None) -> None:
    async def read() -> tuple[str, int] | None:
        reader = asyncio.StreamReader()
        reader.feed_data(header + orders.frame(b"MSH|"))
        reader.feed_eof()
        return await orders.read_proxy_header(reader)

    loop = asyncio.new_event_loop()  # not asyncio.run: it leaves no event loop set, which later tests' libraries (Pulumi's mocks) expect
    try:
        assert loop.run_until_complete(read()) == sender
    finally:
        loop.close()


def test_behind_stunnel_the_record_names_the_stations_address_not_loopback(proxied_listener: int, wl: Path,
                                                                           caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="orders.audit")
    with socket.create_connection(("127.0.0.1", proxied_listener), timeout=10) as sock:
        sock.sendall(b"PROXY TCP4 10.77.20.11 10.77.40.12 40003 2575\r\n")
        assert _exchange(sock, orders.frame(order(acc="A93", control="C93").encode()))["ack"] == "AA"
        assert _exchange(sock, b"no start block" + orders.FS + orders.CR)["ack"] == "AR"
    assert [(r["event"], r["src_ip"], r["src_port"], r.get("accession"), r.get("code")) for r in records(caplog)] == [
        ("order-scheduled", "10.77.20.11", 40003, "A93", None), ("message-refused", "10.77.20.11", 40003, None, 100)]


TCP_TABLE = """\
  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode
   0: 0100007F:0A10 00000000:0000 0A 00000000:00000000 00:00000000 00000000   101        0 23411 1 0000000000000000 100 0 0 10 0
   1: 0100007F:0A10 0100007F:9C40 01 00000000:00000000 00:00000000 00000000   101        0 23500 1 0000000000000000 20 4 30 10 -1
   2: 0100007F:9C40 0100007F:0A10 01 00000000:00000000 00:00000000 00000000   105        0 23499 1 0000000000000000 20 4 30 10 -1
   3: 0C284D0A:0A0F 0B144D0A:9C41 01 00000000:00000000 02:000A1C2D 00000000     0        0 0 2 0000000000000000 20 4 29 10 -1
"""


def test_the_owner_of_a_loopback_peer_is_read_from_the_kernels_socket_table(tmp_path: Path) -> None:
    """proc(5) /proc/net/tcp as a little-endian machine writes it (127.0.0.1 is 0100007F): the socket
    that connected from port 40000 to the listener on 2576 is uid 105's; the listener's own end of
    it, uid 101's; no socket, no owner; IPv6, no answer."""
    table = tmp_path / "tcp"
    table.write_text(TCP_TABLE)
    assert orders.socket_owner(("127.0.0.1", 40000), ("127.0.0.1", 2576), table) == 105
    assert orders.socket_owner(("127.0.0.1", 2576), ("127.0.0.1", 40000), table) == 101
    assert orders.socket_owner(("127.0.0.1", 40001), ("127.0.0.1", 2576), table) is None
    assert orders.socket_owner(("::1", 40000), ("::1", 2576), table) is None
    assert orders._owner(None, ("127.0.0.1", 2576)) is None  # the peer reset before it was accepted: no address


def test_behind_stunnel_a_connection_from_another_users_socket_is_closed_unanswered(wl: Path, caplog: pytest.LogCaptureFixture) -> None:
    """A local process of another user than the front's (here the front is another uid than this
    test's) writes a header naming a station and a valid order: closed before a byte is read,
    nothing scheduled, and recorded with the uid that connected."""
    caplog.set_level(logging.INFO, logger="orders.audit")
    with listening(wl, proxied=True, front_uid=os.getuid() + 1) as port:
        with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
            sock.sendall(b"PROXY TCP4 10.77.20.11 10.77.40.12 40005 2575\r\n" + orders.frame(order(acc="A95", control="C95").encode()))
            try:
                answered = sock.recv(65536)
            except ConnectionResetError:  # closed with the bytes unread: the kernel resets
                answered = b""
            assert answered == b""
    assert not (wl / "A95.wl").exists()
    refused = {"event": "connection-refused", "src_ip": None, "src_port": None, "reason": "not-the-front",
               "error": f"not from the TLS front: the connecting socket is uid {os.getuid()}'s"}
    assert records(caplog)[-1:] == [refused]  # the readiness probe's own refusal may come in before it, the same
    assert all(r == refused for r in records(caplog))


def test_behind_stunnel_a_connection_without_its_header_is_closed_unanswered(proxied_listener: int, wl: Path,
                                                                             caplog: pytest.LogCaptureFixture) -> None:
    """Only the TLS front reaches the loopback port; a stream that does not begin with its header
    is not the front's: closed, nothing scheduled, and recorded."""
    caplog.set_level(logging.INFO, logger="orders.audit")
    with socket.create_connection(("127.0.0.1", proxied_listener), timeout=10) as sock:
        sock.sendall(orders.frame(order(acc="A94", control="C94").encode()))
        assert sock.recv(65536) == b""
    assert not (wl / "A94.wl").exists()
    assert records(caplog) == [{"event": "connection-refused", "src_ip": None, "src_port": None, "reason": "no-proxy-header",
                                "error": "no PROXY protocol header: not from the TLS front"}]
