"""HL7 orders into the live RIS as real feeds send them (issue 10, items 1-5): from the order-entry
station, through the RIS's TLS front, each message's ACK read back and the worklist read as the
modality reads it (C-FIND from the station, over its own TLS identity).

The unit suite (tests/unit/test_orders.py) covers every parsing case; these prove that what runs on
the RIS behaves the same, end to end: no order lands on another patient, none is lost silently,
names arrive exactly as sent.
"""

from __future__ import annotations

import json
import secrets
from typing import Any

import pytest

from pacslab.listeners import role_var
from pacslab.probes import imaging as im
from pacslab.topology import Lab

from .test_imaging import _first_tls_station, modality_of, order_entry, the

pytestmark = pytest.mark.control("C-DAT-03")


def _message(station: str, modality: str, *groups: str, pid: str, name: str, control: str, charset: str = "", extra: str = "") -> str:
    msh = f"MSH|^~\\&|ORDERS|PACSLAB|RIS|PACSLAB|20261130120000||ORM^O01|{control}|P|2.3" + ("|" * 6 + charset if charset else "")
    segments = [msh, f"PID|1||{pid}^^^PACSLAB||{name}||19700101|F", *([extra] if extra else [])]
    for acc in groups:
        segments += [f"ORC|NW|{acc}", f"OBR|1|{acc}||SYN^synthetic study" + "|" * 14 + acc + "|" * 6 + modality + "|" * 16 + station]
    return "\r".join(segments) + "\r"


def _worklist(lab: Lab, station: str) -> dict[str, dict[str, Any]]:
    """The station's worklist as its C-FIND answers it: accession -> item."""
    answer = im.dicomsim(lab, station, "worklist", "--peer", the(lab, "ris_servers").name)
    assert answer["established"], answer
    return {i["accession"]: i for i in answer["items"]}


def _held(lab: Lab) -> set[str]:
    return set(im.exec_in(lab, the(lab, "ris_servers").name, "ls", "/var/lib/orthanc/worklists").split())


@pytest.fixture
def route(running_lab: Lab) -> tuple[Lab, str, str, str, str]:
    """(lab, order-entry host, station host, its AE title, its modality)."""
    station = _first_tls_station(running_lab)
    return running_lab, order_entry(running_lab).name, station.name, str(station.ae_title), modality_of(running_lab, station)


def test_a_segment_without_fields_gets_an_error_ack_and_the_connection_goes_on(route, evidence) -> None:
    lab, sender, station, ae, modality = route
    tag = secrets.token_hex(3).upper()
    broken = _message(ae, modality, f"B{tag}", pid=f"PB{tag}", name="PACSLAB^BARE", control=f"CB{tag}").replace("\rORC|NW|", "\rORC\rORC|NW|")
    good = _message(ae, modality, f"G{tag}", pid=f"PG{tag}", name="PACSLAB^AFTER", control=f"CG{tag}")
    first, second = im.send_raw(lab, sender, [broken.encode(), good.encode()])
    evidence.update(broken=first, good={k: second.get(k) for k in ("ack", "control_id")})
    assert (first["ack"], first["control_id"], first["error_code"]) == ("AE", f"CB{tag}", "100"), first
    assert "segment ORC" in first["error"]
    assert (second["ack"], second["control_id"]) == ("AA", f"CG{tag}"), second
    held = _held(lab)
    assert f"G{tag}.wl" in held and f"B{tag}.wl" not in held


def test_every_order_of_a_message_is_scheduled_on_its_patient(route, evidence) -> None:
    lab, sender, station, ae, modality = route
    tag = secrets.token_hex(3).upper()
    both = _message(ae, modality, f"M{tag}1", f"M{tag}2", pid=f"PM{tag}", name="PACSLAB^TWOORDERS", control=f"CM{tag}")
    [result] = im.send_raw(lab, sender, [both.encode()])
    items = _worklist(lab, station)
    evidence.update(ack=result["ack"], items={a: items[a]["patient_id"] for a in items if a.startswith(f"M{tag}")})
    assert result["ack"] == "AA", result
    assert {a: (items[a]["patient_id"], items[a]["patient_name"]) for a in items if a.startswith(f"M{tag}")} == {
        f"M{tag}1": (f"PM{tag}", "PACSLAB^TWOORDERS"), f"M{tag}2": (f"PM{tag}", "PACSLAB^TWOORDERS")}


def test_a_message_with_one_taken_accession_schedules_none(route, evidence) -> None:
    lab, sender, station, ae, modality = route
    tag = secrets.token_hex(3).upper()
    first = _message(ae, modality, f"T{tag}2", pid=f"PT{tag}", name="PACSLAB^FIRST", control=f"CT{tag}1")
    again = _message(ae, modality, f"T{tag}1", f"T{tag}2", pid=f"PX{tag}", name="PACSLAB^SECOND", control=f"CT{tag}2")
    one, two = im.send_raw(lab, sender, [first.encode(), again.encode()])
    items = _worklist(lab, station)
    evidence.update(first=one["ack"], second={k: two.get(k) for k in ("ack", "error_code", "error")})
    assert one["ack"] == "AA" and (two["ack"], two["error_code"]) == ("AE", "205"), two
    assert f"T{tag}1" not in items and items[f"T{tag}2"]["patient_id"] == f"PT{tag}"


# The RIS writes each item in the character set of its order (ISO_IR 100 for 8859/1, ISO_IR 192 for
# UTF-8: tests/unit/test_orders.py); Orthanc answers every worklist query in its DefaultEncoding,
# UTF-8 (roles/orthanc), so the modality reads ISO_IR 192 whatever the order came in.
@pytest.mark.parametrize(
    ("charset", "codec", "name", "dicom"),
    [("8859/1", "latin-1", "MÜLLER^JÖRG", "ISO_IR 192"), ("UNICODE UTF-8", "utf-8", "ΠΑΠΑΔΟΠΟΥΛΟΣ^ΓΙΩΡΓΟΣ", "ISO_IR 192"),
     ("", "ascii", "PACSLAB^PLAIN", "ISO_IR 192")],
    ids=["latin-1", "utf-8-greek", "ascii"],
)
def test_a_name_reaches_the_modality_exactly_as_sent(route, charset: str, codec: str, name: str, dicom: str, evidence) -> None:
    lab, sender, station, ae, modality = route
    tag = secrets.token_hex(3).upper()
    raw = _message(ae, modality, f"N{tag}", pid=f"PN{tag}", name=name, control=f"CN{tag}", charset=charset).encode(codec)
    [result] = im.send_raw(lab, sender, [raw])
    item = _worklist(lab, station)[f"N{tag}"]
    evidence.update(ack=result["ack"], name=item["patient_name"], charset=item["charset"])
    assert result["ack"] == "AA", result
    assert (item["patient_name"], item["charset"]) == (name, dicom)


def test_bytes_beyond_the_declared_charset_are_refused(route, evidence) -> None:
    """The negative twin: Latin-1 bytes in a message that declares no character set (ASCII)."""
    lab, sender, station, ae, modality = route
    tag = secrets.token_hex(3).upper()
    raw = _message(ae, modality, f"N{tag}", pid=f"PN{tag}", name="MÜLLER^JÖRG", control=f"CN{tag}").encode("latin-1")
    [result] = im.send_raw(lab, sender, [raw])
    evidence.update(answer={k: result.get(k) for k in ("ack", "error_code", "error")})
    assert (result["ack"], result["error_code"]) == ("AR", "102"), result
    assert f"N{tag}.wl" not in _held(lab)


def test_a_line_feed_in_a_comment_cannot_move_the_order_to_another_patient(route, evidence) -> None:
    lab, sender, station, ae, modality = route
    tag = secrets.token_hex(3).upper()
    note = f"NTE|1||call ward 4\nPID|1||EVIL{tag}^^^PACSLAB||INTRUDER^EVE||19990101|M"
    raw = _message(ae, modality, f"L{tag}", pid=f"PL{tag}", name="PACSLAB^REAL", control=f"CL{tag}", extra=note)
    [result] = im.send_raw(lab, sender, [raw.encode()])
    item = _worklist(lab, station)[f"L{tag}"]
    evidence.update(ack=result["ack"], patient=(item["patient_id"], item["patient_name"]))
    assert result["ack"] == "AA", result
    assert (item["patient_id"], item["patient_name"]) == (f"PL{tag}", "PACSLAB^REAL")


def test_eight_senders_of_one_accession_schedule_exactly_one(route, evidence) -> None:
    lab, sender, station, ae, modality = route
    tag = secrets.token_hex(3).upper()
    raws = [_message(ae, modality, f"R{tag}", pid=f"PR{tag}{i}", name=f"PACSLAB^RACE{i}", control=f"CR{tag}{i}").encode() for i in range(8)]
    results = im.send_raw(lab, sender, raws, connections="each")
    accepted = [i for i, r in enumerate(results) if r["ack"] == "AA"]
    item = _worklist(lab, station)[f"R{tag}"]
    evidence.update(acks=[r["ack"] for r in results], codes=[r.get("error_code") for r in results], worklist_patient=item["patient_id"])
    assert len(accepted) == 1, results
    assert [(r["ack"], r.get("error_code")) for i, r in enumerate(results) if i != accepted[0]] == [("AE", "205")] * 7, results
    assert item["patient_id"] == f"PR{tag}{accepted[0]}"


# Run as Orthanc's user on the RIS (argv: one scheduled item's file name): each attempt's outcome,
# "ok" or the errno's name. The worklist folder and the record are the ones the running listener
# was given (its command line: --worklists, --record).
_AS_ORTHANC = r"""
import errno, json, os, sys
item = sys.argv[1]
def attempt(action):
    try:
        action()
        return "ok"
    except OSError as e:
        return errno.errorcode[e.errno]
def listener():
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            with open(f"/proc/{pid}/cmdline", "rb") as f:
                argv = f.read().decode().split("\0")
        except OSError:
            continue
        if "listen" in argv and any(a.endswith("orders.py") for a in argv):
            return int(pid), argv
    raise SystemExit("no listener")
pid, argv = listener()
folder, record = argv[argv.index("--worklists") + 1], argv[argv.index("--record") + 1]
print(json.dumps({
    "read-item": attempt(lambda: open(os.path.join(folder, item), "rb").read()),
    "create-item": attempt(lambda: open(os.path.join(folder, "FORGED.wl"), "xb").close()),
    "rewrite-item": attempt(lambda: open(os.path.join(folder, item), "r+b").close()),
    "append-record": attempt(lambda: open(record, "ab").close()),
    "signal-listener": attempt(lambda: os.kill(pid, 0)),  # 0: the permission check of a signal, none sent
}))
"""


def test_orthancs_user_on_the_ris_reads_the_worklist_and_cannot_forge_an_order(route, evidence) -> None:
    """The listener runs as a user of its own (pacslab_hl7_user, roles/ris): the items it writes and
    its record are its own. Orthanc's user on the RIS (whose worklists plugin serves the items)
    reads a scheduled item, and is refused (EACCES) a new item, the rewrite of the scheduled one
    and an append to the listener's record, and may not signal the listener (EPERM): a process
    of Orthanc's cannot put an order on a patient without a message, nor rewrite the record of one."""
    lab, sender, station, ae, modality = route
    ris = the(lab, "ris_servers").name
    tag = secrets.token_hex(3).upper()
    [sent] = im.send_raw(lab, sender, [_message(ae, modality, f"O{tag}", pid=f"PO{tag}", name="PACSLAB^OWNED", control=f"CO{tag}").encode()])
    assert sent["ack"] == "AA", sent
    folder = str(role_var(lab, ris, "ris", "ris_worklists_dir"))
    owner = im.exec_in(lab, ris, "stat", "-c", "%U:%G %a", f"{folder}/O{tag}.wl", folder).split("\n")
    outcomes = json.loads(im.exec_in(lab, ris, "runuser", "-u", "orthanc", "--", "python3", "-c", _AS_ORTHANC, f"O{tag}.wl"))
    evidence.update(owner=owner, outcomes=outcomes)
    assert owner[:2] == ["pacslab-hl7:pacslab-hl7 644", "pacslab-hl7:orthanc 750"]
    assert outcomes == {"read-item": "ok", "create-item": "EACCES", "rewrite-item": "EACCES", "append-record": "EACCES",
                        "signal-listener": "EPERM"}
