"""Orthanc Python plugin of the lab (roles/orthanc): events, forwarding, integrity.

- Every stored instance and every stable study is written as one JSON line to the event log
  (PacslabEventLog), which the SIEM issue ships; the calling AE and address come from Orthanc.
- A stable study is forwarded to PacslabForwardTo (the VNA) over DICOM TLS (C-STORE), as an
  Orthanc job whose end is logged ("study-forwarded" or "forward-failed"), never lost silently.
- Integrity (C-DAT-03, PR.DS-6): every PacslabVerifyEvery seconds, and on POST /pacslab/verify,
  each instance's DICOM attachment is checked against the MD5 Orthanc stored when it arrived
  (StoreMD5ForAttachments); a mismatch, or a missing MD5 where MD5s are recorded, is an
  "integrity-failure" event; where they are not (orthanc_md5 false), "integrity-unverifiable".
- Least privilege (C-ACC-03, PR.AC-4): every REST and DICOMweb request passes the permission table
  (PacslabPermissions, one JSON file rendered from roles/orthanc's orthanc_permission_rules and
  orthanc_role_permissions). A proxy's account (PacslabProxies) acts for the person named in the
  proxy's identity headers, with their roles: the table decides. The lab's REST administrator (the
  lab's own tooling) may do everything but what the table refuses to every account (its
  "refused": Orthanc's ways of deleting images whose targets the filter is not shown). Any other
  account, and a proxy request naming no person, is refused (403). Every decision is an "access-decision" event (user, roles, account, method,
  path, study, permission, verdict); as Orthanc reports each resource an allowed delete removed, a
  "resource-deleted" event names the person. GET /pacslab/audit answers the event log's last
  records (the auditor's).
- Every instance that arrives another way than C-STORE (STOW-RS, a REST upload, a modify) gets the
  C-STORE's UID checks before it is stored (C-DAT-03), and is discarded with the same event.
- Malicious code (C-DET-02, DE.CM-4): where PacslabMalwareScan names clamd's local socket, every
  instance is scanned by clamd (the lab's own signatures) before it is stored: the dataset a
  C-STORE brought, and the whole file of an upload (its 128-byte preamble too, where a DICOM/PE
  polyglot hides). A hit is refused (C-STORE status 0x0124, "Refused: Not Authorized", PS3.7 C.5)
  with a "malware-refused" event naming the signature and the sender; a scan that cannot be made
  refuses the instance too (0xA700, "Refused: Out of Resources", PS3.4 B.2.3: the sender retries).
  Every PacslabMalwareRescanEvery seconds, and on POST /pacslab/rescan, everything stored is
  scanned again with the signatures clamd holds then: an object stored before a signature knew it
  is a "malware-found-stored" event naming it and its sender (it stays stored: the responder decides).
- DICOM audit trail (PS3.15 A.5, pacslab_audit.py beside this file), one XML message per line of
  PacslabAuditLog, which roles/log_shipping sends to the siem:
  - Application Activity when the plugin starts and when Orthanc stops;
  - DICOM Instances Transferred for each instance a C-STORE brought (the sender's AE title and
    registered address, the study, the patient), and for each study forwarded (the sender's side:
    this Orthanc, the destination, the job's outcome);
  - DICOM Instances Accessed: C for each study a person's upload stored, R for each study a
    person's allowed download read, U for each demographic correction (once per person and study
    in five minutes for C and R);
  - DICOM Study Deleted for each study an allowed delete removed (the person), and DICOM Instances
    Accessed, action D, for a delete of a series or an instance that leaves the rest of its study
    (the person, this Orthanc, the study);
  - Security Alert for each object refused (its sender, what was refused and why);
  - Query for each QIDO-RS search, each search of Orthanc's own REST API (/tools/find and
    /tools/lookup: this plugin's route for them hands each to Orthanc and writes its body) and each
    C-FIND Orthanc accepted (through pacslab_find.lua, Orthanc's Lua filter).
  A message that cannot be built or written is an "audit-failed" event, never an exception in
  Orthanc's callback.
"""

import base64
import io
import itertools
import json
import os
import re
import sys
import threading
import time

import orthanc
from clamav_client.clamd import ClamdError, ClamdUnixSocket, ResponseError

CONFIG = json.loads(orthanc.GetConfiguration())
EVENT_LOG = CONFIG.get("PacslabEventLog", "/var/log/pacslab/orthanc-events.json")
FORWARD_TO = CONFIG.get("PacslabForwardTo", "")
VERIFY_EVERY = int(CONFIG.get("PacslabVerifyEvery", 300))
RECORDS_MD5 = bool(CONFIG.get("StoreMD5ForAttachments", True))
NAME = CONFIG.get("Name", "orthanc")
_lock = threading.Lock()
PERMISSIONS_FILE = CONFIG.get("PacslabPermissions", "")
PROXIES = set(CONFIG.get("PacslabProxies", []))
SERVICE_ACCOUNTS = set(CONFIG.get("PacslabServiceAccounts", []))
USER_HEADER = CONFIG.get("PacslabUserHeader", "X-Pacslab-User").lower()
ROLES_HEADER = CONFIG.get("PacslabRolesHeader", "X-Pacslab-Roles").lower()
AUDIT_LOG = CONFIG.get("PacslabAuditLog", "")
MALWARE_SCAN = CONFIG.get("PacslabMalwareScan", "")  # clamd's local socket, or "" for no scan
RESCAN_EVERY = int(CONFIG.get("PacslabMalwareRescanEvery", 0))  # seconds between two rescans of what is stored, 0: on request only
RESCAN_PATIENCE = int(CONFIG.get("PacslabMalwareRescanPatience", 0))  # seconds a rescan waits for a clamd that does not answer
_audit_lock = threading.Lock()

sys.path.insert(0, os.path.dirname(CONFIG.get("PythonScript", "/etc/pacslab/orthanc/pacslab_orthanc.py")))
import pacslab_audit as audit  # noqa: E402 (beside this script; orthanc-python puts its folder on the path too)

AUDIT_SOURCE = audit.Source(NAME, CONFIG.get("PacslabSite") or None)
AE_TITLE = CONFIG.get("DicomAet", "ORTHANC")
ME = audit.Participant(f"orthanc@{NAME}", address=NAME, ae_titles=(AE_TITLE,))
# AE title -> the address Orthanc's DicomModalities registers for it: where Orthanc sends to it.
DESTINATION_ADDRESS = {str(v.get("AET")): str(v.get("Host")) for v in CONFIG.get("DicomModalities", {}).values() if isinstance(v, dict)}
# The same, as a sender's address, only where Orthanc holds a sender to that address
# (DicomCheckModalityHost): elsewhere an AE title proves no address, and the message names the
# sender by its AE title alone. Behind a gateway (a peer's `via`), the address is the gateway's,
# the one Orthanc sees.
PEER_ADDRESS = DESTINATION_ADDRESS if CONFIG.get("DicomCheckModalityHost") else {}


def event(kind, **fields):
    record = {"time": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "host": NAME, "event": kind, **fields}
    with _lock, open(EVENT_LOG, "a") as log:
        log.write(json.dumps(record, sort_keys=True) + "\n")


def audit_write(build, *args, **kwargs):
    """Append the audit message ``build(*args, source=AUDIT_SOURCE, **kwargs)`` to the audit file, one line."""
    if not AUDIT_LOG:
        return
    try:
        message = audit.line(build(*args, source=AUDIT_SOURCE, **kwargs))
        # UTF-8 whatever the locale: orthanc-python's interpreter runs without UTF-8 mode, and a
        # patient's name is not ASCII everywhere
        with _audit_lock, open(AUDIT_LOG, "a", encoding="utf-8") as log:
            log.write(message + "\n")
    except Exception as exc:
        try:
            event("audit-failed", message=getattr(build, "__name__", str(build)), error=f"{type(exc).__name__}: {exc}")
        except Exception:  # noqa: S110 (the event log cannot be written either: nothing left to tell)
            pass


def _origin(dicom):
    try:
        return {"calling_ae": dicom.GetInstanceRemoteAet(), "origin": str(dicom.GetInstanceOrigin())}
    except Exception:  # older SDKs lack one of these; the event stays useful without them
        return {}


# PS3.5 9.1: a UID is at most 64 characters, numeric components separated by dots, no component
# with a leading zero. Anything else (a path, a space, a letter) is refused before it is stored.
UID = re.compile(r"(0|[1-9][0-9]*)(\.(0|[1-9][0-9]*))*")
UID_TAGS = ("SOPInstanceUID", "SeriesInstanceUID", "StudyInstanceUID")
STATUS_CANNOT_UNDERSTAND = 0xC000  # C-STORE "Error: Cannot understand" (PS3.4 B.2.3)
STATUS_DUPLICATE_SOP_INSTANCE = 0x0111  # "Duplicate SOP Instance" (PS3.7 C.5)
STATUS_NOT_AUTHORIZED = 0x0124  # "Refused: Not Authorized" (PS3.7 C.5)
STATUS_OUT_OF_RESOURCES = 0xA700  # C-STORE "Refused: Out of Resources" (PS3.4 B.2.3)
SCAN_TIMEOUT = 30  # seconds clamd may take over one instance


def valid_uid(value):
    return isinstance(value, str) and len(value) <= 64 and UID.fullmatch(value) is not None


def uid_refusal(tags):
    """Why an instance (its simplified tags) must not be stored, or None: (event, its fields, the
    C-STORE status). Invalid UIDs (0xC000), or a SOP Instance UID already held in another study or
    series (0x0111: a SOP Instance UID names one object everywhere)."""
    invalid = {k: tags.get(k) for k in UID_TAGS if not valid_uid(tags.get(k))}
    if invalid:
        return "invalid-uid-refused", {"uids": invalid}, STATUS_CANNOT_UNDERSTAND
    for found in json.loads(orthanc.RestApiPost("/tools/lookup", tags["SOPInstanceUID"])):
        if found.get("Type") != "Instance":
            continue
        held = json.loads(orthanc.RestApiGet(f"/instances/{found['ID']}/simplified-tags"))
        if (held.get("StudyInstanceUID"), held.get("SeriesInstanceUID")) != (tags["StudyInstanceUID"], tags["SeriesInstanceUID"]):
            return ("duplicate-sop-instance-refused", {"sop_instance_uid": tags["SOPInstanceUID"], "study_uid": tags["StudyInstanceUID"],
                                                       "held_study_uid": held.get("StudyInstanceUID")}, STATUS_DUPLICATE_SOP_INSTANCE)
    return None


def clamd_verdict(data):
    """clamd's word on ``data`` (bytes, a DICOM file), through its INSTREAM command (clamd(8)):
    ("OK", None); ("FOUND", the signature's name); ("ERROR", why) where clamd refused this object
    (an ERROR answer, one beyond StreamMaxLength: clamav-client's ResponseError and its
    BufferTooLongError); ("UNREACHABLE", why) where clamd could not be asked or stopped answering
    (clamd down, a socket error, no answer)."""
    try:
        answer = ClamdUnixSocket(path=MALWARE_SCAN, timeout=SCAN_TIMEOUT).instream(io.BytesIO(data))
    except ResponseError as exc:
        return "ERROR", f"{type(exc).__name__}: {exc}"
    except (ClamdError, OSError) as exc:  # CommunicationError; a broken pipe or a timeout while the object is sent
        return "UNREACHABLE", f"{type(exc).__name__}: {exc}"
    if len(answer) != 1:
        return "UNREACHABLE", "clamd gave no answer"
    [(status, name)] = answer.values()
    if status in ("OK", "FOUND"):
        return status, name
    return "ERROR", f"clamd: {name} {status}"


def malware_refusal(data, tags):
    """Why ``data`` (the bytes of an instance, a DICOM file) must not be stored, as uid_refusal
    says it, or None: clamd found one of the lab's signatures in it ("malware-refused", 0x0124), or
    could not scan it ("malware-scan-failed", 0xA700: clamd down, an ERROR answer)."""
    if not MALWARE_SCAN:
        return None
    ids = {"sop_instance_uid": tags.get("SOPInstanceUID"), "study_uid": tags.get("StudyInstanceUID"), "accession": tags.get("AccessionNumber")}
    status, detail = clamd_verdict(data)
    if status == "OK":
        return None
    if status == "FOUND":
        return "malware-refused", {**ids, "signatures": [detail]}, STATUS_NOT_AUTHORIZED
    return "malware-scan-failed", {**ids, "error": detail}, STATUS_OUT_OF_RESOURCES


def incoming_cstore(dicom):
    """Before Orthanc stores what a C-STORE brought: an instance uid_refusal or malware_refusal
    names is refused with its status, and a security event that names the sender. 0 stores it."""
    tags = json.loads(dicom.GetInstanceSimplifiedJson())
    refusal = uid_refusal(tags) or malware_refusal(dicom.GetInstanceData(), tags)
    if refusal is None:
        return 0
    kind, fields, status = refusal
    origin = _origin(dicom)
    event(kind, status=f"0x{status:04X}", **fields, **origin)
    calling = origin.get("calling_ae")
    address = PEER_ADDRESS.get(calling) if calling else None
    sender = audit.Participant(calling or "unknown", address=address, ae_titles=(calling,) if calling else ())
    refused_alert(f"{kind}: C-STORE refused with status 0x{status:04X}", fields, address or calling or "unknown", [sender])
    return status


def refused_alert(what, fields, subject, performing):
    """A.5.3.11 Security Alert for an object the PACS refused: "Use of Restricted Function" (DCID 401)
    about ``subject`` (the sender's node, or this node), mitigated (outcome 4: nothing was stored),
    ``performing`` who sent it; the description names what was refused and why."""
    audit_write(audit.security_alert, audit.USE_OF_RESTRICTED_FUNCTION, ME, subject, f"{what}: {json.dumps(fields, sort_keys=True)}",
                outcome=audit.MINOR_FAILURE, performing=performing)


def on_received(received, origin):
    """Before Orthanc stores an instance that came any other way (STOW-RS, a REST upload, a
    modify): the same checks as a C-STORE's; one they refuse is discarded, with the same security
    event. A C-STORE's instance passed incoming_cstore already. (The DICOMweb plugin 1.7 answers a
    STOW-RS whose instance was discarded as if it had been stored; an exception here would not
    refuse it: Orthanc logs it and stores the instance. This callback runs under Orthanc's plugin
    mutex: a synchronous store from here would deadlock; reading the REST API does not.)"""
    if origin == orthanc.InstanceOrigin.DICOM_PROTOCOL:
        return orthanc.ReceivedInstanceAction.KEEP_AS_IS, None
    try:
        tags = json.loads(orthanc.CreateDicomInstance(received).GetInstanceSimplifiedJson())
        refusal = uid_refusal(tags) or malware_refusal(received, tags)
    except Exception as exc:  # orthanc-python keeps an instance whose callback raised: fail closed instead
        event("upload-check-failed", origin=str(origin), error=f"{type(exc).__name__}: {exc}")
        return orthanc.ReceivedInstanceAction.DISCARD, None
    if refusal is None:
        return orthanc.ReceivedInstanceAction.KEEP_AS_IS, None
    kind, fields, _ = refusal
    person = _serving.get(threading.get_ident())
    event(kind, origin=str(origin), user=person, **fields)
    refused_alert(f"{kind}: an instance from {origin} discarded", fields, NAME, [audit.Participant(person, requestor=True)] if person else [])
    return orthanc.ReceivedInstanceAction.DISCARD, None


def on_stored(dicom, instance_id):
    origin = _origin(dicom)
    tags = json.loads(dicom.GetInstanceSimplifiedJson())
    event("instance-stored", instance=instance_id, sop_instance_uid=tags.get("SOPInstanceUID"),
          accession=tags.get("AccessionNumber"), study_uid=tags.get("StudyInstanceUID"), **origin)
    calling = origin.get("calling_ae") or ""
    study = audit.Study(str(tags.get("StudyInstanceUID") or ""), tags.get("AccessionNumber") or None,
                        {str(tags["SOPClassUID"]): 1} if tags.get("SOPClassUID") else {})
    patient = audit.Patient(str(tags.get("PatientID") or ""), tags.get("PatientName") or None)
    try:
        by_dicom = dicom.GetInstanceOrigin() == orthanc.InstanceOrigin.DICOM_PROTOCOL
    except Exception as exc:
        event("audit-failed", message="instances_transferred", error=f"{type(exc).__name__}: {exc}")
        return
    if not by_dicom:
        created(_serving.get(threading.get_ident()), study, patient)
        return
    if not calling:
        return
    sender = audit.Participant(calling, requestor=True, address=PEER_ADDRESS.get(calling), ae_titles=(calling,))
    audit_write(audit.instances_transferred, "C", sender, ME, [study], patient)


# Orthanc thread -> the person whose HTTP request it serves (http_filter sets it before anything
# else of the request). Not threading.local: orthanc-python gives a thread a new Python thread
# state for each callback, and a local's values go with it. Orthanc's HTTP threads live as long as
# Orthanc: one entry each.
_serving = {}
_created = {}  # (person, Study Instance UID) -> when its C message was written


def created(person, study, patient):
    """The DICOM Instances Accessed message (PS3.15 A.5.3.6, action C: create) of instances a
    person's HTTP request stored (STOW-RS, a REST upload, a synchronous modify: Orthanc stores them
    in the thread that serves the request, whose person http_filter recorded): the person as
    requestor, this Orthanc as the process, the study and its patient; one per person and study
    within ACCESS_WINDOW (a STOW-RS of a study stores each of its instances). What no request
    stored (an Orthanc job's copy: a correction, whose own message is action U) names no person,
    and writes nothing."""
    if not person:
        return
    now = time.monotonic()
    with _lock:
        for stale in [k for k, at in _created.items() if now - at > ACCESS_WINDOW]:
            del _created[stale]
        if (person, study.uid) in _created:
            return
        _created[(person, study.uid)] = now
    audit_write(audit.instances_accessed, "C", [audit.Participant(person, requestor=True), ME], [study], patient)


_forwarding = {}  # Orthanc job id -> the study it forwards


def forward(study_id):
    """Submit the study's C-STORE to FORWARD_TO as an Orthanc job; its end is logged by on_change,
    with the DICOM Instances Transferred message (PS3.15 A.5.3.7) of the sender's side: this Orthanc
    as the source (110153) and requestor, FORWARD_TO at its registered address as the destination
    (110152), the study and its patient as they were when it was sent; action R, since the sender
    cannot tell whether the receiver held copies (the receiver's own message says C); outcome 0 when
    every instance went, 4 when some failed, 8 when the job failed.
    Not a synchronous job: orthanc-python 4.0 keeps Python's lock through an SDK call, and every
    REST request (the permission filter) and every C-STORE (the UID filter) waits for that lock."""
    body = json.dumps({"Resources": [study_id], "Asynchronous": True})
    try:
        record = _study_record(study_id)  # read now: the study may be gone when the job ends
    except Exception:  # noqa: S110 (deleted since it became stable: the job fails and says so; its message names no study)
        record = None
    try:
        job = json.loads(orthanc.RestApiPost(f"/modalities/{FORWARD_TO}/store", body))["ID"]
    except Exception as exc:
        event("forward-failed", study=study_id, to=FORWARD_TO, error=str(exc))
        return
    # on_change runs its callbacks one after another: the job's end is handled after this returns
    with _lock:
        _forwarding[job] = (study_id, record)


def forward_ended(job_id, succeeded):
    with _lock:
        study_id, record = _forwarding.pop(job_id, (None, None))
    if study_id is None:
        return
    try:
        job = json.loads(orthanc.RestApiGet(f"/jobs/{job_id}"))
    except orthanc.OrthancException:  # gone from Orthanc's job history already: the end is still logged
        job = {}
    content = job.get("Content", {})
    if succeeded:
        event("study-forwarded", study=study_id, to=FORWARD_TO, instances=content.get("InstancesCount"),
              failed=content.get("FailedInstancesCount"))
    else:
        event("forward-failed", study=study_id, to=FORWARD_TO, error=job.get("ErrorDescription"))
    if record is None:
        return
    outcome = (audit.SERIOUS_FAILURE if not succeeded else audit.MINOR_FAILURE if content.get("FailedInstancesCount") else audit.SUCCESS)
    receiver = audit.Participant(FORWARD_TO, address=DESTINATION_ADDRESS.get(FORWARD_TO), ae_titles=(FORWARD_TO,))
    audit_write(audit.instances_transferred, "R", audit.Participant(ME.user_id, True, ME.address, ME.ae_titles), receiver,
                [record[0]], record[1], outcome=outcome)


def load_permissions(path):
    """The table: {"rules": [{"methods", "path", "permission"}], "refused": [{"methods", "path",
    "reason"}], "roles": {role: [permission]}, "send_to": [AE title]}, each path compiled (it must
    match the whole path)."""
    with open(path) as f:
        table = json.load(f)
    rules = [(set(r["methods"]), re.compile(r["path"]), r["permission"]) for r in table["rules"]]
    refused = [(set(r["methods"]), re.compile(r["path"])) for r in table.get("refused", [])]
    return rules, refused, {role: set(perms) for role, perms in table["roles"].items()}, set(table["send_to"])


RULES, REFUSED, ROLE_PERMISSIONS, SEND_TO = load_permissions(PERMISSIONS_FILE) if PERMISSIONS_FILE else ([], [], {}, set())
# The permission an access-decision names for a request the table refuses to every account.
REFUSED_TO_ALL = "refused-to-all"
# The filter's method is an OrthancPluginHttpMethod, which has no HEAD.
METHODS = {orthanc.HttpMethod.GET: "GET", orthanc.HttpMethod.POST: "POST", orthanc.HttpMethod.PUT: "PUT",
           orthanc.HttpMethod.DELETE: "DELETE"}
LEVELS = {orthanc.ResourceType.PATIENT: "Patient", orthanc.ResourceType.STUDY: "Study",
          orthanc.ResourceType.SERIES: "Series", orthanc.ResourceType.INSTANCE: "Instance"}
# Orthanc id -> (the person whose delete may remove it, whether a DELETE (not a modify) named it,
# when), until Orthanc reports it deleted
_deleting = {}


def _account(headers):
    """The REST account of a request (Orthanc checked its password before the filter runs)."""
    scheme, _, value = headers.get("authorization", "").partition(" ")
    if scheme.lower() != "basic":
        return ""
    try:
        return base64.b64decode(value, validate=True).decode("utf-8").partition(":")[0]
    except ValueError:
        return ""


def _who(headers):
    """(account, person, roles) of a request (``headers`` with lower-case names): a proxy's account
    names the person and their roles in its headers; any other account is the person itself, with
    no role."""
    account = _account(headers)
    if account not in PROXIES:
        return account, account, []
    return account, headers.get(USER_HEADER, ""), sorted(r for r in headers.get(ROLES_HEADER, "").split(",") if r)


def decide(method, path, account, person, roles):
    """(verdict, permission, match): a request REFUSED names is denied to every account (the
    permission REFUSED_TO_ALL); else the first rule whose methods and whole path match names the
    permission the request needs; the service accounts hold every permission, a proxy's person the
    union of their roles' permissions; `send` goes only to SEND_TO (a destination named in the path)."""
    if any(method in methods and pattern.fullmatch(path) for methods, pattern in REFUSED):
        return "deny", REFUSED_TO_ALL, None
    rule = next(((permission, m) for methods, pattern, permission in RULES if method in methods
                 for m in [pattern.fullmatch(path)] if m), (None, None))
    permission, match = rule
    if account in SERVICE_ACCOUNTS:
        return "allow", permission, match
    if account not in PROXIES or not person or permission is None:
        return "deny", permission, match
    granted = set().union(*(ROLE_PERMISSIONS.get(r, set()) for r in roles))
    if permission not in granted:
        return "deny", permission, match
    if permission == "send" and match.groupdict().get("destination") not in SEND_TO:
        return "deny", permission, match
    return "allow", permission, match


# A modify or an anonymization of a patient, a study or a series stores its result and removes its
# source when its body says KeepSource false, which the filter is not shown: its person is noted as
# a delete's is, and the notes of a source it keeps lapse unused (DELETE_WINDOW). An instance's
# answers the modified file and stores nothing.
MAY_DELETE_SOURCE = ("/modify", "/anonymize")
STORED_MODIFY_LEVELS = ("patients", "studies", "series")


def http_filter(uri, **request):
    """Orthanc's incoming HTTP filter: True lets the request through, False answers 403."""
    headers = {k.lower(): v for k, v in (request.get("headers") or {}).items()}
    method = METHODS.get(request.get("method"), str(request.get("method")))
    # the path as Orthanc routes it: its components, without empty ones (a trailing slash)
    path = "/" + "/".join(c for c in uri.split("?", 1)[0].split("/") if c)
    account, person, roles = _who(headers)
    _serving[threading.get_ident()] = person  # what this thread stores before its next request is this person's (on_stored)
    verdict, permission, match = decide(method, path, account, person, roles)
    groups = match.groupdict() if match else {}
    # (no address: every request reaches Orthanc from its HTTPS front on loopback; the proxy logs the person's)
    event("access-decision", user=person, roles=roles, account=account, method=method, path=path,
          study=groups.get("study"), permission=permission, verdict=verdict)
    if verdict == "allow" and permission in ("download", "view") and not is_search(path):
        accessed(person, path, groups)
    if verdict == "allow" and method == "GET" and is_search(path):
        searched(person, path, uri, request.get("get"))
    resource = groups.get("resource") or groups.get("study")
    if verdict == "allow" and resource and (method == "DELETE" or (method == "POST" and path.split("/")[1] in STORED_MODIFY_LEVELS
                                                                   and path.endswith(MAY_DELETE_SOURCE))):
        level = path.split("/")[1]
        doomed = _doomed(level, resource)
        studies = _studies_of(level, resource)
        with _lock:
            now = time.monotonic()
            for held in (_deleting, _deleting_studies, _deleting_parts):
                for stale in [r for r, (*_, at) in held.items() if now - at > DELETE_WINDOW]:
                    del held[stale]
            seq, surely = next(_delete_seq), method == "DELETE"  # a modify may keep its source
            for part in doomed if surely else ():  # a part still there goes with this delete, not with an earlier request that noted it
                _deleting_parts.pop(part, None)
            _deleting.update({r: (person, surely, now) for r in doomed})
            _deleting_studies.update({r: (person, study, patient, seq, surely, now) for r, (study, patient) in studies.items()})
            for study_id, (study, patient) in studies.items() if level in ("series", "instances") else ():
                # a part of one study: on_change tells if it stayed
                _deleting_parts[resource] = (person, study_id, study, patient, seq, surely, now)
    return verdict == "allow"


# Each allowed delete's number, in the order the filter let them through: a part's delete is
# followed by the delete that took the rest of its study when that one's number is the larger.
_delete_seq = itertools.count(1)
# Orthanc study id -> (person, audit.Study, audit.Patient, number, a DELETE?, when) of the last
# allowed delete that named the study or a part of it: the audit of a deleted study
_deleting_studies = {}
# Orthanc id of a series or an instance an allowed delete names -> (person, Orthanc id of its
# study, audit.Study, audit.Patient, number, a DELETE?, when): the audit of a part of a study
# deleted, if the study stays or a later delete took the rest
_deleting_parts = {}


def _study_ids(level, resource):
    """The Orthanc ids of the studies ``resource`` (at ``level``, a REST path's first part) is or
    belongs to; OrthancException when there is no such resource."""
    if level == "studies":
        return [resource]
    if level == "patients":
        return [s["ID"] for s in json.loads(orthanc.RestApiGet(f"/patients/{resource}/studies"))]
    if level in ("series", "instances"):
        return [json.loads(orthanc.RestApiGet(f"/{level}/{resource}/study"))["ID"]]
    return []


def _study_record(study_id):
    """(audit.Study, audit.Patient) of an Orthanc study, from its main tags."""
    study = json.loads(orthanc.RestApiGet(f"/studies/{study_id}"))
    tags, patient = study.get("MainDicomTags", {}), study.get("PatientMainDicomTags", {})
    return (audit.Study(tags.get("StudyInstanceUID", "")),
            audit.Patient(patient.get("PatientID", ""), patient.get("PatientName") or None))


def _studies_of(level, resource):
    """Orthanc study id -> (audit.Study, audit.Patient) of each study a delete of ``resource`` (at
    ``level``) may remove, read before it goes: Orthanc reports only the id of what it deleted."""
    try:
        return {study_id: _study_record(study_id) for study_id in _study_ids(level, resource)}
    except Exception:  # no such resource (Orthanc answers the delete 404 itself), or an answer without what is read
        return {}


ACCESS_WINDOW = 300  # seconds: a person's reads of one study within them are one Instances Accessed message
_accessed = {}  # (person, Orthanc study id) -> when its message was written


# The viewer's paths: what the resource group of each names (web-viewer/series/<id>,
# web-viewer/instances/<compression>-<instance>_<frame>)
VIEWER_LEVELS = {"series": "series", "is-stable-series": "series", "instances": "instances"}


def _read_target(path, groups):
    """(level, Orthanc id) of what an allowed read reads, or None when it names no one resource (a
    list, a search, a tool): DICOMweb names a study by its Study Instance UID, the viewer a series or
    an image, Orthanc's REST API a resource by the path's first two parts (/studies/<id>,
    /series/<id>/shared-tags, /instances/<id>/file, ...)."""
    parts = path.split("/")[1:]
    if parts[0] == "dicom-web":
        uid = groups.get("study")
        found = [r["ID"] for r in json.loads(orthanc.RestApiPost("/tools/lookup", uid)) if r.get("Type") == "Study"] if uid else []
        return ("studies", found[0]) if found else None
    if parts[0] == "web-viewer":
        level = VIEWER_LEVELS.get(parts[1]) if len(parts) > 1 else None
        return (level, groups["resource"]) if level and groups.get("resource") else None
    return (parts[0], parts[1]) if parts[0] in BELOW and len(parts) > 1 else None


def accessed(person, path, groups):
    """The DICOM Instances Accessed message (PS3.15 A.5.3.6, action R: read) of an allowed read of
    one resource: the permission table's `download` (files, frames, rendered images, archives) and
    `view` (a study's, series' or instance's record, tags and metadata, the viewer's series; not a
    search, which is a Query message, nor a list): the person as requestor, this Orthanc as the
    process, the study read and its patient. One message per person and study within
    ACCESS_WINDOW (a viewer asks for each image of a study). The filter runs before Orthanc
    answers: a resource that does not exist names no study, and writes nothing."""
    try:
        target = _read_target(path, groups)
        ids = _study_ids(*target) if target else []
        now = time.monotonic()
        with _lock:
            for stale in [k for k, at in _accessed.items() if now - at > ACCESS_WINDOW]:
                del _accessed[stale]
            new = [i for i in ids if (person, i) not in _accessed]
            _accessed.update({(person, i): now for i in new})
        for study_id in new:
            study, patient = _study_record(study_id)
            audit_write(audit.instances_accessed, "R", [audit.Participant(person, requestor=True), ME], [study], patient)
    except orthanc.OrthancException:  # no such resource: nothing is read (Orthanc answers the request 404 itself)
        return
    except Exception as exc:  # an answer without what is read: the request goes on, the event says what is missing
        event("audit-failed", message="instances_accessed", path=path, error=f"{type(exc).__name__}: {exc}")


# QIDO-RS (PS3.18 10.6): a search is a GET of a collection of studies, series or instances, the
# whole archive's or one study's or series' (a UID is never the path's last part).
SEARCH_LEVELS = ("studies", "series", "instances")
# The SOP class a Query message names (A.5.3.10 asks for the one queried): QIDO-RS has none of its
# own; its levels are the Study Root Query/Retrieve Information Model's, whose FIND class is named.
STUDY_ROOT_FIND = "1.2.840.10008.5.1.4.1.2.2.1"


def is_search(path):
    """Whether ``path`` (as Orthanc routes it) is a QIDO-RS search."""
    parts = path.split("/")[1:]
    return len(parts) >= 2 and parts[0] == "dicom-web" and parts[-1] in SEARCH_LEVELS


def search_text(uri, arguments):
    """The query of a search as it was asked: its arguments (Orthanc's, when it hands them: a dict),
    else the query string of the URI, as key=value pairs joined by "&" ("" when there is none)."""
    if isinstance(arguments, dict):
        return "&".join(f"{k}={v}" for k, v in sorted(arguments.items()))
    return uri.split("?", 1)[1] if "?" in uri else ""


def searched(person, path, uri, arguments):
    """The Query message (PS3.15 A.5.3.10) of an allowed QIDO-RS search: the person as the issuer
    (110153, requestor), this Orthanc as the responder (110152), the Study Root FIND class with the
    search's path and query (ParticipantObjectQuery). Every search writes one: what was looked for is
    the point of the record, even when nothing was found."""
    try:
        text = f"{path}?{search_text(uri, arguments)}".rstrip("?").encode()
        audit_write(audit.query, audit.Participant(person, requestor=True), ME, STUDY_ROOT_FIND, text)
    except Exception as exc:  # the request goes on; the event says what is missing
        event("audit-failed", message="query", path=path, error=f"{type(exc).__name__}: {exc}")


# The status Orthanc 1.10.1's REST API answers an error of its own with (its mapping of error codes
# to HTTP, Enumerations.cpp); any other error is 500.
_ERROR_STATUS = (("BAD_REQUEST", 400), ("BAD_FILE_FORMAT", 400), ("BAD_PARAMETER_TYPE", 400), ("PARAMETER_OUT_OF_RANGE", 400),
                 ("BAD_JSON", 400), ("URI_SYNTAX", 400), ("UNAUTHORIZED", 401), ("INEXISTENT_ITEM", 404), ("INEXISTENT_TAG", 404),
                 ("UNKNOWN_RESOURCE", 404), ("NOT_ACCEPTABLE", 406), ("UNSUPPORTED_MEDIA_TYPE", 415), ("DATABASE_UNAVAILABLE", 503),
                 ("DATABASE_CANNOT_SERIALIZE", 503))
SEARCH_BODY_LIMIT = 16384  # bytes: a search is a few hundred; its Query message must fit the siem's 64 KB (roles/log_shipping)


def _error_status(exc):
    """The HTTP status of an OrthancException (its first argument: the error code)."""
    code = exc.args[0] if exc.args else None
    return next((status for name, status in _ERROR_STATUS if getattr(orthanc.ErrorCode, name, object()) == code), 500)


def find_class(level):
    """The FIND SOP Class of a query at ``level`` (a C-FIND's QueryRetrieveLevel, or the Level of a
    /tools/find body, which Orthanc reads in any case, singular or plural): Patient Root's for the
    patient level (Study Root has none), Study Root's for any other (PS3.4 C.6.1.3, C.6.2.3)."""
    return PATIENT_ROOT_FIND if str(level or "").strip().upper() in ("PATIENT", "PATIENTS") else STUDY_ROOT_FIND


def _answer_error(output, status, text):
    output.SendHttpStatus(status, text, len(text.encode()))


def on_tools_search(output, uri, **request):
    """POST /tools/find and /tools/lookup, Orthanc's own searches, once the filter let them through
    (the permission table decided): each is handed to Orthanc's built-in route as it came
    (orthanc.RestApiPost, the built-in API alone: this route is not called again) and its answer
    returned (application/json); the filter is not shown a request's body, this route is. Each
    search Orthanc answered writes its Query message (PS3.15 A.5.3.10): the person (the proxy's, or
    the account) as the issuer (110153, requestor), this Orthanc as the responder (110152), the FIND
    class of the level asked (find_class: a lookup names no level, nor does a body Python's JSON
    reader cannot read, though Orthanc's could: a comment inside it) and the body as the query. A search Orthanc refuses
    gets the status Orthanc gives its error (400 for a body it cannot read) and writes no message; a
    body over SEARCH_BODY_LIMIT is refused (413) before Orthanc reads it. Any other method: 405.
    orthanc-python 4.0 holds Python's lock while Orthanc searches: the plugin's other callbacks wait."""
    if request["method"] != "POST":
        output.SendMethodNotAllowed("POST")
        return
    body = bytes(request.get("body") or b"")
    if len(body) > SEARCH_BODY_LIMIT:
        _answer_error(output, 413, f"{uri}: a search body of {len(body)} bytes; at most {SEARCH_BODY_LIMIT}")
        return
    try:
        answer = orthanc.RestApiPost(uri, body)
    except orthanc.OrthancException as exc:
        _answer_error(output, _error_status(exc), f"{uri}: {exc.args[-1] if exc.args else exc}")  # (the error code, its description)
        return
    _, person, _ = _who({k.lower(): v for k, v in (request.get("headers") or {}).items()})
    level = None
    if uri.endswith("/find"):
        try:  # the object at the start, as Orthanc's reader takes it (it skips what follows: a comment, other text)
            level = json.JSONDecoder().raw_decode(body.decode("utf-8").lstrip())[0].get("Level")
        except (ValueError, AttributeError):  # not read as Orthanc read it (a comment inside): the class is Study Root's
            level = None
    try:
        audit_write(audit.query, audit.Participant(person, requestor=True), ME, find_class(level), body)
    except Exception as exc:  # the answer goes out; the event says what is missing
        event("audit-failed", message="query", path=uri, user=person, error=f"{type(exc).__name__}: {exc}")
    output.AnswerBuffer(answer, "application/json; charset=utf-8")


# The C-FIND information models (PS3.4 C.6.1.3, C.6.2.3) Orthanc 1.10.1 answers. Its Lua filter is
# not told which one a request used: a query at the PATIENT level is Patient Root's (Study Root has
# no such level); any other is named Study Root's, the model the lab's workstations query with.
PATIENT_ROOT_FIND = "1.2.840.10008.5.1.4.1.2.1.1"
QUERY_LEVEL = "0008,0052"


def on_c_find(output, uri, **request):
    """POST /pacslab/audit/c-find from pacslab_find.lua, Orthanc's C-FIND filter: {"query": {tag
    "gggg,eeee": value}, "origin": {"RemoteIp", "RemoteAet", "CalledAet"}}. Writes the Query message
    (PS3.15 A.5.3.10) of a C-FIND Orthanc accepted: the calling AE at its address as the issuer
    (110153, requestor), this Orthanc as the responder (110152), the information model's FIND class
    with the identifier (audit.c_find_identifier). Answers {} (200) whatever happened to the message:
    a message that cannot be built is an "audit-failed" event; the C-FIND goes on either way. Orthanc
    itself calls it, with no header: a request that carries Authorization came over HTTP, and gets
    403 (nobody writes the trail from outside)."""
    if request["method"] != "POST":
        output.SendMethodNotAllowed("POST")
        return
    if any(k.lower() == "authorization" for k in (request.get("headers") or {})):
        output.SendHttpStatusCode(403)
        return
    try:
        found = json.loads(request.get("body") or b"")
        query, origin = found["query"] or {}, found["origin"]  # DumpJson writes an empty Lua table as []
        calling, address = str(origin.get("RemoteAet") or ""), str(origin.get("RemoteIp") or "") or None
        issuer = audit.Participant(calling or "unknown", requestor=True, address=address, ae_titles=(calling,) if calling else ())
        model = find_class(query.get(QUERY_LEVEL))
        identifier = audit.c_find_identifier(query)
    except Exception as exc:
        event("audit-failed", message="query", path="C-FIND", error=f"{type(exc).__name__}: {exc}")
    else:
        audit_write(audit.query, issuer, ME, model, identifier)
    output.AnswerBuffer("{}", "application/json")


# Orthanc's resource levels (REST paths): what lies below each, and above (an ancestor left
# without children is deleted with it).
BELOW = {"patients": ["studies", "series", "instances"], "studies": ["series", "instances"], "series": ["instances"], "instances": []}
ABOVE = {"patients": [], "studies": ["patient"], "series": ["patient", "study"], "instances": ["patient", "study", "series"]}
DELETE_WINDOW = 60  # seconds an allowed delete names the person for the resources it may remove


def _doomed(level, resource):
    """The Orthanc ids a delete of ``resource`` (at ``level``, a REST path's first part) may remove:
    the resource, every resource below it, and its ancestors."""
    if level not in BELOW:
        return {resource}
    ids = {resource}
    try:
        for below in BELOW[level]:
            ids |= {r["ID"] for r in json.loads(orthanc.RestApiGet(f"/{level}/{resource}/{below}"))}
        for above in ABOVE[level]:
            ids.add(json.loads(orthanc.RestApiGet(f"/{level}/{resource}/{above}"))["ID"])
    except orthanc.OrthancException:  # no such resource: Orthanc answers the delete 404 itself
        pass
    return ids


def _exists_study(study_id):
    """Whether Orthanc still holds the study (its changes are told after the delete that made them)."""
    try:
        orthanc.RestApiGet(f"/studies/{study_id}")
    except orthanc.OrthancException:
        return False
    return True


def _part_left_study(part):
    """Whether the delete of a series or an instance (its ``_deleting_parts`` record) left images in
    its study: the study is still there, or a later allowed delete took the rest (its Study Deleted
    names that delete's person). A delete that took the study's last images took the study too:
    that is DICOM Study Deleted alone. Once the part's D is due, the study's record is dropped if
    this delete was the last to name it, so a study removed later by a path the filter does not
    read (/tools/bulk-delete) is not blamed on this person."""
    _, study_id, _, _, seq, _, _ = part
    stayed = _exists_study(study_id)
    with _lock:
        later = (_fresh(_deleting_studies.get(study_id)) or (None, None, None, 0, False, 0))[3]
        if stayed and later == seq:
            del _deleting_studies[study_id]
    return stayed or later > seq


def _fresh(note):
    """``note`` (a record of _deleting, _deleting_studies or _deleting_parts: whether a DELETE made
    it, then its time, last) if a DELETE made it or it is at most DELETE_WINDOW old, else None. A
    modify's note that its job left unused (the source kept) names no one for a removal that came
    later by another path; a DELETE's is used however late Orthanc reports the removal."""
    return note if note and (note[-2] or time.monotonic() - note[-1] <= DELETE_WINDOW) else None


def on_change(change_type, level, resource_id):
    if change_type == orthanc.ChangeType.DELETED:
        with _lock:
            person, _, _ = _fresh(_deleting.pop(resource_id, None)) or (None, None, None)
        event("resource-deleted", level=LEVELS.get(level, str(level)), resource=resource_id, user=person)
        if level == orthanc.ResourceType.STUDY:
            with _lock:
                deleted = _fresh(_deleting_studies.pop(resource_id, None))
            if deleted:
                who, study, patient, _, _, _ = deleted
                audit_write(audit.study_deleted, [audit.Participant(who or "unknown", requestor=True)], [study], patient)
        with _lock:
            part = _fresh(_deleting_parts.pop(resource_id, None))
        if part and _part_left_study(part):
            who, _, study, patient, _, _, _ = part
            audit_write(audit.instances_accessed, "D", [audit.Participant(who or "unknown", requestor=True), ME], [study], patient)
    if change_type == orthanc.ChangeType.ORTHANC_STOPPED:
        audit_write(audit.application_activity, False, ME)
    if change_type == orthanc.ChangeType.STABLE_STUDY:
        event("study-stable", study=resource_id)
        if FORWARD_TO:
            forward(resource_id)
    if change_type in (orthanc.ChangeType.JOB_SUCCESS, orthanc.ChangeType.JOB_FAILURE):
        forward_ended(resource_id, change_type == orthanc.ChangeType.JOB_SUCCESS)


def _has_md5(instance_id):
    """Whether Orthanc recorded an MD5 for the instance's DICOM attachment (Orthanc 1.10.1 answers
    GET .../md5 with 404 when StoreMD5ForAttachments was off at ingest, and verify-md5 with 400)."""
    try:
        orthanc.RestApiGet(f"/instances/{instance_id}/attachments/dicom/md5")
        return True
    except Exception:
        return False


def verify_all():
    """Check every instance's DICOM attachment against its stored MD5. Where this Orthanc records
    no MD5 (StoreMD5ForAttachments off: orthanc_md5 false), an instance without one cannot be
    verified: it is counted, and logged, as unverifiable, never as intact. Where it records them,
    an instance without an MD5 is a failure: its reference was removed."""
    checked, failures, unverifiable = 0, [], []
    for instance_id in json.loads(orthanc.RestApiGet("/instances")):
        checked += 1
        try:
            orthanc.RestApiPost(f"/instances/{instance_id}/attachments/dicom/verify-md5", "")
        except Exception as exc:
            if not RECORDS_MD5 and not _has_md5(instance_id):
                unverifiable.append(instance_id)
                event("integrity-unverifiable", instance=instance_id, detail="no MD5 was recorded when it was stored")
                continue
            failures.append(instance_id)
            event("integrity-failure", instance=instance_id, detail=str(exc))
    event("integrity-verified", checked=checked, failures=len(failures), unverifiable=len(unverifiable))
    return {"checked": checked, "failures": failures, "unverifiable": unverifiable}


def every(seconds, job, failed):
    """``job`` run every ``seconds`` for as long as Orthanc runs (a daemon thread's loop); one that
    raises is a ``failed`` event with the error, and the next run comes on time."""
    while True:
        time.sleep(seconds)
        try:
            job()
        except Exception as exc:
            event(failed, error=str(exc))


def _stored_ids(instance_id):
    """What names a stored instance in an event: its UIDs and accession (its tags) and who sent it
    (Orthanc's RemoteAET and RemoteIP metadata: a C-STORE's AE title and address; an upload has no
    AE title, and its address is the HTTPS front's, 127.0.0.1). {} once the instance is gone."""
    try:
        tags = json.loads(orthanc.RestApiGet(f"/instances/{instance_id}/simplified-tags"))
    except Exception:  # deleted meanwhile
        return {}
    ids = {"sop_instance_uid": tags.get("SOPInstanceUID"), "study_uid": tags.get("StudyInstanceUID"), "accession": tags.get("AccessionNumber")}
    for key, name in (("calling_ae", "RemoteAET"), ("remote_ip", "RemoteIP")):
        try:
            ids[key] = orthanc.RestApiGet(f"/instances/{instance_id}/metadata/{name}").decode()
        except Exception:  # not recorded for this instance
            ids[key] = None
    return ids


def _exists(instance_id):
    try:
        orthanc.RestApiGet(f"/instances/{instance_id}")
        return True
    except Exception:
        return False


_rescan_lock = threading.Lock()


def rescan_all(wait=True):
    """C-DET-02 after the fact: every stored instance's file scanned again by clamd with the
    signatures it holds now, for an object stored before a signature knew it. A hit is a
    "malware-found-stored" event naming the instance, its UIDs, its accession, the signature and
    who sent it; an object clamd refused, or a stored file that could not be read, a
    "malware-rescan-failed" event naming the instance. The instance is kept: removing a patient's
    image, and warning whoever read it (the audit trail names them), is the responder's call. A
    clamd that cannot be reached ends the pass with one "malware-rescan-failed" event. The pass
    ends with a "malware-rescanned" event {scanned, found, failed, complete}, written after every
    other event of the pass. A clamd that does not answer is asked again every 2 s (a converge that
    changed the signatures restarts it) before the pass ends that way: PacslabMalwareRescanPatience
    seconds in all for the whole pass, counted from each first question clamd left unanswered to
    its answer, so a clamd that falls over on every object does not stretch a pass to one patience
    per object; one question may overrun that by its own timeout (SCAN_TIMEOUT). One pass at a time: with
    ``wait`` false, None at once while another runs. Answers {"scanned": n, "found": [instance
    ids], "failed": [instance ids], "complete": bool}; where the scan is off, nothing is scanned
    and "complete" is false."""
    if not _rescan_lock.acquire(blocking=wait):
        return None
    try:
        scanned, found, failed, complete = 0, [], [], bool(MALWARE_SCAN)
        away = 0.0  # seconds of this pass spent asking a clamd that did not answer
        for instance_id in json.loads(orthanc.RestApiGet("/instances")) if MALWARE_SCAN else []:
            try:
                data = orthanc.RestApiGet(f"/instances/{instance_id}/file")
            except Exception as exc:
                if _exists(instance_id):  # stored, and its file unreadable: not scanned, and said so
                    failed.append(instance_id)
                    event("malware-rescan-failed", instance=instance_id, error=f"the stored file could not be read: {exc}")
                continue  # else deleted since the list was read
            asked = time.monotonic()
            status, detail = clamd_verdict(data)
            missed = status == "UNREACHABLE"
            while status == "UNREACHABLE" and away + time.monotonic() - asked + 2 < RESCAN_PATIENCE:
                time.sleep(2)
                status, detail = clamd_verdict(data)
            if missed:
                away += time.monotonic() - asked
            if status == "UNREACHABLE":
                event("malware-rescan-failed", error=f"clamd did not answer within {RESCAN_PATIENCE} s "
                      f"({away:.0f} s asked in this pass): {detail}", scanned=scanned)
                complete = False
                break
            scanned += 1
            if status == "FOUND":
                found.append(instance_id)
                event("malware-found-stored", instance=instance_id, signatures=[detail], **_stored_ids(instance_id))
            elif status == "ERROR":
                failed.append(instance_id)
                event("malware-rescan-failed", instance=instance_id, error=detail, **_stored_ids(instance_id))
        event("malware-rescanned", scanned=scanned, found=len(found), failed=len(failed), complete=complete)
        return {"scanned": scanned, "found": found, "failed": failed, "complete": complete}
    finally:
        _rescan_lock.release()


def on_rescan(output, uri, **request):
    """POST /pacslab/rescan: one whole pass (rescan_all), answered when it ends; 409 while another
    pass runs (the hourly one, or another request's), so that requests do not queue up."""
    if request["method"] != "POST":
        output.SendMethodNotAllowed("POST")
        return
    result = rescan_all(wait=False)
    if result is None:
        busy = "a rescan is running; ask again when it has ended"
        output.SendHttpStatus(409, busy, len(busy))
        return
    output.AnswerBuffer(json.dumps(result), "application/json")


def on_verify(output, uri, **request):
    if request["method"] != "POST":
        output.SendMethodNotAllowed("POST")
        return
    output.AnswerBuffer(json.dumps(verify_all()), "application/json")


AUDIT_MAX = 1000


AUDIT_TAIL = 1 << 20  # bytes read from the end of the event log: more than AUDIT_MAX records


def on_audit(output, uri, **request):
    """GET /pacslab/audit?limit=N: the event log's last N records (at most AUDIT_MAX, 200 by
    default), oldest first, as a JSON list: what an auditor reads (permission audit). The log is
    read from its end, without the lock the filter and the callbacks share."""
    if request["method"] != "GET":
        output.SendMethodNotAllowed("GET")
        return
    limit = str((request.get("get") or {}).get("limit", "200"))
    count = min(int(limit), AUDIT_MAX) if limit.isascii() and limit.isdecimal() and len(limit) <= 6 else 200
    with open(EVENT_LOG, "rb") as log:
        size = log.seek(0, 2)
        log.seek(max(0, size - AUDIT_TAIL))
        # whole records only: the first line read may be cut, and the last (after the final newline)
        # is one being appended meanwhile, or nothing
        lines = log.read().split(b"\n")[1 if size > AUDIT_TAIL else 0:-1]
    last = [line.decode() for line in lines if line.strip()][-count:] if count else []
    output.AnswerBuffer("[" + ",".join(last) + "]", "application/json")


# What a demographic correction may change (PS3.3 C.7.1.1, Patient Module): name, birth date, sex.
DEMOGRAPHICS = {"PatientName": re.compile(r"[^\\\x00-\x1f]{1,64}"), "PatientBirthDate": re.compile(r"\d{8}"),
                "PatientSex": re.compile(r"[MFO]")}


def on_demographics(output, uri, **request):
    """POST /pacslab/studies/{id}/demographics with a JSON object of DEMOGRAPHICS (each a string of
    its VR: PN without a backslash or control character, at most 64 characters; DA as YYYYMMDD; CS
    M, F or O): a corrected copy of the study, made by Orthanc's modify with the source kept, so that
    a correction never removes anything (deleting the wrong study is the PACS administrator's).
    The modify runs as an Orthanc job: answered at once with {"job": id}; the copy is stored
    when it ends (a synchronous modify would wait, holding Python's lock, for the stored-instance
    callback of this plugin, which needs it). 400 with the reason when the body is not such an
    object; 404 when there is no such study."""
    if request["method"] != "POST":
        output.SendMethodNotAllowed("POST")
        return
    try:
        changes = json.loads(request.get("body") or b"")
    except ValueError:
        changes = None
    wrong = ("not a JSON object" if not isinstance(changes, dict) or not changes else
             next((f"{k}: not one of {sorted(DEMOGRAPHICS)}, or not a valid value" for k, v in changes.items()
                   if k not in DEMOGRAPHICS or not isinstance(v, str) or not DEMOGRAPHICS[k].fullmatch(v)), None))
    if wrong:
        output.SendHttpStatus(400, wrong, len(wrong.encode()))  # the SDK's (status, body, size in bytes)
        return
    study = request["groups"][0]
    try:
        orthanc.RestApiGet(f"/studies/{study}")
    except orthanc.OrthancException:
        output.SendHttpStatusCode(404)
        return
    body = json.dumps({"Replace": changes, "KeepSource": True, "Asynchronous": True})
    job = json.loads(orthanc.RestApiPost(f"/studies/{study}/modify", body))["ID"]
    event("demographics-correction", study=study, job=job, tags=sorted(changes))
    corrected(request, study)
    output.AnswerBuffer(json.dumps({"job": job}), "application/json")


def corrected(request, study_id):
    """The DICOM Instances Accessed message (PS3.15 A.5.3.6, action U: update) of a demographic
    correction the PACS took: the person who asked (the proxy's account names them) as requestor,
    this Orthanc as the process, the study corrected (the source of the corrected copy, kept) and
    its patient as they were. Every correction writes one."""
    try:
        _, person, _ = _who({k.lower(): v for k, v in (request.get("headers") or {}).items()})
        study, patient = _study_record(study_id)
        audit_write(audit.instances_accessed, "U", [audit.Participant(person, requestor=True), ME], [study], patient)
    except Exception as exc:  # the correction goes on; the event says what is missing
        event("audit-failed", message="instances_accessed", study=study_id, error=f"{type(exc).__name__}: {exc}")


orthanc.RegisterIncomingCStoreInstanceFilter(incoming_cstore)
orthanc.RegisterReceivedInstanceCallback(on_received)
orthanc.RegisterOnStoredInstanceCallback(on_stored)
orthanc.RegisterOnChangeCallback(on_change)
if PERMISSIONS_FILE:
    orthanc.RegisterIncomingHttpRequestFilter(http_filter)
orthanc.RegisterRestCallback("/pacslab/verify", on_verify)
orthanc.RegisterRestCallback("/pacslab/rescan", on_rescan)
orthanc.RegisterRestCallback("/pacslab/audit", on_audit)
orthanc.RegisterRestCallback("/pacslab/audit/c-find", on_c_find)
orthanc.RegisterRestCallback("/tools/(find|lookup)", on_tools_search)
orthanc.RegisterRestCallback("/pacslab/studies/([^/]+)/demographics", on_demographics)
threading.Thread(target=every, args=(VERIFY_EVERY, verify_all, "integrity-job-error"), daemon=True).start()
if MALWARE_SCAN and RESCAN_EVERY > 0:
    threading.Thread(target=every, args=(RESCAN_EVERY, rescan_all, "malware-rescan-failed"), daemon=True).start()
audit_write(audit.application_activity, True, ME)
