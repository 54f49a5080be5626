"""On the PACS: the DICOM Instances Accessed messages (PS3.15 A.5.3.6, EventID 110103) its audit
trail holds for the person args.user since the run began, read from the PACS's own audit file
(roles/orthanc's plugin writes one XML AuditMessage per line; roles/log_shipping ships it, or, with
log_shipping_dicom_audit false, leaves it here). Result: {messages: how many, studies: how many
different Study Instance UIDs (participant objects of ID type 110180) they name}."""

import datetime as dt
import json
import xml.etree.ElementTree as ElementTree

AUDIT_FILE = "/var/log/pacslab/dicom-audit.log"  # roles/orthanc: PacslabAuditLog
args = CONTEXT["args"]  # noqa: F821 (given by the scenario runner)
since = dt.datetime.fromtimestamp(CONTEXT["since"] - 1, dt.UTC)  # noqa: F821
messages, studies = 0, set()
lines = []
for name in (AUDIT_FILE + ".1", AUDIT_FILE):  # a rotation during the run leaves its start in .1 (roles/log_rotation)
    try:
        with open(name, encoding="utf-8", errors="replace") as trail:
            lines += trail.readlines()
    except FileNotFoundError:
        pass
for line in lines:
    try:
        message = ElementTree.fromstring(line)
    except ElementTree.ParseError:
        continue
    event = message.find("EventIdentification")
    if event is None or event.find("EventID") is None or event.find("EventID").get("csd-code") != "110103":
        continue
    if dt.datetime.fromisoformat(event.get("EventDateTime", "1970-01-01T00:00:00+00:00")) < since:
        continue
    if not any(p.get("UserID") == args["user"] and p.get("UserIsRequestor") == "true" for p in message.iter("ActiveParticipant")):
        continue
    messages += 1
    studies |= {o.get("ParticipantObjectID") for o in message.iter("ParticipantObjectIdentification")
                if (o.find("ParticipantObjectIDTypeCode") is not None and o.find("ParticipantObjectIDTypeCode").get("csd-code") == "110180")}
print(json.dumps({"messages": messages, "studies": len(studies)}))
