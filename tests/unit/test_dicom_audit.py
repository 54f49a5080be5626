"""The DICOM audit messages of roles/orthanc/files/pacslab_audit.py against what PS3.15 A.5
requires of each message type: the EventID and EventActionCode of A.5.3, the element order of the
A.5.1 schema, the roles of the active participants and the participant objects with their type
codes. Each expectation is written out here from the standard's tables, not taken from the module."""

from __future__ import annotations

import base64
import importlib.util
import sys
import xml.etree.ElementTree as ET
from datetime import UTC, datetime
from pathlib import Path

import pytest

_spec = importlib.util.spec_from_file_location("pacslab_audit", Path(__file__).parents[2] / "roles" / "orthanc" / "files" / "pacslab_audit.py")
assert _spec and _spec.loader
audit = importlib.util.module_from_spec(_spec)
sys.modules[_spec.name] = audit  # dataclasses look their module up there
_spec.loader.exec_module(audit)

WHEN = datetime(2026, 11, 30, 10, 0, 0, 123000, tzinfo=UTC)
PACS = audit.Source("PACS", "pacslab")
MODALITY = audit.Participant("CT01", requestor=True, address="10.77.20.10", ae_titles=("CT01",))
ME = audit.Participant("orthanc", address="10.77.40.10", ae_titles=("PACS",))
RAD = audit.Participant("rad1", requestor=True, address="10.77.60.10")
STUDY = audit.Study("1.2.826.0.1.3680043.8.498.1", accession="A1", sop_classes={"1.2.840.10008.5.1.4.1.1.2": 4})
PATIENT = audit.Patient("P1", "PACSLAB^ONE")


def parse(xml: str) -> ET.Element:
    root = ET.fromstring(xml)
    assert root.tag == "AuditMessage" and "}" not in root.tag  # no namespace (A.5.1)
    order = [child.tag for child in root]
    # A.5.1: EventIdentification, ActiveParticipant+, AuditSourceIdentification, ParticipantObjectIdentification*
    assert order[0] == "EventIdentification"
    participants = [i for i, t in enumerate(order) if t == "ActiveParticipant"]
    assert participants and participants == list(range(1, len(participants) + 1))
    assert order[len(participants) + 1] == "AuditSourceIdentification"
    assert all(t == "ParticipantObjectIdentification" for t in order[len(participants) + 2:])
    source = root.find("AuditSourceIdentification")
    assert source is not None and source.get("AuditSourceID") == "PACS" and source.get("AuditEnterpriseSiteID") == "pacslab"
    assert [c.attrib for c in source] == [{"csd-code": "4"}]  # application server process
    return root


def code(element: ET.Element | None) -> tuple[str | None, str | None, str | None]:
    assert element is not None
    return element.get("csd-code"), element.get("codeSystemName"), element.get("originalText")


def event(root: ET.Element) -> dict[str, object]:
    ident = root.find("EventIdentification")
    assert ident is not None
    return {"id": code(ident.find("EventID")), "action": ident.get("EventActionCode"), "outcome": ident.get("EventOutcomeIndicator"),
            "time": ident.get("EventDateTime"), "types": [code(t) for t in ident.findall("EventTypeCode")]}


def participants(root: ET.Element) -> list[dict[str, object]]:
    return [{"user": p.get("UserID"), "requestor": p.get("UserIsRequestor"), "alt": p.get("AlternativeUserID"),
             "nap": (p.get("NetworkAccessPointID"), p.get("NetworkAccessPointTypeCode")),
             "roles": [code(r) for r in p.findall("RoleIDCode")]} for p in root.findall("ActiveParticipant")]


def objects(root: ET.Element) -> list[dict[str, object]]:
    return [{"id": o.get("ParticipantObjectID"), "type": o.get("ParticipantObjectTypeCode"), "role": o.get("ParticipantObjectTypeCodeRole"),
             "id_type": code(o.find("ParticipantObjectIDTypeCode"))} for o in root.findall("ParticipantObjectIdentification")]


STUDY_OBJECT = {"id": "1.2.826.0.1.3680043.8.498.1", "type": "2", "role": "3", "id_type": ("110180", "DCM", "Study Instance UID")}
PATIENT_OBJECT = {"id": "P1", "type": "1", "role": "1", "id_type": ("2", "RFC-3881", "Patient Number")}


def test_application_activity_start() -> None:
    """A.5.3.1: EventID 110100, action E, type 110120 Application Start; the application in role
    110150; no participant objects."""
    root = parse(audit.application_activity(True, ME, PACS, when=WHEN))
    assert event(root) == {"id": ("110100", "DCM", "Application Activity"), "action": "E", "outcome": "0",
                           "time": "2026-11-30T10:00:00.123+00:00", "types": [("110120", "DCM", "Application Start")]}
    assert participants(root) == [{"user": "orthanc", "requestor": "false", "alt": "AETITLES=PACS", "nap": ("10.77.40.10", "2"),
                                   "roles": [("110150", "DCM", "Application")]}]
    assert objects(root) == []


def test_application_activity_stop_with_its_launcher() -> None:
    root = parse(audit.application_activity(False, ME, PACS, launcher=audit.Participant("supervisord", address="pacs"), when=WHEN))
    assert event(root)["types"] == [("110121", "DCM", "Application Stop")]
    assert [(p["user"], p["requestor"], p["nap"], p["roles"]) for p in participants(root)] == [
        ("orthanc", "false", ("10.77.40.10", "2"), [("110150", "DCM", "Application")]),
        ("supervisord", "true", ("pacs", "1"), [("110151", "DCM", "Application Launcher")])]


def test_instances_transferred() -> None:
    """A.5.3.7: EventID 110104; sender 110153 and receiver 110152; the study (with its accession
    and SOP class count) and its patient (with the name)."""
    root = parse(audit.instances_transferred("C", MODALITY, ME, [STUDY], PATIENT, PACS, when=WHEN))
    assert event(root)["id"] == ("110104", "DCM", "DICOM Instances Transferred") and event(root)["action"] == "C"
    assert participants(root) == [
        {"user": "CT01", "requestor": "true", "alt": "AETITLES=CT01", "nap": ("10.77.20.10", "2"), "roles": [("110153", "DCM", "Source Role ID")]},
        {"user": "orthanc", "requestor": "false", "alt": "AETITLES=PACS", "nap": ("10.77.40.10", "2"),
         "roles": [("110152", "DCM", "Destination Role ID")]}]
    assert objects(root) == [STUDY_OBJECT, PATIENT_OBJECT]
    study = root.findall("ParticipantObjectIdentification")[0]
    assert ET.tostring(study.find("ParticipantObjectDescription"), encoding="unicode") == (
        '<ParticipantObjectDescription><Accession Number="A1" /><SOPClass UID="1.2.840.10008.5.1.4.1.1.2" NumberOfInstances="4" />'
        "</ParticipantObjectDescription>")
    assert root.findall("ParticipantObjectIdentification")[1].findtext("ParticipantObjectName") == "PACSLAB^ONE"


def test_instances_accessed() -> None:
    """A.5.3.6: EventID 110103 with the action (R: read); the person; the study and the patient."""
    root = parse(audit.instances_accessed("R", [RAD], [STUDY], PATIENT, PACS, when=WHEN))
    assert (event(root)["id"], event(root)["action"]) == (("110103", "DCM", "DICOM Instances Accessed"), "R")
    assert participants(root) == [{"user": "rad1", "requestor": "true", "alt": None, "nap": ("10.77.60.10", "2"), "roles": []}]
    assert objects(root) == [STUDY_OBJECT, PATIENT_OBJECT]


def test_study_deleted() -> None:
    """A.5.3.8: EventID 110105, action D; who deleted; the study and the patient."""
    root = parse(audit.study_deleted([RAD], [audit.Study("1.2.3")], audit.Patient("P1"), PACS, when=WHEN))
    assert (event(root)["id"], event(root)["action"]) == (("110105", "DCM", "DICOM Study Deleted"), "D")
    assert [o["id"] for o in objects(root)] == ["1.2.3", "P1"]
    assert root.findall("ParticipantObjectIdentification")[0].find("ParticipantObjectDescription") is None


def test_query() -> None:
    """A.5.3.10: EventID 110112, action E; issuer 110153, responder 110152; the SOP Class queried
    (ID type 110181) with the query, base64, and its transfer syntax (detail TransferSyntax, base64)."""
    find = b'{"Level": "Study", "Query": {"PatientName": "PACSLAB*"}}'
    root = parse(audit.query(RAD, ME, "1.2.840.10008.5.1.4.1.2.2.1", find, PACS, when=WHEN))
    assert (event(root)["id"], event(root)["action"]) == (("110112", "DCM", "Query"), "E")
    assert [p["roles"] for p in participants(root)] == [[("110153", "DCM", "Source Role ID")], [("110152", "DCM", "Destination Role ID")]]
    assert objects(root) == [{"id": "1.2.840.10008.5.1.4.1.2.2.1", "type": "2", "role": "3", "id_type": ("110181", "DCM", "SOP Class UID")}]
    obj = root.find("ParticipantObjectIdentification")
    assert obj is not None and base64.b64decode(obj.findtext("ParticipantObjectQuery") or "") == find
    detail = obj.find("ParticipantObjectDetail")
    assert detail is not None and detail.get("type") == "TransferSyntax" and base64.b64decode(detail.get("value") or "") == b"1.2.840.10008.1.2"


# A C-FIND identifier in Implicit VR Little Endian (PS3.5 7.1.3, A.1): tag (group, element, little
# endian), a 32-bit length, the value padded to even length (text with a space, UI with a NUL).
C_FIND_CASES = [
    ({"0008,0050": "A1"}, b"\x08\x00\x50\x00\x02\x00\x00\x00A1"),
    ({"0008,0052": "STUDY", "0020,000D": ""}, b"\x08\x00\x52\x00\x06\x00\x00\x00STUDY " + b"\x20\x00\x0d\x00\x00\x00\x00\x00"),
    ({"0020,000D": "1.2.3"}, b"\x20\x00\x0d\x00\x06\x00\x00\x001.2.3\x00"),
    ({"0010,0010": "Ω^A"}, b"\x08\x00\x05\x00\x0a\x00\x00\x00ISO_IR 192" + b"\x10\x00\x10\x00\x04\x00\x00\x00\xce\xa9^A"),
    ({"0028,0010": "512"}, b"\x28\x00\x10\x00\x02\x00\x00\x00\x00\x02"),  # US: a number, not its text
    ({"0008,1110": None}, b"\x08\x00\x10\x11\x00\x00\x00\x00"),  # a sequence key asked empty
    ({"0009,1001": "ab"}, b"\x09\x00\x01\x10\x02\x00\x00\x00ab"),  # private: UN, its bytes
]


@pytest.mark.parametrize(("keys", "expected"), C_FIND_CASES, ids=["accession", "level-and-empty-uid", "uid-nul-padded", "utf-8-name",
                                                                  "us-number", "empty-sequence", "private"])
def test_c_find_identifier(keys: dict[str, str | None], expected: bytes) -> None:
    """The identifier a Query message carries for a C-FIND, from the keys Orthanc's filter hands on:
    each key in its dictionary VR, in tag order, UTF-8 named by SpecificCharacterSet when needed."""
    assert audit.c_find_identifier(keys) == expected


@pytest.mark.parametrize(("keys", "says"), [
    ({"PatientName": "X"}, "a tag gggg,eeee"),
    ({"0008,0050": 5}, "a string value"),
    ({"0028,0010": "many"}, "invalid literal"),
    ({"7FE0,0010": "x"}, "which a C-FIND key cannot carry"),
], ids=["keyword-not-tag", "not-a-string", "us-not-a-number", "pixel-data"])
def test_c_find_identifier_refuses_what_is_not_a_c_find_key(keys: dict[str, object], says: str) -> None:
    with pytest.raises(ValueError, match=says):
        audit.c_find_identifier(keys)  # type: ignore[arg-type]


def test_security_alert() -> None:
    """A.5.3.11: EventID 110113, action E, its type from DCID 401; the reporter; who performed it
    is never the requestor; the alert subject (role 13, a node: ID type 110182) with its
    "Alert Description" detail, base64; outcome 4: mitigated."""
    root = parse(audit.security_alert(audit.USE_OF_RESTRICTED_FUNCTION, ME, "10.77.20.10", "a SOP Instance UID that is a path: ../x",
                                      PACS, outcome=audit.MINOR_FAILURE, performing=[MODALITY], when=WHEN))
    assert event(root) == {"id": ("110113", "DCM", "Security Alert"), "action": "E", "outcome": "4", "time": "2026-11-30T10:00:00.123+00:00",
                           "types": [("110132", "DCM", "Use of Restricted Function")]}
    assert [(p["user"], p["requestor"]) for p in participants(root)] == [("orthanc", "false"), ("CT01", "false")]
    assert objects(root) == [{"id": "10.77.20.10", "type": "2", "role": "13", "id_type": ("110182", "DCM", "Node ID")}]
    detail = root.find("ParticipantObjectIdentification/ParticipantObjectDetail")
    assert detail is not None and detail.get("type") == "Alert Description"
    assert base64.b64decode(detail.get("value") or "").decode() == "a SOP Instance UID that is a path: ../x"
    uri = parse(audit.security_alert(audit.SOFTWARE_CONFIGURATION, ME, "/instances/abc", "x", PACS, when=WHEN))
    assert objects(uri)[0]["id_type"] == ("12", "RFC-3881", "URI")


def test_user_authentication() -> None:
    """A.5.3.12: EventID 110114, action E, type 110122 Login or 110123 Logout; the user with its
    network access point; a failed login is outcome 4."""
    root = parse(audit.user_authentication(True, RAD, PACS, outcome=audit.MINOR_FAILURE, when=WHEN))
    assert event(root) == {"id": ("110114", "DCM", "User Authentication"), "action": "E", "outcome": "4",
                           "time": "2026-11-30T10:00:00.123+00:00", "types": [("110122", "DCM", "Login")]}
    assert participants(root)[0]["nap"] == ("10.77.60.10", "2") and objects(root) == []
    assert event(parse(audit.user_authentication(False, RAD, PACS, when=WHEN)))["types"] == [("110123", "DCM", "Logout")]


@pytest.mark.parametrize(("build", "reason"), [
    (lambda: audit.instances_accessed("E", [RAD], [STUDY], PATIENT, PACS), "C, R, U or D"),
    (lambda: audit.instances_transferred("D", MODALITY, ME, [STUDY], PATIENT, PACS), "C, R or U"),
    (lambda: audit.instances_accessed("R", [RAD], [], PATIENT, PACS), "at least one study"),
    (lambda: audit.instances_accessed("R", [RAD, RAD, RAD], [STUDY], PATIENT, PACS), "one or two participants"),
    (lambda: audit.instances_transferred("C", MODALITY, RAD, [STUDY], PATIENT, PACS), "at most one ActiveParticipant is the requestor"),
    (lambda: audit.user_authentication(True, audit.Participant("rad1", True), PACS), "network access point"),
    (lambda: audit.instances_accessed("R", [RAD], [STUDY], PATIENT, PACS, outcome=3), "0, 4, 8 or 12"),
    (lambda: audit.application_activity(True, ME, PACS, when=datetime(2026, 11, 30)), "time zone"),
    (lambda: audit.study_deleted([RAD], [audit.Study("1.2.3", accession="A1")], PATIENT, PACS), "needs its SOPClass"),
])
def test_a_message_the_standard_does_not_allow_is_refused(build, reason: str) -> None:
    with pytest.raises(ValueError, match=reason):
        build()


def test_a_line_feed_in_a_value_keeps_the_message_on_one_line() -> None:
    """The audit file holds one message per line (roles/log_shipping ships it line by line): a
    patient name with a line feed must not split a message, and parses back to the same name."""
    xml = audit.instances_accessed("R", [RAD], [STUDY], audit.Patient("P1", "PACSLAB^ONE\nP2"), PACS, when=WHEN)
    one = audit.line(xml)
    assert "\n" not in one and "\r" not in one
    assert ET.fromstring(one).findall("ParticipantObjectIdentification")[1].findtext("ParticipantObjectName") == "PACSLAB^ONE\nP2"


def test_a_control_character_from_a_sender_still_gives_a_message_that_parses() -> None:
    """A patient's name or an AE title comes from the sender: an escape or a NUL (not allowed in
    XML 1.0) is written as U+FFFD; a tab stays a tab, on the same line."""
    who = audit.Participant("CT\x1b01", requestor=True, address="10.77.20.10", ae_titles=("CT\x0001",))
    xml = audit.line(audit.instances_transferred("C", who, ME, [STUDY], audit.Patient("P\x1b1", "PACSLAB^\tTAB"), PACS, when=WHEN))
    root = ET.fromstring(xml)
    assert "\t" not in xml and "\n" not in xml
    assert participants(root)[0]["user"] == "CT\ufffd01" and participants(root)[0]["alt"] == "AETITLES=CT\ufffd01"
    patient = root.findall("ParticipantObjectIdentification")[1]
    assert (patient.get("ParticipantObjectID"), patient.findtext("ParticipantObjectName")) == ("P\ufffd1", "PACSLAB^\tTAB")
