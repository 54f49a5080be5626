"""The SIEM (issue 13, host `siem`; roles/siem, roles/log_shipping): C-PRT-01 the log sources'
records reach the siem over mutual TLS and only so, C-DET-06 a threshold detection written as a
Sigma rule fires on the attack, C-RSP-01 its alert opens a case enriched from the lab definition.

Every attack carries this run's marker (the user name it tries), so an event or alert is tied to
this run without doubt. Expectations are written out: the event's fields as sshd's line gives them,
the TLS alert the receiver sends (OpenSSL's name for it), the case's owner, zone and criticality
as hosts.yml says.
"""

from __future__ import annotations

import base64
import json
import secrets
import time
import zoneinfo
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from io import BytesIO
from typing import Any
from xml.etree import ElementTree

import pytest
from cryptography import x509
from pydicom.dataset import Dataset
from pydicom.filereader import read_dataset

from pacslab import cli, response
from pacslab.docker import docker
from pacslab.listeners import role_var
from pacslab.plan import SIEM_USER, SIEMS, Plan
from pacslab.probes import clamd, ldap, oidc, syslog
from pacslab.probes import imaging as im
from pacslab.topology import Host, Lab

from . import test_directory as td
from .test_bastion import CLIENT, bastion, login, vendor
from .test_idp import CLIENT as IDP_CLIENT
from .test_idp import LOGIN_FORM, PE_BADCREDENTIALS, PE_BADOTP, idp, one, outline, refusals_authorised, secret
from .test_idp import sign_in as idp_sign_in
from .test_imaging import devices_round, members, modality_of, order_entry, reader, stations, the, tls_stations
from .test_orders import _message
from .test_rproxy import basic_auth, proxy

RUN = secrets.token_hex(3)
WAIT = 60  # seconds an expected event or alert is waited for at most (not a budget: bench/ measures those)


def siem(lab: Lab) -> Host:
    hosts = [h for h in lab.deployed_hosts() if SIEMS in h.groups]
    if not hosts:
        pytest.skip(f"lab {lab.name!r} deploys no siem")
    return hosts[0]


def siem_json(lab: Lab, *args: str) -> list[dict[str, Any]]:
    """What pacslab-siem prints for ``args`` (alerts, cases, events ...), read as the store's user."""
    proc = docker("exec", "-u", SIEM_USER, lab.container_name(siem(lab).name), "pacslab-siem", *args, "--json", timeout=60)
    rows: list[dict[str, Any]] = json.loads(proc.stdout)
    return rows


def evaluated_after(lab: Lab, stamp: str) -> None:
    """Return once the siem's evaluator has finished a pass of every rule that started after the
    UTC time ``stamp`` (RFC 3339): what an event stored before ``stamp`` raises, that pass raised."""
    response.evaluated_after(lab, siem(lab).name, stamp)


def utc_now() -> str:
    return datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def wait_for(what: str, probe: Any) -> Any:
    deadline = time.monotonic() + WAIT
    while True:
        found = probe()
        if found or time.monotonic() > deadline:
            assert found, f"no {what} within {WAIT} s"
            return found
        time.sleep(1)


def failures_at_siem(lab: Lab, users: list[str], event_type: str) -> list[dict[str, Any]]:
    """The siem's ``event_type`` events of the user names ``users``, once it holds one of each; else []."""
    found = [e for u in users for e in siem_json(lab, "events", "--contains", u) if e["event_type"] == event_type]
    return found if len(found) == len(users) else []


def rfc5424(lab: Lab, host: str, marker: str) -> str:
    stamp = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    return f"<38>1 {stamp} {host} pacslab-probe - - - {marker}"


@pytest.mark.control("C-PRT-01")
def test_a_failed_vendor_sign_in_reaches_the_siem_with_user_address_and_host(running_lab: Lab, plan: Plan, evidence) -> None:
    user = f"siem-{RUN}-one"
    start = time.monotonic()
    login(running_lab, plan, user, password="not-their-password")
    client = running_lab.hosts[CLIENT].address
    found = wait_for(f"event of {user}", lambda: [e for e in siem_json(running_lab, "events", "--contains", user)
                                                  if e["event_type"] == "ssh-login-failure"])
    evidence.update(seconds=round(time.monotonic() - start, 1), event=found[0])
    event = found[0]
    assert {k: event[k] for k in ("host", "sender_host", "source", "event_type", "user", "src_ip", "outcome")} == {
        "host": bastion(running_lab).name, "sender_host": bastion(running_lab).name, "source": "sshd", "event_type": "ssh-login-failure",
        "user": user, "src_ip": str(client), "outcome": "failure"}
    assert f"Failed keyboard-interactive/pam for invalid user {user} from {client} port" in event["message"]


def sources(lab: Lab) -> list[str]:
    """The lab definition's siem_sources."""
    listed: list[str] = next(iter(lab.host_vars.values()), {}).get("siem_sources") or []
    return listed


def not_a_source(lab: Lab) -> str:
    """A host with a lab certificate and Python that is no log source: an Orthanc host outside
    siem_sources, else a workstation of the clinical zone (ws-tech in the reference lab)."""
    candidates = sorted((h for h in lab.deployed_hosts() if h.name not in sources(lab)
                         and (h.image == "orthanc" or (h.image == "dicom" and h.zone == "clinical"))),
                        key=lambda h: (h.image != "orthanc", h.name))
    if not candidates:
        pytest.skip(f"lab {lab.name!r} has no Orthanc host or clinical workstation outside siem_sources")
    return candidates[0].name


def siem_log(lab: Lab) -> list[str]:
    """The siem's own syslog (rsyslogd's words about the sessions it refuses)."""
    return im.exec_in(lab, siem(lab).name, "cat", "/var/log/pacslab/syslog.log").splitlines()


@pytest.mark.control("C-PRT-01")
def test_the_siem_takes_syslog_from_a_log_source_s_certificate_only(running_lab: Lab, evidence) -> None:
    """The bastion (a log source) with its lab certificate: the session stays open and the message
    is stored. Without a certificate, from a reading workstation (a valid lab certificate, but not a
    log source), in cleartext: rsyslog ends the session (it sends no TLS alert) and says why; nothing
    is stored."""
    source, s, other = bastion(running_lab), siem(running_lab).name, not_a_source(running_lab)
    cases = {"own": (source.name, "tls-own-certificate"), "nocert": (source.name, "tls-no-certificate"),
             "other-host": (other, "tls-own-certificate"), "cleartext": (source.name, "cleartext")}
    # what rsyslog says of each refused session (a siem busy with the sources' backlog says it late)
    expected = {"own": None, "nocert": "peer did not provide a certificate", "other-host": "signer not found",
                "cleartext": f"from {source.address} will be closed due to error"}
    marks, results, said = {}, {}, {}
    for case, (host, mode) in cases.items():  # the cleartext one last: rsyslog waits for its handshake a while
        marks[case] = f"pacslab-siem-{RUN}-{case}"
        before = len(siem_log(running_lab))
        results[case] = syslog.send(running_lab, host, s, mode, rfc5424(running_lab, host, marks[case]))

        def words(since: int = before) -> list[str]:
            return [ln.split("rsyslogd: ", 1)[-1] for ln in siem_log(running_lab)[since:] if "rsyslogd: " in ln]

        word = expected[case]
        said[case] = words() if word is None else wait_for(f"rsyslog's word on the {case} session",
                                                           lambda w=word, f=words: f() if any(w in ln for ln in f()) else [])
    evidence.update(results=results, siem_said=said)
    assert results["own"] == {"handshake": "ok", "outcome": "open", "alert": None}
    wait_for("the log source's own message", lambda: siem_json(running_lab, "events", "--contains", marks["own"]))
    assert results["nocert"]["outcome"] == "closed" and results["other-host"]["outcome"] == "closed", results
    assert any(ln.startswith("peer did not provide a certificate, not permitted to talk to it") for ln in said["nocert"]), said
    assert any(ln.startswith("not permitted to talk to peer, certificate invalid: signer not found") for ln in said["other-host"]), said
    assert any(f"DN: O=pacslab {running_lab.name},CN={other};" in ln for ln in said["other-host"]), said
    assert results["cleartext"]["handshake"] is None and results["cleartext"]["outcome"] in {"closed", "reset"}, results
    assert any(f"from {source.address} will be closed due to error" in ln for ln in said["cleartext"]), said
    for case in ("nocert", "other-host", "cleartext"):
        assert siem_json(running_lab, "events", "--contains", marks[case]) == [], case


def shipping_ca(lab: Lab) -> Host | None:
    """The lab CA, when it ships its event log to a siem: siem_sources lists it and a siem is
    deployed; None otherwise."""
    ca = lab.hosts[im.ca_host(lab)]
    if ca.name not in sources(lab) or not any(SIEMS in h.groups for h in lab.deployed_hosts()):
        return None
    return ca


def ca_source(lab: Lab) -> Host:
    """The lab CA, when it ships its event log to a siem (skipped otherwise)."""
    ca = shipping_ca(lab)
    if ca is None:
        pytest.skip(f"lab {lab.name!r} does not list its CA in siem_sources, or deploys no siem")
    return ca


@pytest.mark.control("C-PRT-01")
def test_each_certificate_the_ca_issues_reaches_the_siem_from_the_ca_alone(running_lab: Lab, evidence) -> None:
    """The CA's event log (pacslab/ca.py, shipped as ca-events by roles/log_shipping). A certificate
    issued now (an already expired one for the first TLS modality: a record nothing trusts) is a
    certificate-issued event from the CA, outcome expired, the modality's address its destination,
    its serial in the message. Each issuance the CA's log holds is at the siem, those of the cold
    `up` written before the CA's rsyslogd first ran included (the log is read from its start). The
    same line sent by another log source with its own certificate (the bastion) is stored as
    forged-source: no host but the CA speaks for it."""
    lab = running_lab
    ca, s, device = ca_source(lab), siem(lab).name, tls_stations(lab)[0]
    csr = im.exec_in(lab, device.name, "openssl", "req", "-new", "-key", "/etc/pacslab/tls/node.key", "-subj", f"/CN={device.name}")
    start = time.monotonic()
    issued = im.ca(lab, "issue", device.name, "--sans", f"DNS:{device.name},IP:{device.address}", "--expired", input=csr)
    serial = format(x509.load_pem_x509_certificate(issued["cert"].encode()).serial_number, "x")
    [event] = wait_for("the CA's issuance at the siem", lambda: [e for e in siem_json(lab, "events", "--contains", f'"serial": "{serial}"')
                                                               if e["source"] == "ca-events"])
    seconds = round(time.monotonic() - start, 1)
    journal = [json.loads(line) for line in im.read_from(lab, ca.name, "/var/log/pacslab/ca-events.json").splitlines()]
    logged = {e["serial"] for e in journal if e["event"] == "certificate-issued"}
    at_siem = {json.loads(e["message"])["serial"] for e in siem_json(lab, "events", "--contains", '"event": "certificate-issued"')
               if e["source"] == "ca-events" and e["host"] == ca.name}
    forged_line = json.dumps({"event": "certificate-revoked", "name": device.name, "serials": [serial], "marker": f"siem-{RUN}-ca-forged"})
    stamp = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    other = bastion(lab).name
    sent = syslog.send(lab, other, s, "tls-own-certificate", f"<85>1 {stamp} {ca.name} ca-events - - - {forged_line}")
    [forged] = wait_for("the forged line at the siem", lambda: siem_json(lab, "events", "--contains", f"siem-{RUN}-ca-forged"))
    evidence.update(seconds=seconds, event={k: event[k] for k in ("host", "event_type", "outcome", "dst_ip", "time")},
                    issuances_logged=len(logged), issuances_at_siem=len(at_siem & logged), forged=forged["event_type"])
    assert {k: event[k] for k in ("host", "sender_host", "source", "event_type", "outcome", "action", "dst_ip")} == {
        "host": ca.name, "sender_host": ca.name, "source": "ca-events", "event_type": "certificate-issued", "outcome": "expired",
        "action": None, "dst_ip": str(device.address)}
    assert json.loads(event["message"])["name"] == device.name and json.loads(event["message"])["expired"] is True
    assert serial in logged and len(logged) > 1  # at least the CA's own certificate, issued in the up's first play, and this one
    assert logged - at_siem == set()
    assert sent == {"handshake": "ok", "outcome": "open", "alert": None}
    assert {k: forged[k] for k in ("host", "sender_host", "source", "event_type", "dst_ip")} == {
        "host": other, "sender_host": ca.name, "source": "ca-events", "event_type": "forged-source", "dst_ip": None}


@pytest.mark.control("C-PRT-01")
def test_the_modalities_acquisitions_and_the_workstations_receipts_reach_the_siem_from_their_own_logs(running_lab: Lab,
                                                                                                   evidence) -> None:
    """One round of the clinical workflow (devices_round: an order per station, its acquisition,
    the reading workstation's C-MOVE of each study). The simulators' own logs (roles/log_shipping,
    dicom-node) of the hosts siem_sources lists: each such modality's acquisition is a
    modality-acquisition event from that modality with this run's patient, its AE title, outcome
    stored, and the study the workstation then received for that patient; the workstation's receipt
    of each instance is a dicom-instance-received event from the workstation with the patient, the
    PACS's AE title and address, for every station's patient (the legacy device's too, which is no
    log source and sends no acquisition of its own)."""
    lab, listed = running_lab, set(sources(running_lab))
    ws, pacs = reader(lab), the(lab, "pacs_servers")
    shipping = [h for h in stations(lab) if h.name in listed]
    if not shipping or ws.name not in listed:
        pytest.skip(f"lab {lab.name!r} lists no modality and reading workstation in siem_sources")
    tag = f"S{RUN.upper()}"
    patients = {h.name: f"P{tag}{h.name[:6]}" for h in stations(lab)}
    devices_round(lab, tag)

    def of(kind: str, wanted: int) -> Any:
        def found() -> list[dict[str, Any]]:
            events = [e for p in patients.values() for e in siem_json(lab, "events", "--contains", p)
                      if e["source"] == "dicom-node" and e["event_type"] == kind]
            return events if len(events) >= wanted else []
        return found

    acquired = wait_for("the acquisitions in the siem", of("modality-acquisition", len(shipping)))
    images = sum(int(role_var(lab, h.name, "dicom_node", "dicom_node_images")) for h in stations(lab))
    received = wait_for("the workstation's receipts in the siem", of("dicom-instance-received", images))
    studies = {p: {e["study_uid"] for e in received if e["patient_id"] == p} for p in patients.values()}
    evidence.update(acquired=[(e["host"], e["patient_id"], e["outcome"]) for e in acquired], received=len(received), studies=studies)
    assert sorted((e["host"], e["patient_id"], e["calling_ae"], e["outcome"]) for e in acquired) == sorted(
        (h.name, patients[h.name], str(h.ae_title), "stored") for h in shipping)
    assert all(e["study_uid"] in studies[e["patient_id"]] for e in acquired), (acquired, studies)
    assert {(e["host"], e["patient_id"], e["calling_ae"], e["src_ip"], e["src_host"]) for e in received} == {
        (ws.name, p, str(pacs.ae_title), str(pacs.address), pacs.name) for p in patients.values()}


@pytest.mark.control("C-PRT-01")
def test_no_syslog_crosses_a_zone_in_cleartext(running_lab: Lab, plan: Plan, tmp_path, evidence) -> None:
    """A capture on the fw while a modality stores an image whose patient name is this run's (the
    PACS's DICOM audit trail names the patient) and the bastion logs a line of this run: the siem
    holds both, from the PACS and the bastion, and the capture holds neither, though it crossed the
    fw. The twin: the same capture holds a line the bastion sends the siem's syslog port in
    cleartext (logger over TCP; the siem refuses it), so an absent name means encrypted, not unseen."""
    lab = running_lab
    pacs, source, collector = pacs_of(lab), bastion(lab), siem(lab)
    assert len({pacs.zone, source.zone, collector.zone}) == 3, "the check needs the PACS, the bastion and the siem in three zones"
    station = tls_stations(lab)[0]
    fw_image = next(c.image for c in plan.containers if c.host == plan.firewall_host)
    canary = f"PACSLAB^SYSLOG{RUN.upper()}"
    marks = {"shipped": f"pacslab-siem-{RUN}-shipped", "cleartext": f"pacslab-siem-{RUN}-cleartext"}
    name = f"syslog-{RUN}"
    im.capture_start(lab, name, lab.router.name, fw_image)
    try:
        stored = im.dicomsim(lab, station.name, "store", "--images", "1", "--patient-name", canary)
        im.exec_in(lab, source.name, "logger", "-t", "pacslab-probe", marks["shipped"])
        # logger writes its line as soon as it connects (the siem's TLS listener then closes the session)
        cleartext = docker("exec", lab.container_name(source.name), "logger", "-T", "-n", str(collector.address), "-P",
                           str(collector.service("syslog-tls").port), "-t", "pacslab-probe", marks["cleartext"], check=False).returncode
        audit = wait_for("the store's audit message at the siem", lambda: [
            e for e in siem_json(lab, "events", "--contains", canary) if e["host"] == pacs.name and e["event_type"].startswith("dicom-audit")])
        line = wait_for("the bastion's line at the siem", lambda: [
            e for e in siem_json(lab, "events", "--contains", marks["shipped"]) if e["host"] == source.name])
    finally:
        captured = im.capture_stop(lab, name, tmp_path / "syslog.pcap")
    capture = captured.data
    evidence.update(stored=len(stored["stored"]), audit=sorted({e["event_type"] for e in audit}), line=line[0]["id"],
                    cleartext=cleartext, capture_bytes=len(capture), dropped=captured.dropped)
    assert len(stored["stored"]) == 1, stored
    assert captured.dropped == 0, f"the kernel dropped {captured.dropped} packets of the capture: what it lacks proves nothing"
    assert canary.encode() not in capture, f"{canary} crossed the fw in cleartext"
    assert marks["shipped"].encode() not in capture, "the bastion's line crossed the fw in cleartext"
    assert marks["cleartext"].encode() in capture, "the capture did not see the cleartext line: it proves nothing"
    assert siem_json(lab, "events", "--contains", marks["cleartext"]) == []


# Rounds of the clinical workflow the silence check runs (about two minutes on the CI machine).
WORK_ROUNDS = 12


def _mark(lab: Lab, host: str, what: str) -> dict[str, Any]:
    """A line ``host`` logs (this run's, naming ``what``), once the siem has stored it: its event."""
    text = f"pacslab-siem-{RUN}-{what}"
    im.exec_in(lab, host, "logger", "-t", "pacslab-probe", text)
    return wait_for(f"the line {text} at the siem", lambda: [e for e in siem_json(lab, "events", "--contains", text) if e["host"] == host])[0]


def _stamp(event: dict[str, Any]) -> datetime:
    return datetime.fromisoformat(event["time"].replace("Z", "+00:00"))


def _own_device(lab: Lab, alert: dict[str, Any]) -> bool:
    """An unknown-device alert about an address no lab host has: the session's own stand-ins and
    probes (conftest's segmentation and own_devices, up until the session ends), which the
    scanner's sweeps go on reporting every 30 s whatever else runs."""
    return alert["rule"] == "unknown-device" and alert["entities"].get("src_ip") not in {str(h.address) for h in lab.hosts.values()}


@pytest.mark.control("C-DET-06")
def test_clinical_work_raises_no_alert_and_an_unknown_ae_after_it_does(running_lab: Lab, evidence) -> None:
    """WORK_ROUNDS rounds of the clinical workflow (devices_round: HL7 orders, acquisitions from the
    worklist, stores to the PACS, forwarding to the VNA, the reading workstation's C-FIND and
    C-MOVE) between two lines the bastion logs, while the lab's own work goes on (the scanner's
    sweeps, the fw, the sensor). Once the siem has weighed everything, also what was stored after
    the second line: the events stamped between the lines hold every round's patients, and no
    alert holds any of them. The twin, between the second line and a third: a modality's C-ECHO
    under an AE title nobody registered raises unknown-ae and dicom-access-denied (and, in a whole
    run, compromised-modality too: test_sensor's bursts left drops from both modalities minutes
    before, which that rule joins with the association). Neither counts the sweeps' unknown-device
    alerts about the session's own stand-ins (_own_device).
    (The administrator's REST reads of each study, clinical_round's, are not clinical work: eight
    rounds of them raised bulk-access about the administrator, as that rule should.)"""
    lab = running_lab
    source = bastion(lab).name
    start = _mark(lab, source, "work-start")
    tags = [f"N{RUN.upper()}{i}" for i in range(WORK_ROUNDS)]
    for tag in tags:
        devices_round(lab, tag)
    end = _mark(lab, source, "work-end")
    rogue = f"NOBODY{RUN}".upper()
    echo = im.dicomsim(lab, tls_stations(lab)[0].name, "echo", "--calling", rogue)
    wait_for("the rejected association at the siem", lambda: [e for e in siem_json(lab, "events", "--contains", f"AET {rogue} on IP")
                                                            if e["event_type"] == "dicom-association-rejected"])
    last = _mark(lab, source, "twin-end")
    evaluated_after(lab, utc_now())
    events = [e for e in siem_json(lab, "events", "--since-id", str(start["id"])) if e["id"] not in (end["id"], last["id"])]
    work = {e["id"]: e for e in events if _stamp(start) <= _stamp(e) <= _stamp(end)}
    twin = {e["id"] for e in events if _stamp(end) < _stamp(e) <= _stamp(last)}
    alerts = siem_json(lab, "alerts")
    quiet = [a for a in alerts if set(work) & set(a["events"]) and not _own_device(lab, a)]
    loud = [a for a in alerts if twin & set(a["events"]) and not _own_device(lab, a)]
    patients = [f"PACSLAB^WORK{tag}{i}" for tag in tags for i in range(len(stations(lab)))]
    unseen = [p for p in patients if not any(p in e["message"] for e in work.values())]
    evidence.update(rounds=len(tags), events=len(work), alerts=quiet, echo=echo.get("outcome"),
                    twin=sorted((a["rule"], a["severity"]) for a in loud),
                    own_devices=sorted({a["entities"].get("src_ip") for a in alerts if _own_device(lab, a)}))
    assert unseen == [], f"the siem holds no event of these patients between the lines: {unseen}"
    assert quiet == []
    assert {"dicom-access-denied", "unknown-ae"} <= {a["rule"] for a in loud}, loud


@pytest.fixture(scope="module")
def guessing(running_lab: Lab, plan: Plan) -> dict[str, Any]:
    """Five wrong passwords from the vendor's computer, one user name each (this run's): their five
    events in the siem, the ssh-brute-force alert that holds them, and its case (and the user names).
    The guessing is the suite's own, inside a window of authorised activity for that computer: the
    vendor signs in from it all along, and a sign-in within ten minutes raises brute-force-success,
    whose decision the window withholds (test_response proves the quarantine of a break-in)."""
    call = secrets.token_hex(2)  # modules that import this fixture run it again: each run its own names
    users = [f"siem-{RUN}-{call}-guess{i}" for i in range(5)]
    with refusals_authorised(running_lab, CLIENT, "the suite's password guessing at the bastion"):
        for user in users:
            login(running_lab, plan, user, password="guess")
    ids = {e["id"] for e in wait_for("the five failures", lambda: failures_at_siem(running_lab, users, "ssh-login-failure"))}
    alert = wait_for("ssh-brute-force holding them", lambda: [a for a in siem_json(running_lab, "alerts")
                                                           if a["rule"] == "ssh-brute-force" and ids <= set(a["events"])])[0]
    cases = [c for c in siem_json(running_lab, "cases") if c["id"] == alert["case"]]
    return {"users": users, "events": ids, "alert": alert, "case": cases[0] if cases else None}


@pytest.mark.control("C-DET-06")
def test_password_guessing_at_the_bastion_raises_ssh_brute_force_with_its_events(running_lab: Lab, guessing: dict[str, Any], evidence) -> None:
    alert = guessing["alert"]
    evidence.update(alert=alert)
    assert alert["entities"] == {"src_ip": str(running_lab.hosts[CLIENT].address)}
    assert (alert["rule"], alert["severity"]) == ("ssh-brute-force", "medium")
    assert guessing["events"] <= set(alert["events"])


@pytest.mark.control("C-RSP-01")
def test_the_alert_opens_a_case_enriched_from_the_lab_definition(running_lab: Lab, guessing: dict[str, Any], evidence) -> None:
    """The case is about the vendor's computer, with what hosts.yml says of it (vendor, internet, low)."""
    case = guessing["case"]
    evidence.update(case=case)
    assert case is not None
    assert {k: case[k] for k in ("host", "status", "owner", "zone", "criticality", "address")} == {
        "host": CLIENT, "status": "open", "owner": "vendor", "zone": "internet", "criticality": "low",
        "address": str(running_lab.hosts[CLIENT].address)}
    assert guessing["alert"]["id"] in case["alerts"]


# ---------------------------------------------------------------------------------------------
# Sign-ins at the IdP (its portal's log, shipped by roles/log_shipping)


# Where the guessing at the IdP comes from: a computer of the clinical zone (flow F10b) from which no
# other check signs in but test_response's break-in, so that the alerts below hold this guessing.
# test_idp's refused codes and its lockout come from ws-rad, followed by its sign-ins: they raise the
# same rules about ws-rad, whose alerts would hold both runs' events.
GUESSER = "ws-tech"


@pytest.fixture(scope="module")
def idp_guessing(running_lab: Lab, plan: Plan) -> dict[str, Any]:
    """From the technologists' workstation (GUESSER, in the clinical zone): five sign-ins at the
    IdP under user names of this run that nobody has, then the radiologist's own completed sign-in
    (password and code). Their events in the siem, and the alerts idp-brute-force and
    idp-brute-force-success that hold them. The guessing is inside a window of authorised activity
    for the workstation, so that the sign-in after it quarantines nobody (test_response proves the
    quarantine of a break-in)."""
    if GUESSER not in running_lab.hosts or not running_lab.hosts[GUESSER].deployed:
        pytest.skip(f"lab {running_lab.name!r} deploys no {GUESSER}")
    call = secrets.token_hex(2)  # each run of the fixture its own names
    users = [f"idp-{RUN}-{call}-guess{i}" for i in range(5)]
    with refusals_authorised(running_lab, GUESSER, "the suite's password guessing at the IdP"):
        for user in users:
            idp_sign_in(running_lab, plan, user, password="guess", client=GUESSER)
    who = one(running_lab, "enabled", "radiologist")
    signed_in = idp_sign_in(running_lab, plan, who.name, code="now", client=GUESSER)
    failures = wait_for("the five failures", lambda: failures_at_siem(running_lab, users, "idp-login-failure"))
    client = str(running_lab.hosts[GUESSER].address)
    last = max(e["id"] for e in failures)
    success = wait_for(f"{who.name}'s sign-in after them", lambda: [
        e for e in siem_json(running_lab, "events", "--contains", who.name)
        if e["event_type"] == "idp-login-success" and e["src_ip"] == client and e["id"] > last])[0]
    ids = {e["id"] for e in failures}
    guessed = wait_for("idp-brute-force holding the five", lambda: [
        a for a in siem_json(running_lab, "alerts") if a["rule"] == "idp-brute-force" and ids <= set(a["events"])])[0]
    broke_in = wait_for("idp-brute-force-success holding the sign-in", lambda: [
        a for a in siem_json(running_lab, "alerts") if a["rule"] == "idp-brute-force-success" and success["id"] in a["events"]])[0]
    return {"users": users, "who": who.name, "client": client, "signed_in": signed_in, "failures": failures, "success": success,
            "guessed": guessed, "broke_in": broke_in}


@pytest.mark.control("C-PRT-01")
def test_sign_ins_at_the_idp_reach_the_siem_with_the_person_the_address_and_the_verdict(running_lab: Lab,
                                                                                          idp_guessing: dict[str, Any], evidence) -> None:
    """Each refused user name (LemonLDAP: not in the directory) and the completed sign-in (the
    TOTP checker's accepted code) is an event of the IdP, with the name typed, the client's
    address and why; the radiologist's sign-in went through (the relying party got its code)."""
    g = idp_guessing
    host = idp(running_lab)
    evidence.update(failures=g["failures"], success=g["success"])
    assert g["signed_in"].get("redirect", {}).get("state") == "pacslab-state"
    assert sorted((e["host"], e["source"], e["event_type"], e["user"], e["src_ip"], e["dst_ip"], e["outcome"]) for e in g["failures"]) == [
        (host.name, "idp-portal", "idp-login-failure", u, g["client"], str(host.address), "unknown-user") for u in g["users"]]
    assert all(f"{e['user']} was not found in LDAP directory ({g['client']})" in e["message"] for e in g["failures"])
    success = g["success"]
    assert (success["host"], success["event_type"], success["user"], success["src_ip"], success["outcome"], success["src_zone"]) == (
        host.name, "idp-login-success", g["who"], g["client"], "success", "clinical")


@pytest.mark.control("C-DET-06")
def test_password_guessing_at_the_idp_raises_idp_brute_force_and_the_sign_in_after_it_idp_brute_force_success(
        running_lab: Lab, idp_guessing: dict[str, Any], evidence) -> None:
    """Five failures from one address raise idp-brute-force (medium) holding them; the completed
    sign-in from that address afterwards raises idp-brute-force-success (high) holding it. The
    guessing was authorised (a window for the workstation): no decision about these events
    quarantines it (a new alert's is withheld, naming the window; an alert that test_response's
    break-in raised and whose quarantine was released goes on without a decision), and the fw
    holds no quarantine of the workstation. The rules' own fixtures (tests/unit/sigma) hold their
    silent twins: four failures and a success, a success from another address, a success before
    the failures."""
    g = idp_guessing
    ours = min(e["id"] for e in g["failures"])
    decided = [d for d in siem_json(running_lab, "containment") if d["alert"] == g["broke_in"]["id"] and d["upto"] >= ours]
    time.sleep(response.FOLLOW)  # the fw asks every 2 s: a decision to quarantine would have been applied by now
    record = response.quarantined(running_lab).get(g["client"])
    evidence.update(guessed=g["guessed"], broke_in=g["broke_in"], decided=decided, record=record)
    assert [(d["decision"], d["reason"].split(" (window ")[0]) for d in decided] in ([], [("withheld", "authorised activity")]), decided
    assert record is None
    assert (g["guessed"]["rule"], g["guessed"]["severity"], g["guessed"]["entities"]) == ("idp-brute-force", "medium", {"src_ip": g["client"]})
    assert {e["id"] for e in g["failures"]} <= set(g["guessed"]["events"])
    assert (g["broke_in"]["rule"], g["broke_in"]["severity"], g["broke_in"]["entities"]) == (
        "idp-brute-force-success", "high", {"src_ip": g["client"]})
    assert g["success"]["id"] in g["broke_in"]["events"]


def slapd_binds(lab: Lab, dn: str, since: int = 0) -> list[dict[str, Any]]:
    """The siem's ldap-bind events of the binds as ``dn`` after event ``since`` (pacslab.probes.ldap.bind_events)."""
    return ldap.bind_events(lambda *args: siem_json(lab, *args), dn, since)


@pytest.mark.control("C-PRT-01")
def test_the_directorys_binds_reach_the_siem_with_the_name_the_address_and_the_verdict(running_lab: Lab, plan: Plan, evidence) -> None:
    """The directory ships what slapd logs through syslog (level stats) as slapd. A bind as a name no person has (this
    run's marker) with a wrong password arrives as ldap-bind invalid-credentials with that name and
    the address it came from (the directory's own LDAPS client, over TLS); the twin, an enabled
    person's bind with their own password right after it, as ldap-bind success with their name.
    No password is in either event. The negative twin, before both: a DN holding line feeds and
    what slapd would log of another connection's successful bind as this run's second name arrives
    as one message with its line feeds escaped (#012), and no event is a bind of that name."""
    lab = running_lab
    host = td.directory(lab)
    if host.name not in sources(lab):
        pytest.skip(f"lab {lab.name!r} does not list its directory in siem_sources")
    suffix = ldap.suffix(lab)
    who = one(lab, "enabled")
    marker, wrong, right = f"siem-{RUN}-bind", secrets.token_hex(8), td.password(plan, "person", who.name)
    forged, connection = f"siem-{RUN}-injected-bind", f"conn=9{secrets.randbelow(10**6)}"
    injected = (f"uid={marker}\n{connection} op=0 BIND dn=\"{ldap.person(suffix, forged)}\" method=128\n"
                f"{connection} op=0 RESULT tag=97 err=0 text=,ou=people,{suffix}")
    results = td.ldap_steps(lab, [{"dn": injected, "password": wrong}, {"dn": ldap.person(suffix, marker), "password": wrong},
                                  {"dn": ldap.person(suffix, who.name), "password": right}])
    refused = wait_for(f"the directory's refusal of {marker}", lambda: slapd_binds(lab, ldap.person(suffix, marker)))[0]
    bound = wait_for(f"the directory's bind of {who.name} after it", lambda: [
        e for e in slapd_binds(lab, ldap.person(suffix, who.name), refused["id"]) if e["src_ip"] == str(host.address)])[0]
    as_forged = [e for e in siem_json(lab, "events", "--contains", forged) if e["source"] == "slapd"]
    evidence.update(results=results, refused=refused, bound=bound, forged=as_forged)
    assert results == [{"bind": {"error": "INVALID_DN_SYNTAX", "code": 34, "info": "invalid DN"}}, {"bind": td.INVALID},
                       {"bind": "success", "whoami": f"dn:{ldap.person(suffix, who.name)}"}]
    assert [(e["event_type"], e["message"].count("#012"), e["message"].startswith(connection)) for e in as_forged] == [("syslog", 2, False)]
    assert {k: refused[k] for k in ("host", "source", "event_type", "outcome", "user", "src_ip", "dst_ip", "src_zone")} == {
        "host": host.name, "source": "slapd", "event_type": "ldap-bind", "outcome": "invalid-credentials", "user": marker,
        "src_ip": str(host.address), "dst_ip": str(host.address), "src_zone": str(host.zone)}
    assert (bound["host"], bound["outcome"], bound["user"]) == (host.name, "success", who.name)
    assert refused["src_port"] != bound["src_port"]  # one connection each
    assert not any(word in e["message"] for e in (refused, bound) for word in (wrong, right))


def refused_binds(lab: Lab, suffix: str, names: list[str]) -> list[dict[str, Any]]:
    """The siem's ldap-bind invalid-credentials events of the binds as ``names``, once it holds one of each; else []."""
    found = [e for name in names for e in slapd_binds(lab, ldap.person(suffix, name)) if e["outcome"] == "invalid-credentials"]
    return found if {e["user"] for e in found} >= set(names) else []


@pytest.mark.control("C-DET-06")
def test_password_guessing_at_the_directory_from_the_pacs_raises_ldap_brute_force_and_its_success(running_lab: Lab, plan: Plan,
                                                                                                   evidence) -> None:
    """A program on the PACS (the flow matrix lets the datacenter reach the directory, F10a) binds
    under five names of this run with wrong passwords, then as a person with their own password:
    slapd refuses the five (invalid credentials, 49) and accepts the last. The five refusals, from
    the PACS's address and not relayed, raise ldap-brute-force (medium) about that address, holding
    them; the accepted bind after them raises ldap-brute-force-success (high), holding it. Neither
    rule names a containment, so no decision is taken about either. The negative twin, first: the
    same six binds from the IdP's address are marked relayed (the IdP binds as each person whose
    password its portal checks; the portal's own log, with the browser's address, is
    idp-brute-force's), and no alert holds them (the PACS's alerts, raised after them, show the siem
    has evaluated them). Below the threshold, four refusals and a success, is the rules' silent
    fixture (tests/unit/sigma/ldap-brute-force*.yml)."""
    lab = running_lab
    host = td.directory(lab)
    if host.name not in sources(lab):
        pytest.skip(f"lab {lab.name!r} does not list its directory in siem_sources")
    pacs, relay, who = the(lab, "pacs_servers"), idp(lab), td.one(lab, "enabled")
    suffix, dn = ldap.suffix(lab), ldap.person(ldap.suffix(lab), who.name)
    own = {"dn": dn, "password": td.password(plan, "person", who.name)}
    twin = [f"siem-{RUN}-relayed-guess-{i}" for i in range(5)]
    guessed = [f"siem-{RUN}-pacs-guess-{i}" for i in range(5)]
    wrong = secrets.token_hex(8)
    since = max((e["id"] for e in slapd_binds(lab, dn)), default=0)  # the person's earlier binds (a sign-in's, a check's)
    from_idp = ldap.steps_from(lab, plan, host, relay.name, [{"dn": ldap.person(suffix, name), "password": wrong} for name in twin] + [own])
    from_pacs = ldap.steps_from(lab, plan, host, pacs.name, [{"dn": ldap.person(suffix, name), "password": wrong} for name in guessed] + [own])
    relayed = wait_for(f"the directory's refusals of {twin}", lambda: refused_binds(lab, suffix, twin))
    refusals = wait_for(f"the directory's refusals of {guessed}", lambda: refused_binds(lab, suffix, guessed))
    sources_of = (str(pacs.address), str(relay.address))
    accepted = wait_for(f"the directory's two binds as {who.name}", lambda: (
        b if len(b := [e for e in slapd_binds(lab, dn, since) if e["outcome"] == "success" and e["src_ip"] in sources_of]) >= 2 else []))
    ours = {e["id"] for e in refusals}
    success = [e for e in accepted if e["src_ip"] == str(pacs.address)]
    alert = wait_for("ldap-brute-force alert holding the PACS's five refusals", lambda: [
        a for a in siem_json(lab, "alerts") if a["rule"] == "ldap-brute-force" and ours <= set(a["events"])])[0]
    broke_in = wait_for("ldap-brute-force-success alert holding the PACS's accepted bind", lambda: [
        a for a in siem_json(lab, "alerts") if a["rule"] == "ldap-brute-force-success" and success[0]["id"] in a["events"]])[0]
    alerts = siem_json(lab, "alerts")
    decided = [d for d in siem_json(lab, "containment") if d["alert"] in (alert["id"], broke_in["id"])]
    evidence.update(from_idp=from_idp, from_pacs=from_pacs, relayed=relayed, refusals=refusals, accepted=accepted, alert=alert,
                    broke_in=broke_in, decided=decided)
    assert from_idp == from_pacs == [{"bind": ldap.INVALID}] * 5 + [{"bind": "success", "whoami": f"dn:{dn}"}]
    assert sorted((e["user"], e["src_ip"], e["src_host"], e["src_zone"], e["action"]) for e in relayed + refusals) == sorted(
        [(name, str(relay.address), relay.name, str(relay.zone), "relayed") for name in twin]
        + [(name, str(pacs.address), pacs.name, str(pacs.zone), None) for name in guessed])
    assert sorted((e["user"], e["src_ip"], e["action"]) for e in accepted) == sorted(
        [(who.name, str(relay.address), "relayed"), (who.name, str(pacs.address), None)])
    assert (alert["severity"], alert["entities"]) == ("medium", {"src_ip": str(pacs.address)})
    assert (broke_in["severity"], broke_in["entities"]) == ("high", {"src_ip": str(pacs.address)})
    assert decided == []
    twin_events = {e["id"] for e in relayed} | {e["id"] for e in accepted if e["action"] == "relayed"}
    assert not [a["id"] for a in alerts if twin_events & set(a["events"])]


@pytest.mark.control("C-PRT-01")
def test_a_portal_line_from_another_host_is_not_the_idps_word(running_lab: Lab, evidence) -> None:
    """Negative twin: the bastion (a log source) sending what the IdP's TOTP checker writes, an
    accepted code under this run's name, is stored as forged-source: no sign-in, no rule reads it."""
    user = f"idp-{RUN}-forged"
    line = json.dumps({"event": "totp", "user": user, "src_ip": str(running_lab.hosts[GUESSER].address), "verdict": "accepted"})
    im.exec_in(running_lab, bastion(running_lab).name, "logger", "-t", "idp-portal", "-p", "authpriv.notice", line)
    found = wait_for(f"the forged line of {user}", lambda: siem_json(running_lab, "events", "--contains", user))
    evidence.update(events=found)
    assert [(e["host"], e["source"], e["event_type"], e["user"]) for e in found] == [(bastion(running_lab).name, "idp-portal", "forged-source", None)]


@pytest.mark.control("C-RSP-01")
def test_the_siems_assets_give_each_address_its_hosts_groups_and_nothing_of_a_run(running_lab: Lab, evidence) -> None:
    """assets.json (roles/siem) gives each lab address the groups its host has in the lab
    definition: the siem tells a program's true sender by them (the RIS's HL7 record, the DICOM
    nodes' logs) and marks the IdP's binds relayed. None of the groups pacslab makes for a run is
    there: pacslab_configuring holds only the nodes one up configures, so with it every up that
    converges the siem beside fewer nodes rewrote the file and restarted the siem's ingest."""
    lab = running_lab
    assets = json.loads(im.exec_in(lab, siem(lab).name, "cat", "/etc/pacslab/siem/assets.json"))
    expected = {str(h.address): sorted(h.groups) for h in lab.hosts.values() if h.address is not None}
    found = {address: asset.get("groups") for address, asset in assets["addresses"].items() if address in expected}
    evidence.update(found=found)
    assert found == expected


@pytest.mark.control("C-DET-06")
def test_sshd_s_verdicts_written_by_a_vendor_s_shell_are_no_sign_ins_and_raise_nothing(running_lab: Lab, guessing: dict[str, Any],
                                                                                      evidence) -> None:
    """Negative twin of the brute-force checks: a process of the vendor's own user on the bastion
    writes sshd's verdicts to the local syslog socket (`logger -t sshd`, what any shell there can
    do): five failed passwords, then an accepted one, from the CT's address under this run's name.
    The bastion's rsyslog sees from the kernel's credentials that the sender was not root (sshd's
    monitor is) and ships them as forged-sshd: the siem stores six forged-source events, no failure
    and no sign-in, and no alert holds them (brute-force-success would name the CT). The run's real
    guessing (fixture guessing) is sshd's own: five ssh-login-failure events."""
    lab = running_lab
    b, person = bastion(lab), vendor(lab, "enabled").name
    ct = next(h for h in lab.deployed_hosts() if "modalities" in h.groups and h.zone == "modality")
    user = f"siem-{RUN}-forged"
    lines = [f"Failed password for {user} from {ct.address} port {40001 + i} ssh2" for i in range(5)]
    lines.append(f"Accepted password for {user} from {ct.address} port 40009 ssh2")
    for line in lines:
        im.exec_in(lab, b.name, "runuser", "-u", person, "--", "logger", "-t", "sshd", "-p", "auth.info", line)
    stored = utc_now()
    found = wait_for(f"the six forged lines of {user}", lambda: found if len(found := siem_json(lab, "events", "--contains", user)) >= 6 else [])
    evaluated_after(lab, stored)
    ids = {e["id"] for e in found}
    held = [a["id"] for a in siem_json(lab, "alerts") if ids & set(a["events"])]
    evidence.update(events=[(e["id"], e["source"], e["event_type"], e["user"], e["message"]) for e in found], alerts=held)
    assert [(e["host"], e["source"], e["event_type"], e["user"], e["src_ip"]) for e in found] == \
        [(b.name, "forged-sshd", "forged-source", None, None)] * 6
    assert [e["message"] for e in found] == lines
    assert held == []
    real = siem_json(lab, "events", "--contains", guessing["users"][0])
    assert [(e["source"], e["event_type"]) for e in real if e["id"] in guessing["events"]] == [("sshd", "ssh-login-failure")]


# ---------------------------------------------------------------------------------------------
# The PACS's own security events (its event log, shipped by roles/log_shipping)


def pacs_of(lab: Lab) -> Host:
    found = [h for h in lab.deployed_hosts() if "pacs_servers" in h.groups]
    if not found:
        pytest.skip(f"lab {lab.name!r} deploys no PACS")
    return found[0]


@pytest.fixture(scope="module")
def altered(running_lab: Lab) -> dict[str, Any]:
    """W4 in the defended lab (scenarios/W4): the CT stores an image, one byte of it is flipped on
    the PACS's disk, and the integrity job runs. The PACS's integrity-failure event in the siem (the
    instance W4 altered, named in the message), the alert holding it, and its case; then W4's reset."""
    from pacslab import scenario as sc

    scenario = sc.find(running_lab, "W4")
    sc.reset_scenario(running_lab, scenario)
    try:
        run = sc.run_scenario(running_lab, scenario, "defended")
        instance = run["steps"][1]["result"]["instance"]
        pacs = pacs_of(running_lab).name
        event = wait_for(f"integrity-failure of {instance}", lambda: [
            e for e in siem_json(running_lab, "events", "--contains", instance) if e["event_type"] == "integrity-failure"])[0]
        alert = wait_for("integrity-failure alert", lambda: [a for a in siem_json(running_lab, "alerts")
                                                            if a["rule"] == "integrity-failure" and event["id"] in a["events"]])[0]
        case = [c for c in siem_json(running_lab, "cases") if c["id"] == alert["case"]]
        return {"instance": instance, "pacs": pacs, "event": event, "alert": alert, "case": case[0] if case else None,
                "steps": {st["id"]: st["as_expected"] for st in run["steps"]}}
    finally:
        sc.reset_scenario(running_lab, scenario)


@pytest.mark.control("C-DET-06")
def test_an_image_altered_on_the_pacs_raises_integrity_failure(running_lab: Lab, altered: dict[str, Any], evidence) -> None:
    """The PACS's event reaches the siem from the PACS's address with its instance, and the Sigma
    rule integrity-failure (roles/siem/files/rules/pacs-events.yml) raises a high alert about the
    PACS, whose case reads as hosts.yml says of it."""
    event, alert, case = altered["event"], altered["alert"], altered["case"]
    evidence.update(event=event, alert=alert, case=case)
    assert altered["steps"] == {"acquire": True, "tamper": True, "integrity-check": True}
    assert {k: event[k] for k in ("host", "sender_host", "source", "event_type")} == {
        "host": altered["pacs"], "sender_host": altered["pacs"], "source": "orthanc-events", "event_type": "integrity-failure"}
    assert json.loads(event["message"])["instance"] == altered["instance"]
    assert (alert["rule"], alert["severity"], alert["entities"], alert["events"]) == ("integrity-failure", "high", {"host": "pacs"}, [event["id"]])
    assert case is not None and {k: case[k] for k in ("host", "status", "owner", "zone", "criticality")} == {
        "host": "pacs", "status": "open", "owner": "radiology-it", "zone": "datacenter", "criticality": "critical"}


@pytest.mark.control("C-DET-06")
def test_a_clean_integrity_pass_reaches_the_siem_and_raises_nothing(running_lab: Lab, altered: dict[str, Any], evidence) -> None:
    """Twin: after W4's reset, the integrity job's pass over the same PACS (nothing altered) is
    stored in the siem as integrity-verified with no failure, and no alert holds it or anything after it."""
    pacs = altered["pacs"]
    result = im.orthanc(running_lab, pacs, "/pacslab/verify", "POST", "")
    passed = wait_for("the clean pass", lambda: [e for e in siem_json(running_lab, "events", "--since-id", str(altered["event"]["id"]))
                                                  if e["event_type"] == "integrity-verified" and e["host"] == pacs
                                                  and json.loads(e["message"])["checked"] == result["checked"]
                                                  and json.loads(e["message"])["failures"] == 0])[-1]
    evaluated_after(running_lab, utc_now())
    later = [a for a in siem_json(running_lab, "alerts") if any(i >= passed["id"] for i in a["events"])
             and a["rule"] in ("integrity-failure", "dicom-security-alert")]
    evidence.update(verify=result, event=passed, alerts=later)
    assert result["failures"] == [] and later == []


@pytest.mark.control("C-DET-06")
def test_an_object_the_pacs_refuses_raises_a_dicom_security_alert_naming_the_sender(running_lab: Lab, evidence) -> None:
    """A C-STORE whose SOP Instance UID is a path (this run's marker in it) is refused by the PACS
    with 0xC000; its invalid-uid-refused event reaches the siem and dicom-security-alert names the
    PACS and the calling AE title of the modality that sent it."""
    lab = running_lab
    pacs = pacs_of(lab)
    station = tls_stations(lab)[0]  # its own certificate: the PACS registers its own address
    uid = f"../../../../tmp/pacslab-{RUN}"
    result = im.dicomsim(lab, station.name, "store", "--images", "1", "--sop-instance-uid", uid)
    event = wait_for("the refusal", lambda: [e for e in siem_json(lab, "events", "--contains", f"pacslab-{RUN}")
                                             if e["event_type"] == "invalid-uid-refused"])[0]
    alert = wait_for("dicom-security-alert", lambda: [a for a in siem_json(lab, "alerts")
                                                      if a["rule"] == "dicom-security-alert" and event["id"] in a["events"]])[0]
    evidence.update(store=result["failed"], event=event, alert=alert)
    assert [f["status"] for f in result["failed"]] == [0xC000]
    assert (event["host"], event["calling_ae"], event["outcome"]) == (pacs.name, str(station.ae_title), "0xC000")
    assert (alert["severity"], alert["entities"]) == ("medium", {"host": pacs.name, "calling_ae": str(station.ae_title)})


# The EICAR anti-malware test file (eicar.org), 68 bytes, in hex: harmless. The lab's own signature
# for it (roles/orthanc orthanc_malware_signatures) is Pacslab.Test.EICAR.
EICAR_HEX = ("58354f2150254041505b345c505a58353428505e2937434329377d2445494341522d5354414e444152442d"
             "414e544956495255532d544553542d46494c452124482b482a")


@pytest.mark.control("C-DET-02")
def test_an_object_carrying_malware_is_refused_by_the_pacs_and_raises_malware_detected(running_lab: Lab, evidence) -> None:
    """A legitimate modality (its own certificate and AE title) stores two series: the one whose
    instance carries the EICAR test file in a private element is refused with 0x0124 ("Refused:
    Not Authorized", PS3.7 C.5), the PACS holds nothing under its accession, its malware-refused
    event names the lab's signature, and malware-detected (high) names the PACS and the modality's
    AE title. The twin, the same series without the payload, is stored and raises nothing."""
    lab = running_lab
    pacs = pacs_of(lab)
    station = tls_stations(lab)[0]
    carrying, clean = f"MW{RUN}".upper(), f"MC{RUN}".upper()
    refused = im.dicomsim(lab, station.name, "store", "--images", "1", "--accession", carrying, "--payload-hex", EICAR_HEX)
    stored = im.dicomsim(lab, station.name, "store", "--images", "1", "--accession", clean)
    evidence.update(refused=refused["failed"], stored=stored.get("stored"))
    assert [f["status"] for f in refused["failed"]] == [0x0124] and refused["stored"] == []  # before any wait: a scan-less PACS fails here
    event = wait_for("the refusal", lambda: [e for e in siem_json(lab, "events", "--contains", carrying)
                                             if e["event_type"] == "malware-refused"])[0]
    alert = wait_for("malware-detected", lambda: [a for a in siem_json(lab, "alerts")
                                                  if a["rule"] == "malware-detected" and event["id"] in a["events"]])[0]
    clean_events = {e["id"] for e in siem_json(lab, "events", "--contains", clean)}
    evaluated_after(lab, utc_now())
    clean_alerts = [a for a in siem_json(lab, "alerts") if clean_events & set(a["events"])]
    evidence.update(event=event, alert=alert, clean_alerts=clean_alerts)
    assert im.find_study(lab, pacs.name, carrying) == []
    assert (event["host"], event["calling_ae"], event["outcome"]) == (pacs.name, str(station.ae_title), "0x0124")
    assert json.loads(event["message"])["signatures"] == ["Pacslab.Test.EICAR.UNOFFICIAL"]
    assert (alert["severity"], alert["entities"]) == ("high", {"host": pacs.name, "calling_ae": str(station.ae_title), "user": None})
    assert stored["failed"] == [] and len(stored["stored"]) == 1 and len(im.find_study(lab, pacs.name, clean)) == 1
    assert clean_events and clean_alerts == []


@pytest.mark.control("C-DET-02")
def test_an_object_the_pacs_cannot_scan_is_refused_not_stored_unscanned(running_lab: Lab, evidence) -> None:
    """With the PACS's clamd stopped, a modality's clean instance is refused with 0xA700 ("Refused:
    Out of Resources", PS3.4 B.2.3: the sender may retry), its malware-scan-failed event raises
    dicom-security-alert naming the modality, and the PACS holds nothing under its accession; with
    clamd started again, the same series is stored (the twin)."""
    lab = running_lab
    pacs = pacs_of(lab)
    station = tls_stations(lab)[0]
    unscanned, scanned = f"MU{RUN}".upper(), f"MS{RUN}".upper()
    im.exec_in(lab, pacs.name, "supervisorctl", "stop", "clamd")
    try:
        refused = im.dicomsim(lab, station.name, "store", "--images", "1", "--accession", unscanned)
    finally:
        clamd.started(lab, pacs.name)
    stored = im.dicomsim(lab, station.name, "store", "--images", "1", "--accession", scanned)
    event = wait_for("the failed scan", lambda: [e for e in siem_json(lab, "events", "--contains", unscanned)
                                                 if e["event_type"] == "malware-scan-failed"])[0]
    alert = wait_for("dicom-security-alert", lambda: [a for a in siem_json(lab, "alerts")
                                                      if a["rule"] == "dicom-security-alert" and event["id"] in a["events"]])[0]
    evidence.update(refused=refused["failed"], stored=stored.get("stored"), event=event, alert=alert)
    assert [f["status"] for f in refused["failed"]] == [0xA700] and refused["stored"] == []
    assert im.find_study(lab, pacs.name, unscanned) == []
    assert (event["host"], event["calling_ae"], event["outcome"]) == (pacs.name, str(station.ae_title), "0xA700")
    assert (alert["severity"], alert["entities"]) == ("medium", {"host": pacs.name, "calling_ae": str(station.ae_title)})
    assert stored["failed"] == [] and len(stored["stored"]) == 1


@pytest.mark.control("C-DET-02")
def test_an_object_stored_before_its_signature_was_known_is_found_by_the_rescan_and_kept(running_lab: Lab, evidence) -> None:
    """A legitimate modality stores two series, one whose instance carries this run's marker bytes
    in a private element. No signature knows the marker: both are stored, and a rescan of the PACS
    (POST /pacslab/rescan, what its hourly pass runs) names neither. A signature for the marker then
    reaches the PACS's clamd as an update would (a database file of its own beside the lab's, clamd
    told to reload), and the next rescan finds the instance carrying it: its malware-found-stored
    event names the signature, the accession and the modality's AE title, malware-in-archive (high)
    names the PACS and the modality, and the instance is still stored (removing it is the
    responder's call). The twin is in no event of the rescan, whose end the siem holds. Both
    studies stay (a deletion is an audited act of its own, off-hours-deletion at night)."""
    lab = running_lab
    pacs = pacs_of(lab)
    station = tls_stations(lab)[0]
    marker = f"pacslab-retro-{RUN}".encode().hex()
    carrying, clean = f"RA{RUN}".upper(), f"RC{RUN}".upper()
    stored = im.dicomsim(lab, station.name, "store", "--images", "1", "--accession", carrying, "--payload-hex", marker)
    twin = im.dicomsim(lab, station.name, "store", "--images", "1", "--accession", clean)
    assert stored["failed"] == [] and twin["failed"] == []  # no signature knows the marker yet
    [carrying_study], [clean_study] = im.find_study(lab, pacs.name, carrying), im.find_study(lab, pacs.name, clean)
    [carrying_instance] = [i["ID"] for i in im.orthanc(lab, pacs.name, f"/studies/{carrying_study}/instances")]
    [clean_instance] = [i["ID"] for i in im.orthanc(lab, pacs.name, f"/studies/{clean_study}/instances")]
    before = im.rescan(lab, pacs.name)
    signature = f"Pacslab.Test.Retro{RUN}"
    update = clamd.add_signature(lab, pacs.name, signature, marker)
    try:
        after = im.rescan(lab, pacs.name)
        event = wait_for("the finding", lambda: [e for e in siem_json(lab, "events", "--contains", carrying)
                                                 if e["event_type"] == "malware-found-stored" and e["host"] == pacs.name])[0]
        alert = wait_for("malware-in-archive", lambda: [a for a in siem_json(lab, "alerts")
                                                        if a["rule"] == "malware-in-archive" and event["id"] in a["events"]])[0]
        stored_after_rescan = im.find_study(lab, pacs.name, carrying)
        # the pass's end is written after every event of the pass, and shipped after them
        wait_for("the rescan's end", lambda: [e for e in siem_json(lab, "events", "--since-id", str(event["id"]), "--contains", "malware-rescanned")
                                              if e["host"] == pacs.name and e["event_type"] == "malware-rescanned"])
    finally:
        clamd.remove_signature(lab, pacs.name, update, marker)
    twin_events = [e for e in siem_json(lab, "events", "--contains", clean) if e["event_type"].startswith("malware-")]
    raw = json.loads(event["message"])
    evidence.update(before={k: before[k] for k in ("scanned", "complete")}, after={k: after[k] for k in ("scanned", "found", "complete")},
                    event=raw, alert=alert, twin_events=twin_events)
    assert before["complete"] and {carrying_instance, clean_instance} & set(before["found"]) == set()
    assert after["complete"] and carrying_instance in after["found"] and clean_instance not in after["found"]
    assert (event["host"], event["calling_ae"]) == (pacs.name, str(station.ae_title))
    assert {k: raw[k] for k in ("instance", "accession", "signatures")} == {
        "instance": carrying_instance, "accession": carrying, "signatures": [f"{signature}.UNOFFICIAL"]}
    assert (alert["severity"], alert["entities"]) == ("high", {"host": pacs.name, "calling_ae": str(station.ae_title)})
    assert stored_after_rescan == [carrying_study]
    assert twin_events == []


def _rescan_with_clamd_away(lab: Lab, pacs: str, patience: int, seconds: float | None) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """A rescan of ``pacs`` with its clamd stopped, started again ``seconds`` into the pass (None:
    after it): its answer and the plugin's malware- events of the pass. ``patience``:
    orthanc_malware_rescan_patience as deployed."""
    # A pass with clamd up first: im.rescan waits out a pass already running (the hourly one), so
    # none runs when clamd stops and ours starts at once, before clamd is back.
    im.rescan(lab, pacs, max_time=patience + 120)
    since = im.orthanc_event_count(lab, pacs)
    im.exec_in(lab, pacs, "supervisorctl", "stop", "clamd")
    try:
        with ThreadPoolExecutor(max_workers=1) as pool:
            answer = pool.submit(im.rescan, lab, pacs, max_time=patience + 120)
            if seconds is not None:
                time.sleep(seconds)
                im.exec_in(lab, pacs, "supervisorctl", "start", "clamd")
            result = answer.result()
    finally:
        clamd.started(lab, pacs)
    return result, [e for e in im.orthanc_events(lab, pacs, since) if e["event"].startswith("malware-")]


@pytest.mark.control("C-DET-02")
def test_a_rescan_waits_for_a_restarting_clamd(running_lab: Lab, evidence) -> None:
    """A rescan of the PACS started while its clamd is stopped, clamd started again 5 s later (what
    a converge that changed the signatures does): the pass waits for it and is complete, with no
    malware-rescan-failed event. The twin, clamd stopped for the whole pass (which ends incomplete
    after orthanc_malware_rescan_patience seconds), runs during the siem's stall below, whose wait
    it shares: test_a_siem_that_stores_nothing_raises_ingest_stalled_while_it_lasts_and_calls_no_source_silent_for_it."""
    lab = running_lab
    pacs = pacs_of(lab)
    patience = int(role_var(lab, pacs.name, "orthanc", "orthanc_malware_rescan_patience"))
    waited, waited_events = _rescan_with_clamd_away(lab, pacs.name, patience, 5)
    evidence.update(waited={k: waited[k] for k in ("scanned", "failed", "complete")}, waited_events=[e["event"] for e in waited_events])
    assert waited["complete"] and waited["scanned"] > 0
    assert "malware-rescan-failed" not in [e["event"] for e in waited_events]


@pytest.mark.control("C-PRT-01")
def test_an_object_the_pacs_refuses_reaches_the_siem_as_an_a5_security_alert_naming_the_sender(running_lab: Lab, evidence) -> None:
    """The same refusal as a DICOM audit message (PS3.15 A.5.3.11 Security Alert, "Use of Restricted
    Function", outcome 4: nothing was stored): the siem reads the sender's AE title and registered
    address from it, and the alert's description (base64 in the XML) names the refused UID, this
    run's marker in it."""
    lab = running_lab
    pacs = pacs_of(lab)
    station = tls_stations(lab)[0]
    marker = f"pacslab-{RUN}-alert"
    started = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime())
    result = im.dicomsim(lab, station.name, "store", "--images", "1", "--sop-instance-uid", f"../{marker}")

    def described() -> list[tuple[dict[str, Any], str]]:
        found = []
        for e in siem_json(lab, "events", "--contains", "110113"):
            if e["event_type"] != "dicom-audit-security-alert" or e["time"] < started:
                continue
            detail = ElementTree.fromstring(e["message"]).find("ParticipantObjectIdentification/ParticipantObjectDetail")
            text = base64.b64decode(detail.get("value", "")).decode() if detail is not None else ""
            if marker in text:
                found.append((e, text))
        return found

    event, text = wait_for("the Security Alert message", described)[0]
    evidence.update(store=result["failed"], event={k: event[k] for k in ("id", "host", "event_type", "user", "src_ip", "calling_ae", "outcome")},
                    description=text)
    assert [f["status"] for f in result["failed"]] == [0xC000]
    assert {k: event[k] for k in ("host", "source", "user", "src_ip", "calling_ae", "outcome")} == {
        "host": pacs.name, "source": "dicom-audit", "user": str(station.ae_title), "src_ip": str(station.address),
        "calling_ae": str(station.ae_title), "outcome": "minor-failure"}
    assert text.startswith("invalid-uid-refused: C-STORE refused with status 0xC000: ")
    assert f'"SOPInstanceUID": "../{marker}"' in text


@pytest.mark.control("C-PRT-01")
def test_each_user_name_the_idp_refused_is_a_failed_user_authentication_message(running_lab: Lab, idp_guessing: dict[str, Any],
                                                                               evidence) -> None:
    """Each of the five names of this run that nobody has, typed at the IdP (LemonLDAP: not in the
    directory), is a DICOM User Authentication message from the IdP (PS3.15 A.5.3.12, Login,
    outcome 4), naming the name as typed at the workstation's address, with the IdP as the node
    that authenticated: the IdP's rsyslog hands the portal's refusals to its audit writer
    (roles/idp's pacslab_idp_audit.py). Switched off, the wait finds none."""
    g = idp_guessing
    host = idp(running_lab)
    messages = wait_for("a User Authentication message per refused name", lambda: failures_at_siem(
        running_lab, [f'UserID="{u}"' for u in g["users"]], "dicom-audit-user-authentication"))
    evidence.update(users=g["users"], messages=messages)
    assert sorted((e["host"], e["source"], e["user"], e["src_ip"], e["outcome"]) for e in messages) == [
        (host.name, "dicom-audit", u, g["client"], "minor-failure") for u in sorted(g["users"])]
    for e in messages:
        root = ElementTree.fromstring(e["message"])
        assert root.find("EventIdentification/EventTypeCode[@csd-code='110122']") is not None  # Login
        assert [p.get("UserID") for p in root.findall("ActiveParticipant")] == [e["user"], f"lemonldap@{host.name}"]


@pytest.mark.control("C-PRT-01")
def test_a_refused_code_and_a_completed_sign_in_at_the_idp_are_user_authentication_messages(running_lab: Lab, plan: Plan,
                                                                                            evidence) -> None:
    """The radiologist, at the reading workstation, types a password that is not theirs, then a
    code that is not theirs, then signs in with their own: the IdP writes a DICOM User
    Authentication message (PS3.15 A.5.3.12, Login) for each (the refused password read from the
    portal's log, the codes' verdicts by its TOTP checker), naming the person at the workstation's
    address, from the IdP (a security server): two with outcome 4, one with 0; all three reach the
    siem from the IdP. The twins are the first two: a refusal is a failure, never a sign-in."""
    lab = running_lab
    host, who, client = idp(lab), one(lab, "enabled", "radiologist").name, lab.hosts[IDP_CLIENT]

    def logins() -> list[dict[str, Any]]:
        return [e for e in siem_json(lab, "events", "--contains", f'UserID="{who}"')
                if e["event_type"] == "dicom-audit-user-authentication" and e["src_ip"] == str(client.address)]

    before = max((e["id"] for e in logins()), default=0)
    code = oidc.fresh_code(lab, host.name, plan.secrets_dir, who)
    wrong = f"{(int(code) + 500000) % 1000000:06d}"  # not this step's code (nor, but by a one-in-a-million chance, a neighbour's)
    bad_password = idp_sign_in(lab, plan, who, password=f"not-{who}s-password-{RUN}")
    refused = idp_sign_in(lab, plan, who, code=wrong)
    accepted = idp_sign_in(lab, plan, who, code="now")
    found = wait_for("the three User Authentication messages",
                     lambda: new if len(new := [e for e in logins() if e["id"] > before]) >= 3 else [])
    evidence.update(bad_password=bad_password.get("steps", [])[-1:], refused=refused.get("steps", [])[-1:],
                    accepted=accepted.get("redirect"), messages=found)
    assert accepted.get("redirect", {}).get("state") == "pacslab-state"
    assert outline(bad_password)[-1] == ("password", 200, [PE_BADCREDENTIALS], [LOGIN_FORM])  # refused at the password, no code asked
    assert outline(refused)[-1] == ("second-factor", 200, [PE_BADOTP], [])  # refused at the code
    # the refused password's message goes through the IdP's rsyslog, the checker's are written at once: counted, not ordered
    assert sorted((e["host"], e["source"], e["user"], e["src_zone"], e["outcome"]) for e in found) == [
        (host.name, "dicom-audit", who, client.zone, "minor-failure"), (host.name, "dicom-audit", who, client.zone, "minor-failure"),
        (host.name, "dicom-audit", who, client.zone, "success")]
    for e in found:
        root = ElementTree.fromstring(e["message"])
        source = root.find("AuditSourceIdentification")
        assert source is not None and source.get("AuditSourceID") == host.name and [c.get("csd-code") for c in source] == ["6"]
        assert [p.get("UserID") for p in root.findall("ActiveParticipant")] == [who, f"lemonldap@{host.name}"]
        assert root.find("EventIdentification/EventTypeCode[@csd-code='110122']") is not None  # Login


IDP_AUDIT = "/var/log/pacslab/idp-audit.log"  # roles/idp: the IdP's DICOM audit trail, written as www-data


@contextmanager
def idp_audit_read_only(lab: Lab, host: str) -> Iterator[Callable[[], None]]:
    """The IdP's audit file read-only to its writers (0440) while the block runs, its mode put back
    after it, and its rotated copy's too; yields a call that makes it read-only again (a rotation
    leaves a new, writable file)."""
    def seal() -> None:
        im.exec_in(lab, host, "chmod", "0440", IDP_AUDIT)

    seal()
    try:
        yield seal
    finally:
        im.exec_in(lab, host, "sh", "-c", f"chmod 0640 {IDP_AUDIT} && {{ [ ! -e {IDP_AUDIT}.1 ] || chmod 0640 {IDP_AUDIT}.1; }}")


def reader_failures(lab: Lab, user: str) -> list[dict[str, Any]]:
    """The audit-failed events at the siem from the IdP's reader of the portal's refusals about ``user``."""
    return [e for e in siem_json(lab, "events", "--contains", user) if (e["source"], e["event_type"]) == ("idp-portal-reader", "audit-failed")]


@pytest.mark.control("C-PRT-01")
def test_a_message_the_idp_cannot_write_raises_audit_trail_failure_naming_the_person(running_lab: Lab, plan: Plan,
                                                                                     evidence) -> None:
    """A name of this run that nobody has, typed at the IdP from the technologists' workstation, is
    a User Authentication message. The IdP's audit file is then made read-only to its writers for a
    moment, and a second such name typed: the portal refuses it as ever, but its message cannot be
    written. The reader's audit-failed line (its output, shipped as idp-portal-reader) reaches the
    siem naming the second name, and audit-trail-failure (high, NIST SP 800-53 AU-5) is raised
    about the IdP. The twin is the first name: its message written, no audit-failed names it."""
    lab = running_lab
    host = idp(lab)
    if GUESSER not in lab.hosts or not lab.hosts[GUESSER].deployed:
        pytest.skip(f"lab {lab.name!r} deploys no {GUESSER}")
    written, lost = f"idp-{RUN}-audit-kept", f"idp-{RUN}-audit-lost"

    def audit_failed(user: str) -> list[dict[str, Any]]:  # from any writer: the twin's name must be in none
        return [e for e in siem_json(lab, "events", "--contains", user) if e["event_type"] == "audit-failed"]

    with refusals_authorised(lab, GUESSER, "the suite's unknown names at the IdP"):
        idp_sign_in(lab, plan, written, password="guess", client=GUESSER)
        kept = wait_for("the first name's User Authentication message",
                        lambda: failures_at_siem(lab, [f'UserID="{written}"'], "dicom-audit-user-authentication"))
        with idp_audit_read_only(lab, host.name):
            idp_sign_in(lab, plan, lost, password="guess", client=GUESSER)
            failed = wait_for("the second name's audit-failed event", lambda: audit_failed(lost))
    alert = wait_for("audit-trail-failure holding it", lambda: [
        a for a in siem_json(lab, "alerts") if a["rule"] == "audit-trail-failure" and failed[0]["id"] in a["events"]])[0]
    evidence.update(kept=[e["id"] for e in kept], failed=failed, alert=alert)
    assert [(e["host"], e["source"], e["user"], e["outcome"]) for e in failed] == [
        (host.name, "idp-portal-reader", lost, "user_authentication")]
    assert "PermissionError" in json.loads(failed[0]["message"])["error"]
    assert (alert["severity"], alert["entities"], alert["events"]) == ("high", {"host": host.name}, [failed[0]["id"]])
    assert audit_failed(written) == []
    assert failures_at_siem(lab, [f'UserID="{lost}"'], "dicom-audit-user-authentication") == []


# ---------------------------------------------------------------------------------------------
# The DICOM audit trail (PS3.15 A.5 messages, roles/orthanc's pacslab_audit.py)


def raw_lines(lab: Lab, host: Host, marker: str) -> list[str]:
    """The lines of the siem's raw file of ``host``'s address that hold ``marker`` (as received)."""
    out = im.exec_in(lab, siem(lab).name, "grep", "-F", "--", marker, f"{RAW_DIR}/{host.address}.log", check=False)
    return out.splitlines()


RAW_DIR = "/var/log/pacslab/remote"  # roles/siem siem_raw_dir
CAP_LINUX_IMMUTABLE = 1 << 9  # linux/capability.h
REFUSED = "Operation not permitted"  # strerror(EPERM): what an append-only file answers a rewrite


def capability_sets(lab: Lab, host: str, pid: str) -> dict[str, int]:
    """CapEff, CapPrm and CapBnd of process ``pid`` in ``host`` (/proc/PID/status, hexadecimal)."""
    status = im.exec_in(lab, host, "cat", f"/proc/{pid}/status")
    fields = dict(line.split(":\t", 1) for line in status.splitlines() if ":\t" in line)
    return {k: int(fields[k], 16) for k in ("CapEff", "CapPrm", "CapBnd")}


@pytest.mark.control("C-RSP-03")
def test_the_siems_raw_files_are_append_only_and_rsyslogd_cannot_release_them(running_lab: Lab, evidence) -> None:
    """Every raw file at the siem (one per log source, and each rotated copy) carries the
    append-only flag (lsattr's "a"), each older copy (.2 on) the immutable one too ("i"). Root in the siem, even holding CAP_LINUX_IMMUTABLE, cannot
    truncate the bastion's file, open it for writing other than appending, rename it or remove it: each
    answers "Operation not permitted". rsyslogd, the root program that faces the network, has
    CAP_LINUX_IMMUTABLE in neither its effective nor its permitted nor its bounding set, while the
    rotation program has it in all three: rsyslogd could not clear the flag, the rotation can. Each
    deployed log source has its own file. A line the bastion (which ships its local syslog) logs
    afterwards (as root, to its local syslog) still lands in the file, which stays append-only."""
    lab = running_lab
    host, source = siem(lab).name, bastion(lab)  # the bastion ships its local syslog (roles/bastion)
    raw = f"{RAW_DIR}/{source.address}.log"
    listed = im.exec_in(lab, host, "sh", "-c", f"lsattr {RAW_DIR}/*.log*")
    flags = {line.split()[1]: line.split()[0] for line in listed.splitlines()}
    evidence.update(flags=flags)
    zone = lab.zones[str(siem(lab).zone)]  # the fw sends from its address in the siem's zone
    own = {f"{RAW_DIR}/{zone.router if h.is_router else h.address}.log" for h in lab.deployed_hosts() if h.name in sources(lab)}
    own.add(f"{RAW_DIR}/{siem(lab).address}.log")  # its own watch's records (roles/siem rsyslog.conf, ruleset own)
    assert raw in flags and own <= set(flags), (sorted(own - set(flags)), listed)
    assert [path for path, f in flags.items() if "a" not in f] == []
    older = [path for path in flags if path.rsplit(".", 1)[1].isdigit() and int(path.rsplit(".", 1)[1]) >= 2]  # .2 on
    assert [path for path in older if "i" not in flags[path]] == []

    size = im.exec_in(lab, host, "stat", "-c", "%s", raw).strip()
    attempts = {
        "truncate": ["truncate", "-s", "0", raw],
        "rewrite": ["python3", "-c", f"import os; os.open({raw!r}, os.O_WRONLY)"],
        "rename": ["mv", raw, raw + ".moved"],
        "remove": ["rm", "-f", raw],
    }
    answers = {what: docker("exec", lab.container_name(host), *argv, check=False) for what, argv in attempts.items()}
    evidence.update(refused={what: a.stderr.strip()[-120:] for what, a in answers.items()})
    assert {what: (a.returncode != 0, REFUSED in a.stderr) for what, a in answers.items()} == {what: (True, True) for what in attempts}
    assert int(im.exec_in(lab, host, "stat", "-c", "%s", raw).strip()) >= int(size)  # nothing cut (rsyslogd may have appended)

    rsyslogd = im.exec_in(lab, host, "pgrep", "-x", "rsyslogd").split()
    rotation = im.exec_in(lab, host, "supervisorctl", "pid", "logrotate").strip()  # the loop that runs logrotate and the seal
    assert len(rsyslogd) == 1 and rotation.isdigit(), (rsyslogd, rotation)
    sets = {"rsyslogd": capability_sets(lab, host, rsyslogd[0]), "rotation": capability_sets(lab, host, rotation)}
    evidence.update(capabilities={who: {k: hex(v) for k, v in s.items()} for who, s in sets.items()})
    assert {who: {k: bool(v & CAP_LINUX_IMMUTABLE) for k, v in s.items()} for who, s in sets.items()} == {
        "rsyslogd": {"CapEff": False, "CapPrm": False, "CapBnd": False}, "rotation": {"CapEff": True, "CapPrm": True, "CapBnd": True}}

    marker = f"pacslab-append-{RUN}"
    im.exec_in(lab, source.name, "logger", "-t", "pacslab-probe", marker)
    landed = wait_for(f"the bastion's line {marker} in its raw file", lambda: raw_lines(lab, source, marker))
    evidence.update(landed=landed)
    assert len(landed) == 1 and landed[0].endswith(marker)
    assert "a" in im.exec_in(lab, host, "lsattr", raw).split()[0]


@pytest.mark.control("C-PRT-01")
def test_a_stored_study_and_its_deletion_reach_the_siem_as_dicom_audit_messages(running_lab: Lab, evidence) -> None:
    """A CT image stored on the PACS is a DICOM Instances Transferred message (110104): the sender's
    AE title and registered address, the study and the patient; its deletion by the lab's
    administrator a DICOM Study Deleted message (110105) naming the administrator. Both arrive as
    RFC 5424 syslog with facility authpriv and severity notice (<85>) and the MSGID of PS3.15 A.6
    ("DICOM+RFC3881")."""
    lab = running_lab
    pacs = pacs_of(lab)
    station = tls_stations(lab)[0]  # its own certificate: the PACS registers its own address
    result = im.dicomsim(lab, station.name, "store", "--images", "1", "--patient-name", f"PACSLAB^AUDIT{RUN}", "--accession", f"AU{RUN}")
    assert len(result["stored"]) == 1, result
    stored = result["stored"][0]
    transferred = wait_for("DICOM Instances Transferred", lambda: [
        e for e in siem_json(lab, "events", "--contains", stored["study_uid"]) if e["event_type"] == "dicom-audit-instances-transferred"])[0]
    study = im.find_study(lab, pacs.name, f"AU{RUN}")[0]
    im.orthanc(lab, pacs.name, f"/studies/{study}", "DELETE")
    deleted = wait_for("DICOM Study Deleted", lambda: [
        e for e in siem_json(lab, "events", "--contains", stored["study_uid"]) if e["event_type"] == "dicom-audit-study-deleted"])[0]
    evidence.update(transferred=transferred, deleted=deleted)
    assert {k: transferred[k] for k in ("host", "source", "user", "calling_ae", "src_ip", "study_uid", "patient_id", "outcome")} == {
        "host": pacs.name, "source": "dicom-audit", "user": str(station.ae_title), "calling_ae": str(station.ae_title),
        "src_ip": str(station.address), "study_uid": stored["study_uid"], "patient_id": stored["patient_id"], "outcome": "success"}
    assert f"<ParticipantObjectName>PACSLAB^AUDIT{RUN}</ParticipantObjectName>" in transferred["message"]
    assert {k: deleted[k] for k in ("host", "user", "study_uid", "patient_id", "outcome")} == {
        "host": pacs.name, "user": "pacslab-admin", "study_uid": stored["study_uid"], "patient_id": stored["patient_id"], "outcome": "success"}
    raw = [ln for ln in raw_lines(lab, pacs, stored["study_uid"]) if " dicom-audit " in ln]  # not the event log's lines about it
    assert len(raw) == 2 and all(ln.startswith("<85>1 ") and f" {pacs.name} dicom-audit - DICOM+RFC3881 - <AuditMessage>" in ln for ln in raw), raw


@pytest.mark.control("C-PRT-01")
def test_deleting_part_of_a_study_is_instances_accessed_d_and_deleting_its_last_image_is_study_deleted(running_lab: Lab,
                                                                                                         evidence) -> None:
    """A CT study of two series of two images each is stored on the PACS. The lab's administrator
    deletes one image, then the other series whole: the study stays each time, and the PACS writes
    DICOM Instances Accessed (PS3.15 A.5.3.6) with action D for each, naming the administrator, the
    study and the patient. The twin: deleting the last image takes the study with it (Orthanc
    deletes a study left without images), which is DICOM Study Deleted (A.5.3.8), and no third
    Instances Accessed D: a study stored after it (its Instances Transferred message, later in the
    same audit file) reaches the siem, and the D messages are still two."""
    lab = running_lab
    pacs, station = pacs_of(lab), tls_stations(lab)[0]
    result = im.dicomsim(lab, station.name, "store", "--images", "2", "--repeat", "2", "--patient-name", f"PACSLAB^PART{RUN}",
                         "--accession", f"PD{RUN}")
    assert len(result["stored"]) == 4, result
    study_uid, patient_id = result["stored"][0]["study_uid"], result["stored"][0]["patient_id"]
    study = im.find_study(lab, pacs.name, f"PD{RUN}")[0]
    first, other = (s["ID"] for s in im.orthanc(lab, pacs.name, f"/studies/{study}/series"))
    one, last = im.orthanc(lab, pacs.name, f"/series/{first}")["Instances"]

    def audit(event_type: str) -> list[dict[str, Any]]:  # the deletions (the reads above are action R)
        return [{k: e[k] for k in ("host", "source", "user", "action", "study_uid", "patient_id", "outcome")}
                for e in siem_json(lab, "events", "--contains", study_uid) if e["event_type"] == event_type and e["action"] == "D"]

    im.orthanc(lab, pacs.name, f"/instances/{one}", "DELETE")
    image = wait_for("DICOM Instances Accessed, action D, of the image", lambda: audit("dicom-audit-instances-accessed"))
    im.orthanc(lab, pacs.name, f"/series/{other}", "DELETE")
    series = wait_for("DICOM Instances Accessed, action D, of the series",
                      lambda: found if len(found := audit("dicom-audit-instances-accessed")) == 2 else [])
    assert len(im.orthanc(lab, pacs.name, f"/studies/{study}/instances")) == 1
    im.orthanc(lab, pacs.name, f"/instances/{last}", "DELETE")
    whole = wait_for("DICOM Study Deleted", lambda: audit("dicom-audit-study-deleted"))
    assert im.find_study(lab, pacs.name, f"PD{RUN}") == []
    later = im.dicomsim(lab, station.name, "store", "--images", "1", "--patient-name", f"PACSLAB^PART{RUN}", "--accession", f"PE{RUN}")
    wait_for("the later study's Instances Transferred", lambda: [
        e for e in siem_json(lab, "events", "--contains", later["stored"][0]["study_uid"]) if e["event_type"] == "dicom-audit-instances-transferred"])
    after = audit("dicom-audit-instances-accessed")
    evidence.update(image=image, series=series, whole=whole, after=after)
    expected = {"host": pacs.name, "source": "dicom-audit", "user": "pacslab-admin", "action": "D", "study_uid": study_uid,
                "patient_id": patient_id, "outcome": "success"}
    assert image == [expected]
    assert series == [expected, expected]
    assert whole == [expected]
    assert after == [expected, expected]


def transfers(lab: Lab, study_uid: str) -> list[dict[str, Any]]:
    """The DICOM Instances Transferred messages about ``study_uid`` in the siem, as (host, user,
    action, outcome, the destination participant's UserID)."""
    found = []
    for e in siem_json(lab, "events", "--contains", study_uid):
        if e["event_type"] == "dicom-audit-instances-transferred":
            root = ElementTree.fromstring(e["message"])
            to = [p.get("UserID") for p in root.findall("ActiveParticipant") if p.find("RoleIDCode[@csd-code='110152']") is not None]
            found.append({"host": e["host"], "user": e["user"], "action": e["action"], "outcome": e["outcome"], "to": to})
    return sorted(found, key=lambda t: (t["host"], t["user"]))


@pytest.mark.control("C-PRT-01")
def test_a_forwarded_study_is_an_instances_transferred_message_from_the_pacs_and_one_from_the_vna(running_lab: Lab, evidence) -> None:
    """A study a modality stores on the PACS becomes stable and the PACS forwards it to the VNA. The
    siem holds three DICOM Instances Transferred messages (PS3.15 A.5.3.7) about it: the PACS's
    receipt from the modality (C), the PACS's forward (the sender's side: the PACS as requestor, the
    VNA as destination, R, success) and the VNA's receipt from the PACS (C). The twin: with the
    VNA's DICOM front stopped, a second study's forward fails, and the PACS's message about it says
    so (outcome serious-failure); nothing from the VNA names it."""
    lab = running_lab
    pacs, vna, station = pacs_of(lab), the(lab, "vna_servers"), tls_stations(lab)[0]
    pacs_ae, vna_ae, modality = str(pacs.ae_title), str(vna.ae_title), str(station.ae_title)

    def store(accession: str) -> str:
        result = im.dicomsim(lab, station.name, "store", "--images", "1", "--patient-name", f"PACSLAB^FWD{RUN}", "--accession", accession)
        assert len(result["stored"]) == 1, result
        return str(result["stored"][0]["study_uid"])

    sent = store(f"FW{RUN}")
    forwarded = wait_for("the three transfer messages", lambda: found if len(found := transfers(lab, sent)) == 3 else [])
    im.exec_in(lab, vna.name, "supervisorctl", "stop", "dicom-front")
    try:
        lost = store(f"FL{RUN}")
        failed = wait_for("the failed forward's message", lambda: [t for t in transfers(lab, lost) if t["user"] == f"orthanc@{pacs.name}"])
    finally:
        im.exec_in(lab, vna.name, "supervisorctl", "start", "dicom-front")
    evidence.update(forwarded=forwarded, failed=transfers(lab, lost))
    assert forwarded == sorted([
        {"host": pacs.name, "user": modality, "action": "C", "outcome": "success", "to": [f"orthanc@{pacs.name}"]},
        {"host": pacs.name, "user": f"orthanc@{pacs.name}", "action": "R", "outcome": "success", "to": [vna_ae]},
        {"host": vna.name, "user": pacs_ae, "action": "C", "outcome": "success", "to": [f"orthanc@{vna.name}"]},
    ], key=lambda t: (t["host"], t["user"]))
    assert failed == [{"host": pacs.name, "user": f"orthanc@{pacs.name}", "action": "R", "outcome": "serious-failure", "to": [vna_ae]}]
    assert [t["host"] for t in transfers(lab, lost)] == [pacs.name, pacs.name]


WEEKDAYS = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")


def working(hours: dict[str, Any], stamp: str) -> bool:
    """Whether the UTC time ``stamp`` (RFC 3339) falls in the working hours {timezone, days, start, end}."""
    when = datetime.fromisoformat(stamp.replace("Z", "+00:00")).astimezone(zoneinfo.ZoneInfo(hours["timezone"]))
    start, end = (tuple(int(x) for x in hours[k].split(":")) for k in ("start", "end"))
    return WEEKDAYS[when.weekday()] in [d.lower() for d in hours["days"]] and start <= (when.hour, when.minute) < end


@pytest.mark.control("C-DET-07")
def test_an_administrators_deletion_is_marked_with_the_working_hours_and_off_hours_raises_off_hours_deletion(running_lab: Lab,
                                                                                                                 evidence) -> None:
    """The lab's administrator deletes a study stored for this run. Its DICOM Study Deleted message
    is stored with the shift its time gives by the working hours the siem was set up with (read from
    its assets.json, and worked out here on their own): off-hours raises off-hours-deletion (medium)
    naming the administrator and the PACS; on-hours raises nothing in a pass of the evaluator
    that began after it was stored. A run proves the side its hour gives; the rule's fixtures prove both."""
    lab = running_lab
    pacs = pacs_of(lab)
    hours = json.loads(im.exec_in(lab, siem(lab).name, "cat", "/etc/pacslab/siem/assets.json"))["working_hours"]
    station = tls_stations(lab)[0]
    result = im.dicomsim(lab, station.name, "store", "--images", "1", "--patient-name", f"PACSLAB^NIGHT{RUN}", "--accession", f"NI{RUN}")
    assert len(result["stored"]) == 1, result
    study_uid = result["stored"][0]["study_uid"]
    im.orthanc(lab, pacs.name, f"/studies/{im.find_study(lab, pacs.name, f'NI{RUN}')[0]}", "DELETE")
    deleted = wait_for("DICOM Study Deleted", lambda: [
        e for e in siem_json(lab, "events", "--contains", study_uid) if e["event_type"] == "dicom-audit-study-deleted"])[0]
    night = not working(hours, deleted["time"])

    def alerted() -> list[dict[str, Any]]:
        return [a for a in siem_json(lab, "alerts") if a["rule"] == "off-hours-deletion" and deleted["id"] in a["events"]]

    if night:
        found = wait_for("off-hours-deletion", alerted)
    else:
        evaluated_after(lab, utc_now())
        found = alerted()
    evidence.update(hours=hours, deleted={k: deleted[k] for k in ("id", "time", "user", "shift")}, alerts=found)
    assert (deleted["user"], deleted["shift"]) == ("pacslab-admin", "off-hours" if night else "on-hours")
    assert [(a["severity"], a["entities"]) for a in found] == ([("medium", {"user": "pacslab-admin", "host": pacs.name})] if night else [])


BULK_STUDIES = 20  # roles/siem/files/rules/bulk-access.yml: twenty different studies by one person in ten minutes


@pytest.mark.control("C-DAT-06")
@pytest.mark.control("C-PRT-01")
@pytest.mark.control("C-RSP-01")
def test_twenty_studies_read_by_one_person_raise_bulk_access_and_nineteen_do_not(running_lab: Lab, plan: Plan, evidence) -> None:
    """A person named for this run, as the proxy forwards a signed-in radiologist (the proxy's account
    and certificate, from the proxy host), retrieves twenty studies stored for this run from the
    PACS by WADO-RS (PS3.18 10.4: the permission table's download). Each read is a DICOM Instances
    Accessed message (PS3.15 A.5.3.6, action R) naming the person and the study. The twin: with
    nineteen of them in the siem, no bulk-access alert names the person; the twentieth raises it,
    about the person, with the twenty reads as its events, and opens a case about the person (no
    host: a person the lab does not define, so no owner either; W8 shows a person of the lab's)."""
    lab = running_lab
    pacs, station, rp = pacs_of(lab), tls_stations(lab)[0], proxy(lab)
    stored = im.dicomsim(lab, station.name, "store", "--images", "1", "--studies", str(BULK_STUDIES),
                         "--patient-name", f"PACSLAB^BULK{RUN}", "--accession", f"BK{RUN}")
    uids = [s["study_uid"] for s in stored["stored"]]
    assert len(set(uids)) == BULK_STUDIES, stored
    person = f"bulk-{RUN}"
    account = [rp.name, secret(plan, f"orthanc-{pacs.name}-{rp.name}")]
    headers = {"X-Pacslab-User": person, "X-Pacslab-Roles": "radiologist"}
    base = f"https://{pacs.name}:{pacs.service('https').port}/dicom-web/studies/"

    def read(batch: list[str]) -> list[list[Any]]:
        return basic_auth(lab, rp.name, [{"url": base + uid, "account": account, "headers": headers, "cert": True} for uid in batch])

    def reads() -> list[dict[str, Any]]:
        return [e for e in siem_json(lab, "events", "--contains", f'UserID="{person}"') if e["event_type"] == "dicom-audit-instances-accessed"]

    def alerts() -> list[dict[str, Any]]:
        return [a for a in siem_json(lab, "alerts") if a["rule"] == "bulk-access" and a["entities"] == {"user": person}]

    def all_but_one() -> list[dict[str, Any]]:
        found = reads()
        return found if len(found) == BULK_STUDIES - 1 else []

    first = read(uids[:-1])
    nineteen = wait_for("nineteen Instances Accessed messages", all_but_one)
    evaluated_after(lab, utc_now())
    before = alerts()
    last = read(uids[-1:])
    raised = wait_for("bulk-access", alerts)
    twenty = reads()
    evidence.update(answers=first + last, nineteen=len(nineteen), alert_before=before, alert=raised, sample=twenty[0])
    assert [a[0] for a in first + last] == [200] * BULK_STUDIES
    assert before == []
    assert sorted(e["study_uid"] for e in twenty) == sorted(uids)
    assert {(e["host"], e["source"], e["user"], e["outcome"]) for e in twenty} == {(pacs.name, "dicom-audit", person, "success")}
    assert 'EventActionCode="R"' in twenty[0]["message"] and 'csd-code="110103"' in twenty[0]["message"]
    assert len(raised) == 1 and raised[0]["severity"] == "medium"
    assert set(raised[0]["events"]) == {e["id"] for e in twenty}
    case = [c for c in siem_json(lab, "cases") if c["id"] == raised[0]["case"]]
    assert [(c["host"], c["person"], c["owner"], c["alerts"]) for c in case] == [("", person, None, [raised[0]["id"]])]


@pytest.mark.control("C-PRT-01")
def test_a_search_of_the_pacs_is_a_query_message_naming_the_person_and_what_was_asked(running_lab: Lab, plan: Plan, evidence) -> None:
    """A person named for this run, as the proxy forwards a signed-in radiologist, searches the PACS
    by QIDO-RS (PS3.18 10.6) for a patient id of this run: the PACS writes a Query message (PS3.15
    A.5.3.10, EventID 110112) naming the person as the requestor, with the Study Root FIND class
    and the search's path and query (ParticipantObjectQuery, base64), which reaches the siem. The
    twin: the same search by an auditor (whose roles do not hold view) is refused with 403, and no
    Query message names them (their refusal is in the siem as an access decision)."""
    lab = running_lab
    pacs, rp = pacs_of(lab), proxy(lab)
    account = [rp.name, secret(plan, f"orthanc-{pacs.name}-{rp.name}")]
    searcher, refused = f"query-{RUN}", f"noquery-{RUN}"
    url = f"https://{pacs.name}:{pacs.service('https').port}/dicom-web/studies?PatientID=QRY{RUN}"
    answers = basic_auth(lab, rp.name, [
        {"url": url, "account": account, "headers": {"X-Pacslab-User": searcher, "X-Pacslab-Roles": "radiologist"}, "cert": True},
        {"url": url, "account": account, "headers": {"X-Pacslab-User": refused, "X-Pacslab-Roles": "auditor"}, "cert": True}])

    def queries(person: str) -> list[dict[str, Any]]:
        return [e for e in siem_json(lab, "events", "--contains", f'UserID="{person}"') if e["event_type"] == "dicom-audit-query"]

    found = wait_for(f"the Query message of {searcher}", lambda: queries(searcher))
    denied = wait_for(f"the refusal of {refused}", lambda: [e for e in siem_json(lab, "events", "--contains", refused)
                                                           if e["event_type"] == "access-decision" and e["outcome"] == "deny"])
    time.sleep(3)  # the refusal came after the search: a Query message of it would be in the siem by now
    evidence.update(answers=answers, query=found, refusal=denied)
    assert [a[0] for a in answers] == [200, 403]
    assert len(found) == 1 and (found[0]["host"], found[0]["source"], found[0]["outcome"]) == (pacs.name, "dicom-audit", "success")
    root = ElementTree.fromstring(found[0]["message"])
    obj = root.find("ParticipantObjectIdentification")
    assert obj is not None and obj.get("ParticipantObjectID") == "1.2.840.10008.5.1.4.1.2.2.1"
    asked = obj.findtext("ParticipantObjectQuery")
    assert asked is not None and base64.b64decode(asked).decode() == f"/dicom-web/studies?PatientID=QRY{RUN}"
    assert queries(refused) == []


def c_find_queries(lab: Lab, ae_title: str) -> list[tuple[dict[str, Any], Dataset]]:
    """The Query messages in the siem whose requestor is ``ae_title``, each with its identifier (the
    ParticipantObjectQuery read back as Implicit VR Little Endian, as its TransferSyntax names)."""
    found = []
    for e in siem_json(lab, "events", "--contains", f'UserID="{ae_title}"'):
        obj = ElementTree.fromstring(e["message"]).find("ParticipantObjectIdentification") if e["event_type"] == "dicom-audit-query" else None
        if obj is not None and obj.findtext("ParticipantObjectQuery") is not None:
            syntax = obj.find("ParticipantObjectDetail[@type='TransferSyntax']")
            assert syntax is not None and base64.b64decode(syntax.get("value", "")) == b"1.2.840.10008.1.2", e["message"]
            found.append((e, read_dataset(BytesIO(base64.b64decode(obj.findtext("ParticipantObjectQuery") or "")), True, True)))
    return found


@pytest.mark.control("C-PRT-01")
def test_a_c_find_the_pacs_answers_is_a_query_message_with_the_calling_ae_its_address_and_the_identifier(running_lab: Lab,
                                                                                                         evidence) -> None:
    """The reading workstation asks the PACS (C-FIND, Study Root) for an accession number of this
    run: the PACS writes a Query message (PS3.15 A.5.3.10) naming the workstation's AE title and
    address as the requestor, the Study Root FIND class, and the identifier it sent (read back here:
    the accession, the STUDY level). The twins: a modality, which may not query, has its C-FIND
    aborted by the PACS and no Query message names it; the route the message is written through
    answers a request over HTTPS (the administrator's own account) 403, and writes nothing."""
    lab = running_lab
    pacs, ws, station = pacs_of(lab), reader(lab), tls_stations(lab)[0]
    refused = im.dicomsim(lab, station.name, "find", "--accession", f"CFX{RUN}")
    forged, _ = im.orthanc_call(lab, pacs.name, "/pacslab/audit/c-find", "POST",
                                json.dumps({"query": {"0008,0050": f"CFF{RUN}"}, "origin": {"RemoteAet": "FORGED"}}), max_time=30)
    answered = im.dicomsim(lab, ws.name, "find", "--accession", f"CF{RUN}")

    def asked() -> list[tuple[dict[str, Any], Dataset]]:
        return [(e, q) for e, q in c_find_queries(lab, str(ws.ae_title)) if q.get("AccessionNumber") == f"CF{RUN}"]

    found = wait_for("the Query message of the C-FIND", asked)
    time.sleep(3)  # the refused C-FIND and the forged request came first: a message of theirs would be in the siem by now
    evidence.update(refused=refused, forged=forged, answered=answered, query=found[0][0])
    assert (refused["aborted"], refused["statuses"]) == (True, [None]) and answered["statuses"] == ["0x0000"]
    assert forged == 403
    assert len(found) == 1
    event, identifier = found[0]
    assert {k: event[k] for k in ("host", "source", "user", "calling_ae", "src_ip", "outcome")} == {
        "host": pacs.name, "source": "dicom-audit", "user": str(ws.ae_title), "calling_ae": str(ws.ae_title),
        "src_ip": str(ws.address), "outcome": "success"}
    obj = ElementTree.fromstring(event["message"]).find("ParticipantObjectIdentification")
    assert obj is not None and obj.get("ParticipantObjectID") == "1.2.840.10008.5.1.4.1.2.2.1"
    assert (identifier.AccessionNumber, identifier.QueryRetrieveLevel) == (f"CF{RUN}", "STUDY")
    assert c_find_queries(lab, str(station.ae_title)) == []
    assert c_find_queries(lab, "FORGED") == []


# ---------------------------------------------------------------------------------------------
# DICOM access the PACS refuses, read from Orthanc's own log (roles/siem/files/rules/dicom-access.yml)


def _alerts_of(lab: Lab, rule: str, event_ids: set[int]) -> list[dict[str, Any]]:
    return [a for a in siem_json(lab, "alerts") if a["rule"] == rule and event_ids & set(a["events"])]


@pytest.mark.control("C-AST-05")
@pytest.mark.control("C-DET-01")
def test_an_association_from_an_unknown_ae_title_raises_unknown_ae_and_dicom_access_denied(
        running_lab: Lab, capsys: pytest.CaptureFixture[str], evidence) -> None:
    """A C-ECHO from a modality calling itself ROGUE<run> is rejected by the PACS (calling AE title
    not recognised). Orthanc's two log lines reach the siem: the association received (AE title,
    the modality's address; no host of the lab definition has that title) raises unknown-ae, its
    rejection raises dicom-access-denied; both about the modality, whose case holds them. The
    terminal shows the same: `pacslab alerts` and `pacslab cases`, as JSON and as tables."""
    lab = running_lab
    pacs, station = pacs_of(lab), tls_stations(lab)[0]
    rogue = f"ROGUE{RUN}".upper()
    echo = im.dicomsim(lab, station.name, "echo", "--calling", rogue)

    def logged(kind: str) -> list[dict[str, Any]]:
        return _association_events(lab, pacs, rogue, station.address)[kind]

    received = wait_for("the association received", lambda: logged("dicom-association-received"))[0]
    rejected = wait_for("the association rejected", lambda: logged("dicom-association-rejected"))[0]
    unknown = wait_for("unknown-ae", lambda: _alerts_of(lab, "unknown-ae", {received["id"]}))[0]
    denied = wait_for("dicom-access-denied", lambda: _alerts_of(lab, "dicom-access-denied", {rejected["id"]}))[0]
    cases = {c["id"]: c for c in siem_json(lab, "cases")}
    evidence.update(echo={k: echo.get(k) for k in ("outcome", "reject")}, received=received, rejected=rejected, unknown_ae=unknown,
                    denied=denied)
    assert (echo["outcome"], echo["reject"]["reason_name"]) == ("rejected", "calling-AE-title-not-recognized")
    for event, outcome in ((received, "unknown-calling-ae"), (rejected, "unknown-calling-ae")):
        assert {k: event[k] for k in ("host", "source", "calling_ae", "src_ip", "outcome")} == {
            "host": pacs.name, "source": "orthanc-log", "calling_ae": rogue, "src_ip": str(station.address), "outcome": outcome}
    assert f"Rejected association for remote AET {rogue} on IP {station.address}" in rejected["message"]
    assert (unknown["severity"], unknown["entities"]) == ("medium", {"host": pacs.name, "src_ip": str(station.address), "calling_ae": rogue})
    assert (denied["severity"], denied["entities"]) == (
        "medium", {"host": pacs.name, "src_ip": str(station.address), "calling_ae": rogue, "called_ae": None})
    assert cases[unknown["case"]]["host"] == cases[denied["case"]]["host"] == station.name  # about the caller, not the PACS

    capsys.readouterr()
    shown: dict[str, Any] = {}
    for verb in ("alerts", "cases"):
        assert cli.main([verb, "--json", "--lab", str(lab.path)]) == cli.EXIT_OK
        shown[verb] = {row["id"]: row for row in json.loads(capsys.readouterr().out)}
        assert cli.main([verb, "--lab", str(lab.path)]) == cli.EXIT_OK
        shown[f"{verb}-table"] = capsys.readouterr().out.splitlines()
    siem_name = siem(lab).name
    assert {k: shown["alerts"][unknown["id"]][k] for k in ("rule", "severity", "entities", "events", "case", "siem")} == {
        "rule": "unknown-ae", "severity": "medium", "entities": unknown["entities"], "events": [received["id"]], "case": unknown["case"],
        "siem": siem_name}
    assert (shown["cases"][unknown["case"]]["host"], shown["cases"][unknown["case"]]["siem"]) == (station.name, siem_name)
    assert {unknown["id"], denied["id"]} <= set(shown["cases"][unknown["case"]]["alerts"])
    assert any(line.split()[:3] == [str(unknown["id"]), "medium", "unknown-ae"] and f"calling_ae={rogue}" in line
               for line in shown["alerts-table"]), shown["alerts-table"]
    assert any(line.split()[:1] == [str(unknown["case"])] and station.name in line.split() for line in shown["cases-table"])


@pytest.mark.control("C-AST-05")
def test_a_known_ae_title_from_the_wrong_address_raises_dicom_access_denied_but_not_unknown_ae(running_lab: Lab, evidence) -> None:
    """The twin: the MR calling with the CT's AE title is rejected the same way, but that AE title
    is the lab's: dicom-access-denied names it and the MR's address, unknown-ae stays silent. Then
    a rogue AE title from the same MR (the marker): once unknown-ae has seen the later event, it has
    seen the earlier one too, so its silence on the borrowed title is a result, not a wait cut short."""
    lab = running_lab
    pacs, (first, second) = pacs_of(lab), tls_stations(lab)[:2]
    borrowed = im.dicomsim(lab, second.name, "echo", "--calling", str(first.ae_title))
    rogue = f"TWIN{RUN}".upper()
    im.dicomsim(lab, second.name, "echo", "--calling", rogue)
    later = wait_for("the rogue title's association", lambda: [e for e in siem_json(lab, "events", "--contains", f"AET {rogue} on IP")
                                                                if e["event_type"] == "dicom-association-received"])[0]
    wait_for("unknown-ae on the rogue title", lambda: _alerts_of(lab, "unknown-ae", {later["id"]}))
    earlier = [e for e in siem_json(lab, "events", "--contains", f"AET {first.ae_title} on IP {second.address}")
               if e["id"] < later["id"]]
    kinds = {e["event_type"]: e for e in earlier}  # the latest of each kind before the marker's
    assert {"dicom-association-received", "dicom-association-rejected"} <= set(kinds), f"the borrowed title's lines: {earlier}"
    received, rejected = kinds["dicom-association-received"], kinds["dicom-association-rejected"]
    denied = wait_for("dicom-access-denied", lambda: _alerts_of(lab, "dicom-access-denied", {rejected["id"]}))[0]
    evidence.update(echo={k: borrowed.get(k) for k in ("outcome", "reject")}, received=received, rejected=rejected, denied=denied)
    assert (borrowed["outcome"], borrowed["reject"]["reason_name"]) == ("rejected", "calling-AE-title-not-recognized")
    assert (received["calling_ae"], received["src_ip"], received["outcome"]) == (str(first.ae_title), str(second.address), "lab-ae")
    assert (rejected["calling_ae"], rejected["src_ip"], rejected["outcome"]) == (
        str(first.ae_title), str(second.address), "calling-ae-not-allowed")
    assert denied["entities"] == {"host": pacs.name, "src_ip": str(second.address), "calling_ae": str(first.ae_title), "called_ae": None}
    assert _alerts_of(lab, "unknown-ae", {received["id"], rejected["id"]}) == []


# Runs on a workstation that holds the PACS's stolen certificate and key (given on stdin as JSON with
# the calling and called AE titles and the target's address and port; written to files only this
# process may read, gone with it): dicomsim's C-ECHO under that AE title, the lab root as the trust
# anchor of the target's certificate. Prints dicomsim's result (one JSON object).
STOLEN_KEY = """
import json, os, subprocess, sys, tempfile
given = json.load(sys.stdin)
own = json.load(open("/etc/pacslab/dicom.json"))
with tempfile.TemporaryDirectory() as d:
    for name in ("chain", "key"):
        fd = os.open(f"{d}/{name}.pem", os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        os.write(fd, given[name].encode())
        os.close(fd)
    cfg = {"ae_title": given["calling"], "transport": "device",
           "peers": {"target": {"ae_title": given["called"], "host": given["host"], "port": given["port"], "transport": "device"}},
           "tls": {"cert": f"{d}/chain.pem", "key": f"{d}/key.pem", "trusted": "/etc/pacslab/tls/root.pem",
                   "tls12_ciphers": own["tls"]["tls12_ciphers"]}}
    with open(f"{d}/dicom.json", "w") as f:
        json.dump(cfg, f)
    done = subprocess.run([sys.executable, "/usr/local/lib/pacslab/dicomsim.py", "--config", f"{d}/dicom.json", "echo", "--peer", "target"],
                          capture_output=True, text=True)
    print(done.stdout.strip().splitlines()[-1] if done.stdout.strip() else json.dumps({"outcome": "no-output", "stderr": done.stderr[-500:]}))
"""


def _association_events(lab: Lab, node: Host, calling_ae: str, address: object) -> dict[str, list[dict[str, Any]]]:
    """The siem's association events of ``node`` (received, rejected) from ``calling_ae`` at ``address``:
    Orthanc's lines name the title as "AET <title> on IP", dicomsim's records as a JSON field."""
    found: dict[str, list[dict[str, Any]]] = {"dicom-association-received": [], "dicom-association-rejected": []}
    needle = f"AET {calling_ae} on IP" if node.image == "orthanc" else f'"calling_ae": "{calling_ae}"'
    for e in siem_json(lab, "events", "--contains", needle):
        if e["host"] == node.name and e["event_type"] in found and e["calling_ae"] == calling_ae and e["src_ip"] == str(address):
            found[e["event_type"]].append(e)
    return found


@pytest.mark.control("C-AST-05")
@pytest.mark.control("C-DET-01")
@pytest.mark.parametrize("node", ["ris", "ws-rad"])
def test_an_unknown_ae_title_at_the_ris_or_the_reading_workstation_raises_unknown_ae_and_dicom_access_denied(running_lab: Lab, node: str,
                                                                                                                 evidence) -> None:
    """Beyond the PACS: the RIS's worklist (Orthanc's log, as on the PACS) and the reading
    workstation's storage SCP (dicomsim's record of every association request it receives and of
    each it rejects). First the node's own caller under its lab AE title (a modality's C-ECHO to the
    RIS; the PACS's C-ECHO to the workstation, through Orthanc's REST): received, lab-ae. Then a
    caller under an AE title no host has: a modality at the RIS; at the workstation, whose TLS
    trusts the PACS's issuer alone, another workstation holding the PACS's stolen certificate and
    key. Rejected (calling AE title not recognised); both records reach the siem naming the node,
    the caller's address and the title (unknown-calling-ae), and unknown-ae and dicom-access-denied
    alert on them, about the caller. Once unknown-ae has seen the rogue's event, its silence on the
    lab title's earlier one is a result, not a wait cut short. At the workstation, whose SCP checks
    the calling title and not its address, the thief then calls under the PACS's own title: accepted,
    and recorded as lab-ae-from-another-address, which raises dicom-ae-impersonation (high) about
    the workstation, the thief's address and the PACS's title; the PACS's own call raised none."""
    lab = running_lab
    rogue = f"NODE{RUN}".upper()
    impostor: dict[str, Any] | None = None
    earlier: set[int] = set()
    if node == "ris":
        target = the(lab, "ris_servers")
        caller = thief = tls_stations(lab)[0]
        own = im.dicomsim(lab, caller.name, "echo", "--peer", "ris")
        theft = im.dicomsim(lab, thief.name, "echo", "--peer", "ris", "--calling", rogue)
    else:
        target, caller = reader(lab), pacs_of(lab)
        thieves = [h for h in members(lab, "workstations") if h.name != target.name and h.zone == target.zone]
        if not thieves:
            pytest.skip(f"lab {lab.name!r} deploys no other workstation in {target.zone}")
        thief = thieves[0]
        status, _ = im.orthanc_call(lab, caller.name, f"/modalities/{target.ae_title}/echo", "POST", "{}", max_time=30)
        own = {"outcome": "established" if status == 200 else f"http {status}"}
        stolen = {"chain": im.exec_in(lab, caller.name, "cat", "/etc/pacslab/tls/chain.pem"),
                  "key": im.exec_in(lab, caller.name, "cat", "/etc/pacslab/tls/node.key"),
                  "calling": rogue, "called": str(target.ae_title), "host": str(target.address), "port": target.dicom_port}
        theft = json.loads(im.exec_in(lab, thief.name, "python3", "-c", STOLEN_KEY, input=json.dumps(stolen)).strip().splitlines()[-1])
        earlier = {e["id"] for e in _association_events(lab, target, str(caller.ae_title), thief.address)["dicom-association-received"]}
        impostor = json.loads(im.exec_in(lab, thief.name, "python3", "-c", STOLEN_KEY, input=json.dumps(
            stolen | {"calling": str(caller.ae_title)})).strip().splitlines()[-1])
    assert own["outcome"] == "established", own
    assert (theft["outcome"], theft.get("reject", {}).get("reason_name")) == ("rejected", "calling-AE-title-not-recognized"), theft
    lab_ae = str(caller.ae_title)
    own_events = wait_for(f"{lab_ae}'s association at {target.name}",
                          lambda: _association_events(lab, target, lab_ae, caller.address)["dicom-association-received"])
    rogue_events = wait_for(f"{rogue}'s association received and rejected at {target.name}",
                            lambda: found if all((found := _association_events(lab, target, rogue, thief.address)).values()) else None)
    received, rejected = rogue_events["dicom-association-received"][0], rogue_events["dicom-association-rejected"][0]
    unknown = wait_for("unknown-ae", lambda: _alerts_of(lab, "unknown-ae", {received["id"]}))[0]
    denied = wait_for("dicom-access-denied", lambda: _alerts_of(lab, "dicom-access-denied", {rejected["id"]}))[0]
    cases = {c["id"]: c for c in siem_json(lab, "cases")}
    evidence.update(own=own, theft={k: theft.get(k) for k in ("outcome", "reject", "tls_alert")}, lab_ae_event=own_events[-1],
                    received=received, rejected=rejected, unknown_ae=unknown, denied=denied)
    source = "orthanc-log" if node == "ris" else "dicom-node"
    assert {k: own_events[-1][k] for k in ("source", "outcome", "dst_ip")} == {"source": source, "outcome": "lab-ae", "dst_ip": str(target.address)}
    for event in (received, rejected):
        assert {k: event[k] for k in ("host", "source", "calling_ae", "src_ip", "dst_ip", "outcome")} == {
            "host": target.name, "source": source, "calling_ae": rogue, "src_ip": str(thief.address), "dst_ip": str(target.address),
            "outcome": "unknown-calling-ae"}
    called = None if node == "ris" else str(target.ae_title)  # Orthanc's lines name the caller only
    assert (unknown["severity"], unknown["entities"]) == ("medium", {"host": target.name, "src_ip": str(thief.address), "calling_ae": rogue})
    assert (denied["severity"], denied["entities"]) == (
        "medium", {"host": target.name, "src_ip": str(thief.address), "calling_ae": rogue, "called_ae": called})
    assert cases[unknown["case"]]["host"] == thief.name  # about the caller, not the node it called
    assert _alerts_of(lab, "unknown-ae", {e["id"] for e in own_events}) == []
    assert _alerts_of(lab, "dicom-access-denied", {e["id"] for e in own_events}) == []
    if impostor is None:
        return
    posed = wait_for(f"{lab_ae}'s association from {thief.name} at {target.name}", lambda: [
        e for e in _association_events(lab, target, lab_ae, thief.address)["dicom-association-received"] if e["id"] not in earlier])[0]
    impersonation = wait_for("dicom-ae-impersonation", lambda: _alerts_of(lab, "dicom-ae-impersonation", {posed["id"]}))
    evidence.update(impostor={k: impostor.get(k) for k in ("outcome", "reject")}, posed=posed, impersonation=impersonation)
    assert impostor["outcome"] == "established", impostor  # the SCP checks the title only
    assert (posed["outcome"], posed["src_host"]) == ("lab-ae-from-another-address", thief.name)
    assert [(a["severity"], a["entities"]) for a in impersonation] == [
        ("high", {"host": target.name, "src_ip": str(thief.address), "calling_ae": lab_ae})]
    assert _alerts_of(lab, "dicom-ae-impersonation", {e["id"] for e in own_events}) == []


def _wire_events(lab: Lab, gateway: Host, calling_ae: str, since: int = 0) -> list[dict[str, Any]]:
    """The gateway's capture's association events (dicom-wire) under ``calling_ae``, after event ``since``."""
    return [e for e in siem_json(lab, "events", "--since-id", str(since), "--contains", calling_ae)
            if e["host"] == gateway.name and e["source"] == "dicom-wire" and e["calling_ae"] == calling_ae]


@pytest.mark.control("C-AST-05")
def test_the_overlay_gateway_names_each_ae_title_the_legacy_segment_sends_with_the_device_s_own_address(running_lab: Lab, evidence) -> None:
    """The legacy device speaks cleartext DICOM to its overlay gateway, whose tunnel carries it to
    the PACS inside TLS: the PACS's log names the gateway's address for it. The gateway's capture of
    the segment (tshark's DICOM dissector, shipped as dicom-wire) names the device's own. The legacy
    device's C-ECHO to the PACS under its own AE title: an association received at the gateway from
    the device's address and port, lab-ae. Then under an AE title no host has: the PACS rejects it
    (calling AE title not recognised); the gateway's event names that title, the PACS's AE title as
    called, the device's address, unknown-calling-ae; unknown-ae alerts on it about the gateway and
    the device's address, in the device's case, while the PACS's unknown-ae for the same
    association names the gateway's address. Once unknown-ae has seen the rogue title's event, its
    silence on the device's own, earlier, is a result. Then under the title of another lab device (a
    modality of another zone): the PACS refuses it (that title's registered address is not the
    gateway's); the gateway's event names the title from the device's address,
    lab-ae-from-another-address, and dicom-ae-impersonation (high) alerts on it; on the device's
    own title, earlier, it did not."""
    lab = running_lab
    gateways = [h for h in lab.deployed_hosts() if "overlay_gateways" in h.groups]
    if not gateways or gateways[0].name not in sources(lab):
        pytest.skip(f"lab {lab.name!r} deploys no overlay gateway that ships its log")
    gateway, pacs = gateways[0], pacs_of(lab)
    device = next(h for h in lab.deployed_hosts() if "modalities" in h.groups and h.zone == gateway.zone)
    rogue, own_ae = f"WIRE{RUN}".upper(), str(device.ae_title)
    since = max((e["id"] for e in siem_json(lab, "events", "--contains", "dicom_assoc_ae_calling")), default=0)
    other = next((h for h in lab.deployed_hosts() if "modalities" in h.groups and h.zone != gateway.zone and h.ae_title), None)
    own = im.dicomsim(lab, device.name, "echo", "--peer", "pacs")
    theft = im.dicomsim(lab, device.name, "echo", "--peer", "pacs", "--calling", rogue)
    posing = im.dicomsim(lab, device.name, "echo", "--peer", "pacs", "--calling", str(other.ae_title)) if other else None
    assert (own["outcome"], theft["outcome"], theft["reject"]["reason_name"]) == ("established", "rejected", "calling-AE-title-not-recognized")
    assert posing is None or posing["outcome"] == "rejected", posing  # the PACS: not from the title's registered address
    seen = wait_for(f"the gateway's record of {rogue}", lambda: _wire_events(lab, gateway, rogue, since))[0]
    own_seen = [e for e in _wire_events(lab, gateway, own_ae, since) if e["called_ae"] == str(pacs.ae_title)]
    unknown = wait_for("unknown-ae on the gateway's record", lambda: _alerts_of(lab, "unknown-ae", {seen["id"]}))[0]
    at_pacs = wait_for(f"{rogue}'s association at the PACS",
                       lambda: _association_events(lab, pacs, rogue, gateway.address)["dicom-association-received"])[0]
    cases = {c["id"]: c for c in siem_json(lab, "cases")}
    evidence.update(own=own.get("outcome"), theft={k: theft.get(k) for k in ("outcome", "reject")}, seen=seen, own_seen=own_seen[:1],
                    unknown_ae=unknown, at_pacs=at_pacs)
    assert {k: seen[k] for k in ("host", "source", "event_type", "calling_ae", "called_ae", "src_ip", "src_host", "dst_ip", "outcome")} == {
        "host": gateway.name, "source": "dicom-wire", "event_type": "dicom-association-received", "calling_ae": rogue,
        "called_ae": str(pacs.ae_title), "src_ip": str(device.address), "src_host": device.name, "dst_ip": str(gateway.address),
        "outcome": "unknown-calling-ae"}
    assert str(seen["src_port"]).isdigit() and str(seen["dst_port"]) in {str(t["listen"]) for t in role_var(
        lab, gateway.name, "dicom_node", "dicom_node_tunnels")}, seen  # the store keeps a port as text
    assert (unknown["severity"], unknown["entities"]) == ("medium", {"host": gateway.name, "src_ip": str(device.address), "calling_ae": rogue})
    assert cases[unknown["case"]]["host"] == device.name  # the device, not its gateway
    assert (at_pacs["src_ip"], at_pacs["outcome"]) == (str(gateway.address), "unknown-calling-ae")  # what the PACS alone could tell
    assert own_seen and {(e["src_ip"], e["outcome"]) for e in own_seen} == {(str(device.address), "lab-ae")}, own_seen
    assert _alerts_of(lab, "unknown-ae", {e["id"] for e in own_seen}) == []
    if other is None or posing is None:  # no modality outside the legacy zone to pose as: said in the evidence
        evidence.update(impersonation="not run: no modality outside the legacy zone to pose as")
        return
    posed = wait_for(f"the gateway's record of {other.ae_title}", lambda: _wire_events(lab, gateway, str(other.ae_title), since))[0]
    impersonation = wait_for("dicom-ae-impersonation", lambda: _alerts_of(lab, "dicom-ae-impersonation", {posed["id"]}))
    evidence.update(posing={k: posing.get(k) for k in ("outcome", "reject")}, posed=posed, impersonation=impersonation)
    assert (posed["src_ip"], posed["src_host"], posed["outcome"]) == (str(device.address), device.name, "lab-ae-from-another-address")
    assert [(a["severity"], a["entities"]) for a in impersonation] == [
        ("high", {"host": gateway.name, "src_ip": str(device.address), "calling_ae": str(other.ae_title)})]
    assert _alerts_of(lab, "dicom-ae-impersonation", {e["id"] for e in own_seen}) == []


# Runs in a modality: three TLS handshakes with the PACS's DICOM TLS front, each from a source port
# of its own (the marker): TLS 1.1 alone, TLS 1.2 without a certificate, TLS 1.2 with the node's
# own certificate. Prints each outcome: the version negotiated, or the error.
HANDSHAKES = """
import json, socket, ssl, sys
address, port, base = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
out = {}
for i, case in enumerate(["tls1.1", "no-certificate", "certificate"]):
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.check_hostname, ctx.verify_mode = False, ssl.CERT_NONE
    version = ssl.TLSVersion.TLSv1_1 if case == "tls1.1" else ssl.TLSVersion.TLSv1_2
    ctx.minimum_version = ctx.maximum_version = version
    ctx.set_ciphers("DEFAULT@SECLEVEL=0")
    if case == "certificate":
        ctx.load_cert_chain("/etc/pacslab/tls/chain.pem", "/etc/pacslab/tls/node.key")
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("", base + i))
    sock.settimeout(10)
    try:
        sock.connect((address, port))
        tls = ctx.wrap_socket(sock)
        out[case] = tls.version()
        tls.close()
    except OSError as exc:
        out[case] = type(exc).__name__
        sock.close()
print(json.dumps(out))
"""


@pytest.mark.control("C-PRT-01")
@pytest.mark.control("C-DAT-02")
def test_the_dicom_tls_front_s_refusals_reach_the_siem_with_the_caller_s_address(running_lab: Lab, evidence) -> None:
    """A modality's TLS 1.1 handshake and its TLS 1.2 one without a certificate, refused by the PACS's
    DICOM TLS front (stunnel), reach the siem as tls-handshake-refused with the modality's address
    and this run's source port (from the connection's first line) and OpenSSL's reason. The twin:
    its handshake with its own certificate shows that certificate accepted, the CN its name, and
    no refusal."""
    lab = running_lab
    pacs, station = pacs_of(lab), tls_stations(lab)[0]
    base = 30000 + secrets.randbelow(300) * 100
    done = json.loads(im.exec_in(lab, station.name, "python3", "-c", HANDSHAKES, str(pacs.address), str(pacs.dicom_port), str(base)))

    def ours() -> dict[str, list[dict[str, Any]]]:
        opened = siem_json(lab, "events", "--contains", f"accepted connection from {station.address}:{base}")
        if not opened:
            return {}
        found: dict[str, list[dict[str, Any]]] = {}
        for e in siem_json(lab, "events", "--since-id", str(min(e["id"] for e in opened) - 1)):
            if e["source"] == "dicom-front" and e["src_ip"] == str(station.address) and e["src_port"] in {str(base + i) for i in range(3)}:
                found.setdefault(e["src_port"], []).append(e)
        return found

    seen = wait_for("the three connections' lines", lambda: (found := ours()) and all(
        any(e["event_type"] in ("tls-handshake-refused", "tls-client-certificate") for e in found.get(str(base + i), [])) for i in range(3))
        and found)
    kinds = {port: [(e["event_type"], e["outcome"], e["user"]) for e in events] for port, events in seen.items()}
    evidence.update(handshakes=done, events=kinds)
    assert done == {"tls1.1": "SSLError", "no-certificate": "SSLError", "certificate": "TLSv1.2"}
    assert kinds[str(base)] == [("tls-connection", "accepted", None), ("tls-handshake-refused", "unsupported-protocol", None)]
    assert kinds[str(base + 1)] == [("tls-connection", "accepted", None),
                                    ("tls-handshake-refused", "peer-did-not-return-a-certificate", None)]
    assert kinds[str(base + 2)][:2] == [("tls-connection", "accepted", None), ("tls-client-certificate", "accepted", station.name)]
    assert "tls-handshake-refused" not in [kind for kind, _, _ in kinds[str(base + 2)]]
    assert {e["host"] for events in seen.values() for e in events} == {pacs.name}


# ---------------------------------------------------------------------------------------------
# The RIS's HL7 front as a log source (C-PRT-01): its listener's record and its TLS front's log


def ris_source(lab: Lab) -> Host:
    ris = the(lab, "ris_servers")
    if ris.name not in sources(lab):
        pytest.skip(f"the RIS of lab {lab.name!r} is no log source")
    return ris


@pytest.fixture(scope="module")
def hl7_traffic(running_lab: Lab) -> dict[str, Any]:
    """From the order-entry station, through the RIS's TLS front: on one connection an order of this
    run (accepted) and one whose modality is no DICOM code string (refused, AE 102); then a
    connection that shows no client certificate. Their events in the siem."""
    lab = running_lab
    ris, sender = ris_source(lab), order_entry(lab)
    station = tls_stations(lab)[0]
    tag = secrets.token_hex(3).upper()
    good = _message(str(station.ae_title), modality_of(lab, station), f"G{tag}", pid=f"PG{tag}", name="PACSLAB^HEARD", control=f"CG{tag}")
    bad = _message(str(station.ae_title), "C T!", f"R{tag}", pid=f"PR{tag}", name="PACSLAB^REFUSED", control=f"CR{tag}")
    since = utc_now()
    acks = im.send_raw(lab, sender.name, [good.encode(), bad.encode()])
    no_cert = im.send_order(lab, sender.name, f"N{tag}", str(station.ae_title), modality_of(lab, station), "PACSLAB^NOCERT", f"PN{tag}",
                            "--no-cert")
    scheduled = wait_for("the scheduled order's record", lambda: [e for e in siem_json(lab, "events", "--contains", f"G{tag}")
                                                                  if e["source"] == "hl7-orders"])
    refused = wait_for("the refused message's record", lambda: [e for e in siem_json(lab, "events", "--contains", f"CR{tag}")
                                                                if e["source"] == "hl7-orders"])

    def front() -> dict[str, list[dict[str, Any]]]:
        opened = [e for e in siem_json(lab, "events", "--contains", f"Service [hl7] accepted connection from {sender.address}:")
                  if e["time"] >= since and e["host"] == ris.name]
        if not opened:
            return {}
        found: dict[str, list[dict[str, Any]]] = {}
        for e in siem_json(lab, "events", "--since-id", str(min(e["id"] for e in opened) - 1)):
            if e["source"] == "hl7-front" and e["src_ip"] == str(sender.address):
                found.setdefault(str(e["src_port"]), []).append(e)
        return found

    connections = wait_for("the TLS front's refusal", lambda: (found := front()) and any(
        e["event_type"] == "tls-handshake-refused" for events in found.values() for e in events) and found)
    worklist = {i["accession"]: i for i in im.dicomsim(lab, station.name, "worklist", "--peer", ris.name)["items"]}
    return {"ris": ris, "sender": sender, "tag": tag, "acks": acks, "no_cert": no_cert, "scheduled": scheduled, "refused": refused,
            "front": connections, "worklist": worklist}


@pytest.mark.control("C-PRT-01")
def test_an_order_the_ris_schedules_reaches_the_siem_with_the_station_s_address_and_the_patient(running_lab: Lab,
                                                                                              hl7_traffic: dict[str, Any],
                                                                                              evidence) -> None:
    """The listener's record of the accepted order (its TLS front tells it the sender: PROXY
    protocol) is an hl7-order-scheduled event of the RIS naming the order-entry station's address,
    the patient, and the Study Instance UID the station's worklist answers with."""
    t = hl7_traffic
    (event,) = t["scheduled"]
    evidence.update(ack=t["acks"][0], event=event)
    assert (t["acks"][0]["ack"], t["acks"][0]["control_id"]) == ("AA", f"CG{t['tag']}")
    assert {k: event[k] for k in ("host", "source", "event_type", "outcome", "src_ip", "src_host", "src_zone", "patient_id", "dst_ip")} == {
        "host": t["ris"].name, "source": "hl7-orders", "event_type": "hl7-order-scheduled", "outcome": "AA",
        "src_ip": str(t["sender"].address), "src_host": t["sender"].name, "src_zone": t["sender"].zone, "patient_id": f"PG{t['tag']}",
        "dst_ip": str(t["ris"].address)}
    assert event["study_uid"] == t["worklist"][f"G{t['tag']}"]["study_uid"]


@pytest.mark.control("C-PRT-01")
def test_a_message_the_ris_refuses_reaches_the_siem_with_why_and_no_patient(running_lab: Lab, hl7_traffic: dict[str, Any],
                                                                           evidence) -> None:
    """The twin: the refused message is an hl7-message-refused event naming the station and the
    ACK's codes (AE, HL7 error 102), with no patient; no event of the siem holds its patient's
    identifier, and its accession is in no worklist."""
    t = hl7_traffic
    (event,) = t["refused"]
    evidence.update(ack=t["acks"][1], event=event)
    assert (t["acks"][1]["ack"], t["acks"][1]["error_code"]) == ("AE", "102")
    assert {k: event[k] for k in ("host", "event_type", "outcome", "src_ip", "patient_id", "study_uid")} == {
        "host": t["ris"].name, "event_type": "hl7-message-refused", "outcome": "AE-102", "src_ip": str(t["sender"].address),
        "patient_id": None, "study_uid": None}
    assert siem_json(running_lab, "events", "--contains", f"PR{t['tag']}") == []
    assert f"R{t['tag']}" not in t["worklist"]


@pytest.mark.control("C-PRT-01")
@pytest.mark.control("C-DAT-02")
def test_a_handshake_the_ris_s_hl7_front_refuses_reaches_the_siem_with_the_station_s_address(running_lab: Lab,
                                                                                            hl7_traffic: dict[str, Any],
                                                                                            evidence) -> None:
    """The connection without a client certificate is refused by the RIS's TLS front (the sender
    gets a TLS error, no ACK): its log reaches the siem as tls-handshake-refused
    (peer-did-not-return-a-certificate) with the station's address and source port, while the
    connection that carried the two messages shows no refusal."""
    t = hl7_traffic
    kinds = {port: [(e["event_type"], e["outcome"]) for e in events] for port, events in t["front"].items()}
    evidence.update(no_cert=t["no_cert"], front=kinds)
    assert (t["no_cert"]["ack"], t["no_cert"]["error_type"]) == ("", "SSLError")
    refused = [port for port, seen in kinds.items() if ("tls-handshake-refused", "peer-did-not-return-a-certificate") in seen]
    assert len(refused) == 1 and kinds[refused[0]][0] == ("tls-connection", "accepted")
    assert {e["host"] for events in t["front"].values() for e in events} == {t["ris"].name}


# What a process on the RIS sends the listener's loopback port as Orthanc's user: a PROXY header
# naming the order-entry station, then a valid order in MLLP. It prints how many bytes came back
# before the end (a reset, the bytes unread: none).
_LOCAL_SENDER = """
import socket, sys
with socket.create_connection(("127.0.0.1", int(sys.argv[1])), timeout=10) as s:
    s.sendall(sys.stdin.buffer.read())
    try:
        got = s.recv(65536)
    except ConnectionResetError:
        got = b""
print(len(got))
"""


@pytest.mark.control("C-DAT-02")
def test_a_local_process_on_the_ris_cannot_pose_as_its_tls_front(running_lab: Lab, evidence) -> None:
    """A process on the RIS of Orthanc's user (orthanc) connects to the listener's loopback port,
    names the order-entry station in a PROXY header and sends a valid order: the listener reads
    the kernel's socket table, finds the socket is not the TLS front's user's (stunnel4), and
    closes it unanswered. Nothing is scheduled (the accession is in no
    worklist), and the siem stores hl7-connection-refused (not-the-front) from the RIS, with no
    station's address."""
    lab = running_lab
    ris, sender = ris_source(lab), order_entry(lab)
    station = tls_stations(lab)[0]
    tag = secrets.token_hex(3).upper()
    order = _message(str(station.ae_title), modality_of(lab, station), f"L{tag}", pid=f"PL{tag}", name="PACSLAB^POSED", control=f"CL{tag}")
    stream = f"PROXY TCP4 {sender.address} {ris.address} 40999 2575\r\n\x0b{order}\x1c\r"
    inner = str(role_var(lab, ris.name, "ris", "ris_hl7_inner_port"))
    uid = im.exec_in(lab, ris.name, "id", "-u", "orthanc").strip()
    since = utc_now()
    answered = im.exec_in(lab, ris.name, "runuser", "-u", "orthanc", "--", "python3", "-c", _LOCAL_SENDER, inner, input=stream).strip()
    refused = wait_for("the listener's refusal at the siem", lambda: [
        e for e in siem_json(lab, "events", "--contains", f"the connecting socket is uid {uid}'s")
        if e["host"] == ris.name and e["time"] >= since])
    worklist = {i["accession"] for i in im.dicomsim(lab, station.name, "worklist", "--peer", ris.name)["items"]}
    evidence.update(answered_bytes=answered, refused=refused)
    assert answered == "0"
    assert [(e["source"], e["event_type"], e["outcome"], e["src_ip"]) for e in refused] == [
        ("hl7-orders", "hl7-connection-refused", "not-the-front", None)]
    assert f"L{tag}" not in worklist
    assert siem_json(lab, "events", "--contains", f"PL{tag}") == []


# ---------------------------------------------------------------------------------------------
# Vendors' maintenance windows (C-DET-08; roles/siem/files/rules/vendor-window.yml)


def _sign_ins(lab: Lab, user: str) -> dict[int, dict[str, Any]]:
    """The siem's events of ``user``'s successful sign-ins at the bastion, by id."""
    return {e["id"]: e for e in siem_json(lab, "events", "--contains", f"Accepted keyboard-interactive/pam for {user} from")
            if e["event_type"] == "ssh-login-success" and e["user"] == user}


def _signed_in(lab: Lab, plan: Plan, user: str) -> dict[str, Any]:
    """One session of ``user`` with their password and a code the bastion has not accepted, to the
    bastion's shell; the siem's event of that sign-in (the one that was not there before)."""
    before = set(_sign_ins(lab, user))
    session = login(lab, plan, user, code="now", commands=("id -un",))
    assert session["shell"], session["said"]
    new = wait_for(f"the sign-in of {user}", lambda: [e for i, e in _sign_ins(lab, user).items() if i not in before])
    assert len(new) == 1, new
    return new[0]


@pytest.mark.control("C-DET-08")
def test_a_vendor_signed_in_outside_a_maintenance_window_raises_vendor_outside_window_and_inside_one_does_not(
        running_lab: Lab, plan: Plan, capsys: pytest.CaptureFixture[str], evidence) -> None:
    """The enabled vendor signs in at the bastion with no window of theirs open: the siem stores the
    sign-in as outside-window and raises vendor-outside-window (medium) about the vendor and their
    computer, holding that sign-in alone. The twin: `pacslab maintenance open` for ten minutes, a
    second sign-in is stored with that window, and no alert holds it."""
    lab, user = running_lab, vendor(running_lab, "enabled").name
    now = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime())
    assert cli.main(["maintenance", "--json", "--lab", str(lab.path)]) == cli.EXIT_OK
    open_before = [w for ws in json.loads(capsys.readouterr().out).values() for w in ws if w["user"] == user and w["end"] > now]
    assert open_before == [], f"a maintenance window of {user} is open already (`pacslab maintenance end ID`): {open_before}"

    outside = _signed_in(lab, plan, user)
    raised = wait_for("vendor-outside-window", lambda: _alerts_of(lab, "vendor-outside-window", {outside["id"]}))

    assert cli.main(["maintenance", "open", user, "--minutes", "10", "--reason", f"pacslab check {RUN}", "--json",
                     "--lab", str(lab.path)]) == cli.EXIT_OK
    windows = {siem_host: a["window"] for siem_host, a in json.loads(capsys.readouterr().out).items()}
    try:
        inside = _signed_in(lab, plan, user)
        evaluated_after(lab, utc_now())
        quiet = _alerts_of(lab, "vendor-outside-window", {inside["id"]})
    finally:
        for window in windows.values():
            assert cli.main(["maintenance", "end", str(window), "--lab", str(lab.path)]) == cli.EXIT_OK
    evidence.update(outside=outside, alert=raised, window=windows, inside=inside, alerts_inside=quiet)
    client = str(lab.hosts[CLIENT].address)
    assert (outside["maintenance"], outside["src_ip"], outside["host"]) == ("outside-window", client, bastion(lab).name)
    assert len(raised) == 1 and (raised[0]["severity"], raised[0]["entities"], raised[0]["events"]) == (
        "medium", {"user": user, "src_ip": client}, [outside["id"]])
    assert inside["maintenance"] == f"window {windows[siem(lab).name]}"
    assert quiet == []


def _events_from(lab: Lab, since: int, source: str, event_type: str) -> list[dict[str, Any]]:
    """The siem's ``event_type`` events of ``source`` stored after event ``since`` (each record names its kind as "event_type")."""
    return [e for e in siem_json(lab, "events", "--since-id", str(since), "--contains", f'"{event_type}"')
            if e["source"] == source and e["event_type"] == event_type]


def _supervision_events(lab: Lab, since: int, event_type: str) -> list[dict[str, Any]]:
    """The records of the sources' watches over their programs."""
    return _events_from(lab, since, "supervision", event_type)


def _of_each(lab: Lab, since: int, event_type: str, programs: dict[str, str]) -> list[dict[str, Any]]:
    """Those records once they name each host's program of ``programs`` {host: program}; else []."""
    found = _supervision_events(lab, since, event_type)
    return found if {(e["host"], e["program"]) for e in found} >= set(programs.items()) else []


def _siem_said(lab: Lab, since: int, event_type: str) -> list[dict[str, Any]]:
    """The siem's own events (its detections', source pacslab-siem)."""
    return _events_from(lab, since, "pacslab-siem", event_type)


# The siem's own events about its sources and its ingest (Silences)
SILENT_KINDS = ("log-source-silent", "log-source-resumed", "ingest-stalled", "ingest-resumed")


def _newest_watch_record(lab: Lab) -> int:
    """The id of the newest record of the watches' programs (program-down, program-up) or of the
    siem's own word about its sources and its ingest: the checks below read only what comes after."""
    watches = [e["id"] for kind in ("program-down", "program-up") for e in _supervision_events(lab, 0, kind)]
    said = [e["id"] for kind in SILENT_KINDS for e in _siem_said(lab, 0, kind)]
    return max(watches + said, default=0)


@pytest.mark.control("C-PRT-01")
@pytest.mark.control("C-PRT-04")
def test_a_watch_that_stays_stopped_raises_monitoring_down_and_a_source_that_falls_silent_log_source_silent(running_lab: Lab,
                                                                                                           evidence) -> None:
    """Every log source's watch over its supervised programs (pacslab-supervision, a supervisor
    event listener; AU-5) and the siem's ear for the watches' heartbeats, all at one moment (one
    wait serves both rules):
    - the PACS's host watch (hids) stopped: once the grace (30 s) has passed, its record names
      hids, stopped, and raises monitoring-down (high) about the PACS and hids;
    - the reading workstation's storage SCP stopped: its record names storage-scp, stopped, and no
      monitoring-down holds it (a clinical service's stop is stored, no watch's);
    - the VNA's host watch restarted (supervisorctl): no record at all;
    - the siem's console stopped: the siem's own watch's record names it, stopped, and raises
      monitoring-down (high) about the siem and its console;
    - the MR's rsyslogd stopped: nothing of the MR reaches the siem. Once its watch's heartbeat
      (every 15 s) has not been heard for siem_silent_after (45 s), the siem's own
      log-source-silent event about the MR raises log-source-silent (high) about it, while the
      CT, shipping on, is never silent.
    Started again: hids', storage-scp's and the console's program-up; what the MR's watch wrote meanwhile
    arrives, its program-down of rsyslogd among it (monitoring-down about the MR and rsyslogd), and
    log-source-resumed names the silence's length."""
    lab = running_lab
    pacs, vna = pacs_of(lab), the(lab, "vna_servers")
    reading = [h for h in lab.deployed_hosts() if "workstations" in h.groups and h.name in sources(lab)]
    shipping = [h for h in lab.deployed_hosts() if "modalities" in h.groups and h.name in sources(lab) and h.zone != "legacy"]
    if not {pacs.name, vna.name} <= set(sources(lab)) or not reading or len(shipping) < 2:
        pytest.skip(f"lab {lab.name!r} ships no PACS, VNA, reading workstation and two modalities to its siem")
    workstation, quiet, other = reading[0], shipping[-1], shipping[0]
    after = int(json.loads(im.exec_in(lab, siem(lab).name, "cat", "/etc/pacslab/siem/assets.json"))["silent_after"])  # as deployed
    since = _newest_watch_record(lab)
    stopped = {pacs.name: "hids", workstation.name: "storage-scp", siem(lab).name: "pacslab-siem-console"}
    began, clock = utc_now(), time.monotonic()
    try:
        assert im.exec_in(lab, quiet.name, "supervisorctl", "stop", "rsyslogd").strip() == "rsyslogd: stopped"
        try:
            for host, program in stopped.items():
                assert im.exec_in(lab, host, "supervisorctl", "stop", program).strip() == f"{program}: stopped"
            im.exec_in(lab, vna.name, "supervisorctl", "restart", "hids")
            wait_for("the PACS's, the workstation's and the siem's program-down", lambda: _of_each(lab, since, "program-down", stopped))
        finally:  # each started again whatever failed (supervisorctl start of a running program answers 0 too)
            for host, program in stopped.items():
                im.exec_in(lab, host, "supervisorctl", "start", program, check=False)
        time.sleep(max(0.0, after - (time.monotonic() - clock)))
        silent = wait_for(f"{quiet.name}'s log-source-silent", lambda: [e for e in _siem_said(lab, since, "log-source-silent")
                                                                        if e["host"] == quiet.name])[0]
    finally:
        im.exec_in(lab, quiet.name, "supervisorctl", "start", "rsyslogd", check=False)
    up = wait_for("the three programs' program-up", lambda: _of_each(lab, since, "program-up", stopped))
    resumed = wait_for(f"{quiet.name}'s log-source-resumed", lambda: [e for e in _siem_said(lab, since, "log-source-resumed")
                                                                      if e["host"] == quiet.name])[0]
    late = wait_for(f"{quiet.name}'s program-down of rsyslogd", lambda: [e for e in _supervision_events(lab, since, "program-down")
                                                                         if (e["host"], e["program"]) == (quiet.name, "rsyslogd")])[0]
    evaluated_after(lab, utc_now())
    down = _supervision_events(lab, since, "program-down")  # read again: a record of the VNA's would be here by now
    [watch] = [e for e in down if (e["host"], e["program"]) == (pacs.name, "hids")]
    [service] = [e for e in down if (e["host"], e["program"]) == (workstation.name, "storage-scp")]
    [console] = [e for e in down if (e["host"], e["program"]) == (siem(lab).name, "pacslab-siem-console")]
    raised = _alerts_of(lab, "monitoring-down", {watch["id"]})
    console_alerts = _alerts_of(lab, "monitoring-down", {console["id"]})
    service_alerts = _alerts_of(lab, "monitoring-down", {service["id"]})
    restarted = [e for e in down + up if e["host"] == vna.name]
    silent_alert = _alerts_of(lab, "log-source-silent", {silent["id"]})
    stop_alert = _alerts_of(lab, "monitoring-down", {late["id"]})
    others = [e for e in _siem_said(lab, since, "log-source-silent") if e["host"] == other.name]
    stalls = _siem_said(lab, since, "ingest-stalled")  # the siem's ingest stored on: the MR's silence is the MR's alone
    said = json.loads(silent["message"])
    evidence.update(down=down, up=up, alert=raised, service_alerts=service_alerts, console_alerts=console_alerts, silent=silent,
                    resumed=resumed, late=late, silent_alert=silent_alert, stop_alert=stop_alert, other_silent=others, stalls=stalls)
    # monitoring-down: a watch's stop raises it, a clinical service's and a restart do not
    assert (watch["outcome"], service["outcome"], console["outcome"]) == ("stopped", "stopped", "stopped")
    assert len(raised) == 1 and (raised[0]["severity"], raised[0]["entities"]) == ("high", {"host": pacs.name, "program": "hids"})
    assert len(console_alerts) == 1 and (console_alerts[0]["severity"], console_alerts[0]["entities"]) == (
        "high", {"host": siem(lab).name, "program": "pacslab-siem-console"})
    assert service_alerts == [] and restarted == []
    assert {(e["host"], e["program"], e["outcome"]) for e in up} >= {(pacs.name, "hids", "running"), (workstation.name, "storage-scp", "running"),
                                                                      (siem(lab).name, "pacslab-siem-console", "running")}
    # log-source-silent: declared once the ingest had got the silence past the MR's last record, written before the stop
    declared, last_heard = _stamp(silent), datetime.fromisoformat(said["last_heard"].replace("Z", "+00:00"))
    assert last_heard < datetime.fromisoformat(began.replace("Z", "+00:00")) + timedelta(seconds=5), said
    assert (declared - last_heard).total_seconds() > after, said
    assert len(silent_alert) == 1 and (silent_alert[0]["severity"], silent_alert[0]["entities"]) == ("high", {"host": quiet.name})
    assert others == [] and stalls == []
    assert late["id"] > silent["id"] and late["outcome"] == "stopped"
    assert len(stop_alert) == 1 and stop_alert[0]["entities"] == {"host": quiet.name, "program": "rsyslogd"}
    assert resumed["id"] > silent["id"] and json.loads(resumed["message"])["last_heard"] == said["last_heard"]


@pytest.mark.control("C-PRT-01")
@pytest.mark.control("C-DET-02")
def test_a_siem_that_stores_nothing_raises_ingest_stalled_while_it_lasts_and_calls_no_source_silent_for_it(running_lab: Lab,
                                                                                                          evidence) -> None:
    """The siem's own rsyslogd stopped: nothing any source sends is stored (AU-5 of the siem
    itself). Once no other host's record has been stored for siem_silent_after (45 s), the
    detections' own ingest-stalled event about the siem raises ingest-stalled (high)
    about it while rsyslogd is still stopped, naming the last record stored before the stop.
    Started again: ingest-resumed names the stall's length from that record; the siem's watch's
    program-down of its rsyslogd arrives and raises monitoring-down; and once every source's watch
    has been heard again, none was called silent for the siem's own outage (the senders do not all
    send again in the same second). The twin, a source's shipping stopped while the siem stores on,
    is no stall: the check above.
    The same wait serves a rescan of the PACS with its clamd stopped for the whole pass (the twin
    of test_a_rescan_waits_for_a_restarting_clamd): it ends incomplete after
    orthanc_malware_rescan_patience seconds, with one malware-rescan-failed event saying clamd did
    not answer, which reaches the siem once it stores again and raises dicom-security-alert
    (medium) about the PACS."""
    lab = running_lab
    host = siem(lab)
    assets = json.loads(im.exec_in(lab, host.name, "cat", "/etc/pacslab/siem/assets.json"))
    after, watches = int(assets["silent_after"]), set(assets["watches"])
    pacs = next((h.name for h in lab.deployed_hosts() if "pacs_servers" in h.groups), None)  # the rescan's; the stall needs none
    patience = int(role_var(lab, pacs, "orthanc", "orthanc_malware_rescan_patience")) if pacs else 0
    since = _newest_watch_record(lab)
    began, clock = datetime.fromisoformat(utc_now().replace("Z", "+00:00")), time.monotonic()
    with ThreadPoolExecutor(max_workers=1) as pool:
        rescan = None
        try:
            try:
                assert im.exec_in(lab, host.name, "supervisorctl", "stop", "rsyslogd").strip() == "rsyslogd: stopped"
                rescan = pool.submit(_rescan_with_clamd_away, lab, pacs, patience, None) if pacs else None
                time.sleep(max(0.0, after - (time.monotonic() - clock)))  # the stall cannot come sooner: WAIT is for what follows
                stalled = wait_for("the siem's ingest-stalled", lambda: _siem_said(lab, since, "ingest-stalled"))
                alert = wait_for("the ingest-stalled alert", lambda: _alerts_of(lab, "ingest-stalled", {e["id"] for e in stalled}))
                status = im.exec_in(lab, host.name, "supervisorctl", "status", "rsyslogd", check=False).split()
            finally:
                im.exec_in(lab, host.name, "supervisorctl", "start", "rsyslogd", check=False)
        except Exception as failure:  # the rescan's own outcome too (it ends within patience + 120 s)
            if rescan is not None:
                failure.add_note(f"the rescan with clamd away meanwhile: {rescan.exception()!r}")
            raise
        away, away_events = rescan.result() if rescan else ({}, [])
    resumed = wait_for("the siem's ingest-resumed", lambda: _siem_said(lab, since, "ingest-resumed"))
    late = wait_for("the siem's program-down of its rsyslogd", lambda: [e for e in _supervision_events(lab, since, "program-down")
                                                                        if (e["host"], e["program"]) == (host.name, "rsyslogd")])
    stop_alert = wait_for("monitoring-down about the siem's rsyslogd", lambda: _alerts_of(lab, "monitoring-down", {late[0]["id"]}))
    heard = wait_for("every source's watch heard again", lambda: (lambda found: found if found >= watches else set())(
        {e["host"] for e in _supervision_events(lab, resumed[0]["id"], "supervision-alive")}))
    failed = [e for e in away_events if e["event"] == "malware-rescan-failed"]
    shipped = wait_for("the failed rescan in the siem", lambda: [
        e for e in siem_json(lab, "events", "--contains", "malware-rescan-failed")
        if e["host"] == pacs and json.loads(e["message"]) == failed[0]]) if len(failed) == 1 else []
    scan_alert = wait_for("dicom-security-alert", lambda: _alerts_of(lab, "dicom-security-alert", {shipped[0]["id"]})) if shipped else []
    evaluated_after(lab, utc_now())
    silent = _siem_said(lab, since, "log-source-silent")
    said, again = json.loads(stalled[0]["message"]), json.loads(resumed[0]["message"])
    evidence.update(stalled=stalled, alert=alert, status=status, resumed=resumed, late=late, stop_alert=stop_alert, heard=sorted(heard),
                    silent=silent, away={k: away[k] for k in ("scanned", "complete") if k in away}, failed=failed, scan_alert=scan_alert)
    assert status[:2] == ["rsyslogd", "STOPPED"], status  # the alert was raised while the ingest was down
    assert [(e["host"], e["outcome"].split()[0]) for e in stalled] == [(host.name, "stalled")]
    last = datetime.fromisoformat(said["last_heard"].replace("Z", "+00:00"))
    assert last < began + timedelta(seconds=5) and said["seconds"] > after, said
    assert len(alert) == 1 and (alert[0]["severity"], alert[0]["entities"]) == ("high", {"host": host.name})
    assert [e["host"] for e in resumed] == [host.name] and again["last_heard"] == said["last_heard"] and again["seconds"] > after
    assert late[0]["outcome"] == "stopped"
    assert len(stop_alert) == 1 and stop_alert[0]["entities"] == {"host": host.name, "program": "rsyslogd"}
    assert silent == [], "a source called silent for the siem's own outage"
    if pacs is None:
        return  # no PACS: the stall alone
    # the rescan with clamd away the whole pass
    assert (away["complete"], away["scanned"]) == (False, 0)
    assert [e["event"] for e in away_events] == ["malware-rescan-failed", "malware-rescanned"]
    assert failed[0]["error"].startswith(f"clamd did not answer within {patience} s (")
    assert len(scan_alert) == 1 and (scan_alert[0]["severity"], scan_alert[0]["entities"]["host"]) == ("medium", pacs)


@pytest.mark.control("C-PRT-01")
def test_a_watch_s_record_through_the_bastion_s_syslog_socket_is_forged_and_raises_nothing(running_lab: Lab, evidence) -> None:
    """On the bastion, where vendors have shells, a program-down record of rsyslogd written with
    `logger -t supervision` (the local syslog socket, not the watch's file) reaches the siem as
    forged-source under forged-supervision, naming no program; no monitoring-down holds it. The
    same line written on the siem itself, first, only reaches the siem's own syslog file: the store
    holds nothing of it once the bastion's has arrived."""
    lab = running_lab
    host, collector = bastion(lab).name, siem(lab).name
    forged, local = f"rsyslogd-{RUN}", f"pacslab-siem-evaluate-{RUN}"
    im.exec_in(lab, collector, "logger", "-t", "supervision", json.dumps({"event": "program-down", "program": local, "state": "STOPPED"}))
    im.exec_in(lab, host, "logger", "-t", "supervision", json.dumps({"event": "program-down", "program": forged, "state": "STOPPED"}))
    event = wait_for("the forged record at the siem", lambda: [e for e in siem_json(lab, "events", "--contains", forged)
                                                               if e["host"] == host])[0]
    evaluated_after(lab, utc_now())
    held = _alerts_of(lab, "monitoring-down", {event["id"]})
    stored_local = siem_json(lab, "events", "--contains", local)
    in_syslog = im.exec_in(lab, collector, "grep", "-c", local, "/var/log/pacslab/syslog.log", check=False).strip()
    evidence.update(event=event, alerts=held, stored_local=stored_local, in_siem_syslog=in_syslog)
    assert (event["source"], event["event_type"], event["program"]) == ("forged-supervision", "forged-source", None)
    assert held == []
    assert stored_local == [] and in_syslog == "1"
