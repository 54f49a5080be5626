#!/usr/bin/env python3
"""Detection latency benchmark (issue 13, C-DET-06, C-PRT-01): how long the lab's SIEM takes from an
attack to its alert, and how many events a second its pipeline takes.

brute-force  --runs times, five wrong SSH passwords from the vendor engineer's computer to the
             bastion (user names of the run, pacslab.probes.ssh): seconds from the first attempt's
             start and from the fifth failure's end to the ssh-brute-force alert holding all five
             events; p50 and p95. Alerts of one address grow while the rule keeps firing, so each
             run waits for the alert to hold its own five events. The guessing is in a window of
             authorised activity: the maintenance measure's sign-ins from that computer would be a
             break-in after it (brute-force-success), which quarantines the computer.
break-in     --runs times each, five sign-ins under user names of the run that nobody has, then a
             person's own (password and TOTP code) from the same computer: at the bastion from the
             vendor engineer's computer (the vendor; brute-force-success), at the IdP from the
             technologists' workstation (the radiologist; idp-brute-force-success): seconds from
             the sign-in's end to the alert holding it, and to the computer in the fw's quarantine
             (the alert contains it, C-RSP-02); p50 and p95. The computer is released after each
             run (the next run's break-in continues the alert, which decides again; a sign-in
             alone after the release does not). Also, before the sign-in: seconds from the fifth
             refusal's end to the guessing alert holding the five (ssh-brute-force at the bastion,
             idp-brute-force at the IdP).
integrity    --runs times, scenario W4 in the defended lab (a byte flipped in a stored CT image on
             the PACS, then the integrity job): seconds from the job's answer to the
             integrity-failure alert holding the PACS's event about that instance; p50 and p95.
audit        --runs times, each DICOM audit message the imaging work writes (PS3.15 A.5): a CT image
             stored on the PACS over DICOM TLS (Instances Transferred), the reading workstation's
             C-FIND for it (Query), a C-STORE the PACS refuses, its UID a path (Security Alert), and
             the study's deletion afterwards (Study Deleted): seconds from each action's answer to
             its message in the siem's store; p50 and p95 of each (the issue's budget: 10 s).
port-scan    --runs times, nine ports of the VNA tried at once by the CT (pacslab.probes.portscan,
             source ports of the run): seconds from the scan's start to the port-scan alert
             holding the run's drops, and to the CT in the fw's quarantine (the siem's decision,
             pulled by the fw); p50 and p95. The CT is released after each run; a run within a
             minute of the last continues its alert, which decides again after the release.
compromised-modality --runs times, the CT first calls the PACS with an AE title of the run (no lab
             host has it), then scans as in port-scan: seconds from the scan's start to the
             compromised-modality alert holding Orthanc's line about that association and the
             run's drops (C-DET-06), and to the quarantine (port-scan's); p50 and p95.
unknown-ae   --runs times, a C-ECHO to the PACS from the CT calling itself with an AE title of the run
             (no lab host has it): seconds from the rejection (A-ASSOCIATE-RJ) to the unknown-ae
             alert holding Orthanc's line about that association (the catalogue's budget: 30 s),
             and to the dicom-access-denied alert holding its line about the rejection; p50 and p95.
ae-impersonation --runs times, a C-ECHO to the PACS from the legacy device calling itself by the
             CT's AE title, refused by the PACS (not the title's registered address): seconds from
             the rejection to the dicom-ae-impersonation alert holding the overlay gateway's record
             of it on the legacy segment (dicom-wire, lab-ae-from-another-address) stored after the
             run began; p50 and p95.
security-alert --runs times, a C-STORE from the CT whose SOP Instance UID is a path of the run, refused
             by the PACS: seconds from the refusal to the dicom-security-alert alert holding the
             PACS's invalid-uid-refused event; p50 and p95.
device-anomaly --runs times, the CT tries the VNA's SSH port (outside its baseline flows; dropped) from a
             source port of the run: seconds from the try to the device-anomaly alert holding the
             fw's drop; p50 and p95.
ids          --runs times each, from the CT to the PACS's DICOM TLS port: an association without TLS
             (ids-cleartext-dicom), a TLS 1.1 hello (ids-weak-tls), 25 connections at once
             (ids-scan): seconds from the provocation's end to the alert holding the sensor's record
             of its signature (Suricata's EVE, shipped by the sensor); p50 and p95 of each.
malware      --runs times, a CT image carrying the EICAR test file in a private element stored on the
             PACS by the CT (refused, 0x0124): seconds from the refusal to the malware-detected
             alert holding the PACS's event about that accession (C-DET-02); p50 and p95.
maintenance  --runs times, a vendor's session (password and TOTP code at the bastion from the vendor
             engineer's computer, `maint pacs`, a mark of the run typed there, a refused
             `sudo cat /etc/shadow`): seconds from the session's end to the siem's store holding every
             record of the session the bastion holds (C-MNT-01 (c), the catalogue's budget: 30 s), and from
             sudo's line on the PACS to its record in the siem and to the sudo-refused alert holding
             it (C-MNT-02, the catalogue's budget for the record: 10 s), and from the bastion's
             line about the vendor's sign-in to the vendor-outside-window alert holding it (no
             maintenance window is open: C-DET-08); p50 and p95. A TOTP code of a later step
             each session (a code is accepted once).
unknown-device --runs times, a container that sends nothing started in the modality zone at an
             address of its own (no lab host has it; the fw as its default route, as a device set up
             for the zone has): seconds from its start to the unknown-device alert holding the
             scanner's record of that address (roles/scanner sweeps every 30 s; the catalogue's
             budget: 60 s) and to the fw's quarantine of the address (the alert contains it); p50
             and p95. The container is removed and its address released after each run.
legacy-rogue --runs times, a container plugged into the legacy segment at an address of its own
             opens a TCP connection to the overlay gateway's tunnel to the PACS, which its allow-list
             closes: seconds from the close to the unknown-device alert holding the gateway's
             refusal (shipped as overlay-gateway; no sweep covers that zone) and to the fw's
             quarantine of the address; p50 and p95. Removed and released after each run.
host-watch   --runs times, on the PACS as Orthanc's user: a copy of sleep run from /tmp, then a
             program listening on a port of the run that the lab does not give the PACS: seconds
             from each start to the unexpected-exec and the unexpected-listener alert holding the
             host watch's event about it (roles/orthanc pacslab-hids, C-PRT-04 and C-DET-03; the
             catalogue's budget for a new binary: 30 s); p50 and p95. Both end, the file is removed.
archive-rescan --runs times, the CT stores an image carrying bytes of the run that no signature
             knows; a signature for them then reaches the PACS's clamd, and the PACS rescans what
             it holds (POST /pacslab/rescan, what its hourly pass runs; C-DET-02): milliseconds of
             the rescan per stored instance, and seconds from its answer to the malware-in-archive
             alert holding the PACS's event about the image; p50 and p95. The signature and the
             study are removed afterwards.
bulk-access  --runs times, twenty studies stored by the CT for the run, then read from the PACS by
             a person named for the run as the proxy forwards a signed-in radiologist (the proxy's
             account and certificate, WADO-RS), one after another: seconds from the twentieth read's
             answer to the bulk-access alert about that person (twenty different studies in ten
             minutes, the rule's threshold); p50 and p95. The studies are deleted afterwards.
off-hours-deletion --runs times, the lab's administrator deletes a study the CT stored for the run:
             seconds from the deletion's answer to the off-hours-deletion alert holding its DICOM
             Study Deleted message (C-DET-07); p50 and p95. Only outside the siem's working hours:
             on-hours, the deletion rightly raises nothing, and the measure says so.
weak-tls-service --runs times, a server accepting TLS 1.0 only planted on the MR's port 443 (as the
             integration check plants it), then the scanner's own scan of the MR (its program, as
             its user, --once): seconds from the scan's end to the weak-tls-service alert holding
             the scan's finding (C-RSK-02); p50 and p95. The server is ended afterwards.
vulnerability-scan-failed --runs times, the scanner's program run once with a copy of its
             configuration whose timeout nmap cannot meet (0.01 s): seconds from its end to the
             vulnerability-scan-failed alert holding the scan's failure (C-DET-04); p50 and p95.
             The copy is removed afterwards.
ldap-brute-force --runs times, five binds under names of the run with a wrong password, from the
             PACS's network namespace to the directory over LDAPS (pacslab.probes.ldap, as the
             integration check binds): seconds from the fifth refusal (its ldap-bind event's time)
             to the ldap-brute-force alert's update that made it hold the five (the siem's stamp,
             the same machine's clock; C-DET-06); p50 and p95. Alerts of one address grow while
             the rule keeps firing, so each run waits for the alert to hold five events newer than
             its start, then checks they are its refusals.
audit-trail-failure --runs times, the IdP's audit file made read-only to its writers, then a name
             of the run that nobody has typed at the IdP from the technologists' workstation (in a
             window of authorised activity): seconds from the portal's refusal to the
             audit-trail-failure alert holding the reader's audit-failed event about that name
             (AU-5, C-PRT-01); p50 and p95. The file's mode is put back after each run. Five runs
             are five refused names from one address: idp-brute-force rightly fires too.
untraceable-deletion-refused --runs times, the lab's REST administrator (from the PACS itself, as
             the lab's tooling calls it) asks the PACS to merge into a study named by the run, which
             the PACS refuses to every account (403) before it looks the study up: seconds from the
             answer to the untraceable-deletion-refused alert holding its access decision (AU-9,
             C-PRT-01); p50 and p95. Nothing is stored or removed.
monitoring-down --runs times, the PACS's host watch stopped (supervisorctl stop hids): seconds from
             the stop to the monitoring-down alert holding the PACS's program-down record of hids
             newer than the run (roles/log_shipping pacslab-supervision: reported once it has been
             down for the grace, 30 s, looked at every 5 s; AU-5, C-PRT-01, C-PRT-04); p50 and p95.
             hids is started again after each run, and the run waits for its program-up.
log-source-silent --runs times, the MR's shipping stopped (supervisorctl stop rsyslogd): seconds
             from the stop to the log-source-silent alert holding the siem's own event about the MR
             newer than the run (its watch's heartbeat, every 15 s, not heard for 45 s; AU-5,
             C-PRT-01); p50 and p95. rsyslogd is started again after each run, and the run waits
             for the siem's log-source-resumed about the MR.
ingest-stalled --runs times, the siem's own rsyslogd stopped (its ingest: supervisorctl stop
             rsyslogd on the siem): seconds from the stop to the ingest-stalled alert holding the
             siem's own event about itself newer than the run (no other host's record stored for
             45 s, three heartbeats of every source; AU-5, C-PRT-01); p50 and p95. rsyslogd is
             started again after each run, and the run waits for the siem's ingest-resumed.
ingest       --messages RFC 5424 messages sent by the bastion (a log source) over one TLS session
             with its lab certificate, as fast as the connection takes them: seconds until the
             siem's store holds the last one, and events per second.

The integrity and audit runs leave nothing behind (W4's reset; the study deleted), nor do the
bulk-access, off-hours-deletion, weak-tls-service and vulnerability-scan-failed runs, the
port-scan run (the CT released) and the unknown-device and legacy-rogue runs (the container
removed, its address released). A benchmark, not a test: it asserts nothing; results are
appended to bench/results/detection_latency.jsonl.

    python3 bench/detection_latency.py [--lab inventories/default] [--runs 5] [--messages 2000] [--only MEASURE ...]
"""

from __future__ import annotations

import argparse
import base64
import json
import secrets
import statistics
import sys
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from xml.etree import ElementTree

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from bench.record import append_result  # noqa: E402
from pacslab import listeners, people, response  # noqa: E402
from pacslab.docker import docker  # noqa: E402
from pacslab.plan import LABEL_LAB, LABEL_ROLE, SIEM_USER, SIEMS, Plan, build_plan  # noqa: E402
from pacslab.probes import clamd, hostwatch, ldap, oidc, portscan, ssh, vulnscan  # noqa: E402
from pacslab.probes import imaging as im  # noqa: E402
from pacslab.probes.https import basic_auth  # noqa: E402
from pacslab.topology import Host, Lab, load_lab, safe_load  # noqa: E402

RESULTS = REPO / "bench" / "results" / "detection_latency.jsonl"
CLIENT, BASTION = "vendor-eng", "bastion"
GUESSER = "ws-tech"  # the break-in at the IdP comes from the technologists' workstation (flow F10b)
WAIT = 120
MEASURES = ("brute-force", "break-in", "port-scan", "compromised-modality", "integrity", "audit", "unknown-ae", "ae-impersonation",
            "security-alert",
            "device-anomaly", "ids", "malware", "maintenance", "unknown-device", "legacy-rogue", "host-watch", "archive-rescan", "bulk-access",
            "off-hours-deletion", "weak-tls-service", "vulnerability-scan-failed", "ldap-brute-force", "audit-trail-failure",
            "untraceable-deletion-refused", "monitoring-down", "log-source-silent", "ingest-stalled", "ingest")
# The EICAR anti-malware test file (eicar.org), as the lab's own signature for it holds it.
EICAR_HEX = "".join(next(s for s in safe_load((REPO / "roles" / "orthanc" / "defaults" / "main.yml").read_text())["orthanc_malware_signatures"]
                         if s["name"] == "Pacslab.Test.EICAR")["hex"].split())

# Runs on the log source: one JSON line on stdin, {address, port, tag, rate, count}; one TLS session
# with the host's leaf certificate, octet-counted RFC 5424 messages "<tag> <n>". rate 0: as fast as
# the connection takes them; else that many a second (a batch every 10 ms). count: how many; null:
# until the next line on stdin (or its end). Prints how many it sent and the seconds the sending took.
FLOOD = r"""
import json, select, socket, ssl, sys, time
req = json.loads(sys.stdin.readline())
ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
ctx.check_hostname = False
ctx.verify_mode = ssl.CERT_NONE
ctx.load_cert_chain("/etc/pacslab/tls/node.crt", "/etc/pacslab/tls/node.key")
conn = ctx.wrap_socket(socket.create_connection((req["address"], req["port"]), timeout=30))
def message(n):
    msg = f"<38>1 {time.strftime('%Y-%m-%dT%H:%M:%SZ', time.gmtime())} bastion pacslab-bench - - - {req['tag']} {n}".encode()
    return str(len(msg)).encode() + b" " + msg
start, sent, count = time.monotonic(), 0, req.get("count")
while count is None or sent < count:
    if count is None and select.select([sys.stdin], [], [], 0)[0]:
        break
    due = sent + 1 if not req["rate"] else int((time.monotonic() - start) * req["rate"])
    if count is not None:
        due = min(due, count)
    if due > sent:
        conn.sendall(b"".join(message(n) for n in range(sent, due)))
        sent = due
    if req["rate"]:
        time.sleep(0.01)
conn.close()
print(json.dumps({"sent": sent, "seconds": time.monotonic() - start}))
"""


def siem_rows(lab: Lab, siem: str, *args: str) -> list[dict[str, Any]]:
    proc = docker("exec", "-u", SIEM_USER, lab.container_name(siem), "pacslab-siem", *args, "--json", timeout=120)
    rows: list[dict[str, Any]] = json.loads(proc.stdout)
    return rows


def count(lab: Lab, siem: str, text: str) -> int:
    out = im.exec_in(lab, siem, "runuser", "-u", SIEM_USER, "--", "python3", "-c",
                     "import sqlite3,sys; print(sqlite3.connect('file:/var/lib/pacslab-siem/events.sqlite?mode=ro', uri=True)"
                     ".execute('SELECT count(*) FROM events WHERE instr(message, ?) > 0', (sys.argv[1],)).fetchone()[0])", text)
    return int(out.strip())


def last_event(lab: Lab, siem: str) -> int:
    """The id of the newest event in the siem's store (0 when it is empty)."""
    out = im.exec_in(lab, siem, "runuser", "-u", SIEM_USER, "--", "python3", "-c",
                     "import sqlite3; print(sqlite3.connect('file:/var/lib/pacslab-siem/events.sqlite?mode=ro', uri=True)"
                     ".execute('SELECT coalesce(max(id), 0) FROM events').fetchone()[0])")
    return int(out.strip())


def bastion_key(plan: Plan) -> str:
    """The bastion's public host key the lab generated ("ssh-ed25519 AAAA...")."""
    return " ".join((Path(plan.secrets_dir) / f"ssh-host-{BASTION}.pub").read_text().split()[:2])


def wrong_password(lab: Lab, plan: Plan, user: str) -> None:
    ssh.session(lab, CLIENT, BASTION, user, known_host_key=bastion_key(plan), notice="", password="bench-wrong", code=None)


def vendor_session(lab: Lab, plan: Plan, who: str, commands: tuple[Any, ...]) -> dict[str, Any]:
    """A session of ``who`` from the vendor engineer's computer to the bastion with their password and
    a fresh TOTP code (people.fresh_totp: the next step's at once when the bastion took this one), running
    ``commands`` (pacslab.probes.ssh.session's answer)."""
    code = ssh.fresh_code(lab, BASTION, str(listeners.role_var(lab, BASTION, "bastion", "bastion_oath_file")), plan.secrets_dir, who)
    return ssh.session(lab, CLIENT, BASTION, who, known_host_key=bastion_key(plan),
                       notice=str(listeners.role_var(lab, BASTION, "bastion", "bastion_notice")),
                       password=people.password(plan.secrets_dir, who), code=code, commands=commands)


def brute_force(lab: Lab, plan: Plan, siem: str) -> dict[str, float]:
    tag = f"bench-{secrets.token_hex(3)}"
    users = [f"{tag}-{i}" for i in range(5)]
    start = time.monotonic()
    with response.authorised(lab, "bench: password guessing at the bastion", [str(lab.hosts[CLIENT].address)], by="pacslab-bench"):
        for user in users:
            wrong_password(lab, plan, user)
    fifth = time.monotonic()
    alerted = _guessing_alert(lab, siem, users, "ssh-login-failure", "ssh-brute-force")
    return {"from_start": fifth - start + alerted, "from_fifth": alerted}


def break_in(lab: Lab, plan: Plan, siem: str, where: str) -> dict[str, float]:
    """One break-in run (the docstring's break-in) at ``where``, "bastion" or "idp"."""
    users = [f"bench-{secrets.token_hex(3)}-{i}" for i in range(5)]
    if where == "bastion":
        client, rule, kind = CLIENT, "brute-force-success", "ssh"
        who = next(p for p in lab.people if "vendor" in p.roles and p.status() == "enabled").name
        for user in users:
            wrong_password(lab, plan, user)
        guessing = _guessing_alert(lab, siem, users, "ssh-login-failure", "ssh-brute-force")
        since = max((e["id"] for e in siem_rows(lab, siem, "events", "--contains", who)), default=0)
        result = vendor_session(lab, plan, who, ("id -un",))
        if not result["shell"]:
            raise SystemExit(f"{who} did not get in at the bastion: {result['said']}")
    else:
        client, rule, kind = GUESSER, "idp-brute-force-success", "idp"
        who = next(p for p in lab.people if "radiologist" in p.roles and p.status() == "enabled").name
        idp, rp = lab.group("idp_servers")[0].name, lab.group("reverse_proxies")[0].name
        rp_secret = (Path(plan.secrets_dir) / f"oidc-{rp}").read_text().split()[0]

        def flow(user: str, password: str, code: str | None) -> dict[str, Any]:
            return oidc.login(lab, client, f"https://{idp}", rp, f"https://{rp}/oidc/redirect", user=user, password=password, code=code,
                              client_secret=rp_secret)

        for user in users:
            flow(user, "bench-wrong", None)
        guessing = _guessing_alert(lab, siem, users, "idp-login-failure", "idp-brute-force")
        code = oidc.fresh_code(lab, idp, plan.secrets_dir, who)
        since = max((e["id"] for e in siem_rows(lab, siem, "events", "--contains", who)), default=0)
        result = flow(who, people.password(plan.secrets_dir, who), code)
        if "redirect" not in result:
            raise SystemExit(f"{who} did not get in at the IdP: {result['steps']}")
    ended = time.monotonic()
    address = str(lab.hosts[client].address)
    alerted = contained = None
    while time.monotonic() - ended < WAIT and contained is None:
        if alerted is None:
            signed = {e["id"] for e in siem_rows(lab, siem, "events", "--since-id", str(since), "--contains", who)
                      if e["event_type"] == f"{kind}-login-success" and e["src_ip"] == address}
            if signed and any(a["rule"] == rule and signed & set(a["events"]) for a in siem_rows(lab, siem, "alerts")):
                alerted = time.monotonic() - ended
        if alerted is not None and address in response.quarantined(lab):
            contained = time.monotonic() - ended
        time.sleep(0.25)
    response.release_when_settled(lab, address, "bench: the break-in was the benchmark's", by="pacslab-bench")
    if alerted is None or contained is None:
        raise SystemExit(f"{rule} from {client}: alert after {alerted} s, quarantine after {contained} s (waited {WAIT} s)")
    return {"guessing": guessing, "alert": alerted, "quarantine": contained}


def _guessing_alert(lab: Lab, siem: str, users: list[str], event_type: str, rule: str) -> float:
    """Seconds from now (the fifth refusal's end) until an alert of ``rule`` holds the refusals of
    the five ``users`` (``event_type`` events)."""
    fifth = time.monotonic()
    while time.monotonic() - fifth < WAIT:
        ids = {e["id"] for u in users for e in siem_rows(lab, siem, "events", "--contains", u) if e["event_type"] == event_type}
        if len(ids) >= len(users) and any(a["rule"] == rule and ids <= set(a["events"]) for a in siem_rows(lab, siem, "alerts")):
            return time.monotonic() - fifth
        time.sleep(0.25)
    raise SystemExit(f"no {rule} alert holding the run's {len(users)} refusals within {WAIT} s")


def ingest(lab: Lab, siem: str, messages: int) -> dict[str, float]:
    tag = f"bench-flood-{secrets.token_hex(3)}"
    target = lab.hosts[siem]
    request = {"address": str(target.address), "port": target.service("syslog-tls").port, "count": messages, "tag": tag, "rate": 0}
    start = time.monotonic()
    sent = json.loads(im.exec_in(lab, BASTION, "python3", "-c", FLOOD, input=json.dumps(request) + "\n", timeout=300))["seconds"]
    while time.monotonic() - start < WAIT * 5:
        if count(lab, siem, tag) >= messages:
            stored = time.monotonic() - start
            return {"messages": messages, "sent_seconds": round(sent, 2), "stored_seconds": round(stored, 2),
                    "events_per_second": round(messages / stored, 1)}
        time.sleep(0.5)
    raise SystemExit(f"the store did not hold the {messages} messages within {WAIT * 5} s")


def integrity(lab: Lab, siem: str) -> float:
    from pacslab import scenario as sc

    w4 = sc.find(lab, "W4")
    sc.reset_scenario(lab, w4)
    try:
        run = sc.run_scenario(lab, w4, "defended")
        answered = time.monotonic()
        instance = run["steps"][1]["result"]["instance"]
        took = seconds_to_alert(lab, siem, answered, instance, "integrity-failure", "integrity-failure")
        if took is None:
            raise SystemExit(f"no integrity-failure alert about {instance} within {WAIT} s")
        return took
    finally:
        sc.reset_scenario(lab, w4)


def audit(lab: Lab, siem: str) -> dict[str, float]:
    """One run of each DICOM audit message the lab's imaging work writes (PS3.15 A.5): seconds from
    the action's answer to the message in the siem's store."""
    pacs = next(h.name for h in lab.deployed_hosts() if "pacs_servers" in h.groups)
    station = next(h.name for h in lab.deployed_hosts() if "modalities" in h.groups and h.image == "dicom" and h.ae_title
                   and not any(p.get("via") for p in lab.host_vars[h.name].get("dicom_node_peers") or []))
    reader = next(h.name for h in lab.deployed_hosts() if "workstations" in h.groups and h.ae_title)
    accession = f"BENCH{secrets.token_hex(3).upper()}"

    def arrival(what: str, contains: str, event_type: str, since: float) -> float:
        while time.monotonic() - since < WAIT:
            if any(e["event_type"] == event_type for e in siem_rows(lab, siem, "events", "--contains", contains)):
                return time.monotonic() - since
            time.sleep(0.25)
        raise SystemExit(f"no {what} ({event_type}) holding {contains} within {WAIT} s")

    took: dict[str, float] = {}
    result = im.dicomsim(lab, station, "store", "--images", "1", "--accession", accession)
    study_uid = result["stored"][0]["study_uid"]
    try:
        took["instances_transferred"] = arrival("Instances Transferred", study_uid, "dicom-audit-instances-transferred", time.monotonic())
        # A Query message holds the identifier base64-encoded (A.5.3.10): the newest from the workstation
        ae = str(lab.hosts[reader].ae_title)
        known = {e["id"] for e in siem_rows(lab, siem, "events", "--contains", "110112")}
        im.dicomsim(lab, reader, "find", "--accession", accession)
        asked = time.monotonic()
        while not any(e["id"] not in known and e["event_type"] == "dicom-audit-query" and e["calling_ae"] == ae
                      for e in siem_rows(lab, siem, "events", "--contains", "110112")):
            if time.monotonic() - asked > WAIT:
                raise SystemExit(f"no Query message from {ae} within {WAIT} s")
            time.sleep(0.25)
        took["query"] = time.monotonic() - asked
        refused = f"../{accession}"
        im.dicomsim(lab, station, "store", "--images", "1", "--sop-instance-uid", refused)
        answered = time.monotonic()
        while not any(e["event_type"] == "dicom-audit-security-alert" and refused in _described(e["message"])
                      for e in siem_rows(lab, siem, "events", "--contains", "110113")):
            if time.monotonic() - answered > WAIT:
                raise SystemExit(f"no Security Alert naming {refused} within {WAIT} s")
            time.sleep(0.25)
        took["security_alert"] = time.monotonic() - answered
    finally:
        for study in im.find_study(lab, pacs, accession):
            im.orthanc(lab, pacs, f"/studies/{study}", "DELETE")
    took["study_deleted"] = arrival("Study Deleted", study_uid, "dicom-audit-study-deleted", time.monotonic())
    return took


def _described(message: str) -> str:
    """A Security Alert's description (A.5.3.11: ParticipantObjectDetail, base64 in the XML), "" if none."""
    try:
        detail = ElementTree.fromstring(message).find("ParticipantObjectIdentification/ParticipantObjectDetail")
        return base64.b64decode(detail.get("value", "")).decode(errors="replace") if detail is not None else ""
    except (ElementTree.ParseError, ValueError):
        return ""


SCANNED = (22, 104, 443, 2575, 4242, 5432, 8042, 11112, 3389)  # none of them a modality may reach on the VNA


def port_scan(lab: Lab, siem: str, correlate: bool = False) -> dict[str, float]:
    """One port-scan run; ``correlate``: the CT first offers the PACS an AE title of the run, and
    the run also waits for the compromised-modality alert (key "correlated")."""
    ct = next(h for h in lab.deployed_hosts() if "modalities" in h.groups and h.zone == "modality")
    vna = next(h for h in lab.deployed_hosts() if "vna_servers" in h.groups)
    base = 20000 + secrets.randbelow(400) * 100
    rogue = f"BENCH{secrets.token_hex(4).upper()}"
    if correlate and im.dicomsim(lab, ct.name, "echo", "--calling", rogue)["outcome"] != "rejected":
        raise SystemExit(f"the PACS did not reject {rogue}")
    start = time.monotonic()
    portscan.scan(lab, ct.name, str(vna.address), SCANNED, base)
    alerted = contained = correlated = None
    offered: set[int] = set()
    try:
        while time.monotonic() - start < WAIT and (contained is None or (correlate and correlated is None)):
            ours = {e["id"] for e in siem_rows(lab, siem, "events", "--contains", f'"src_ip": "{ct.address}"')
                    if e["src_port"] and base <= int(e["src_port"]) < base + len(SCANNED)}
            if correlate and not offered:
                offered = {e["id"] for e in siem_rows(lab, siem, "events", "--contains", rogue) if e["event_type"] == "dicom-association-received"}
            alerts = siem_rows(lab, siem, "alerts") if ours else []
            if alerted is None and any(a["rule"] == "port-scan" and ours & set(a["events"]) for a in alerts):
                alerted = time.monotonic() - start
            if correlate and correlated is None and offered and any(
                    a["rule"] == "compromised-modality" and ours & set(a["events"]) and offered & set(a["events"]) for a in alerts):
                correlated = time.monotonic() - start
            if alerted is not None and contained is None and str(ct.address) in response.quarantined(lab):
                contained = time.monotonic() - start
            time.sleep(0.25)
    finally:
        response.release(lab, ct.name, "benchmark run", by="pacslab-bench")
    if alerted is None or contained is None or (correlate and correlated is None):
        raise SystemExit(f"port-scan from {ct.name}: alert after {alerted} s, quarantine after {contained} s, "
                         f"compromised-modality after {correlated} s (waited {WAIT} s)")
    return {"alert": alerted, "quarantine": contained} | ({"correlated": correlated} if correlate else {})


def unknown_ae(lab: Lab, siem: str) -> dict[str, float]:
    """A C-ECHO to the PACS under an AE title of the run: seconds from the rejection to unknown-ae
    (the association received) and to dicom-access-denied (its rejection)."""
    ct = next(h for h in lab.deployed_hosts() if "modalities" in h.groups and h.zone == "modality")
    rogue = f"BENCH{secrets.token_hex(4).upper()}"
    result = im.dicomsim(lab, ct.name, "echo", "--calling", rogue)
    rejected = time.monotonic()
    if result["outcome"] != "rejected":
        raise SystemExit(f"the PACS did not reject {rogue}: {result}")
    wanted = {"unknown-ae": "dicom-association-received", "dicom-access-denied": "dicom-association-rejected"}
    took: dict[str, float] = {}
    while len(took) < len(wanted) and time.monotonic() - rejected < WAIT:
        events = siem_rows(lab, siem, "events", "--contains", rogue)
        alerts = siem_rows(lab, siem, "alerts") if events else []
        for rule, event_type in wanted.items():
            ids = {e["id"] for e in events if e["event_type"] == event_type}
            if rule not in took and ids and any(a["rule"] == rule and ids & set(a["events"]) for a in alerts):
                took[rule] = time.monotonic() - rejected
        time.sleep(0.25)
    if len(took) < len(wanted):
        raise SystemExit(f"about {rogue} within {WAIT} s: only {took}")
    return {"unknown_ae": took["unknown-ae"], "dicom_access_denied": took["dicom-access-denied"]}


def ae_impersonation(lab: Lab, siem: str) -> float:
    """One ae-impersonation run (the docstring's): seconds from the PACS's rejection to the alert."""
    gateway = next(h for h in lab.deployed_hosts() if "overlay_gateways" in h.groups)
    device = next(h for h in lab.deployed_hosts() if "modalities" in h.groups and h.zone == gateway.zone)
    title = str(next(h for h in lab.deployed_hosts() if "modalities" in h.groups and h.zone == "modality").ae_title)
    since = last_event(lab, siem)
    result = im.dicomsim(lab, device.name, "echo", "--peer", "pacs", "--calling", title)
    rejected = time.monotonic()
    if result["outcome"] != "rejected":
        raise SystemExit(f"the PACS did not reject {title} from the legacy segment: {result}")
    while time.monotonic() - rejected < WAIT:
        ids = {e["id"] for e in siem_rows(lab, siem, "events", "--since-id", str(since), "--contains", title)
               if (e["host"], e["source"], e["outcome"]) == (gateway.name, "dicom-wire", "lab-ae-from-another-address")}
        if ids and any(a["rule"] == "dicom-ae-impersonation" and ids & set(a["events"]) for a in siem_rows(lab, siem, "alerts")):
            return time.monotonic() - rejected
        time.sleep(0.25)
    raise SystemExit(f"no dicom-ae-impersonation about {title} from {device.name} within {WAIT} s")


def security_alert(lab: Lab, siem: str) -> float:
    """A C-STORE whose SOP Instance UID is a path of the run, refused by the PACS (0xC000): seconds
    from the refusal to the dicom-security-alert alert holding the PACS's invalid-uid-refused event."""
    ct = next(h for h in lab.deployed_hosts() if "modalities" in h.groups and h.zone == "modality")
    uid = f"../../tmp/bench-{secrets.token_hex(4)}"
    result = im.dicomsim(lab, ct.name, "store", "--images", "1", "--sop-instance-uid", uid)
    refused = time.monotonic()
    if result["stored"]:
        raise SystemExit(f"the PACS stored an object whose UID is {uid}: {result}")
    took = seconds_to_alert(lab, siem, refused, uid, "invalid-uid-refused", "dicom-security-alert")
    if took is None:
        raise SystemExit(f"no dicom-security-alert about {uid} within {WAIT} s")
    return took


def device_anomaly(lab: Lab, siem: str) -> float:
    """The CT tries the VNA's SSH port (no flow of its baseline allows it; dropped) from a source
    port of the run: seconds from the try's end to the device-anomaly alert holding the fw's drop."""
    ct = next(h for h in lab.deployed_hosts() if "modalities" in h.groups and h.zone == "modality")
    vna = next(h for h in lab.deployed_hosts() if "vna_servers" in h.groups)
    port = 24000 + secrets.randbelow(900) * 10
    if portscan.scan(lab, ct.name, str(vna.address), (22,), port) != ["unanswered"]:
        raise SystemExit(f"{ct.name} reached the VNA's SSH port")
    took = seconds_to_alert(lab, siem, time.monotonic(), f'"src_port": {port},', "fw-drop", "device-anomaly")
    if took is None:
        raise SystemExit(f"no device-anomaly about the drop from port {port} within {WAIT} s")
    return took


# The IDS's signatures (roles/sensor/files/pacslab.rules) and what provokes each from the CT toward
# the PACS's DICOM TLS port, with the siem's rule they raise.
IDS_RUNS = {
    "ids_cleartext_dicom": ("9000001", "ids-cleartext-dicom", ("echo", "--tls", "cleartext")),
    "ids_weak_tls": ("9000011", "ids-weak-tls", ("echo", "--tls-version", "TLSv1_1")),
    "ids_scan": ("9000021", "ids-scan", None),  # 25 connections at once
}


def ids(lab: Lab, siem: str, key: str) -> float:
    """One IDS_RUNS[key] from the CT: seconds from its end to the siem's alert holding the sensor's
    record of that signature about the CT, stored since the run began."""
    sid, rule, args = IDS_RUNS[key]
    ct = next(h for h in lab.deployed_hosts() if "modalities" in h.groups and h.zone == "modality")
    pacs = next(h for h in lab.deployed_hosts() if "pacs_servers" in h.groups)
    seen = f'"src_ip":"{ct.address}"'
    since = max((e["id"] for e in siem_rows(lab, siem, "events", "--contains", seen)), default=0)
    if args is None:
        time.sleep(10)  # the sensor alerts once per address and 10 s (threshold type both): a burst sooner would be no new alert
        portscan.scan(lab, ct.name, str(pacs.address), (pacs.dicom_port,) * 25, 25000 + secrets.randbelow(200) * 30)
    else:
        im.dicomsim(lab, ct.name, *args)
    start = time.monotonic()
    while time.monotonic() - start < WAIT:
        held = {e["id"] for e in siem_rows(lab, siem, "events", "--since-id", str(since), "--contains", seen)
                if e["event_type"] == "ids-alert" and e["signature_id"] == sid}
        if held and any(a["rule"] == rule and held & set(a["events"]) for a in siem_rows(lab, siem, "alerts")):
            return time.monotonic() - start
        time.sleep(0.25)
    raise SystemExit(f"no {rule} holding the sensor's {sid} about {ct.name} within {WAIT} s")


def malware(lab: Lab, siem: str) -> float:
    ct = next(h for h in lab.deployed_hosts() if "modalities" in h.groups and h.zone == "modality")
    accession = f"BENCH{secrets.token_hex(3).upper()}"
    result = im.dicomsim(lab, ct.name, "store", "--images", "1", "--accession", accession, "--payload-hex", EICAR_HEX)
    refused = time.monotonic()
    if [f["status"] for f in result["failed"]] != [0x0124]:
        raise SystemExit(f"the PACS did not refuse the object carrying EICAR with 0x0124: {result}")
    took = seconds_to_alert(lab, siem, refused, accession, "malware-refused", "malware-detected")
    if took is None:
        raise SystemExit(f"no malware-detected alert about {accession} within {WAIT} s")
    return took


def archive_rescan(lab: Lab, siem: str) -> dict[str, float]:
    """The CT stores an image carrying bytes of the run (no signature knows them: stored); a signature
    for them reaches the PACS's clamd (pacslab.probes.clamd, as the integration check does); the
    PACS rescans what it holds (POST /pacslab/rescan). Milliseconds of the rescan per stored
    instance, and seconds from its answer to the malware-in-archive alert holding the PACS's event
    about the image. The signature and the study are removed afterwards."""
    ct = next(h for h in lab.deployed_hosts() if "modalities" in h.groups and h.zone == "modality")
    pacs = next(h for h in lab.deployed_hosts() if "pacs_servers" in h.groups).name
    run = secrets.token_hex(3).upper()
    accession, marker = f"BENCH{run}", f"pacslab-bench-{run}".encode().hex()
    result = im.dicomsim(lab, ct.name, "store", "--images", "1", "--accession", accession, "--payload-hex", marker)
    if result["failed"]:
        raise SystemExit(f"the PACS did not store the image of the run: {result['failed']}")
    update = clamd.add_signature(lab, pacs, f"Pacslab.Bench.{run}", marker)
    try:
        started = time.monotonic()
        rescan = im.rescan(lab, pacs)
        answered = time.monotonic()
        took = seconds_to_alert(lab, siem, answered, accession, "malware-found-stored", "malware-in-archive")
    finally:
        clamd.remove_signature(lab, pacs, update, marker)
        for study in im.find_study(lab, pacs, accession):
            im.orthanc(lab, pacs, f"/studies/{study}", "DELETE")
    if took is None or not rescan["complete"]:
        raise SystemExit(f"no malware-in-archive alert about {accession} within {WAIT} s (rescan: {rescan})")
    return {"rescan_ms_per_instance": 1000 * (answered - started) / max(1, rescan["scanned"]), "alert_from_answer": took,
            "scanned": rescan["scanned"]}


def host_watch(lab: Lab, siem: str) -> dict[str, float]:
    """On the PACS, as Orthanc's user: a copy of sleep under /tmp started (-> unexpected-exec), then
    a listener on a port the lab does not give the PACS (-> unexpected-listener), each timed from
    its start (roles/orthanc pacslab-hids: one pass a second; a listener is reported on its second).
    The steps are the integration checks' (pacslab.probes.hostwatch)."""
    pacs = next(h for h in lab.deployed_hosts() if "pacs_servers" in h.groups)
    path, port = f"/tmp/bench-dropped-{secrets.token_hex(4)}", 32000 + secrets.randbelow(700)  # below the ephemeral range
    hostwatch.as_user(lab, pacs.name, "orthanc", "cp", "/usr/bin/sleep", path)  # as hostwatch.dropped_copy, timed from the start
    started = time.monotonic()
    pid = hostwatch.in_background(lab, pacs.name, "orthanc", path, "60")
    try:
        took_exec = seconds_to_alert(lab, siem, started, path, "unexpected-exec", "unexpected-exec")
        started = time.monotonic()
        listener = hostwatch.listener(lab, pacs.name, port, "orthanc")
        took_listen = seconds_to_alert(lab, siem, started, f'"port": {port},', "unexpected-listener", "unexpected-listener")
        hostwatch.end(lab, pacs.name, listener)
    finally:
        hostwatch.end(lab, pacs.name, pid, remove=path)
    if took_exec is None or took_listen is None:
        raise SystemExit(f"host watch on {pacs.name}: unexpected-exec after {took_exec} s, unexpected-listener after {took_listen} s")
    return {"exec": took_exec, "listener": took_listen}


def maintenance(lab: Lab, plan: Plan, siem: str) -> dict[str, float]:
    vendor = next(p for p in lab.people if "vendor" in p.roles and p.status() == "enabled")
    since = max((e["id"] for e in siem_rows(lab, siem, "events", "--contains", vendor.name)), default=0)
    mark = f"bench-mark-{secrets.token_hex(4)}"
    result = vendor_session(lab, plan, vendor.name,
                            ({"command": "maint pacs", "shell": True}, f"echo {mark}", "sudo -n /bin/cat /etc/shadow", "exit"))
    ended = datetime.now(UTC)
    if not (result["shell"] and all(c["done"] for c in result["commands"])):
        raise SystemExit(f"the vendor's session did not run its commands: {result['said']} {result['commands']}")
    recorded = refused = alerted = outside = None
    settled = float(listeners.role_var(lab, BASTION, "bastion", "bastion_latency")) + 1  # tlog writes what it holds within its latency
    while (datetime.now(UTC) - ended).total_seconds() < WAIT and (alerted is None or outside is None):
        if recorded is None:
            recorded = _whole_recording(lab, siem, since, mark, settled, ended)
        if refused is None:
            refused = next((e for e in siem_rows(lab, siem, "events", "--since-id", str(since), "--contains", f" : {vendor.name} : ")
                            if e["host"] == "pacs" and e["event_type"] == "sudo-command" and e["outcome"] != "allowed"), None)
        if refused is not None and recorded is not None:
            alerted = next((_utc(a["raised"]) for a in siem_rows(lab, siem, "alerts")
                            if a["rule"] == "sudo-refused" and refused["id"] in a["events"]), None)
        if outside is None:
            outside = _outside_window(lab, siem, since, vendor.name)
        time.sleep(0.25)
    if alerted is None or refused is None or recorded is None or outside is None:
        raise SystemExit(f"within {WAIT} s: recording {recorded}, sudo's record {refused}, sudo-refused {alerted}, "
                         f"vendor-outside-window {outside}")
    logged = _utc(refused["time"])
    return {"whole_recording_from_session_end": (recorded - ended).total_seconds(),
            "sudo_record_from_line": (_utc(refused["received"]) - logged).total_seconds(),
            "sudo_refused_from_line": (alerted - logged).total_seconds(),
            "vendor_outside_window_from_line": outside}


def _outside_window(lab: Lab, siem: str, since: int, vendor: str) -> float | None:
    """Seconds from the bastion's line about ``vendor``'s sign-in (an event after ``since``) to the
    vendor-outside-window alert that holds it (raised once per sign-in); None before."""
    signed = {e["id"]: _utc(e["time"]) for e in siem_rows(lab, siem, "events", "--since-id", str(since), "--contains", vendor)
              if e["host"] == BASTION and e["event_type"] == "ssh-login-success"}
    for a in siem_rows(lab, siem, "alerts"):
        held = [signed[i] for i in a["events"] if i in signed]
        if a["rule"] == "vendor-outside-window" and held:
            return (_utc(a["raised"]) - held[0]).total_seconds()
    return None


def _whole_recording(lab: Lab, siem: str, since: int, mark: str, settled: float, ended: datetime) -> datetime | None:
    """When the siem stored the last record of the session in which ``mark`` was typed, once it holds
    every record of that session the bastion's session log holds (read ``settled`` seconds after the
    session's end at the earliest, when tlog has written its last); None before."""
    if (datetime.now(UTC) - ended).total_seconds() < settled:
        return None
    marked = [e for e in siem_rows(lab, siem, "events", "--since-id", str(since), "--contains", f"echo {mark}") if e["source"] == "tlog"]
    if not marked:
        return None
    rec = json.loads(marked[0]["message"])["rec"]
    log = im.exec_in(lab, BASTION, "cat", str(listeners.role_var(lab, BASTION, "bastion", "bastion_sessions_log")))
    held = sum(1 for line in log.splitlines() if f'"rec":"{rec}"' in line)
    stored = [_utc(e["received"]) for e in siem_rows(lab, siem, "events", "--since-id", str(since), "--contains", f'"rec":"{rec}"')
              if e["source"] == "tlog"]
    return max(stored) if held and len(stored) >= held else None


def _utc(stamp: str) -> datetime:
    return datetime.fromisoformat(stamp.replace("Z", "+00:00"))


def unknown_device(lab: Lab, plan: Plan, siem: str, run: int) -> dict[str, float]:
    """One unknown-device run: seconds from the container's start to the alert and to the fw's
    quarantine of its address (the alert contains it, C-RSP-02). The container is removed and the
    address released once the siem has weighed all it sent."""
    ct = next(h for h in lab.deployed_hosts() if "modalities" in h.groups and h.zone == "modality")
    zone = lab.zones[str(ct.zone)]
    taken = {str(h.address) for h in lab.hosts.values() if h.address} | {str(zone.router), str(zone.probe), str(zone.gateway)}
    address = [str(a) for a in list(zone.subnet.hosts())[209:249] if str(a) not in taken][run]
    name = f"{lab.prefix}-bench-rogue-{secrets.token_hex(3)}"
    since = datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")
    docker("run", "-d", "--name", name, "--label", f"{LABEL_LAB}={lab.name}", "--label", f"{LABEL_ROLE}=standin", "--network",
           lab.network_name(zone.name), "--ip", address, "--cap-drop", "ALL", plan.tools_image, "sleep", "600")
    start = time.monotonic()
    try:
        docker("run", "--rm", "--network", f"container:{name}", "--cap-add", "NET_ADMIN", plan.tools_image,
               "ip", "route", "replace", "default", "via", str(zone.router))
        return alert_and_quarantine(lab, siem, address, start, 0.5, lambda: {
            e["id"] for e in siem_rows(lab, siem, "events", "--contains", f'"address": "{address}"')
            if e["event_type"] == "discovered-address" and e["time"] >= since})
    finally:
        docker("rm", "-f", name, check=False)
        response.release_when_settled(lab, address, "benchmark run", by="pacslab-bench")


def alert_and_quarantine(lab: Lab, siem: str, address: str, start: float, every: float, events: Any) -> dict[str, float]:
    """{alert, quarantine}: seconds from ``start`` (time.monotonic) until an unknown-device alert holds
    one of the event ids ``events()`` returns, then until the fw's quarantine holds ``address``;
    polled every ``every`` seconds. SystemExit when either does not come within WAIT."""
    alerted = contained = None
    while time.monotonic() - start < WAIT and contained is None:
        if alerted is None:
            ids = events()
            if ids and any(a["rule"] == "unknown-device" and ids & set(a["events"]) for a in siem_rows(lab, siem, "alerts")):
                alerted = time.monotonic() - start
        elif address in response.quarantined(lab):
            contained = time.monotonic() - start
        time.sleep(every)
    if alerted is None or contained is None:
        raise SystemExit(f"unknown-device about {address}: alert after {alerted} s, quarantine after {contained} s (waited {WAIT} s)")
    return {"alert": alerted, "quarantine": contained}


# From a rogue on the legacy segment (argv: the gateway's address and tunnel port): one TCP connection,
# its first read; the gateway's allow-list closes it before a byte (prints "reset" or "closed", as the timing falls).
KNOCK = r"""
import socket, sys
conn = socket.create_connection((sys.argv[1], int(sys.argv[2])), timeout=10)
try:
    print("closed" if conn.recv(1) == b"" else "answered")
except ConnectionResetError:
    print("reset")
"""


def legacy_rogue(lab: Lab, plan: Plan, siem: str, run: int) -> dict[str, float]:
    """One legacy-rogue run (the docstring's): seconds from the gateway's close to the alert and to the quarantine."""
    gateway = next(h for h in lab.deployed_hosts() if "overlay_gateways" in h.groups)
    tunnel = int(next(t for t in listeners.role_var(lab, gateway.name, "dicom_node", "dicom_node_tunnels") if "pacs_servers" in
                      lab.hosts[t["host"]].groups)["listen"])
    zone = lab.zones[str(gateway.zone)]
    taken = {str(h.address) for h in lab.hosts.values() if h.address} | {str(zone.router), str(zone.probe), str(zone.gateway)}
    address = [str(a) for a in list(zone.subnet.hosts())[209:249] if str(a) not in taken][run]
    name = f"{lab.prefix}-bench-legacy-rogue-{secrets.token_hex(3)}"
    docker("run", "-d", "--name", name, "--label", f"{LABEL_LAB}={lab.name}", "--label", f"{LABEL_ROLE}=standin", "--network",
           lab.network_name(zone.name), "--ip", address, "--cap-drop", "ALL", plan.tools_image, "sleep", "600")
    since = datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")  # an earlier run's refusal from this address is not ours
    try:
        said = docker("exec", name, "python3", "-c", KNOCK, str(gateway.address), str(tunnel), timeout=30).stdout.strip()
        start = time.monotonic()
        if said not in ("reset", "closed"):
            raise SystemExit(f"the gateway {said} the rogue's connection: its allow-list is off")
        return alert_and_quarantine(lab, siem, address, start, 0.25, lambda: {
            e["id"] for e in siem_rows(lab, siem, "events", "--contains", f"REFUSED by libwrap from {address}:")
            if e["source"] == "overlay-gateway" and e["event_type"] == "tls-connection" and e["time"] >= since})
    finally:
        docker("rm", "-f", name, check=False)
        response.release_when_settled(lab, address, "benchmark run", by="pacslab-bench")


BULK_STUDIES = 20  # roles/siem/files/rules/bulk-access.yml: twenty different studies by one person in ten minutes


def bulk_access(lab: Lab, plan: Plan, siem: str) -> float:
    """One bulk-access run (the docstring's): seconds from the twentieth read's answer to the alert."""
    ct = next(h for h in lab.deployed_hosts() if "modalities" in h.groups and h.zone == "modality")
    pacs = next(h for h in lab.deployed_hosts() if "pacs_servers" in h.groups)
    rp = next(h for h in lab.deployed_hosts() if "reverse_proxies" in h.groups)
    run = secrets.token_hex(3).upper()
    stored = im.dicomsim(lab, ct.name, "store", "--images", "1", "--studies", str(BULK_STUDIES), "--accession", f"BB{run}")
    uids = [s["study_uid"] for s in stored["stored"]]
    person = f"bench-bulk-{run.lower()}"
    account = [rp.name, (Path(plan.secrets_dir) / f"orthanc-{pacs.name}-{rp.name}").read_text().split()[0]]
    headers = {"X-Pacslab-User": person, "X-Pacslab-Roles": "radiologist"}
    base = f"https://{pacs.name}:{pacs.service('https').port}/dicom-web/studies/"
    try:
        if len(set(uids)) != BULK_STUDIES:
            raise SystemExit(f"the CT stored {len(set(uids))} studies of {BULK_STUDIES}: {stored['failed']}")
        answers = basic_auth(lab, rp.name, [{"url": base + uid, "account": account, "headers": headers, "cert": True} for uid in uids])
        read = time.monotonic()
        if [a[0] for a in answers] != [200] * BULK_STUDIES:
            raise SystemExit(f"the PACS did not serve the {BULK_STUDIES} studies: {answers}")
        while time.monotonic() - read < WAIT:
            if any(a["rule"] == "bulk-access" and a["entities"] == {"user": person} for a in siem_rows(lab, siem, "alerts")):
                return time.monotonic() - read
            time.sleep(0.25)
        raise SystemExit(f"no bulk-access alert about {person} within {WAIT} s")
    finally:
        for study in im.find_study(lab, pacs.name, f"BB{run}"):
            im.orthanc(lab, pacs.name, f"/studies/{study}", "DELETE")


def off_hours_deletion(lab: Lab, siem: str) -> float | None:
    """One off-hours-deletion run (the docstring's): seconds from the deletion's answer to the alert
    holding its Study Deleted message; None when the siem stored the deletion as on-hours."""
    ct = next(h for h in lab.deployed_hosts() if "modalities" in h.groups and h.zone == "modality")
    pacs = next(h.name for h in lab.deployed_hosts() if "pacs_servers" in h.groups)
    accession = f"BN{secrets.token_hex(3).upper()}"
    result = im.dicomsim(lab, ct.name, "store", "--images", "1", "--accession", accession)
    if len(result["stored"]) != 1:
        raise SystemExit(f"the CT did not store the run's study: {result}")
    study_uid = result["stored"][0]["study_uid"]
    im.orthanc(lab, pacs, f"/studies/{im.find_study(lab, pacs, accession)[0]}", "DELETE")
    deleted = time.monotonic()
    while time.monotonic() - deleted < WAIT:
        events = [e for e in siem_rows(lab, siem, "events", "--contains", study_uid) if e["event_type"] == "dicom-audit-study-deleted"]
        if events and events[0]["shift"] == "on-hours":
            return None
        ids = {e["id"] for e in events}
        if ids and any(a["rule"] == "off-hours-deletion" and ids & set(a["events"]) for a in siem_rows(lab, siem, "alerts")):
            return time.monotonic() - deleted
        time.sleep(0.25)
    raise SystemExit(f"no off-hours-deletion alert holding the deletion of {study_uid} within {WAIT} s")




def weak_target(lab: Lab) -> Host:
    """The last modality in the modality zone with no service on vulnscan.WEAK_PORT (the MR of the reference lab)."""
    return [h for h in lab.deployed_hosts() if "modalities" in h.groups and h.zone == "modality"
            and all(s.port != vulnscan.WEAK_PORT for s in h.services)][-1]


def _vulnscan(lab: Lab, scanner: str, config: str, host: str) -> int:
    """One scan of ``host`` by the scanner's program as its user (with ``config``); the scan id it printed."""
    proc = docker("exec", "-u", vulnscan.SCANNER_USER, lab.container_name(scanner), vulnscan.PROGRAM, config, "--once", "--host", host,
                  check=False, timeout=600)
    if not proc.stdout.strip().isdigit():  # exit 2: a configuration it cannot use; said on stderr
        raise SystemExit(f"pacslab-vulnscan on {scanner} printed no scan id (exit {proc.returncode}): {proc.stderr.strip()[-500:]}")
    return int(proc.stdout.strip())


def weak_tls_service(lab: Lab, siem: str) -> float:
    """One weak-tls-service run (the docstring's): seconds from the scan's end to the alert."""
    scanner = next(h.name for h in lab.deployed_hosts() if h.image == "scanner")
    target = weak_target(lab)
    pid = vulnscan.plant_tls10(lab, target.name)
    try:
        scan = _vulnscan(lab, scanner, vulnscan.CONFIG, target.name)
        ended = time.monotonic()
        took = seconds_to_alert(lab, siem, ended, f'"scan": {scan},', "vuln-finding", "weak-tls-service")
    finally:
        hostwatch.end(lab, target.name, pid)
    if took is None:
        raise SystemExit(f"no weak-tls-service alert holding a finding of scan {scan} within {WAIT} s")
    return took


def vulnerability_scan_failed(lab: Lab, siem: str) -> float:
    """One vulnerability-scan-failed run (the docstring's): seconds from the failed scan's end to the alert."""
    scanner = next(h.name for h in lab.deployed_hosts() if h.image == "scanner")
    target = weak_target(lab).name
    copy = f"/tmp/bench-vulnscan-{secrets.token_hex(4)}.json"
    docker("exec", "-u", vulnscan.SCANNER_USER, lab.container_name(scanner), "python3", "-c",
           "import json, sys; c = json.load(open(sys.argv[1])); c['timeout'] = 0.01; json.dump(c, open(sys.argv[2], 'w'))",
           vulnscan.CONFIG, copy)
    try:
        scan = _vulnscan(lab, scanner, copy, target)
        ended = time.monotonic()
    finally:
        docker("exec", lab.container_name(scanner), "rm", "-f", copy)
    took = seconds_to_alert(lab, siem, ended, f'"scan": {scan},', "vuln-scan", "vulnerability-scan-failed")
    if took is None:
        raise SystemExit(f"no vulnerability-scan-failed alert holding scan {scan}'s failure within {WAIT} s")
    return took


def ldap_brute_force(lab: Lab, plan: Plan, siem: str) -> float:
    """One ldap-brute-force run (the docstring's): seconds from the fifth refusal (its ldap-bind
    event's time, the directory's syslog stamp) to the alert's last update, when it came to hold
    the five (the siem's stamp; one clock, the machine's): what the poll below takes is not counted."""
    directory = next(h for h in lab.deployed_hosts() if "directories" in h.groups)
    pacs = next(h for h in lab.deployed_hosts() if "pacs_servers" in h.groups)
    suffix, wrong = ldap.suffix(lab), secrets.token_hex(8)
    names = [f"bench-{secrets.token_hex(3)}-guess-{i}" for i in range(5)]
    before = last_event(lab, siem)
    answers = ldap.steps_from(lab, plan, directory, pacs.name, [{"dn": ldap.person(suffix, name), "password": wrong} for name in names])
    probed = time.monotonic()
    if answers != [{"bind": ldap.INVALID}] * 5:
        raise SystemExit(f"the directory did not refuse the five binds as invalid credentials: {answers}")
    while time.monotonic() - probed < WAIT:
        alert = next((a for a in siem_rows(lab, siem, "alerts") if a["rule"] == "ldap-brute-force"
                      and a["entities"] == {"src_ip": str(pacs.address)} and len([i for i in a["events"] if i > before]) >= len(names)), None)
        if alert is not None:
            refusals = [e for name in names for e in ldap.bind_events(lambda *args: siem_rows(lab, siem, *args), ldap.person(suffix, name), before)
                        if e["outcome"] == "invalid-credentials"]
            if len(refusals) != len(names) or not {e["id"] for e in refusals} <= set(alert["events"]):
                raise SystemExit(f"alert {alert['id']} holds events of the run's time that are not its five refusals ({refusals})")
            return (_utc(alert["updated"]) - max(_utc(e["time"]) for e in refusals)).total_seconds()
        time.sleep(0.25)
    raise SystemExit(f"no ldap-brute-force alert holding the run's five refusals within {WAIT} s")


IDP_AUDIT = "/var/log/pacslab/idp-audit.log"  # roles/idp: the IdP's DICOM audit trail, written as www-data


def audit_trail_failure(lab: Lab, plan: Plan, siem: str) -> float:
    """One audit-trail-failure run (the docstring's): seconds from the portal's refusal of a name of
    the run, whose User Authentication message the IdP's reader could not write, to the alert."""
    idp, rp = lab.group("idp_servers")[0].name, lab.group("reverse_proxies")[0].name
    rp_secret = (Path(plan.secrets_dir) / f"oidc-{rp}").read_text().split()[0]
    user = f"bench-{secrets.token_hex(3)}-lost"
    with response.authorised(lab, "bench: a name nobody has at the IdP", [str(lab.hosts[GUESSER].address)], by="pacslab-bench"):
        im.exec_in(lab, idp, "chmod", "0440", IDP_AUDIT)
        try:
            oidc.login(lab, GUESSER, f"https://{idp}", rp, f"https://{rp}/oidc/redirect", user=user, password="bench-wrong", code=None,
                       client_secret=rp_secret)
            refused = time.monotonic()
            seconds = seconds_to_alert(lab, siem, refused, user, "audit-failed", "audit-trail-failure")
        finally:
            im.exec_in(lab, idp, "chmod", "0640", IDP_AUDIT)
    if seconds is None:
        raise SystemExit(f"no audit-trail-failure alert holding the lost message about {user} within {WAIT} s")
    return seconds


def untraceable_deletion_refused(lab: Lab, siem: str) -> float:
    """One untraceable-deletion-refused run (the docstring's): seconds from the PACS's 403 to the
    alert holding its access decision."""
    pacs = lab.group("pacs_servers")[0].name
    marker = f"bench-{secrets.token_hex(4)}-merge"
    status, answer = im.orthanc_call(lab, pacs, f"/studies/{marker}/merge", "POST", json.dumps({"Resources": [], "KeepSource": False}))
    refused = time.monotonic()
    if status != 403:
        raise SystemExit(f"the PACS answered the merge {status}, not 403: {answer[:200]}")
    seconds = seconds_to_alert(lab, siem, refused, marker, "access-decision", "untraceable-deletion-refused")
    if seconds is None:
        raise SystemExit(f"no untraceable-deletion-refused alert holding the refused merge {marker} within {WAIT} s")
    return seconds


def monitoring_down(lab: Lab, siem: str) -> float:
    """One monitoring-down run (the docstring's): seconds from the stop of the PACS's hids to the
    alert holding the PACS's program-down record of it stored after the run began."""
    pacs = lab.group("pacs_servers")[0].name
    return _stopped_until(lab, siem, pacs, "hids", "monitoring-down", ("supervision", "program-down", "hids"),
                          ("supervision", "program-up", "hids"), WAIT)


def log_source_silent(lab: Lab, siem: str) -> float:
    """One log-source-silent run (the docstring's): seconds from the stop of the MR's rsyslogd to the
    alert holding the siem's own log-source-silent event about the MR stored after the run began."""
    quiet = [h.name for h in lab.deployed_hosts() if "modalities" in h.groups and h.zone != "legacy"][-1]  # the integration check's
    return _stopped_until(lab, siem, quiet, "rsyslogd", "log-source-silent", ("pacslab-siem", "log-source-silent", None),
                          ("pacslab-siem", "log-source-resumed", None), WAIT + 90)


def ingest_stalled(lab: Lab, siem: str) -> float:
    """One ingest-stalled run (the docstring's): seconds from the stop of the siem's own rsyslogd to
    the alert holding the siem's own ingest-stalled event stored after the run began."""
    return _stopped_until(lab, siem, siem, "rsyslogd", "ingest-stalled", ("pacslab-siem", "ingest-stalled", None),
                          ("pacslab-siem", "ingest-resumed", None), WAIT + 90)


def _stopped_until(lab: Lab, siem: str, host: str, program: str, rule: str, alerted: tuple[str, str, str | None],
                   back: tuple[str, str, str | None], limit: float) -> float:
    """``program`` stopped on ``host`` (supervisorctl): seconds until an alert of ``rule`` holds an
    event of ``host`` stored since, of (source, event_type, program) ``alerted`` (program None: any).
    The program is started again, and the run waits (WAIT at most) for such an event ``back``.
    SystemExit when no alert came within ``limit`` seconds."""
    since = last_event(lab, siem)

    def events(source: str, event_type: str, named: str | None) -> list[dict[str, Any]]:
        return [e for e in siem_rows(lab, siem, "events", "--since-id", str(since), "--contains", f'"{event_type}"')
                if (e["host"], e["source"], e["event_type"]) == (host, source, event_type) and named in (None, e["program"])]

    im.exec_in(lab, host, "supervisorctl", "stop", program)
    stopped, seconds = time.monotonic(), None
    try:
        while seconds is None and time.monotonic() - stopped < limit:
            ids = {e["id"] for e in events(*alerted)}
            if ids and any(a["rule"] == rule and ids & set(a["events"]) for a in siem_rows(lab, siem, "alerts")):
                seconds = time.monotonic() - stopped
            time.sleep(0.25)
    finally:
        im.exec_in(lab, host, "supervisorctl", "start", program)
    returned = time.monotonic()
    while not events(*back) and time.monotonic() - returned < WAIT:
        time.sleep(1)
    if seconds is None:
        raise SystemExit(f"no {rule} alert about {host}'s {program} within {limit} s")
    return seconds


def seconds_to_alert(lab: Lab, siem: str, start: float, contains: str, event_type: str, rule: str) -> float | None:
    """Seconds from ``start`` (time.monotonic) until an alert of ``rule`` holds an event of
    ``event_type`` whose raw message holds ``contains``; None when none does within WAIT."""
    while time.monotonic() - start < WAIT:
        ids = {e["id"] for e in siem_rows(lab, siem, "events", "--contains", contains) if e["event_type"] == event_type}
        if ids and any(a["rule"] == rule and ids & set(a["events"]) for a in siem_rows(lab, siem, "alerts")):
            return time.monotonic() - start
        time.sleep(0.25)
    return None


def per_key(runs: list[dict[str, float]]) -> dict[str, dict[str, float]]:
    """Runs that each measured several things: p50 and p95 of each."""
    return {key: summary([r[key] for r in runs]) for key in runs[0]}


def summary(values: list[float]) -> dict[str, float]:
    return {"p50": round(statistics.median(values), 2), "p95": round(p95(values), 2)}


def p95(values: list[float]) -> float:
    """The nearest-rank 95th percentile (the value at rank ceil(0.95 n))."""
    ordered = sorted(values)
    return ordered[max(0, -(-95 * len(ordered) // 100) - 1)]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--lab", default=str(REPO / "inventories" / "default"))
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--messages", type=int, default=2000)
    parser.add_argument("--only", action="append", choices=MEASURES, help="measure only this (repeat; default: every one)")
    args = parser.parse_args()
    lab = load_lab(args.lab)
    plan = build_plan(lab)
    siems = [h.name for h in lab.deployed_hosts() if SIEMS in h.groups]
    if not siems:
        raise SystemExit(f"lab {lab.name!r} deploys no siem")
    siem, n = siems[0], args.runs

    def brute_forces() -> dict[str, Any]:
        runs = [brute_force(lab, plan, siem) for _ in range(n)]
        return {key: summary([r[key] for r in runs]) for key in ("from_start", "from_fifth")}

    def break_ins() -> dict[str, Any]:
        out = {}
        for where in ("bastion", "idp"):
            runs = [break_in(lab, plan, siem, where) for _ in range(n)]
            out[where] = {key: summary([r[key] for r in runs]) for key in ("guessing", "alert", "quarantine")}
        return out

    def maintenances() -> dict[str, Any]:
        runs = [maintenance(lab, plan, siem) for _ in range(n)]
        return {key: summary([r[key] for r in runs]) for key in runs[0]}

    def scans() -> dict[str, Any]:
        runs = [port_scan(lab, siem) for _ in range(n)]
        return {key: summary([r[key] for r in runs]) for key in ("alert", "quarantine")}

    def devices() -> dict[str, Any]:
        runs = [unknown_device(lab, plan, siem, run) for run in range(n)]
        return {key: summary([r[key] for r in runs]) for key in ("alert", "quarantine")}

    def legacy_rogues() -> dict[str, Any]:
        runs = [legacy_rogue(lab, plan, siem, run) for run in range(n)]
        return {key: summary([r[key] for r in runs]) for key in ("alert", "quarantine")}

    def host_watches() -> dict[str, Any]:
        runs = [host_watch(lab, siem) for _ in range(n)]
        return {key: summary([r[key] for r in runs]) for key in ("exec", "listener")}

    def rescans() -> dict[str, Any]:
        runs = [archive_rescan(lab, siem) for _ in range(n)]
        return {key: summary([r[key] for r in runs]) for key in ("rescan_ms_per_instance", "alert_from_answer")} | {
            "instances": runs[-1]["scanned"]}

    def correlated_scans() -> dict[str, Any]:
        runs = [port_scan(lab, siem, correlate=True) for _ in range(n)]
        return {key: summary([r[key] for r in runs]) for key in ("correlated", "quarantine")}

    def off_hours() -> dict[str, Any]:
        runs = [off_hours_deletion(lab, siem) for _ in range(n)]
        timed = [r for r in runs if r is not None]
        if len(timed) < len(runs):
            return {"not_measured": f"{len(runs) - len(timed)} of {len(runs)} deletions fell in the siem's working hours (no alert, rightly)"} | (
                summary(timed) if timed else {})
        return summary(timed)

    measures: dict[str, tuple[str, Any]] = {
        "brute-force": ("brute_force", brute_forces),
        "break-in": ("break_in_from_sign_in", break_ins),
        "port-scan": ("port_scan_from_start", scans),
        "compromised-modality": ("compromised_modality_from_scan_start", correlated_scans),
        "integrity": ("integrity_failure_from_answer", lambda: summary([integrity(lab, siem) for _ in range(n)])),
        "audit": ("audit_message_from_answer", lambda: per_key([audit(lab, siem) for _ in range(n)])),
        "unknown-ae": ("unknown_ae_from_rejection", lambda: per_key([unknown_ae(lab, siem) for _ in range(n)])),
        "security-alert": ("dicom_security_alert_from_refusal", lambda: summary([security_alert(lab, siem) for _ in range(n)])),
        "device-anomaly": ("device_anomaly_from_try", lambda: summary([device_anomaly(lab, siem) for _ in range(n)])),
        "ids": ("ids_from_provocation", lambda: {key: summary([ids(lab, siem, key) for _ in range(n)]) for key in IDS_RUNS}),
        "malware": ("malware_detected_from_refusal", lambda: summary([malware(lab, siem) for _ in range(n)])),
        "maintenance": ("maintenance", maintenances),
        "unknown-device": ("unknown_device_from_appearance", devices),
        "legacy-rogue": ("legacy_rogue_from_gateway_close", legacy_rogues),
        "host-watch": ("host_watch_from_start", host_watches),
        "archive-rescan": ("archive_rescan", rescans),
        "bulk-access": ("bulk_access_from_twentieth_read", lambda: summary([bulk_access(lab, plan, siem) for _ in range(n)])),
        "off-hours-deletion": ("off_hours_deletion_from_deletion", off_hours),
        "weak-tls-service": ("weak_tls_service_from_scan_end", lambda: summary([weak_tls_service(lab, siem) for _ in range(n)])),
        "vulnerability-scan-failed": ("vulnerability_scan_failed_from_scan_end",
                                      lambda: summary([vulnerability_scan_failed(lab, siem) for _ in range(n)])),
        "ldap-brute-force": ("ldap_brute_force_from_fifth_refusal", lambda: summary([ldap_brute_force(lab, plan, siem) for _ in range(n)])),
        "audit-trail-failure": ("audit_trail_failure_from_refusal",
                                lambda: summary([audit_trail_failure(lab, plan, siem) for _ in range(n)])),
        "untraceable-deletion-refused": ("untraceable_deletion_refused_from_answer",
                                         lambda: summary([untraceable_deletion_refused(lab, siem) for _ in range(n)])),
        "monitoring-down": ("monitoring_down_from_stop", lambda: summary([monitoring_down(lab, siem) for _ in range(n)])),
        "log-source-silent": ("log_source_silent_from_stop", lambda: summary([log_source_silent(lab, siem) for _ in range(n)])),
        "ae-impersonation": ("ae_impersonation_from_rejection", lambda: summary([ae_impersonation(lab, siem) for _ in range(n)])),
        "ingest-stalled": ("ingest_stalled_from_stop", lambda: summary([ingest_stalled(lab, siem) for _ in range(n)])),
        "ingest": ("ingest", lambda: ingest(lab, siem, args.messages)),
    }
    result: dict[str, Any] = {"rules": len(json.loads(im.exec_in(lab, siem, "cat", "/etc/pacslab/siem/rules.json"))), "runs": n}
    for name in args.only or MEASURES:
        key, measure = measures[name]
        result[key] = measure()
    print(json.dumps(result, indent=1))
    append_result(RESULTS, result)
    return 0


if __name__ == "__main__":
    sys.exit(main())
