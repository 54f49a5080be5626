"""The imaging core: clinical workflow, device authentication, application allow-listing, the
legacy overlay, data in transit, integrity, certificates, least functionality, robustness.

Every probe runs inside a lab container, so the source address is the device's own; every negative
case asserts on what the PACS did (association rejected, nothing stored), not on configuration.
"""

from __future__ import annotations

import datetime as dt
import secrets
from dataclasses import dataclass
from typing import Any

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import NameOID

from pacslab import certs
from pacslab.engine import run_playbook
from pacslab.probes import imaging as im
from pacslab.topology import Lab

APP_CONTEXT_UID = b"1.2.840.10008.3.1.1.1"  # every cleartext A-ASSOCIATE-RQ carries it (PS3.7 A.2.1)


@dataclass
class ClinicalRun:
    accession: dict[str, str]  # station -> accession
    canary: dict[str, str]  # station -> synthetic patient name
    sent: dict[str, list[dict[str, str]]]  # station -> fingerprints the modality sent
    pacs: dict[str, list[dict[str, Any]]]
    vna: dict[str, list[dict[str, Any]]]
    received: list[dict[str, str]]
    moves: dict[str, dict[str, Any]]
    fw_capture: bytes
    legacy_capture: bytes


@pytest.fixture(scope="module")
def clinical(running_lab: Lab, plan, tmp_path_factory) -> ClinicalRun:
    """HL7 order -> worklist -> modality (CT over TLS; legacy CT in cleartext via its gateway) ->
    PACS -> VNA -> C-MOVE to the reading workstation, with captures on the fw and on the legacy
    segment running the whole time."""
    lab = running_lab
    folder = tmp_path_factory.mktemp("captures")
    fw_image = next(c.image for c in plan.containers if c.host == plan.firewall_host)
    im.exec_in(lab, "ws-rad", "sh", "-c", "rm -f /var/lib/pacslab/received/*.dcm")
    im.capture_start(lab, "fw", "fw", fw_image)
    im.capture_start(lab, "legacy", "ovl-gw", fw_image)
    tag = secrets.token_hex(3).upper()
    stations = {"CT01": "mod-ct", "LEGACY01": "mod-legacy"}
    accession = {st: f"A{tag}{i}" for i, st in enumerate(stations)}
    canary = {st: f"PACSLAB^CANARY{tag}{i}" for i, st in enumerate(stations)}
    try:
        for st in stations:
            ack = im.send_order(lab, accession[st], st, "CT", canary[st], f"P{tag}{st[:2]}")
            assert ack["ack"] == "AA", ack
        pacs, vna, sent, moves = {}, {}, {}, {}
        for st, host in stations.items():
            study = im.wait_for(f"{accession[st]} on the PACS", lambda st=st: im.find_study(lab, "pacs", accession[st]), timeout=150)[0]
            sent[st] = im.wait_for("the modality's record", lambda st=st, host=host: _sent(lab, host, accession[st]))
            im.wait_for("every instance on the PACS", lambda study=study, st=st: len(im.study_instances(lab, "pacs", study)) == len(sent[st]))
            pacs[st] = im.study_instances(lab, "pacs", study)
            im.wait_for(f"{accession[st]} on the VNA", lambda study=study, st=st: len(_vna_instances(lab, study)) == len(sent[st]), timeout=120)
            vna[st] = im.study_instances(lab, "vna", study)
            uid = im.orthanc(lab, "pacs", f"/studies/{study}")["MainDicomTags"]["StudyInstanceUID"]
            moves[st] = im.dicomsim(lab, "ws-rad", "move", "--study", uid, "--destination", "WSRAD01")
        received = im.received_fingerprints(lab, "ws-rad")
    finally:
        fw = im.capture_stop(lab, "fw", folder / "fw.pcap")
        legacy = im.capture_stop(lab, "legacy", folder / "legacy.pcap")
    return ClinicalRun(accession, canary, sent, pacs, vna, received, moves, fw, legacy)


def _sent(lab: Lab, host: str, accession: str) -> list[dict[str, str]] | None:
    out = im.exec_in(lab, host, "cat", f"/var/lib/pacslab/sent/{accession}.json", check=False)
    return im.json.loads(out) if out.strip() else None


def _vna_instances(lab: Lab, study: str) -> list[dict[str, Any]]:
    return im.study_instances(lab, "vna", study) if study in im.orthanc(lab, "vna", "/studies") else []


# ---------------------------------------------------------------------------------------------
# The clinical workflow end to end


@pytest.mark.control("C-DAT-03")
@pytest.mark.parametrize("station", ["CT01", "LEGACY01"])
def test_workflow_delivers_identical_images(clinical: ClinicalRun, station: str, evidence) -> None:
    """Order -> worklist -> acquisition -> PACS -> VNA -> workstation: pixel data and key tags
    byte-identical to what the modality sent, accession numbers kept."""
    sent = {f["sop_instance_uid"]: f for f in clinical.sent[station]}
    received = {f["sop_instance_uid"]: f for f in clinical.received if f["sop_instance_uid"] in sent}
    evidence.update(accession=clinical.accession[station], sent=len(sent), received=len(received), move=clinical.moves[station])
    assert clinical.moves[station]["statuses"][-1] == "0x0000", clinical.moves[station]
    assert set(received) == set(sent), "the workstation did not receive every instance the modality sent"
    for uid, fp in sent.items():
        assert received[uid] == fp, f"{uid} changed between the modality and the workstation"
        assert fp["accession"] == clinical.accession[station]


@pytest.mark.control("C-DAT-03")
@pytest.mark.parametrize("station", ["CT01", "LEGACY01"])
def test_pacs_and_vna_copies_match(clinical: ClinicalRun, station: str, evidence) -> None:
    pacs = {r["sop_instance_uid"]: r["md5"] for r in clinical.pacs[station]}
    vna = {r["sop_instance_uid"]: r["md5"] for r in clinical.vna[station]}
    evidence.update(instances=len(pacs), pacs_md5=sorted(pacs.values())[:2], vna_md5=sorted(vna.values())[:2])
    assert pacs and pacs == vna


# ---------------------------------------------------------------------------------------------
# C-ACC-08 legacy overlay and C-DAT-02 data in transit


@pytest.mark.control("C-DAT-02")
@pytest.mark.parametrize("marker", ["application-context", "patient-name", "DICM"])
def test_no_cleartext_dicom_crosses_a_zone(clinical: ClinicalRun, marker: str, evidence) -> None:
    """The capture on the fw holds every inter-zone packet of the workflow: none in cleartext."""
    needles = {
        "application-context": [APP_CONTEXT_UID],
        "patient-name": [n.encode() for n in clinical.canary.values()],
        "DICM": [b"DICM"],
    }[marker]
    evidence.update(capture_bytes=len(clinical.fw_capture), needles=[n.decode() for n in needles])
    assert len(clinical.fw_capture) > 100_000, "the fw capture saw almost nothing: the workflow did not cross it"
    for needle in needles:
        assert needle not in clinical.fw_capture, f"{needle!r} crossed a zone boundary in cleartext"


@pytest.mark.control("C-ACC-08")
def test_capture_sees_cleartext_on_the_legacy_segment(clinical: ClinicalRun, evidence) -> None:
    """The twin of the check above: the same search finds the legacy device's cleartext DICOM on
    its own segment (before the gateway), so an empty result on the fw means encrypted, not unseen."""
    evidence.update(capture_bytes=len(clinical.legacy_capture))
    assert APP_CONTEXT_UID in clinical.legacy_capture
    assert clinical.canary["LEGACY01"].encode() in clinical.legacy_capture


@pytest.mark.control("C-ACC-08")
@pytest.mark.parametrize("port", [2762, 104])
def test_legacy_device_reaches_the_pacs_only_through_its_gateway(running_lab: Lab, port: int, evidence) -> None:
    script = (
        f"import socket\ntry:\n socket.create_connection(('10.77.40.10',{port}),4); print('open')\n"
        "except TimeoutError: print('dropped')\nexcept OSError as e: print('error', e)"
    )
    outcome = im.exec_in(running_lab, "mod-legacy", "python3", "-c", script).strip()
    evidence.update(target=f"pacs:{port}", outcome=outcome)
    assert outcome == "dropped"


# ---------------------------------------------------------------------------------------------
# C-ACC-06 device authentication


def rogue_pair(cn: str) -> tuple[str, str]:
    """A self-signed certificate from no lab CA, with the given CN, and its key (PEM)."""
    rogue_key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)])
    now = dt.datetime.now(dt.UTC)
    cert = (
        x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(rogue_key.public_key())
        .serial_number(x509.random_serial_number()).not_valid_before(now - dt.timedelta(hours=1))
        .not_valid_after(now + dt.timedelta(days=90)).sign(rogue_key, hashes.SHA256())
    )
    key = rogue_key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    return cert.public_bytes(serialization.Encoding.PEM).decode(), key.decode()


@pytest.fixture(scope="module")
def bad_certificates(running_lab: Lab) -> dict[str, str]:
    """A certificate from a rogue CA (same subject as CT01) and an expired one from CT01's own
    issuer, installed in mod-ct's /tmp with their keys."""
    lab = running_lab
    cert, key = rogue_pair("mod-ct")
    im.copy_into(lab, "mod-ct", "/tmp/rogue.crt", cert)
    im.copy_into(lab, "mod-ct", "/tmp/rogue.key", key)
    csr = im.exec_in(lab, "mod-ct", "openssl", "req", "-new", "-key", "/etc/pacslab/tls/node.key", "-subj", "/CN=mod-ct")
    expired = im.ca(lab, "issue", "mod-ct", "--sans", "DNS:mod-ct,IP:10.77.30.10", "--expired", input=csr)
    im.copy_into(lab, "mod-ct", "/tmp/expired.crt", expired["chain"])
    return {
        "rogue": "cert:/tmp/rogue.crt:/tmp/rogue.key",
        "expired": "cert:/tmp/expired.crt:/etc/pacslab/tls/node.key",
        "expired_pem": expired["cert"],
    }


REFUSED_TRANSPORTS = {
    "no-client-certificate": ["--tls", "nocert"],
    "rogue-ca": ["--tls", "{rogue}"],
    "expired-certificate": ["--tls", "{expired}"],
    "tls-1.1": ["--tls-version", "TLSv1_1"],
    "cleartext": ["--tls", "cleartext"],
}


@pytest.mark.control("C-ACC-06")
def test_enrolled_device_stores_over_tls(running_lab: Lab, evidence) -> None:
    before = im.instance_count(running_lab, "pacs")
    result = im.dicomsim(running_lab, "mod-ct", "store", "--images", "1", "--patient-name", "PACSLAB^AUTHN")
    evidence.update(established=result["established"], tls=result.get("tls_version"), stored=len(result["stored"]))
    assert result["established"] and result["tls_version"] in ("TLSv1.2", "TLSv1.3")
    assert len(result["stored"]) == 1 and im.instance_count(running_lab, "pacs") == before + 1


@pytest.mark.control("C-ACC-06")
@pytest.mark.parametrize("case", sorted(REFUSED_TRANSPORTS))
def test_unauthenticated_device_is_refused(running_lab: Lab, bad_certificates, case: str, evidence) -> None:
    args = [a.format(**bad_certificates) for a in REFUSED_TRANSPORTS[case]]
    before = im.instance_count(running_lab, "pacs")
    result = im.dicomsim(running_lab, "mod-ct", "store", "--images", "1", "--patient-name", "PACSLAB^REFUSED", *args)
    evidence.update(case=case, established=result["established"], aborted=result["aborted"], stored=len(result["stored"]))
    assert not result["established"], f"{case}: the PACS accepted the association"
    assert not result["stored"] and im.instance_count(running_lab, "pacs") == before


REFUSED_SENDERS = {
    "no-client-certificate": ["--no-cert"],
    "rogue-ca": ["--cert", "/tmp/rogue.crt", "--key", "/tmp/rogue.key"],
}


@pytest.mark.control("C-ACC-06")
@pytest.mark.parametrize("case", list(REFUSED_SENDERS))
def test_order_without_a_listed_sender_certificate_is_refused(running_lab: Lab, case: str, evidence) -> None:
    """The RIS's TLS front takes orders only from certificates anchored in its HL7 bundle (the
    order-entry station's issuer); the workflow test is the positive twin (ACK AA)."""
    lab = running_lab
    cert, key = rogue_pair("ws-tech")
    im.copy_into(lab, "ws-tech", "/tmp/rogue.crt", cert)
    im.copy_into(lab, "ws-tech", "/tmp/rogue.key", key)
    accession = f"R{secrets.token_hex(4).upper()}"
    result = im.send_order(lab, accession, "CT01", "CT", "PACSLAB^REFUSED", "PREFUSED", *REFUSED_SENDERS[case])
    worklists = im.exec_in(lab, "ris", "ls", "/var/lib/orthanc/worklists").split()
    evidence.update(case=case, answer=result)
    assert result["ack"] == "" and result.get("error"), f"{case}: the RIS answered {result}"
    assert f"{accession}.wl" not in worklists


# ---------------------------------------------------------------------------------------------
# C-ACC-05 application allow-listing


STORE_REFUSALS = {
    "unknown-calling-ae": ("mod-ct", ["--calling", "EVILMOD"]),
    "known-ae-wrong-address": ("mod-mr", ["--calling", "CT01"]),
    "wrong-called-ae": ("mod-ct", ["--called", "NOTPACS"]),
}


@pytest.mark.control("C-ACC-05")
@pytest.mark.parametrize("case", sorted(STORE_REFUSALS))
def test_store_from_unlisted_application_is_refused(running_lab: Lab, case: str, evidence) -> None:
    host, args = STORE_REFUSALS[case]
    before = im.instance_count(running_lab, "pacs")
    result = im.dicomsim(running_lab, host, "store", "--images", "1", "--patient-name", "PACSLAB^EVIL", *args)
    evidence.update(case=case, rejected=result["rejected"], established=result["established"])
    assert not result["established"] and not result["stored"]
    assert im.instance_count(running_lab, "pacs") == before


@pytest.mark.control("C-ACC-05")
@pytest.mark.parametrize("host,allowed", [("ws-rad", True), ("mod-ct", False)])
def test_only_the_workstation_may_query(running_lab: Lab, clinical: ClinicalRun, host: str, allowed: bool, evidence) -> None:
    result = im.dicomsim(running_lab, host, "find", "--accession", clinical.accession["CT01"])
    evidence.update(host=host, established=result["established"], matches=len(result["matches"]), statuses=result["statuses"])
    assert bool(result["matches"]) is allowed


@pytest.mark.control("C-ACC-05")
@pytest.mark.parametrize("destination,allowed", [("WSRAD01", True), ("ATTACKER", False)])
def test_move_goes_only_to_registered_destinations(running_lab: Lab, clinical: ClinicalRun, destination: str, allowed: bool, evidence) -> None:
    study = im.find_study(running_lab, "pacs", clinical.accession["CT01"])[0]
    uid = im.orthanc(running_lab, "pacs", f"/studies/{study}")["MainDicomTags"]["StudyInstanceUID"]
    result = im.dicomsim(running_lab, "ws-rad", "move", "--study", uid, "--destination", destination)
    evidence.update(destination=destination, statuses=result["statuses"], completed=result.get("completed"))
    assert (result["statuses"][-1:] == ["0x0000"] and result.get("completed", 0) > 0) is allowed


# ---------------------------------------------------------------------------------------------
# C-DAT-03 integrity


@pytest.mark.control("C-DAT-03")
def test_flipped_byte_on_disk_is_detected(running_lab: Lab, clinical: ClinicalRun, evidence) -> None:
    lab = running_lab
    target = clinical.pacs["CT01"][0]["id"]
    # Orthanc 1.10.1's REST API does not name the attachment's file: the index does.
    query = f"select a.uuid from attachedfiles a join resources r on a.id = r.internalid where r.publicid = '{target}' and a.filetype = 1"
    uuid = im.exec_in(lab, "pacs", "su", "postgres", "-c", f'psql -h /var/run/postgresql -d orthanc -tAc "{query}"').strip()
    path = f"/var/lib/orthanc/db/{uuid[0:2]}/{uuid[2:4]}/{uuid}"
    flip = f"f=open('{path}','r+b');f.seek(4000);b=f.read(1);f.seek(4000);f.write(bytes([b[0]^0xFF]));f.close()"
    clean = im.orthanc(lab, "pacs", "/pacslab/verify", "POST", "")
    im.exec_in(lab, "pacs", "python3", "-c", flip)
    try:
        tampered = im.orthanc(lab, "pacs", "/pacslab/verify", "POST", "")
        events = im.read_from(lab, "pacs", "/var/log/pacslab/orthanc-events.json")
    finally:
        im.exec_in(lab, "pacs", "python3", "-c", flip)  # flip it back: later checks read this study
    evidence.update(file=path, before=clean["failures"], after=tampered["failures"])
    assert target not in clean["failures"]
    assert target in tampered["failures"]
    assert any('"integrity-failure"' in line and target in line for line in events.splitlines()), "no integrity-failure event"


@pytest.mark.control("C-DAT-03")
def test_resending_a_modified_instance_does_not_overwrite(running_lab: Lab, clinical: ClinicalRun, evidence) -> None:
    lab = running_lab
    original = clinical.pacs["CT01"][0]
    forged = ["--patient-name", "PACSLAB^FORGED", "--sop-instance-uid", original["sop_instance_uid"]]
    result = im.dicomsim(lab, "mod-ct", "store", "--images", "1", *forged)
    after = im.orthanc(lab, "pacs", f"/instances/{original['id']}/attachments/dicom/md5", raw=True).strip()
    name = im.orthanc(lab, "pacs", f"/instances/{original['id']}/simplified-tags")["PatientName"]
    evidence.update(store=result["stored"] or result["failed"], md5_before=original["md5"], md5_after=after, patient=name)
    assert after == original["md5"] and name == clinical.canary["CT01"]


# ---------------------------------------------------------------------------------------------
# C-DAT-05 certificate lifecycle


TLS_HOSTS = ["pacs", "vna", "ris", "mod-ct", "mod-mr", "ovl-gw", "ws-rad", "ws-tech"]


@pytest.fixture(scope="module")
def lab_root(running_lab: Lab) -> str:
    return im.read_from(running_lab, "ca", "/var/lib/pacslab-ca/root.crt")


@pytest.mark.control("C-DAT-05")
@pytest.mark.parametrize("host", TLS_HOSTS)
def test_certificate_in_use_is_sound(running_lab: Lab, lab_root: str, host: str, evidence) -> None:
    chain = im.read_from(running_lab, host, "/etc/pacslab/tls/chain.pem")
    problems = certs.audit(chain, lab_root)
    leaf = x509.load_pem_x509_certificate(chain.encode())
    evidence.update(subject=leaf.subject.rfc4514_string(), not_after=str(certs.not_after(leaf)), key=certs.key_strength(leaf))
    evidence.update(problems=problems)
    assert problems == []


FRONTS = {  # a TLS service -> (a client that may reach it, the server host, its port)
    "pacs-dicom": ("mod-ct", "pacs", 2762),
    "pacs-https": ("pacs", "pacs", 443),  # only the (planned) reverse proxy may cross the fw to it
    "ris-hl7": ("ws-tech", "ris", 2575),
}


@pytest.mark.control("C-DAT-05")
@pytest.mark.parametrize("front", list(FRONTS))
def test_presented_certificate_is_the_installed_one(running_lab: Lab, front: str, evidence) -> None:
    """What each TLS service presents is what the audit above looked at (a front still serving
    a certificate the pki role has replaced would differ)."""
    client, server, port = FRONTS[front]
    out = im.exec_in(
        running_lab, client, "sh", "-c",
        f"openssl s_client -connect {running_lab.hosts[server].address}:{port} -cert /etc/pacslab/tls/chain.pem "
        "-key /etc/pacslab/tls/node.key -CAfile /etc/pacslab/tls/trusted.pem </dev/null 2>/dev/null | openssl x509",
    )
    installed = im.read_from(running_lab, server, "/etc/pacslab/tls/node.crt")
    evidence.update(presented=out.splitlines()[1][:40] if out else None)
    assert out.strip() == installed.strip()


@pytest.mark.control("C-DAT-05")
@pytest.mark.parametrize("kind", ["expired", "rogue-ca", "weak-key"])
def test_expiry_report_names_a_bad_certificate(running_lab: Lab, lab_root: str, bad_certificates, kind: str, evidence) -> None:
    if kind == "expired":
        pem = bad_certificates["expired_pem"]
        chain = pem + im.read_from(running_lab, "mod-ct", "/etc/pacslab/tls/chain.pem").split("-----END CERTIFICATE-----\n", 1)[1]
    elif kind == "rogue-ca":
        chain = im.read_from(running_lab, "mod-ct", "/tmp/rogue.crt")
    else:
        key = rsa.generate_private_key(public_exponent=65537, key_size=1024)
        name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "weak")])
        now = dt.datetime.now(dt.UTC)
        cert = (
            x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
            .serial_number(1).not_valid_before(now).not_valid_after(now + dt.timedelta(days=90)).sign(key, hashes.SHA256())
        )
        chain = cert.public_bytes(serialization.Encoding.PEM).decode()
    problems = certs.audit(chain, lab_root)
    evidence.update(kind=kind, problems=problems)
    word = {"expired": "days left", "rogue-ca": "not issued by the lab CA", "weak-key": "weak key"}[kind]
    assert any(word in p for p in problems), problems


@pytest.mark.control("C-DAT-05")
def test_ca_inventory_lists_every_enrolled_node(running_lab: Lab, evidence) -> None:
    inventory = im.ca(running_lab, "inventory")
    valid = {r["name"] for r in inventory if r["status"] == "valid"}
    evidence.update(valid=sorted(valid))
    assert set(TLS_HOSTS) <= valid


# C-PRT-02 least functionality (listeners, the scan, Orthanc's refusals): tests/integration/test_facts.py


# ---------------------------------------------------------------------------------------------
# Robustness: the PACS keeps serving the other modality, stores nothing bad, logs each event


@pytest.mark.parametrize("case", ["garbage", "truncated-pdu", "flood", "malformed-object", "unknown-sop-class"])
def test_pacs_survives_misbehaving_device(running_lab: Lab, case: str, evidence) -> None:
    lab = running_lab
    before = im.instance_count(lab, "pacs")
    log_before = len(im.read_from(lab, "pacs", "/var/log/pacslab/orthanc.log"))
    if case == "garbage":
        result = im.dicomsim(lab, "mod-mr", "raw", "--hex", secrets.token_hex(512))
    elif case == "truncated-pdu":
        result = im.dicomsim(lab, "mod-mr", "raw", "--hex", "010000000400" + "0001" + "00" * 10)  # A-ASSOCIATE-RQ, 1024 bytes promised
    elif case == "flood":
        result = im.dicomsim(lab, "mod-mr", "flood", "--count", "30", "--hold", "3")
        assert result["seconds"] < 120
    elif case == "malformed-object":
        result = im.dicomsim(lab, "mod-mr", "store", "--images", "1", "--malformed")
        assert not result["stored"]
    else:
        result = im.dicomsim(lab, "mod-mr", "store", "--images", "1", "--sop-class-uid", "1.2.826.0.1.3680043.10.1077.99.1")
        assert not result["stored"]
    still = im.dicomsim(lab, "mod-ct", "echo")
    log = im.read_from(lab, "pacs", "/var/log/pacslab/orthanc.log")[log_before:]
    evidence.update(case=case, result={k: v for k, v in result.items() if k in ("error", "received", "established", "attempted", "failed")},
                    other_modality=still.get("status"), log_lines=len(log.splitlines()))
    assert still["established"] and still["status"] == "0x0000", "the PACS stopped serving CT01"
    assert im.instance_count(lab, "pacs") == before
    assert "10.77.30.11" in log or "Receiving Association failed" in log, "the PACS did not log the event"


# ---------------------------------------------------------------------------------------------
# C-ACC-06 / C-DAT-05 revocation (changes the lab, then restores it)


@pytest.mark.control("C-ACC-06")
def test_revoked_device_is_refused_until_enrolled_again(running_lab: Lab, plan, state, evidence) -> None:
    """Revocation is the CA's record plus `up`: bundles are rebuilt without the node's anchor and
    the consumers reload. Enrolling again gives the node a new issuer (its old anchor stays out)."""
    lab = running_lab
    assert im.dicomsim(lab, "mod-mr", "echo")["established"]
    im.ca(lab, "revoke", "mod-mr")
    try:
        revoked_run = run_playbook(lab, plan, "up.yml", state, quiet=True)
        assert revoked_run.ok
        revoked = im.dicomsim(lab, "mod-mr", "store", "--images", "1")
        bundle = im.read_from(lab, "pacs", "/etc/pacslab/orthanc/trusted.pem")
    finally:
        im.ca(lab, "reenrol", "mod-mr")
        restored_run = run_playbook(lab, plan, "up.yml", state, quiet=True)
    restored = im.dicomsim(lab, "mod-mr", "echo")
    evidence.update(revoked_established=revoked["established"], anchors_after_revocation=bundle.count("BEGIN CERTIFICATE"))
    changed_hosts = {t.rsplit("[", 1)[-1].rstrip("]") for p in revoked_run.phases for t in p["changed_tasks"]}
    evidence.update(restored=restored["established"], hosts_changed_by_revocation=sorted(changed_hosts))
    assert not revoked["established"] and not revoked["stored"]
    assert bundle.count("BEGIN CERTIFICATE") == 4  # mod-ct, ovl-gw, ws-rad, vna
    # only the nodes whose bundles held mod-mr's anchor (PACS, RIS) re-converge, and mod-mr itself
    assert "pacs" in changed_hosts and changed_hosts <= {"pacs", "ris", "mod-mr"}, changed_hosts
    assert restored_run.ok and restored["established"]
