"""The PACS's permission table (issue 12, C-ACC-03, PR.AC-4): the plugin of roles/orthanc decides
every REST and DICOMweb request the proxy passes by the person it names and their roles, from one
table (orthanc_permission_rules, orthanc_role_permissions), and logs each decision.

Two vantage points:
- the people's own browsers, through the proxy, with real sessions (password and TOTP code at the
  IdP; pacslab.probes.oidc.browse from the internet computer, one sign-in per person for the
  module): the role x action matrix, each answer and its effect (what the PACS holds, how it came,
  its decision log);
- the proxy host, the only one whose flows reach the PACS's HTTPS front (F05b): what the table
  makes of the proxy's account naming a vendor, no one, or a role the lab does not know, and of
  the same headers under an account that is not the proxy's.
Each expected answer is written out below.
"""

from __future__ import annotations

import base64
import io
import json
import secrets
import time
from typing import Any
from xml.etree import ElementTree

import pydicom
import pytest

from pacslab import dicomsim
from pacslab.plan import Plan
from pacslab.probes import imaging as im
from pacslab.probes import oidc
from pacslab.topology import Lab

from .test_idp import idp, one, secret
from .test_rproxy import CLIENT, basic_auth, browse, pacs, proxy, store_study
from .test_siem import EICAR_HEX, siem_json, wait_for

ROLES = ["radiologist", "technologist", "pacs-admin", "auditor"]
# What each role gets, by request (the table of roles/orthanc; the proxy's routes of roles/rproxy
# refuse the auditor DICOMweb before the PACS sees it). 200 allowed, 403 refused.
MATRIX = {
    #                 search retrieve record file audit settings send-ws send-vna
    "radiologist":   [200,   200,     200,   200, 403,  403,     200,    403],
    "technologist":  [200,   403,     200,   403, 403,  403,     403,    403],
    "pacs-admin":    [200,   403,     200,   403, 403,  200,     200,    403],
    "auditor":       [403,   403,     403,   403, 200,  403,     403,    403],
}
ACTIONS = ["search", "retrieve", "record", "file", "audit", "settings", "send-ws", "send-vna"]
# The requests the proxy refuses itself (its DICOMweb route does not admit the role): the PACS
# never decides them.
REFUSED_BY_PROXY = {("auditor", "search"), ("auditor", "retrieve")}
# STOW-RS (PS3.18 10.5): one Part 10 instance in a multipart/related body.
BOUNDARY = "pacslab-stow-boundary"
STOW_TYPE = f'multipart/related; type="application/dicom"; boundary={BOUNDARY}'
# Where a signed-in browser lands first: a path no route publishes (the proxy's 404, nothing passed).
NOWHERE = "/no-such-page"
# The origin Orthanc gives an instance the DICOMweb plugin stores (OrthancPluginInstanceOrigin_Plugin).
PLUGIN_ORIGIN = "4"
# Identity headers as the proxy sets them, for the checks from the proxy host.
AS_WHOM = {
    "radiologist": {"X-Pacslab-User": "rad-check", "X-Pacslab-Roles": "radiologist"},
    "vendor": {"X-Pacslab-User": "vnd-check", "X-Pacslab-Roles": "vendor"},
    "unknown role": {"X-Pacslab-User": "odd-check", "X-Pacslab-Roles": "superuser"},
    "no person": {"X-Pacslab-Roles": "pacs-admin"},
}


@pytest.fixture(scope="module")
def sessions(running_lab: Lab, plan: Plan) -> dict[str, tuple[str, dict[str, str]]]:
    """{role: (person, the cookies of their proxy session)}: the first enabled person of each role,
    signed in once from the internet computer; as_person keeps the cookies current (the proxy
    replaces them when it refreshes the person's token)."""
    proxy(running_lab)
    out = {}
    for role in ROLES:
        who = one(running_lab, "enabled", role)
        result = browse(running_lab, plan, NOWHERE, who.name, "now", keep=True)
        out[role] = (who.name, result["jar"])
    return out


@pytest.fixture(scope="module")
def stored(running_lab: Lab) -> dict[str, str]:
    return store_study(running_lab)


def as_person(lab: Lab, sessions: dict[str, tuple[str, dict[str, str]]], role: str, calls: list[dict[str, Any]],
              client: str = CLIENT) -> list[dict[str, Any]]:
    """Each call ({path, method, headers, body | body_base64}) through the proxy with the session of
    ``role``'s person, from ``client``; each answer {status, json | text}."""
    rp = proxy(lab)
    person, cookies = sessions[role]
    then = [{k: v for k, v in c.items() if k != "path"} | {"url": f"https://{rp.name}{c['path']}"} for c in calls]
    result = oidc.browse(lab, client, f"https://{rp.name}{NOWHERE}", cookies=cookies, then=then, keep=True)
    assert result["steps"][-1].get("status") == 404, result["steps"]  # the session holds: no hop to the IdP
    sessions[role] = (person, result["jar"])
    return list(result["then"])


def events(lab: Lab, since: int) -> list[dict[str, Any]]:
    """The PACS's events after the first ``since`` records of its event log."""
    return im.orthanc_events(lab, pacs(lab).name, since)


def decisions(lab: Lab, since: int) -> list[dict[str, Any]]:
    """The PACS's access decisions logged after the first ``since`` records of its event log."""
    return [e for e in events(lab, since) if e.get("event") == "access-decision"]


def log_length(lab: Lab) -> int:
    """How many whole records the PACS's event log holds."""
    return im.orthanc_event_count(lab, pacs(lab).name)


def stow_body(accession: str, sop_instance_uid: str | None = None, preamble: bytes | None = None) -> str:
    """A STOW-RS body holding one new CT instance (dicomsim's synthetic series) with ``accession``
    (and ``sop_instance_uid``, and the 128-byte Part 10 preamble ``preamble`` zero-padded, when
    given), base64-encoded."""
    order = {"patient_name": "PERMISSION^CHECK", "patient_id": f"PC{accession}", "accession": accession,
             "study_uid": pydicom.uid.generate_uid(dicomsim.UID_ROOT)}
    [ds] = dicomsim.make_series(order, "CT", "CT01", 1)
    if sop_instance_uid is not None:
        ds.SOPInstanceUID = ds.file_meta.MediaStorageSOPInstanceUID = sop_instance_uid
    if preamble is not None:
        ds.preamble = preamble.ljust(128, b"\0")
    part10 = io.BytesIO()
    pydicom.dcmwrite(part10, ds, enforce_file_format=True)
    body = (f"--{BOUNDARY}\r\nContent-Type: application/dicom\r\n\r\n".encode() + part10.getvalue()
            + f"\r\n--{BOUNDARY}--\r\n".encode())
    return base64.b64encode(body).decode()


def upload_studies(lab: Lab, sessions: dict[str, tuple[str, dict[str, str]]], *prefixes: str) -> list[dict[str, Any]]:
    """The technologist uploads (STOW-RS, through the proxy) one new study per accession prefix
    (the prefix and six hex digits): each {status, accession, id (the PACS's), uid (its Study
    Instance UID)}, in the order of ``prefixes``."""
    accessions = [f"{prefix}{secrets.token_hex(3).upper()}" for prefix in prefixes]
    stow = {"path": "/dicom-web/studies", "method": "POST", "headers": {"Content-Type": STOW_TYPE, "Accept": "application/dicom+json"}}
    answers = as_person(lab, sessions, "technologist", [stow | {"body_base64": stow_body(a)} for a in accessions])
    host, out = pacs(lab).name, []
    for accession, answer in zip(accessions, answers, strict=True):
        [study] = im.find_study(lab, host, accession)
        uid = im.orthanc(lab, host, f"/studies/{study}")["MainDicomTags"]["StudyInstanceUID"]
        out.append({"status": answer["status"], "accession": accession, "id": study, "uid": uid})
    return out


@pytest.mark.control("C-ACC-03")
def test_each_role_gets_what_its_permissions_allow_through_the_proxy(running_lab: Lab, sessions: dict[str, tuple[str, dict[str, str]]],
                                                                     stored: dict[str, str], evidence) -> None:
    """Each role, with a real session, asks for the same eight things of one study a modality
    stored: a QIDO-RS search by accession (view), its WADO-RS retrieval (download), its record in
    the REST API (view), its DICOM file (download: pixel data), the audit records (audit), the
    server's settings (settings), sending it to the reading workstation and to the VNA (send, which
    goes to the reading workstations only). The answers are the matrix above; the PACS decided every
    request the proxy passed, and logged each with the person, their roles and its verdict; the
    auditor's audit records hold the radiologist's decision to fetch the file."""
    lab = running_lab
    reading = next(h for h in lab.group("workstations") if h.deployed and h.ae_title and "dicom" in [s.name for s in h.services])
    vna = next(h for h in lab.group("vna_servers") if h.deployed)
    dicom = {"Accept": 'multipart/related; type="application/dicom"'}
    calls = [
        {"path": f"/dicom-web/studies?AccessionNumber={stored['accession']}", "headers": {"Accept": "application/dicom+json"}},
        {"path": f"/dicom-web/studies/{stored['uid']}", "headers": dicom},
        {"path": f"/pacs/studies/{stored['id']}", "headers": {"Accept": "application/json"}},
        {"path": f"/pacs/instances/{stored['instance']}/file", "headers": {"Accept": "application/dicom"}},
        {"path": "/pacs/pacslab/audit?limit=1000", "headers": {"Accept": "application/json"}},
        {"path": "/pacs/system", "headers": {"Accept": "application/json"}},
        {"path": f"/pacs/modalities/{reading.ae_title}/store", "method": "POST", "body": stored["id"]},
        {"path": f"/pacs/modalities/{vna.ae_title}/store", "method": "POST", "body": stored["id"]},
    ]
    since = log_length(lab)
    answers = {role: as_person(lab, sessions, role, calls) for role in ROLES}
    seen = {role: [a.get("status") for a in answers[role]] for role in ROLES}
    logged = decisions(lab, since)
    evidence.update(people={r: p for r, (p, _) in sessions.items()}, seen=seen, decisions=len(logged))
    assert seen == MATRIX
    paths = [c["path"].split("?")[0].removeprefix("/pacs") for c in calls]
    for role in ROLES:
        person = sessions[role][0]
        mine = [(d["method"], d["path"], d["verdict"], d["roles"]) for d in logged if d["user"] == person]
        expected = [(c.get("method", "GET"), path, "allow" if code == 200 else "deny", [role])
                    for c, path, code, action in zip(calls, paths, MATRIX[role], ACTIONS, strict=True) if (role, action) not in REFUSED_BY_PROXY]
        assert mine == expected, role
    # the auditor read the radiologist's file download among the audit records
    audit = answers["auditor"][ACTIONS.index("audit")]["json"]
    fetched = {"event": "access-decision", "user": sessions["radiologist"][0], "method": "GET",
               "path": f"/instances/{stored['instance']}/file", "verdict": "allow", "permission": "download"}
    assert [e for e in audit if fetched.items() <= e.items()] != []


@pytest.mark.control("C-ACC-03")
def test_the_ways_around_the_table_are_refused(running_lab: Lab, sessions: dict[str, tuple[str, dict[str, str]]],
                                               stored: dict[str, str], evidence) -> None:
    """Paths that reach what a role lacks by another name: a trailing slash on a DICOM archive
    (Orthanc routes it as without), pixel data as a NumPy array or a rendered image (no rule names
    them), an archive built by /tools, a send that skips the destination check (store-straight), a
    GET that Orthanc runs as a DELETE (_method). Each is refused (403), the PACS logged the method it
    acts on (DELETE for the _method one), and nothing is removed. The twins, with a trailing slash:
    the radiologist, who holds download, gets the archive (200); the auditor the audit records (200)."""
    lab, host = running_lab, pacs(running_lab).name
    vna = next(h for h in lab.group("vna_servers") if h.deployed)
    study, instance = stored["id"], stored["instance"]
    attempts = {
        "technologist": [{"path": f"/pacs/studies/{study}/archive/"}, {"path": f"/pacs/instances/{instance}/numpy"},
                         {"path": f"/pacs/instances/{instance}/rendered"}],
        "pacs-admin": [{"path": "/pacs/tools/create-archive", "method": "POST", "body": json.dumps({"Resources": [study]})},
                       {"path": f"/pacs/modalities/{vna.ae_title}/store-straight", "method": "POST", "body": "x"}],
        "radiologist": [{"path": f"/pacs/studies/{study}?_method=DELETE"}, {"path": f"/pacs/studies/{study}/archive/"}],
        "auditor": [{"path": "/pacs/pacslab/audit/"}],
    }
    since = log_length(lab)
    seen = {role: [a["status"] for a in as_person(lab, sessions, role, calls)] for role, calls in attempts.items()}
    logged = [(d["user"], d["method"], d["path"], d["verdict"]) for d in decisions(lab, since) if d["account"] == proxy(lab).name]
    evidence.update(seen=seen, logged=logged)
    assert seen == {"technologist": [403, 403, 403], "pacs-admin": [403, 403], "radiologist": [403, 200], "auditor": [200]}
    technologist, admin, radiologist = (sessions[r][0] for r in ("technologist", "pacs-admin", "radiologist"))
    assert logged == [
        (technologist, "GET", f"/studies/{study}/archive", "deny"), (technologist, "GET", f"/instances/{instance}/numpy", "deny"),
        (technologist, "GET", f"/instances/{instance}/rendered", "deny"), (admin, "POST", "/tools/create-archive", "deny"),
        (admin, "POST", f"/modalities/{vna.ae_title}/store-straight", "deny"), (radiologist, "DELETE", f"/studies/{study}", "deny"),
        (radiologist, "GET", f"/studies/{study}/archive", "allow"), (sessions["auditor"][0], "GET", "/pacslab/audit", "allow")]
    assert im.find_study(lab, host, stored["accession"]) == [study]


# The image viewer (orthanc-webviewer) behind /pacs/: its page, the series it shows (patient and
# slices), one decoded image (compression-instance_frame, pixel data), that image with a trailing
# slash (Orthanc routes it as without). What each role gets, written out.
VIEWER_MATRIX = {
    #                 page series image image/
    "radiologist":   [200, 200,   200,  200],
    "technologist":  [200, 200,   403,  403],
    "pacs-admin":    [200, 200,   403,  403],
    "auditor":       [403, 403,   403,  403],
}


@pytest.mark.control("C-ACC-03")
def test_the_viewer_shows_each_role_what_its_permissions_allow(running_lab: Lab, sessions: dict[str, tuple[str, dict[str, str]]],
                                                              stored: dict[str, str], evidence) -> None:
    """The viewer's requests go through the same table: its page and the series' record are view,
    the decoded image is download (pixel data). The radiologist gets the image; the technologist
    and the PACS administrator see the page and the series but not the image; the auditor, who holds
    no view, nothing. Each decision is logged with the permission it needed."""
    lab = running_lab
    [series] = im.orthanc(lab, pacs(lab).name, f"/studies/{stored['id']}")["Series"]
    image = f"/web-viewer/instances/jpeg95-{stored['instance']}_0"
    calls = [{"path": "/pacs/web-viewer/app/viewer.html"}, {"path": f"/pacs/web-viewer/series/{series}"},
             {"path": f"/pacs{image}"}, {"path": f"/pacs{image}/"}]
    since = log_length(lab)
    seen = {role: [a.get("status") for a in as_person(lab, sessions, role, calls)] for role in ROLES}
    logged = [(d["user"], d["path"], d["permission"], d["verdict"]) for d in decisions(lab, since)
              if d["path"].startswith("/web-viewer/")]
    evidence.update(seen=seen, logged=logged)
    assert seen == VIEWER_MATRIX
    expected = []
    for role in ROLES:
        person = sessions[role][0]
        for (path, permission), code in zip([("/web-viewer/app/viewer.html", "view"), (f"/web-viewer/series/{series}", "view"),
                                             (image, "download"), (image, "download")], VIEWER_MATRIX[role], strict=True):
            expected.append((person, path, permission, "allow" if code == 200 else "deny"))
    assert logged == expected


@pytest.mark.control("C-ACC-03")
def test_a_technologist_stores_and_corrects_a_pacs_admin_deletes_and_no_other_role_does(running_lab: Lab,
                                                                                         sessions: dict[str, tuple[str, dict[str, str]]],
                                                                                         evidence) -> None:
    """STOW-RS of a new instance: the technologist's is stored (200; the PACS holds it, with the Origin
    "Plugins": the DICOMweb plugin stored it), the radiologist's is refused (403; nothing held under
    its accession). A demographic correction of that study: the technologist's makes a corrected
    copy (200, then Orthanc's job stores it; the original kept, unchanged), one naming another
    attribute is refused (400, naming it), and Orthanc's own modify, which can remove its source,
    is refused to the technologist (403), as the correction is to the radiologist. Deleting the original: the technologist, the radiologist and
    the auditor are refused (403), both studies still held; the PACS administrator deletes it (200)
    and the copy stays. The PACS logged each decision that needed the delete permission, and each
    resource the delete removed, naming the administrator."""
    lab = running_lab
    host = pacs(lab).name
    mine, theirs = f"PT{secrets.token_hex(3).upper()}", f"PR{secrets.token_hex(3).upper()}"
    stow = {"path": "/dicom-web/studies", "method": "POST", "headers": {"Content-Type": STOW_TYPE, "Accept": "application/dicom+json"}}
    since = log_length(lab)
    [by_technologist] = as_person(lab, sessions, "technologist", [stow | {"body_base64": stow_body(mine)}])
    [by_radiologist] = as_person(lab, sessions, "radiologist", [stow | {"body_base64": stow_body(theirs)}])
    [study] = im.find_study(lab, host, mine)
    origins = {im.instance_origin(lab, host, i["id"]) for i in im.study_instances(lab, host, study)}
    correct = {"path": f"/pacs/pacslab/studies/{study}/demographics", "method": "POST", "headers": {"Accept": "application/json"}}
    corrected, not_demographic, raw_modify = as_person(lab, sessions, "technologist", [
        correct | {"body": json.dumps({"PatientName": "CORRECTED^NAME", "PatientSex": "F"})},
        correct | {"body": json.dumps({"PatientID": "SOMEONE-ELSE"})},
        {"path": f"/pacs/studies/{study}/modify", "method": "POST", "body": json.dumps({"Replace": {"PatientName": "X"}, "KeepSource": False})},
    ])
    [correction_by_radiologist] = as_person(lab, sessions, "radiologist", [correct | {"body": json.dumps({"PatientSex": "M"})}])
    # the copy is stored when Orthanc's modify job ends
    [copy] = im.wait_for("the corrected copy", lambda: [s for s in im.find_study(lab, host, mine) if s != study], timeout=60, every=1)
    names = {s: im.orthanc(lab, host, f"/studies/{s}")["PatientMainDicomTags"]["PatientName"] for s in im.find_study(lab, host, mine)}
    delete = {"path": f"/pacs/studies/{study}", "method": "DELETE", "headers": {"Accept": "application/json"}}
    refused = {role: as_person(lab, sessions, role, [delete])[0]["status"] for role in ("technologist", "radiologist", "auditor")}
    held_after_refusals = sorted(im.find_study(lab, host, mine))
    [by_admin] = as_person(lab, sessions, "pacs-admin", [delete])
    held_after_delete = im.find_study(lab, host, mine)

    def deletion_events() -> list[dict[str, Any]] | None:
        """The decisions that needed delete and the deletions, once a study's, a series' and an
        instance's are logged (Orthanc reports deletions through its change queue, after the
        DELETE's answer)."""
        found = [e for e in events(lab, since)
                 if e.get("event") == "resource-deleted" or (e.get("event") == "access-decision" and e.get("permission") == "delete")]
        levels = {e.get("level") for e in found if e.get("event") == "resource-deleted"}
        return found if {"Study", "Series", "Instance"} <= levels else None

    logged = im.wait_for("the deletion's events", deletion_events, timeout=60, every=1)
    evidence.update(stored=by_technologist["status"], refused_stow=by_radiologist["status"], origins=sorted(origins),
                    corrections=[corrected["status"], not_demographic["status"], raw_modify["status"], correction_by_radiologist["status"]],
                    names=names, refused=refused, deleted=by_admin["status"], events=logged)
    assert (by_technologist["status"], by_radiologist["status"]) == (200, 403)
    assert origins == {"Plugins"} and im.find_study(lab, host, theirs) == []
    assert (corrected["status"], not_demographic["status"], raw_modify["status"], correction_by_radiologist["status"]) == (200, 400, 403, 403)
    assert not_demographic["text"] == "PatientID: not one of ['PatientBirthDate', 'PatientName', 'PatientSex'], or not a valid value"
    assert names == {study: "PERMISSION^CHECK", copy: "CORRECTED^NAME"}
    assert refused == {"technologist": 403, "radiologist": 403, "auditor": 403} and held_after_refusals == sorted([study, copy])
    assert by_admin["status"] == 200 and held_after_delete == [copy]
    technologist, admin = sessions["technologist"][0], sessions["pacs-admin"][0]
    assert [(e["user"], e["path"], e["verdict"]) for e in logged if e["event"] == "access-decision"] == [
        (technologist, f"/studies/{study}/modify", "deny"), (technologist, f"/studies/{study}", "deny"),
        (sessions["radiologist"][0], f"/studies/{study}", "deny"), (sessions["auditor"][0], f"/studies/{study}", "deny"),
        (admin, f"/studies/{study}", "allow")]
    # Orthanc removes the study, its series and its instance; the patient keeps the corrected copy
    deleted = [(e["level"], e["user"]) for e in logged if e["event"] == "resource-deleted"]
    assert sorted(deleted) == [("Instance", admin), ("Series", admin), ("Study", admin)]
    assert [e["resource"] for e in logged if e["event"] == "resource-deleted" and e["level"] == "Study"] == [study]


@pytest.mark.control("C-PRT-01")
def test_an_upload_a_record_read_and_a_correction_are_instances_accessed_messages_naming_the_person(
        running_lab: Lab, sessions: dict[str, tuple[str, dict[str, str]]], evidence) -> None:
    """Through the proxy with the people's own sessions: the technologist uploads a study (STOW-RS:
    upload), the radiologist reads its record (GET /studies/<id>: the permission table's view) and
    the technologist corrects its demographics (the plugin's correction: modify). Each is a DICOM
    Instances Accessed message (PS3.15 A.5.3.6) naming the person and the study, action C, R and
    U, in the siem. The twins: the radiologist's upload and correction are refused (403), and no C
    or U message names them."""
    lab = running_lab
    host = pacs(lab).name
    patient, theirs = f"PU{secrets.token_hex(3).upper()}", f"PV{secrets.token_hex(3).upper()}"
    stow = {"path": "/dicom-web/studies", "method": "POST", "headers": {"Content-Type": STOW_TYPE, "Accept": "application/dicom+json"}}
    [stored] = as_person(lab, sessions, "technologist", [stow | {"body_base64": stow_body(patient)}])
    [refused_upload] = as_person(lab, sessions, "radiologist", [stow | {"body_base64": stow_body(theirs)}])
    [study] = im.find_study(lab, host, patient)
    uid = im.orthanc(lab, host, f"/studies/{study}")["MainDicomTags"]["StudyInstanceUID"]
    correct = {"path": f"/pacs/pacslab/studies/{study}/demographics", "method": "POST", "headers": {"Accept": "application/json"}}
    read, refused = as_person(lab, sessions, "radiologist", [
        {"path": f"/pacs/studies/{study}", "method": "GET", "headers": {"Accept": "application/json"}},
        correct | {"body": json.dumps({"PatientSex": "M"})}])
    [corrected] = as_person(lab, sessions, "technologist", [correct | {"body": json.dumps({"PatientSex": "F"})}])
    radiologist, technologist = sessions["radiologist"][0], sessions["technologist"][0]

    def accessed(person: str, study_uid: str | None = uid) -> list[tuple[str, str]]:
        return sorted((e["action"], e["user"]) for e in siem_json(lab, "events", "--contains", f'UserID="{person}"')
                      if e["event_type"] == "dicom-audit-instances-accessed" and study_uid in (None, e["study_uid"]))

    by_technologist = wait_for("the upload's C and the correction's U messages",
                               lambda: [a for a in accessed(technologist) if a[0] in "CU"] if len(accessed(technologist)) == 2 else [])
    by_radiologist = wait_for("the record read's R message", lambda: accessed(radiologist))
    im.wait_for("the correction's copy", lambda: [s for s in im.find_study(lab, host, patient) if s != study], timeout=60, every=1)
    evidence.update(answers=[stored["status"], refused_upload["status"], read["status"], refused["status"], corrected["status"]],
                    technologist=by_technologist, radiologist=accessed(radiologist))
    assert [stored["status"], refused_upload["status"], read["status"], refused["status"], corrected["status"]] == [200, 403, 200, 403, 200]
    assert by_technologist == [("C", technologist), ("U", technologist)]
    assert by_radiologist == [("R", radiologist)] and accessed(radiologist) == [("R", radiologist)]
    assert [a for a in accessed(radiologist, None) if a[0] in "CU"] == [] and im.find_study(lab, host, theirs) == []


@pytest.mark.control("C-PRT-01")
def test_a_modify_that_drops_its_source_is_study_deleted_naming_the_person(running_lab: Lab,
                                                                           sessions: dict[str, tuple[str, dict[str, str]]],
                                                                           evidence) -> None:
    """The PACS administrator, through the proxy, runs Orthanc's own modify (the permission table's
    delete) on two studies the technologist uploaded: on the first keeping its source (KeepSource
    true), on the second not (false). The second's source is gone, and that is a DICOM Study
    Deleted message (PS3.15 A.5.3.8) naming the person and the study at the siem; the first's source
    stays (the filter cannot see KeepSource: its note lapses unused, which the next test proves)."""
    lab = running_lab
    host = pacs(lab).name
    uploads = upload_studies(lab, sessions, "PK", "PD")
    (kept, kept_accession), (dropped, dropped_accession) = ((u["id"], u["accession"]) for u in uploads)
    uids = {u["id"]: u["uid"] for u in uploads}

    def modify(study: str, keep_source: bool) -> dict[str, Any]:
        return {"path": f"/pacs/studies/{study}/modify", "method": "POST", "headers": {"Accept": "application/json"},
                "body": json.dumps({"Replace": {"PatientName": "MODIFIED^BY^ADMIN"}, "KeepSource": keep_source})}

    answers = as_person(lab, sessions, "pacs-admin", [modify(kept, True), modify(dropped, False)])

    def study_deleted(study: str) -> list[dict[str, Any]]:
        return [e for e in siem_json(lab, "events", "--contains", uids[study]) if e["event_type"] == "dicom-audit-study-deleted"]

    found = wait_for("the dropped source's Study Deleted", lambda: study_deleted(dropped))
    held = {accession: sorted(im.find_study(lab, host, accession)) for accession in (kept_accession, dropped_accession)}
    evidence.update(uploads=[u["status"] for u in uploads], answers=[a["status"] for a in answers], held=held, deleted=found)
    assert [u["status"] for u in uploads] == [200, 200] and [a["status"] for a in answers] == [200, 200]
    assert len(held[kept_accession]) == 2 and kept in held[kept_accession]  # the source and its copy
    assert len(held[dropped_accession]) == 1 and dropped not in held[dropped_accession]  # the copy alone
    assert [(e["host"], e["source"], e["user"], e["study_uid"], e["outcome"]) for e in found] == [
        (host, "dicom-audit", sessions["pacs-admin"][0], uids[dropped], "success")]


@pytest.mark.control("C-PRT-01")
def test_a_modify_that_keeps_its_source_names_no_one_when_the_images_are_deleted_later(running_lab: Lab,
                                                                                        sessions: dict[str, tuple[str, dict[str, str]]],
                                                                                        evidence) -> None:
    """The twin of the one above: the PACS administrator, through the proxy, modifies a study's
    series keeping its source (a copy joins the study) and downloads a modified copy of its image
    (an instance's modify stores nothing); then the lab's administrator account deletes the
    original series. That is one DICOM Instances Accessed D naming that account, and none names the
    PACS administrator: the delete took over the notes of what it removed, and the instance's
    modify left none. (Then the study and a second one of the run are deleted: the second's Study
    Deleted, written after every earlier change, is the barrier before counting.)"""
    lab = running_lab
    host = pacs(lab).name
    uploads = upload_studies(lab, sessions, "PT", "PB")
    study, barrier_study = (u["id"] for u in uploads)
    uids = {u["id"]: u["uid"] for u in uploads}
    [series] = im.orthanc(lab, host, f"/studies/{study}")["Series"]
    [instance] = im.orthanc(lab, host, f"/series/{series}")["Instances"]
    modified = as_person(lab, sessions, "pacs-admin", [
        {"path": f"/pacs/series/{series}/modify", "method": "POST", "headers": {"Accept": "application/json"},
         "body": json.dumps({"Replace": {"SeriesDescription": "COPY"}, "KeepSource": True})},
        {"path": f"/pacs/instances/{instance}/modify", "method": "POST", "body": json.dumps({"Replace": {"PatientName": "COPY^ONLY"}})}])
    series_after = sorted(im.orthanc(lab, host, f"/studies/{study}")["Series"])
    im.orthanc(lab, host, f"/series/{series}", "DELETE")
    for doomed in (study, barrier_study):
        im.orthanc(lab, host, f"/studies/{doomed}", "DELETE")

    def deletions(uid: str) -> list[tuple[str, str]]:
        return sorted((e["event_type"], e["user"]) for e in siem_json(lab, "events", "--contains", uid)
                      if e["study_uid"] == uid and e.get("action") == "D")

    wait_for("the barrier's Study Deleted", lambda: deletions(uids[barrier_study]))
    found = deletions(uids[study])
    evidence.update(uploads=[u["status"] for u in uploads], modified=[m["status"] for m in modified], series=series_after, deletions=found)
    assert [u["status"] for u in uploads] == [200, 200] and [m["status"] for m in modified] == [200, 200]
    assert len(series_after) == 2 and series in series_after  # the source and its copy, one study
    assert found == [("dicom-audit-instances-accessed", im.ADMIN), ("dicom-audit-study-deleted", im.ADMIN)]


def as_administrator(lab: Lab, method: str, path: str, body: dict[str, Any] | None = None) -> int:
    """The status the PACS answers the lab's REST administrator (its own tooling's account, from the
    PACS host itself: loopback to its HTTPS front) for ``method`` ``path`` with a JSON ``body``."""
    return im.orthanc_call(lab, pacs(lab).name, path, method, json.dumps(body) if body is not None else None)[0]


@pytest.mark.control("C-PRT-01")
def test_the_deletions_the_audit_trail_cannot_name_are_refused_even_to_the_lab_s_administrator(
        running_lab: Lab, sessions: dict[str, tuple[str, dict[str, str]]], evidence) -> None:
    """Orthanc's bulk-delete, bulk-modify and bulk-anonymize, and a study's merge and split, remove
    what their body names, which the PACS's filter is not shown: no DICOM audit message could name
    it (nor could it for a job resubmitted: a modify run again long after its request). The lab's
    REST administrator, who may do everything else, asks for each to remove one of two studies the
    technologist uploaded (or its series), and for a job's resubmission: each is refused (403),
    logged as refused-to-all, and both studies stay; at the siem each refusal raises its own
    untraceable-deletion-refused alert (high, NIST SP 800-53 AU-9) naming the account and the PACS.
    The twin: the same account's DELETE of that study is allowed (200), the study is gone, and a
    DICOM Study Deleted message (PS3.15 A.5.3.8) naming the account and the study reaches the siem,
    in no such alert."""
    lab = running_lab
    host = pacs(lab).name
    first, second = upload_studies(lab, sessions, "PX", "PY")
    [series] = im.orthanc(lab, host, f"/studies/{first['id']}")["Series"]
    asked = [
        ("/tools/bulk-delete", {"Resources": [first["id"]]}),
        ("/tools/bulk-modify", {"Resources": [first["id"]], "Level": "Study", "Replace": {"PatientName": "BULK^MODIFIED"}, "KeepSource": False}),
        ("/tools/bulk-anonymize", {"Resources": [first["id"]], "Level": "Study", "KeepSource": False}),
        (f"/studies/{second['id']}/merge", {"Resources": [first["id"]], "KeepSource": False}),
        (f"/studies/{first['id']}/split", {"Series": [series], "KeepSource": False}),
        ("/jobs/pacslab-no-such-job/resubmit", {}),  # a job's id: refused before Orthanc looks it up
    ]
    since = log_length(lab)
    earlier = {e["id"] for e in refused_to_all_at_siem(lab)}
    answers = [as_administrator(lab, "POST", path, body) for path, body in asked]
    held = [im.find_study(lab, host, u["accession"]) for u in (first, second)]
    evidence.update(uploads=[first["status"], second["status"]], answers=answers, held=held)
    assert [first["status"], second["status"]] == [200, 200]
    assert answers == [403, 403, 403, 403, 403, 403]
    assert held == [[first["id"]], [second["id"]]]
    deleted = as_administrator(lab, "DELETE", f"/studies/{first['id']}")

    def study_deleted() -> list[dict[str, Any]]:
        return [e for e in siem_json(lab, "events", "--contains", first["uid"]) if e["event_type"] == "dicom-audit-study-deleted"]

    found = wait_for("the DELETE's Study Deleted", study_deleted)
    asked_paths = {path for path, _ in asked} | {f"/studies/{first['id']}"}  # not the searches of find_study
    logged = [(d["user"], d["method"], d["path"], d["permission"], d["verdict"]) for d in decisions(lab, since)
              if d["user"] == im.ADMIN and d["path"] in asked_paths and d["method"] != "GET"]
    evidence.update(deleted=deleted, logged=logged, audit=found)
    assert logged == [(im.ADMIN, "POST", path, "refused-to-all", "deny") for path, _ in asked] + [
        (im.ADMIN, "DELETE", f"/studies/{first['id']}", "delete", "allow")]
    assert deleted == 200 and im.find_study(lab, host, first["accession"]) == []
    assert [(e["host"], e["user"], e["study_uid"], e["outcome"]) for e in found] == [(host, im.ADMIN, first["uid"], "success")]

    def alerted() -> list[tuple[dict[str, Any], dict[str, Any]]]:
        refused = {e["id"]: e for e in refused_to_all_at_siem(lab) if e["id"] not in earlier}
        pairs = [(a, refused[i]) for a in siem_json(lab, "alerts") if a["rule"] == "untraceable-deletion-refused"
                 for i in a["events"] if i in refused]
        return pairs if len(pairs) == len(asked) else []

    pairs = wait_for("the untraceable-deletion-refused alerts, one per refusal", alerted)
    evidence.update(alerts=[a["id"] for a, _ in pairs])
    assert sorted((a["severity"], a["entities"]["user"], a["entities"]["host"], len(a["events"]), json.loads(e["message"])["path"])
                  for a, e in pairs) == sorted(("high", im.ADMIN, host, 1, path) for path, _ in asked)
    assert not {e["id"] for e in found} & {i for a in siem_json(lab, "alerts") if a["rule"] == "untraceable-deletion-refused" for i in a["events"]}


def refused_to_all_at_siem(lab: Lab) -> list[dict[str, Any]]:
    """The PACS's access decisions the siem holds whose outcome is refused-to-all (pacslab_siem)."""
    return [e for e in siem_json(lab, "events", "--contains", "refused-to-all")
            if (e["source"], e["event_type"], e["outcome"]) == ("orthanc-events", "access-decision", "refused-to-all")]


@pytest.mark.control("C-PRT-01")
def test_a_search_of_orthanc_s_own_api_is_a_query_message_naming_the_person_and_the_body(
        running_lab: Lab, sessions: dict[str, tuple[str, dict[str, str]]], stored: dict[str, str], evidence) -> None:
    """Orthanc's own search (POST /tools/find), whose body the PACS's filter is not shown: the
    radiologist's, through the proxy, for the accession of a study a modality stored is answered as
    Orthanc answers it (that study's id) and written as a DICOM Query message (PS3.15 A.5.3.10) from
    the PACS naming the person, the Study Root FIND class and the body as sent; so is their search at
    the Patient level (Patient Root FIND), whose body ends in a comment Orthanc's JSON reader skips
    and Python's does not. The twins write none: the auditor's (whose role may not view: 403 from
    the PACS) and the lab's REST administrator's search whose body Orthanc cannot read (400, as
    Orthanc's own route answers it)."""
    lab = running_lab
    host = pacs(lab).name
    marker = secrets.token_hex(3).upper()
    found = json.dumps({"Level": "Study", "Query": {"AccessionNumber": stored["accession"]}, "Limit": 10})  # not the body of find_study's
    patients = json.dumps({"Level": "Patients", "Query": {"PatientID": f"TFP{marker}"}}) + " // a comment"
    refused, broken = (json.dumps({"Level": "Study", "Query": {"PatientID": f"{p}{marker}"}}) for p in ("TFA", "TFB"))
    headers = {"Content-Type": "application/json"}
    asked = as_person(lab, sessions, "radiologist", [{"path": "/pacs/tools/find", "method": "POST", "headers": headers, "body": body}
                                                     for body in (found, patients)])
    [denied] = as_person(lab, sessions, "auditor", [{"path": "/pacs/tools/find", "method": "POST", "headers": headers, "body": refused}])
    unread = im.orthanc_call(lab, host, "/tools/find", "POST", broken[:-1])  # its closing brace cut

    def queries(body: str) -> list[dict[str, Any]]:
        return [e for e in siem_json(lab, "events", "--contains", base64.b64encode(body.encode()).decode())
                if e["event_type"] == "dicom-audit-query"]

    written = [wait_for(f"the radiologist's Query message {n}", lambda b=body: queries(b)) for n, body in enumerate((found, patients))]
    time.sleep(3)  # the other two came before these were found: a message of theirs would be in the siem by now
    evidence.update(statuses=[a["status"] for a in asked] + [denied["status"], unread[0]], query=written)
    assert [(a["status"], a.get("json")) for a in asked] == [(200, [stored["id"]]), (200, [])]
    assert (denied["status"], unread[0]) == (403, 400)
    for messages, body, model in zip(written, (found, patients), ("1.2.840.10008.5.1.4.1.2.2.1", "1.2.840.10008.5.1.4.1.2.1.1"), strict=True):
        assert [(e["host"], e["source"], e["user"], e["outcome"]) for e in messages] == [(host, "dicom-audit", sessions["radiologist"][0], "success")]
        obj = ElementTree.fromstring(messages[0]["message"]).find("ParticipantObjectIdentification")
        assert obj is not None and obj.get("ParticipantObjectID") == model
        assert base64.b64decode(obj.findtext("ParticipantObjectQuery") or "").decode() == body
    assert queries(refused) == [] and queries(broken[:-1]) == []


@pytest.mark.control("C-PRT-01")
def test_requests_through_the_proxy_reach_the_siem_with_the_person_the_address_and_the_status(
        running_lab: Lab, sessions: dict[str, tuple[str, dict[str, str]]], evidence) -> None:
    """The proxy's access logs are log sources: the radiologist's read of a study the PACS does not
    hold (the proxy passes it, the PACS answers 404) is a proxy-request, the auditor's DICOMweb
    search (the proxy's route does not admit the role) a proxy-access-denied, each with the person
    of the session, the internet computer's address and the status, from the proxy; the same
    computer's request for a page of the IdP, which the proxy passes through (the IdP's portal
    answers 200), a proxy-idp-request with its address and that status, and no person."""
    lab = running_lab
    marker = f"nosuch{secrets.token_hex(4)}"
    [read] = as_person(lab, sessions, "radiologist", [{"path": f"/pacs/studies/{marker}", "method": "GET"}])
    [refused] = as_person(lab, sessions, "auditor", [{"path": f"/dicom-web/studies/{marker}", "method": "GET"}])
    [at_idp] = oidc.browse(lab, CLIENT, f"https://{idp(lab).name}/{marker}")["steps"]

    def logged() -> list[dict[str, Any]]:
        found = [e for e in siem_json(lab, "events", "--contains", marker) if e["source"] in ("rproxy-access", "rproxy-idp-access")]
        return found if len(found) == 3 else []

    found = wait_for("the three requests at the siem", logged)
    evidence.update(statuses=[read["status"], refused["status"], at_idp["status"]], events=found)
    assert [read["status"], refused["status"], at_idp["status"]] == [404, 403, 200]
    client = str(lab.hosts[CLIENT].address)
    assert sorted((e["host"], e["source"], e["event_type"], e["user"], e["src_ip"], e["outcome"]) for e in found) == sorted([
        (proxy(lab).name, "rproxy-access", "proxy-request", sessions["radiologist"][0], client, "404"),
        (proxy(lab).name, "rproxy-access", "proxy-access-denied", sessions["auditor"][0], client, "403"),
        (proxy(lab).name, "rproxy-idp-access", "proxy-idp-request", None, client, "200")])


@pytest.mark.control("C-DAT-03")
def test_a_stow_with_a_uid_that_is_not_a_dicom_uid_is_refused_as_a_c_store_s_is(running_lab: Lab,
                                                                                  sessions: dict[str, tuple[str, dict[str, str]]],
                                                                                  evidence) -> None:
    """The technologist may upload (STOW-RS), but not what a modality may not store: an instance
    whose SOP Instance UID is "../../tmp/x" (PS3.5 9.1) is discarded before it is stored, with the
    security event a C-STORE's refusal leaves, and the PACS holds nothing under its accession. (The
    DICOMweb plugin 1.7 still lists it as stored in its answer: kept as evidence, not asserted.)"""
    lab, host = running_lab, pacs(running_lab).name
    accession, uid = f"PU{secrets.token_hex(3).upper()}", f"../../../../tmp/pacslab-{secrets.token_hex(4)}"
    stow = {"path": "/dicom-web/studies", "method": "POST", "headers": {"Content-Type": STOW_TYPE, "Accept": "application/dicom+json"},
            "body_base64": stow_body(accession, uid)}
    since = log_length(lab)
    [answer] = as_person(lab, sessions, "technologist", [stow])
    refused = [e for e in events(lab, since) if e.get("event") == "invalid-uid-refused"]
    evidence.update(status=answer["status"], answer=answer.get("json") or answer.get("text"), refused=refused)
    assert [(e["uids"], e["origin"]) for e in refused] == [({"SOPInstanceUID": uid}, PLUGIN_ORIGIN)]
    assert im.find_study(lab, host, accession) == [] and im.orthanc(lab, host, "/tools/lookup", "POST", uid) == []


@pytest.mark.control("C-DET-02")
def test_an_upload_whose_preamble_hides_malware_is_discarded_naming_the_person(running_lab: Lab,
                                                                              sessions: dict[str, tuple[str, dict[str, str]]],
                                                                              evidence) -> None:
    """A DICOM/PE polyglot hides code in the 128-byte preamble of a Part 10 file (workshop W9), which
    only an upload carries (a C-STORE sends the dataset alone). The technologist uploads (STOW-RS) two
    instances: the one whose preamble holds the EICAR test file is discarded before it is stored,
    with a malware-refused event naming the lab's signature and the technologist, and the PACS holds
    nothing under its accession; the twin, with Part 10's zero preamble, is stored."""
    lab, host = running_lab, pacs(running_lab).name
    carrying, clean = f"PM{secrets.token_hex(3).upper()}", f"PN{secrets.token_hex(3).upper()}"
    stow = {"path": "/dicom-web/studies", "method": "POST", "headers": {"Content-Type": STOW_TYPE, "Accept": "application/dicom+json"}}
    since = log_length(lab)
    as_person(lab, sessions, "technologist", [stow | {"body_base64": stow_body(carrying, preamble=bytes.fromhex(EICAR_HEX))},
                                              stow | {"body_base64": stow_body(clean)}])
    refused = [e for e in events(lab, since) if e.get("event") == "malware-refused"]
    evidence.update(refused=refused)
    assert [(e["accession"], e["signatures"], e["user"], e["origin"]) for e in refused] == [
        (carrying, ["Pacslab.Test.EICAR.UNOFFICIAL"], sessions["technologist"][0], PLUGIN_ORIGIN)]
    assert im.find_study(lab, host, carrying) == [] and len(im.find_study(lab, host, clean)) == 1


@pytest.mark.control("C-ACC-03")
def test_the_pacs_believes_identity_headers_only_under_the_proxy_s_account(running_lab: Lab, plan: Plan, evidence) -> None:
    """From the proxy host, straight to the PACS's HTTPS front with the proxy's certificate, a QIDO-RS
    search: the proxy's account naming a radiologist gets 200 (the twin); naming a vendor (a role
    that holds nothing), a role the lab does not know, or no person at all gets 403, each logged as
    refused; the radiologist's headers under Orthanc's packaged account get 401 (Orthanc's own check
    comes first)."""
    rp, target = proxy(running_lab), pacs(running_lab)
    own = [rp.name, secret(plan, f"orthanc-{target.name}-{rp.name}")]
    url = f"https://{target.name}:{target.service('https').port}/dicom-web/studies?limit=1"
    since = log_length(running_lab)
    seen = basic_auth(running_lab, rp.name, [{"url": url, "account": own, "headers": h, "cert": True} for h in AS_WHOM.values()]
                      + [{"url": url, "account": ["orthanc", "orthanc"], "headers": AS_WHOM["radiologist"], "cert": True}])
    logged = [(d["user"], d["roles"], d["verdict"]) for d in decisions(running_lab, since) if d["account"] == rp.name]
    evidence.update(answers=dict(zip([*AS_WHOM, "packaged account"], seen, strict=True)), logged=logged)
    assert [s[0] for s in seen] == [200, 403, 403, 403, 401]
    assert logged == [("rad-check", ["radiologist"], "allow"), ("vnd-check", ["vendor"], "deny"),
                      ("odd-check", ["superuser"], "deny"), ("", ["pacs-admin"], "deny")]


@pytest.mark.control("C-ACC-03")
@pytest.mark.control("C-ACC-06")
def test_the_proxy_s_account_works_from_the_proxy_alone(running_lab: Lab, plan: Plan, evidence) -> None:
    """The PACS's HTTPS front takes other hosts only with a certificate anchored in its proxies'
    bundle: the proxy's account and a radiologist's headers, from the proxy without its certificate,
    are refused in the TLS handshake (certificate_required, RFC 8446 4.4.2.4); from the VNA, which
    shares the PACS's zone (no fw between them) and shows its own lab certificate, too (unknown_ca);
    the same from the proxy with its certificate gets 200. The PACS logged one decision, the last."""
    rp, target = proxy(running_lab), pacs(running_lab)
    neighbour = next((h for h in running_lab.group("vna_servers") if h.deployed and h.zone == target.zone), None)
    if neighbour is None:
        pytest.skip(f"lab {running_lab.name!r} deploys no VNA beside the PACS")
    own = [rp.name, secret(plan, f"orthanc-{target.name}-{rp.name}")]
    call = {"url": f"https://{target.name}:{target.service('https').port}/dicom-web/studies?limit=1", "account": own,
            "headers": AS_WHOM["radiologist"]}
    since = log_length(running_lab)
    no_cert = basic_auth(running_lab, rp.name, [call])
    other_cert = basic_auth(running_lab, neighbour.name, [call | {"cert": True}])
    proxy_cert = basic_auth(running_lab, rp.name, [call | {"cert": True}])
    logged = [(d["user"], d["verdict"]) for d in decisions(running_lab, since) if d["account"] == rp.name]
    evidence.update(without_certificate=no_cert, from_the_vna=other_cert, with_the_proxy_s=proxy_cert, logged=logged)
    assert no_cert == [["tls", "TLSV13_ALERT_CERTIFICATE_REQUIRED"]]
    assert other_cert == [["tls", "TLSV1_ALERT_UNKNOWN_CA"]]
    assert proxy_cert == [[200, None]] and logged == [("rad-check", "allow")]


@pytest.mark.control("C-ACC-03")
@pytest.mark.parametrize("zone", ["internet", "clinical"])
def test_identity_headers_a_browser_forges_are_replaced_by_the_proxy_s(running_lab: Lab, sessions: dict[str, tuple[str, dict[str, str]]],
                                                                        zone: str, evidence) -> None:
    """The radiologist's browser, on the internet computer or on a clinical workstation (flows F07,
    F05a), sends identity headers of its own, naming a PACS administrator, with a request for the
    server's settings (a PACS administrator's permission): 403, and the PACS logged the radiologist
    and their role, not the forged ones."""
    client = next((h for h in running_lab.deployed_hosts() if h.zone == zone and h.kind == "host"
                   and (zone == "internet" or "workstations" in h.groups)), None)
    if client is None:
        pytest.skip(f"lab {running_lab.name!r} deploys no browser in the {zone} zone")
    person = sessions["radiologist"][0]
    forged = {"X-Pacslab-User": "adm-forged", "X-Pacslab-Roles": "pacs-admin", "Accept": "application/json"}
    since = log_length(running_lab)
    [answer] = as_person(running_lab, sessions, "radiologist", [{"path": "/pacs/system", "headers": forged}], client=client.name)
    logged = [(d["user"], d["roles"], d["path"], d["verdict"]) for d in decisions(running_lab, since)
              if d["account"] == proxy(running_lab).name]
    evidence.update(client=client.name, status=answer["status"], logged=logged)
    assert answer["status"] == 403
    assert logged == [(person, ["radiologist"], "/system", "deny")]
