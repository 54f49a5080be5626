"""DICOM audit messages (PS3.15 A.5, the Audit Trail Message Format Profile): the XML of each
message type the lab's Orthanc hosts emit, built with the standard library's ElementTree (this
module runs inside Orthanc's Python plugin, roles/orthanc, where only Debian's python3 is).

The schema followed is A.5.1's (root AuditMessage, no namespace; children in the order
EventIdentification, ActiveParticipant+, AuditSourceIdentification, ParticipantObjectIdentification*;
coded values as csd-code, codeSystemName, originalText). Per message type (A.5.3):

==========================================  =======  ======  ==========================================
message                                     EventID  action  participants / objects
==========================================  =======  ======  ==========================================
Application Activity (A.5.3.1)              110100   E       110150 Application; type 110120/110121
DICOM Instances Accessed (A.5.3.6)          110103   C/R/U/D  the person or process; Study(ies), Patient
DICOM Instances Transferred (A.5.3.7)       110104   C/R/U   110153 Source, 110152 Destination; Study, Patient
DICOM Study Deleted (A.5.3.8)               110105   D       the person or process; Study(ies), Patient
Query (A.5.3.10)                            110112   E       110153 issuer, 110152 responder; SOP Class + query
Security Alert (A.5.3.11)                   110113   E       reporter; type from DCID 401; alert subject
User Authentication (A.5.3.12)              110114   E       the user with its network access point; 110122/110123
==========================================  =======  ======  ==========================================

``line(xml)`` makes one message one line of the event file that roles/log_shipping sends to the
siem as RFC 5424 syslog over TLS (A.6): the XML has no line break of its own (a line feed or tab
inside a value is written as a character reference). Values come from senders (a patient's name,
an AE title): a character XML 1.0 does not allow (C0 controls but tab, line feed and carriage
return) is written as U+FFFD, so every message parses.
"""

from __future__ import annotations

import base64
import re
import xml.etree.ElementTree as ET
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

# Coded values: (csd-code, codeSystemName, originalText)
APPLICATION_ACTIVITY = ("110100", "DCM", "Application Activity")
INSTANCES_ACCESSED = ("110103", "DCM", "DICOM Instances Accessed")
INSTANCES_TRANSFERRED = ("110104", "DCM", "DICOM Instances Transferred")
STUDY_DELETED = ("110105", "DCM", "DICOM Study Deleted")
QUERY = ("110112", "DCM", "Query")
SECURITY_ALERT = ("110113", "DCM", "Security Alert")
USER_AUTHENTICATION = ("110114", "DCM", "User Authentication")

APPLICATION_START = ("110120", "DCM", "Application Start")
APPLICATION_STOP = ("110121", "DCM", "Application Stop")
LOGIN = ("110122", "DCM", "Login")
LOGOUT = ("110123", "DCM", "Logout")
# Security Alert event types (DCID 401) the lab raises
NODE_AUTHENTICATION = ("110126", "DCM", "Node Authentication")
SOFTWARE_CONFIGURATION = ("110131", "DCM", "Software Configuration")
USE_OF_RESTRICTED_FUNCTION = ("110132", "DCM", "Use of Restricted Function")
OBJECT_SECURITY_ATTRIBUTES_CHANGED = ("110135", "DCM", "Object Security Attributes Changed")

APPLICATION = ("110150", "DCM", "Application")
APPLICATION_LAUNCHER = ("110151", "DCM", "Application Launcher")
DESTINATION = ("110152", "DCM", "Destination Role ID")
SOURCE = ("110153", "DCM", "Source Role ID")

PATIENT_NUMBER = ("2", "RFC-3881", "Patient Number")
URI = ("12", "RFC-3881", "URI")
STUDY_INSTANCE_UID = ("110180", "DCM", "Study Instance UID")
SOP_CLASS_UID = ("110181", "DCM", "SOP Class UID")
NODE_ID = ("110182", "DCM", "Node ID")

# EventOutcomeIndicator (A.5.2): success, minor failure, serious failure, major failure
SUCCESS, MINOR_FAILURE, SERIOUS_FAILURE, MAJOR_FAILURE = 0, 4, 8, 12
ACTIONS = {"C", "R", "U", "D", "E"}
APPLICATION_SERVER = "4"  # AuditSourceTypeCode: application server process (a PACS, A.5.2)
SECURITY_SERVER = "6"  # AuditSourceTypeCode: security server (an identity provider, A.5.2)
IMPLICIT_LITTLE_ENDIAN = "1.2.840.10008.1.2"


@dataclass(frozen=True)
class Participant:
    """An ActiveParticipant: ``user_id`` (a person's login, or a process), ``requestor``
    (UserIsRequestor), ``address`` (an IP address: NetworkAccessPointTypeCode 2; or a machine name: 1),
    ``ae_titles`` (written AlternativeUserID="AETITLES=a;b", A.5.2.2), ``role`` (RoleIDCode)."""

    user_id: str
    requestor: bool = False
    address: str | None = None
    ae_titles: tuple[str, ...] = ()
    user_name: str | None = None
    role: tuple[str, str, str] | None = None


@dataclass(frozen=True)
class Study:
    """A Study participant object: its Study Instance UID, and optionally its accession number and
    SOP classes with their instance counts (an accession needs its SOP classes: A.5.3's MC)."""

    uid: str
    accession: str | None = None
    sop_classes: dict[str, int] = field(default_factory=dict)


@dataclass(frozen=True)
class Patient:
    """The Patient participant object: its Patient ID and, optionally, its name."""

    patient_id: str
    name: str | None = None


@dataclass(frozen=True)
class Source:
    """AuditSourceIdentification: the system that writes the message (its AuditSourceID) and the site."""

    source_id: str
    site: str | None = None
    type_code: str = APPLICATION_SERVER


_NOT_XML = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\ufffe\uffff\ud800-\udfff]")


def _clean(value: str) -> str:
    return _NOT_XML.sub("\ufffd", value)


def _sanitise(root: ET.Element) -> None:
    for element in root.iter():
        element.attrib.update({k: _clean(v) for k, v in element.attrib.items()})
        if element.text:
            element.text = _clean(element.text)


def _code(parent: ET.Element, tag: str, code: tuple[str, str, str]) -> ET.Element:
    return ET.SubElement(parent, tag, {"csd-code": code[0], "codeSystemName": code[1], "originalText": code[2]})


def _stamp(when: datetime | None) -> str:
    when = when or datetime.now(UTC)
    if when.tzinfo is None:
        raise ValueError("EventDateTime needs its time zone (A.5.2.5)")
    return when.isoformat(timespec="milliseconds")


def _message(event: tuple[str, str, str], action: str, outcome: int, source: Source, participants: list[Participant],
             objects: list[ET.Element], event_type: tuple[str, str, str] | None = None, when: datetime | None = None) -> str:
    if action not in ACTIONS:
        raise ValueError(f"EventActionCode {action!r}: one of {sorted(ACTIONS)}")
    if outcome not in (SUCCESS, MINOR_FAILURE, SERIOUS_FAILURE, MAJOR_FAILURE):
        raise ValueError(f"EventOutcomeIndicator {outcome!r}: 0, 4, 8 or 12")
    if not participants:
        raise ValueError("an audit message needs at least one ActiveParticipant")
    if sum(p.requestor for p in participants) > 1:
        raise ValueError("at most one ActiveParticipant is the requestor (A.5.2)")
    root = ET.Element("AuditMessage")
    ident = ET.SubElement(root, "EventIdentification", {"EventActionCode": action, "EventDateTime": _stamp(when),
                                                        "EventOutcomeIndicator": str(outcome)})
    _code(ident, "EventID", event)
    if event_type:
        _code(ident, "EventTypeCode", event_type)
    for p in participants:
        attrs = {"UserID": p.user_id, "UserIsRequestor": "true" if p.requestor else "false"}
        if p.ae_titles:
            attrs["AlternativeUserID"] = "AETITLES=" + ";".join(p.ae_titles)
        if p.user_name:
            attrs["UserName"] = p.user_name
        if p.address:
            attrs["NetworkAccessPointID"] = p.address
            attrs["NetworkAccessPointTypeCode"] = "2" if _is_ip(p.address) else "1"
        element = ET.SubElement(root, "ActiveParticipant", attrs)
        if p.role:
            _code(element, "RoleIDCode", p.role)
    src = ET.SubElement(root, "AuditSourceIdentification", {"AuditSourceID": source.source_id} | (
        {"AuditEnterpriseSiteID": source.site} if source.site else {}))
    ET.SubElement(src, "AuditSourceTypeCode", {"csd-code": source.type_code})
    root.extend(objects)
    _sanitise(root)
    return ET.tostring(root, encoding="unicode")


def _is_ip(address: str) -> bool:
    import ipaddress

    try:
        ipaddress.ip_address(address)
    except ValueError:
        return False
    return True


def _study(study: Study) -> ET.Element:
    if study.accession and not study.sop_classes:
        raise ValueError("a Study with an Accession needs its SOPClass (A.5.3, SOPClass MC)")
    element = ET.Element("ParticipantObjectIdentification", {"ParticipantObjectID": study.uid, "ParticipantObjectTypeCode": "2",
                                                             "ParticipantObjectTypeCodeRole": "3"})
    _code(element, "ParticipantObjectIDTypeCode", STUDY_INSTANCE_UID)
    if study.accession or study.sop_classes:
        description = ET.SubElement(element, "ParticipantObjectDescription")
        if study.accession:
            ET.SubElement(description, "Accession", {"Number": study.accession})
        for uid, count in sorted(study.sop_classes.items()):
            ET.SubElement(description, "SOPClass", {"UID": uid, "NumberOfInstances": str(count)})
    return element


def _patient(patient: Patient) -> ET.Element:
    element = ET.Element("ParticipantObjectIdentification", {"ParticipantObjectID": patient.patient_id, "ParticipantObjectTypeCode": "1",
                                                             "ParticipantObjectTypeCodeRole": "1"})
    _code(element, "ParticipantObjectIDTypeCode", PATIENT_NUMBER)
    if patient.name:
        ET.SubElement(element, "ParticipantObjectName").text = patient.name
    return element


def _objects(studies: list[Study], patient: Patient) -> list[ET.Element]:
    if not studies:
        raise ValueError("the message names at least one study (A.5.3)")
    return [*map(_study, studies), _patient(patient)]


def application_activity(started: bool, application: Participant, source: Source, outcome: int = SUCCESS,
                         launcher: Participant | None = None, when: datetime | None = None) -> str:
    """A.5.3.1: the application (RoleIDCode 110150) started (110120) or stopped (110121); an
    optional launcher (110151). No participant objects."""
    participants = [Participant(application.user_id, False, application.address, application.ae_titles, application.user_name, APPLICATION)]
    if launcher:
        participants.append(Participant(launcher.user_id, True, launcher.address, launcher.ae_titles, launcher.user_name, APPLICATION_LAUNCHER))
    return _message(APPLICATION_ACTIVITY, "E", outcome, source, participants, [], APPLICATION_START if started else APPLICATION_STOP, when)


def instances_accessed(action: str, who: list[Participant], studies: list[Study], patient: Patient, source: Source,
                       outcome: int = SUCCESS, when: datetime | None = None) -> str:
    """A.5.3.6: instances created (C), read (R), updated (U) or deleted (D) by one or two
    participants (a person and/or a process); the studies and their patient."""
    if action not in ("C", "R", "U", "D"):
        raise ValueError(f"DICOM Instances Accessed takes C, R, U or D, not {action!r}")
    if not 1 <= len(who) <= 2:
        raise ValueError("DICOM Instances Accessed names one or two participants")
    return _message(INSTANCES_ACCESSED, action, outcome, source, who, _objects(studies, patient), when=when)


def instances_transferred(action: str, sender: Participant, receiver: Participant, studies: list[Study], patient: Patient,
                          source: Source, outcome: int = SUCCESS, when: datetime | None = None) -> str:
    """A.5.3.7: instances went from the sender (110153) to the receiver (110152): C when the
    receiver had no copy, R when the audit source cannot tell, U when it reconciled; the studies
    and their patient. ``when`` is when the transfer completed."""
    if action not in ("C", "R", "U"):
        raise ValueError(f"DICOM Instances Transferred takes C, R or U, not {action!r}")
    participants = [Participant(sender.user_id, sender.requestor, sender.address, sender.ae_titles, sender.user_name, SOURCE),
                    Participant(receiver.user_id, receiver.requestor, receiver.address, receiver.ae_titles, receiver.user_name, DESTINATION)]
    return _message(INSTANCES_TRANSFERRED, action, outcome, source, participants, _objects(studies, patient), when=when)


def study_deleted(who: list[Participant], studies: list[Study], patient: Patient, source: Source, outcome: int = SUCCESS,
                  when: datetime | None = None) -> str:
    """A.5.3.8: whole studies deleted (D) by one or two participants; the studies and their patient."""
    if not 1 <= len(who) <= 2:
        raise ValueError("DICOM Study Deleted names one or two participants")
    return _message(STUDY_DELETED, "D", outcome, source, who, _objects(studies, patient), when=when)


def query(issuer: Participant, responder: Participant, sop_class_uid: str, query_text: bytes, source: Source,
          outcome: int = SUCCESS, transfer_syntax: str = IMPLICIT_LITTLE_ENDIAN, when: datetime | None = None) -> str:
    """A.5.3.10: the issuer (110153) asked the responder (110152); the object is the queried SOP
    Class (ID type 110181) with the query itself (ParticipantObjectQuery, base64) and its transfer
    syntax (ParticipantObjectDetail TransferSyntax, base64)."""
    participants = [Participant(issuer.user_id, issuer.requestor, issuer.address, issuer.ae_titles, issuer.user_name, SOURCE),
                    Participant(responder.user_id, responder.requestor, responder.address, responder.ae_titles, responder.user_name, DESTINATION)]
    element = ET.Element("ParticipantObjectIdentification", {"ParticipantObjectID": sop_class_uid, "ParticipantObjectTypeCode": "2",
                                                             "ParticipantObjectTypeCodeRole": "3"})
    _code(element, "ParticipantObjectIDTypeCode", SOP_CLASS_UID)
    ET.SubElement(element, "ParticipantObjectQuery").text = base64.b64encode(query_text).decode()
    ET.SubElement(element, "ParticipantObjectDetail", {"type": "TransferSyntax", "value": base64.b64encode(transfer_syntax.encode()).decode()})
    return _message(QUERY, "E", outcome, source, participants, [element], when=when)


def security_alert(event_type: tuple[str, str, str], reporter: Participant, subject: str, description: str, source: Source,
                   outcome: int = SUCCESS, performing: list[Participant] | None = None, when: datetime | None = None) -> str:
    """A.5.3.11: ``reporter`` (the process that noticed) reports an alert of ``event_type``
    (DCID 401) about ``subject`` (a URI: ID type 12; otherwise a node: 110182), described in free
    text (ParticipantObjectDetail "Alert Description", base64). ``performing``: who did it (never
    the requestor). Outcome 0: informative; 12: mitigation may have failed."""
    others = [Participant(p.user_id, False, p.address, p.ae_titles, p.user_name, p.role) for p in performing or []]
    element = ET.Element("ParticipantObjectIdentification", {"ParticipantObjectID": subject, "ParticipantObjectTypeCode": "2",
                                                             "ParticipantObjectTypeCodeRole": "13"})
    _code(element, "ParticipantObjectIDTypeCode", URI if "://" in subject or subject.startswith("/") else NODE_ID)
    ET.SubElement(element, "ParticipantObjectDetail", {"type": "Alert Description", "value": base64.b64encode(description.encode()).decode()})
    return _message(SECURITY_ALERT, "E", outcome, source, [reporter, *others], [element], event_type, when)


def user_authentication(login: bool, user: Participant, source: Source, outcome: int = SUCCESS, node: Participant | None = None,
                        when: datetime | None = None) -> str:
    """A.5.3.12: ``user`` logged in (110122) or out (110123), or failed to (outcome 4 or more);
    the user's network access point is required; ``node``: the system that authenticated."""
    if not user.address:
        raise ValueError("User Authentication needs the user's network access point (A.5.3.12)")
    participants = [user] + ([Participant(node.user_id, False, node.address, node.ae_titles, node.user_name, node.role)] if node else [])
    return _message(USER_AUTHENTICATION, "E", outcome, source, participants, [], LOGIN if login else LOGOUT, when)


# The VRs (PS3.5 6.2) of a C-FIND key Orthanc's filter hands on as text; a key of any other VR is
# written UN. (Orthanc hands the filter no sequence.)
TEXT_VRS = {"AE", "AS", "CS", "DA", "DS", "DT", "IS", "LO", "LT", "PN", "SH", "ST", "TM", "UC", "UI", "UR", "UT"}
TAG_KEY = re.compile(r"([0-9A-Fa-f]{4}),([0-9A-Fa-f]{4})")


NUMBER_VRS = {"US": int, "UL": int, "SS": int, "SL": int, "SV": int, "UV": int, "FL": float, "FD": float}
BYTES_VRS = {"OB", "OD", "OF", "OL", "OV", "OW", "UN"}


def _key(tag: int, value: str | None) -> Any:
    """One key of a C-FIND identifier as a pydicom DataElement of its dictionary VR (UN for a tag
    pydicom does not know): empty (universal matching) when ``value`` is empty or None; text for a
    text VR; numbers for a numeric VR (several separated by backslashes); bytes for a byte VR."""
    from pydicom.datadict import dictionary_VR  # the image's python3-pydicom; imported here so the rest needs none
    from pydicom.dataelem import DataElement

    try:
        vr = dictionary_VR(tag)
    except KeyError:
        vr = "UN"
    if not value:
        return DataElement(tag, vr, None)
    if vr in TEXT_VRS:
        return DataElement(tag, vr, value)
    if vr in NUMBER_VRS:
        numbers = [NUMBER_VRS[vr](v) for v in value.split("\\")]  # ValueError: not a number
        return DataElement(tag, vr, numbers[0] if len(numbers) == 1 else numbers)
    if vr in BYTES_VRS:
        return DataElement(tag, vr, value.encode())
    raise ValueError(f"({tag >> 16:04X},{tag & 0xFFFF:04X}) has VR {vr}, which a C-FIND key cannot carry as {value!r}")


def c_find_identifier(keys: dict[str, str | None]) -> bytes:
    """The identifier of a C-FIND request (PS3.4 C.4.1.1.3), from its keys as Orthanc's Lua filter
    hands them on (tag "gggg,eeee" -> value, None for one it holds no text of), encoded by pydicom
    in Implicit VR Little Endian (the transfer syntax ``query`` names by default): the query A.5.3.10
    puts in ParticipantObjectQuery. Each key keeps its dictionary VR (_key). SpecificCharacterSet is
    ISO_IR 192 (UTF-8: Orthanc hands UTF-8) when a value is not ASCII. ValueError for a key that is
    not a tag, a value that is neither a string nor None, or one its VR cannot hold."""
    from pydicom.dataelem import DataElement
    from pydicom.dataset import Dataset
    from pydicom.filebase import DicomBytesIO
    from pydicom.filewriter import write_dataset

    dataset = Dataset()
    for key, value in keys.items():
        match = TAG_KEY.fullmatch(key)
        if not match or not (value is None or isinstance(value, str)):
            raise ValueError(f"a C-FIND key is a tag gggg,eeee with a string value, not {key!r}: {value!r}")
        dataset.add(_key((int(match[1], 16) << 16) | int(match[2], 16), value))
    if not all(v.isascii() for v in keys.values() if v):
        dataset.add(DataElement(0x00080005, "CS", "ISO_IR 192"))
    out = DicomBytesIO()
    out.is_little_endian, out.is_implicit_VR = True, True
    write_dataset(out, dataset)
    return out.getvalue()


def line(xml: str) -> str:
    """The message as one line of the audit file (a line feed inside a value becomes &#10;)."""
    return xml.replace("\r", "&#13;").replace("\n", "&#10;").replace("\t", "&#9;")
