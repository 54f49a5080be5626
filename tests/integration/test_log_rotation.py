"""Log rotation (issue 13, roles/log_rotation): the files the lab's services write and ship do not
grow without end, and a rotation loses nothing on the way to the siem.

Each check rotates for real, as the program supervisor runs every few minutes would once a file
passes its size (`logrotate -f`: the same configuration, forced), between two marked writes: the
first must be in the renamed file (.1), the second in the new one (its writer reopened it), the new
file must have the mode and owner the writer gave the first (the converge check compares them), and
the siem must hold both (rsyslog's imfile read the renamed file to its end, then followed the new
one). Markers: this run's source ports (fw), patient names (PACS), user names (IdP) and accession
numbers (RIS).
"""

from __future__ import annotations

import secrets
from typing import Any

import pytest

from pacslab.docker import docker
from pacslab.listeners import role_var
from pacslab.plan import Plan
from pacslab.probes import imaging as im
from pacslab.probes import oidc, portscan
from pacslab.topology import Lab

from .test_bastion import SSHD_LOG, SUDO_LOG, bastion, unknown_name_at
from .test_devices import drops_from
from .test_idp import CLIENT as IDP_CLIENT
from .test_idp import idp, refusals_authorised
from .test_idp import sign_in as idp_sign_in
from .test_imaging import modality_of, order_entry, the, tls_stations
from .test_response import scanner, vna
from .test_rproxy import CLIENT as PROXY_CLIENT
from .test_rproxy import proxy
from .test_siem import GUESSER, IDP_AUDIT, RAW_DIR, idp_audit_read_only, pacs_of, reader_failures, siem, siem_json, wait_for

RUN = secrets.token_hex(3).upper()
# The check's own state file: the supervisor's logrotate holds a lock on the lab's while it runs.
CONF, STATE = "/etc/pacslab/logrotate.conf", "/tmp/pacslab-rotation-check.status"
DROPS = "/var/log/pacslab/fw-drops.json"
EVENTS, AUDIT = "/var/log/pacslab/orthanc-events.json", "/var/log/pacslab/dicom-audit.log"
HIDS = "/var/log/pacslab/hids.json"  # roles/orthanc's host watch
HL7_RECORD = "/var/log/pacslab/hl7-orders.json"  # roles/ris: the HL7 listener's record (pacslab_hl7_record)
# roles/bastion's own rsyslogd: tlog's session records, sshd's and sudo's log (auth, authpriv), the rest
SESSIONS, AUTH, SYSLOG = "/var/log/pacslab/sessions.log", "/var/log/pacslab/auth.log", "/var/log/pacslab/syslog.log"
# On the IdP: what the reader of the portal's refusals writes on its standard error (roles/log_shipping's
# /var/log/pacslab/<tag>-reader.log, the tag idp-portal), and nginx's access log of the portal (roles/idp)
READER_LOGS, IDP_READER_LOG = "/var/log/pacslab/*-reader.log", "/var/log/pacslab/idp-portal-reader.log"
IDP_ACCESS_LOG = "/var/log/pacslab/idp-access.log"
# roles/rproxy's Apache: the access logs of its own site and of the IdP it passes through, its error log
RPROXY_LOGS, RPROXY_IDP_LOG = "/var/log/pacslab/rproxy-*.log", "/var/log/pacslab/rproxy-idp-access.log"


def rotate(lab: Lab, host: str) -> None:
    """A forced rotation, holding the lock the rotation program and the seal hold (roles/log_rotation)."""
    lock = role_var(lab, host, "log_rotation", "log_rotation_lock")
    im.exec_in(lab, host, "flock", "-w", "120", lock, "logrotate", "-f", "-s", STATE, CONF)


def lines_with(lab: Lab, host: str, path: str, marker: str) -> list[str]:
    out = im.exec_in(lab, host, "grep", "-F", "--", marker, path, check=(0, 1))
    return out.splitlines()


def mode_owner(lab: Lab, host: str, path: str) -> str:
    return im.exec_in(lab, host, "stat", "-c", "%a %U %G", path).strip()


def page(lab: Lab, client: str, url: str) -> dict[str, Any]:
    """The one step of ``client``'s browser asking for ``url`` (its status)."""
    [step] = oidc.browse(lab, client, url)["steps"]
    return step


def until_written_anew(lab: Lab, host: str, path: str, writer: str, ask: Any) -> None:
    """After a rotation whose signal returns before the writer has let go of the renamed file:
    ``ask(page)`` for unmarked pages until one is written to the new ``path``."""
    probe = f"/rot-{RUN.lower()}-probe"
    im.wait_for(f"{writer} writing to the new file", lambda: ask(probe) and lines_with(lab, host, path, f" {probe} "), timeout=30, every=1)


def split_by_rotation(lab: Lab, host: str, path: str, before: str, after: str) -> tuple[int, int, int, str, str]:
    """Where a rotation between two marked writes left them: (lines holding ``before`` in the
    renamed file path.1, in the new file path, lines holding ``after`` in path, the new file's mode
    and owner, the renamed file's). A rotation that loses nothing: (1, 0, 1, M, M)."""
    return (len(lines_with(lab, host, path + ".1", before)), len(lines_with(lab, host, path, before)),
            len(lines_with(lab, host, path, after)), mode_owner(lab, host, path), mode_owner(lab, host, path + ".1"))


@pytest.mark.control("C-PRT-01")
def test_the_fw_drop_log_rotates_and_every_drop_still_reaches_the_siem(running_lab: Lab, evidence: dict[str, Any]) -> None:
    """A drop before the rotation is in fw-drops.json.1, one after it in the new fw-drops.json
    (ulogd reopened it on SIGHUP; the same mode and owner as the first), and the siem holds both."""
    lab = running_lab
    fw, host, target = lab.router.name, scanner(lab, 1), vna(lab)
    # Below the ephemeral ports (32768-60999), and below the source ports other checks of the run
    # choose (test_response from 20000, test_devices from 22000): no other connection has it. A
    # shared range once made this check find test_devices' drop from the same port.
    before = 10000 + secrets.randbelow(90) * 100
    after = before + 50
    portscan.scan(lab, host.name, str(target.address), (22,), before)  # one denied port: a drop, not a scan
    wait_for("the first drop in the log", lambda: lines_with(lab, fw, DROPS, f'"src_port": {before},'))
    rotate(lab, fw)
    portscan.scan(lab, host.name, str(target.address), (22,), after)
    wait_for("the second drop in the new log", lambda: lines_with(lab, fw, DROPS, f'"src_port": {after},'))

    first = wait_for("the first drop at the siem", lambda: drops_from(lab, str(host.address), before))
    second = wait_for("the second drop at the siem", lambda: drops_from(lab, str(host.address), after))
    evidence.update(rotated=lines_with(lab, fw, DROPS + ".1", f'"src_port": {before},')[:1], siem=[first[0]["id"], second[0]["id"]])
    assert len(lines_with(lab, fw, DROPS + ".1", f'"src_port": {before},')) == 1
    assert lines_with(lab, fw, DROPS, f'"src_port": {before},') == []
    assert len(lines_with(lab, fw, DROPS, f'"src_port": {after},')) == 1
    assert mode_owner(lab, fw, DROPS) == mode_owner(lab, fw, DROPS + ".1")  # as ulogd made the first
    assert (len(first), len(second)) == (1, 1)


@pytest.mark.control("C-RSP-03")
def test_rotations_keep_the_siems_raw_files_append_only_and_make_the_older_copy_immutable(running_lab: Lab,
                                                                                          evidence: dict[str, Any]) -> None:
    """A line the bastion logs, a rotation of the siem, a second line, a second rotation: each
    rotation releases the raw files for logrotate's renames and seals them again (roles/log_rotation
    log-seal). After the first, the new raw file and its first copy (.1) are append-only (lsattr's
    "a"), not immutable; after the second, the older copy (.2, the first line's) is immutable too
    ("i"): an open for appending, rsyslogd's own kind of write, is refused ("Operation not
    permitted"), while on .1, which rsyslogd may hold until it reopens, it still succeeds."""
    lab, collector, source = running_lab, siem(running_lab), bastion(running_lab)  # the bastion ships its local syslog
    raw = f"{RAW_DIR}/{source.address}.log"
    marks = {"first": f"pacslab-seal-{RUN}-1", "second": f"pacslab-seal-{RUN}-2"}

    def flags(path: str) -> tuple[bool, bool]:
        attributes = im.exec_in(lab, collector.name, "lsattr", path).split()[0]
        return "a" in attributes, "i" in attributes

    im.exec_in(lab, source.name, "logger", "-t", "pacslab-probe", marks["first"])
    wait_for("the first line in the bastion's raw file", lambda: lines_with(lab, collector.name, raw, marks["first"]))
    rotate(lab, collector.name)
    im.exec_in(lab, source.name, "logger", "-t", "pacslab-probe", marks["second"])
    wait_for("the second line in the new raw file", lambda: lines_with(lab, collector.name, raw, marks["second"]))
    once = {raw: flags(raw), raw + ".1": flags(raw + ".1")}
    rotate(lab, collector.name)
    twice = {raw + ".1": flags(raw + ".1"), raw + ".2": flags(raw + ".2")}
    appending = {path: docker("exec", lab.container_name(collector.name), "python3", "-c",
                              f"import os; os.close(os.open({path!r}, os.O_WRONLY | os.O_APPEND))", check=False)
                 for path in (raw + ".1", raw + ".2")}
    evidence.update(once=once, twice=twice, appending={p: a.stderr.strip()[-120:] for p, a in appending.items()})
    assert len(lines_with(lab, collector.name, raw + ".2", marks["first"])) == 1
    assert len(lines_with(lab, collector.name, raw + ".1", marks["second"])) == 1
    assert once == {raw: (True, False), raw + ".1": (True, False)}
    assert twice == {raw + ".1": (True, False), raw + ".2": (True, True)}
    assert {p: (a.returncode, "Operation not permitted" in a.stderr) for p, a in appending.items()} == {
        raw + ".1": (0, False), raw + ".2": (1, True)}


@pytest.mark.control("C-PRT-01")
def test_the_pacs_event_log_audit_file_and_the_siem_raw_file_rotate_without_loss(running_lab: Lab, evidence: dict[str, Any]) -> None:
    """A CT image stored before the PACS's and the siem's rotation and one stored after it: the
    first's instance-stored event and audit message are in the renamed files, the second's in new
    files (the mode and owner the plugin gave the first); the siem's raw file of the PACS starts again
    (rsyslogd reopened it on SIGHUP) with the second's audit message; the store holds both."""
    lab = running_lab
    pacs, station, collector = pacs_of(lab), tls_stations(lab)[0], siem(lab)
    raw = f"{RAW_DIR}/{pacs.address}.log"
    names = {"before": f"PACSLAB^ROTA{RUN}", "after": f"PACSLAB^ROTB{RUN}"}
    stored: dict[str, dict[str, Any]] = {}
    try:
        for when, name in names.items():
            if when == "after":
                rotate(lab, pacs.name)
                rotate(lab, collector.name)
            result = im.dicomsim(lab, station.name, "store", "--images", "1", "--patient-name", name, "--accession", f"RT{when[0].upper()}{RUN}")
            assert len(result["stored"]) == 1, result
            stored[when] = result["stored"][0]
            wait_for(f"the {when} image's audit message at the siem", lambda uid=stored[when]["study_uid"]: [
                e for e in siem_json(lab, "events", "--contains", uid) if e["event_type"] == "dicom-audit-instances-transferred"])
        sop = {when: s["sop_instance_uid"] for when, s in stored.items()}
        evidence.update(stored=sop)
        for path in (EVENTS, AUDIT):
            marker = sop["before"] if path == EVENTS else names["before"]
            later = sop["after"] if path == EVENTS else names["after"]
            assert len(lines_with(lab, pacs.name, path + ".1", marker)) == 1, path
            assert lines_with(lab, pacs.name, path, marker) == [], path
            assert len(lines_with(lab, pacs.name, path, later)) == 1, path
            assert mode_owner(lab, pacs.name, path) == mode_owner(lab, pacs.name, path + ".1"), path  # as the plugin made it
        assert lines_with(lab, collector.name, raw, names["before"]) == []
        assert len(lines_with(lab, collector.name, raw + ".1", names["before"])) == 1
        assert len(lines_with(lab, collector.name, raw, names["after"])) == 1
        # the event log's line names the instance, the audit message the study
        kinds = {when: {e["event_type"] for uid in (s["sop_instance_uid"], s["study_uid"]) for e in siem_json(lab, "events", "--contains", uid)}
                 for when, s in stored.items()}
        assert all({"instance-stored", "dicom-audit-instances-transferred"} <= found for found in kinds.values()), kinds
    finally:
        for when in stored:
            for study in im.find_study(lab, pacs.name, f"RT{when[0].upper()}{RUN}"):
                im.orthanc(lab, pacs.name, f"/studies/{study}", "DELETE")


@pytest.mark.control("C-PRT-01")
def test_the_idps_audit_file_rotates_without_loss(running_lab: Lab, evidence: dict[str, Any]) -> None:
    """The IdP's TOTP checker, run as the portal runs it (its user), refuses a code for a name of
    this run before the rotation and another after it: the first User Authentication message is in
    idp-audit.log.1, the second in a new idp-audit.log (the mode and owner of the first), and the
    siem holds both, from the IdP."""
    lab = running_lab
    host, browser = idp(lab).name, str(lab.hosts[IDP_CLIENT].address)
    users = {"before": f"rot-{RUN.lower()}-a", "after": f"rot-{RUN.lower()}-b"}
    for when, user in users.items():
        if when == "after":
            rotate(lab, host)
        verdict = im.exec_in(lab, host, "runuser", "-u", "www-data", "--", "pacslab-totp-verify", user, "000000", browser,
                             check=(1,))
        assert verdict == "", verdict  # the verdict goes to stderr (the portal's log), exit 1: refused
        wait_for(f"the {when} message at the siem", lambda u=user: [
            e for e in siem_json(lab, "events", "--contains", f'UserID="{u}"') if e["event_type"] == "dicom-audit-user-authentication"])
    evidence.update(users=users, mode_owner=mode_owner(lab, host, IDP_AUDIT))
    assert split_by_rotation(lab, host, IDP_AUDIT, f'UserID="{users["before"]}"', f'UserID="{users["after"]}"') == (
        1, 0, 1, "640 www-data www-data", "640 www-data www-data")


@pytest.mark.control("C-PRT-01")
def test_the_idp_s_reader_output_and_portal_access_log_rotate_without_loss(running_lab: Lab, plan: Plan, evidence: dict[str, Any]) -> None:
    """With the IdP's audit file read-only to its writers for the moment, a name of this run typed
    at the IdP before a rotation and another after it: the reader of the portal's refusals cannot
    write either message, and its audit-failed line for the first is in idp-portal-reader.log.1, for
    the second in a new idp-portal-reader.log (rsyslogd opened it again on SIGHUP; the mode and owner
    of the first), and the siem holds both, from the IdP. The same rotation moves nginx's access log
    of the portal: a page of this run asked before it is in idp-access.log.1, one asked after it in
    a new idp-access.log (nginx opened it again on SIGUSR1)."""
    lab = running_lab
    host = idp(lab).name
    if GUESSER not in lab.hosts or not lab.hosts[GUESSER].deployed:
        pytest.skip(f"lab {lab.name!r} deploys no {GUESSER}")
    users = {"before": f"rot-{RUN.lower()}-lost-a", "after": f"rot-{RUN.lower()}-lost-b"}
    pages = {"before": f"/rot-{RUN.lower()}-page-a", "after": f"/rot-{RUN.lower()}-page-b"}

    def request(path: str) -> dict[str, Any]:
        return page(lab, GUESSER, f"https://{host}{path}")

    with refusals_authorised(lab, GUESSER, "the rotation check's unknown names at the IdP"), idp_audit_read_only(lab, host) as seal:
        for when, user in users.items():
            if when == "after":
                rotate(lab, host)
                seal()  # the new audit file, as logrotate made it, is writable
                until_written_anew(lab, host, IDP_ACCESS_LOG, "nginx", request)  # its workers open the new file after the signal returns
            assert request(pages[when]).get("status") == 200  # the portal answers any page
            idp_sign_in(lab, plan, user, password="guess", client=GUESSER)
            wait_for(f"the {when} name's audit-failed event at the siem", lambda u=user: reader_failures(lab, u))
    evidence.update(users=users, pages=pages, mode_owner=[mode_owner(lab, host, IDP_READER_LOG), mode_owner(lab, host, IDP_ACCESS_LOG)])
    assert split_by_rotation(lab, host, IDP_READER_LOG, f'"{users["before"]}"', f'"{users["after"]}"') == (
        1, 0, 1, "600 root root", "600 root root")
    assert split_by_rotation(lab, host, IDP_ACCESS_LOG, f" {pages['before']} ", f" {pages['after']} ") == (
        1, 0, 1, "644 www-data root", "644 www-data root")


@pytest.mark.control("C-PRT-01")
def test_the_ris_s_order_record_rotates_without_loss(running_lab: Lab, evidence: dict[str, Any]) -> None:
    """An order of this run before the rotation and another after it: the first record is in
    hl7-orders.json.1, the second in a new hl7-orders.json (the listener's WatchedFileHandler
    reopened it; the mode and owner of the first), and the siem holds both, from the RIS."""
    lab = running_lab
    ris, sender, station = the(lab, "ris_servers"), order_entry(lab), tls_stations(lab)[0]
    accessions = {"before": f"RB{RUN}", "after": f"RA{RUN}"}
    for when, accession in accessions.items():
        if when == "after":
            rotate(lab, ris.name)
        ack = im.send_order(lab, sender.name, accession, str(station.ae_title), modality_of(lab, station), "PACSLAB^ROTATED", f"P{accession}")
        assert ack["ack"] == "AA", ack
        wait_for(f"the {when} order's record at the siem", lambda a=accession: [
            e for e in siem_json(lab, "events", "--contains", f'"accession": "{a}"') if e["event_type"] == "hl7-order-scheduled"])
    evidence.update(accessions=accessions, mode_owner=mode_owner(lab, ris.name, HL7_RECORD))
    assert split_by_rotation(lab, ris.name, HL7_RECORD, f'"accession": "{accessions["before"]}"', f'"accession": "{accessions["after"]}"') == (
        1, 0, 1, "640 pacslab-hl7 pacslab-hl7", "640 pacslab-hl7 pacslab-hl7")


@pytest.mark.control("C-PRT-01")
def test_the_proxy_s_access_logs_rotate_without_loss(running_lab: Lab, evidence: dict[str, Any]) -> None:
    """The internet computer asks the proxy for a page of the IdP (which it passes through) named
    for this run before the rotation, and another after it: the first request's line is in
    rproxy-idp-access.log.1, the second's in a new rproxy-idp-access.log (Apache opened it again on
    its graceful restart; the mode and owner of the first), and the siem holds both, from the proxy."""
    lab = running_lab
    host = proxy(lab).name
    pages = {"before": f"/rot-{RUN.lower()}-a", "after": f"/rot-{RUN.lower()}-b"}

    def request(path: str) -> dict[str, Any]:
        return page(lab, PROXY_CLIENT, f"https://{idp(lab).name}{path}")

    for when, marked in pages.items():
        if when == "after":
            rotate(lab, host)
            # the signal returns before Apache's graceful restart has ended the children that hold the renamed file
            until_written_anew(lab, host, RPROXY_IDP_LOG, "Apache", request)
        step = request(marked)
        assert step.get("status") == 200, step  # the IdP's portal answers any page
        wait_for(f"the {when} request at the siem", lambda p=marked: [
            e for e in siem_json(lab, "events", "--contains", f" {p} ") if e["event_type"] == "proxy-idp-request"])
    evidence.update(pages=pages, mode_owner=mode_owner(lab, host, RPROXY_IDP_LOG))
    assert split_by_rotation(lab, host, RPROXY_IDP_LOG, f" {pages['before']} ", f" {pages['after']} ") == (
        1, 0, 1, "644 root root", "644 root root")


@pytest.mark.control("C-PRT-01")
def test_the_bastion_s_own_records_rotate_without_loss(running_lab: Lab, evidence: dict[str, Any]) -> None:
    """On the bastion, a line to its auth file (facility authpriv, where sshd and sudo write) and one
    to its syslog file, before a rotation and a pair after it: the first pair in auth.log.1 and
    syslog.log.1, the second in new files its rsyslogd reopened on SIGHUP (640 root root, as it made
    the first), and the siem holds all four, from the bastion."""
    lab = running_lab
    host = bastion(lab).name
    marks = {"before": f"pacslab-rot-{RUN}-e", "after": f"pacslab-rot-{RUN}-f"}
    for when, mark in marks.items():
        if when == "after":
            rotate(lab, host)
        im.exec_in(lab, host, "logger", "-p", "authpriv.notice", "-t", "pacslab-probe", f"{mark}-auth")
        im.exec_in(lab, host, "logger", "-p", "user.notice", "-t", "pacslab-probe", f"{mark}-syslog")
        wait_for(f"the {when} lines at the siem", lambda m=mark: all(any(
            f"{m}-{kind}" in e["message"] for e in siem_json(lab, "events", "--contains", m) if e["host"] == host) for kind in ("auth", "syslog")))
    evidence.update(marks=marks, auth=mode_owner(lab, host, AUTH), syslog=mode_owner(lab, host, SYSLOG))
    for path, kind in ((AUTH, "auth"), (SYSLOG, "syslog")):
        assert len(lines_with(lab, host, path + ".1", f"{marks['before']}-{kind}")) == 1, path
        assert lines_with(lab, host, path, f"{marks['before']}-{kind}") == [], path
        assert len(lines_with(lab, host, path, f"{marks['after']}-{kind}")) == 1, path
        assert mode_owner(lab, host, path) == mode_owner(lab, host, path + ".1") == "640 root root"


def maintained(lab: Lab) -> list[str]:
    """The hosts a bastion maintains, written out from the reference lab's flows (F08b, F08c: the
    PACS and the CT), where a bastion is deployed (the second lab plans both flows)."""
    deployed = any(h.deployed for h in lab.group("bastions"))
    return [h for h in ("pacs", "mod-ct") if deployed and h in lab.hosts and lab.hosts[h].deployed]


@pytest.mark.control("C-PRT-01")
def test_a_maintained_host_s_sudo_and_sshd_logs_rotate_without_loss(running_lab: Lab, evidence: dict[str, Any]) -> None:
    """On the PACS, which the bastion maintains: a name of this run tried at its sshd from the
    bastion, and root's sudo use naming it, before the rotation and another pair after it. The
    first lines are in sshd.log.1 and sudo.log.1, the second in new files, root's alone (600), and
    the siem holds all four, from the PACS. sudo opens its log for each use, and so does each
    connection's sshd (re-executed); the listener, sent SIGHUP after the rotation, re-executes
    itself and writes "Server listening" to the new file, where its later lines go too."""
    lab = running_lab
    pacs = pacs_of(lab).name
    if pacs not in maintained(lab):
        pytest.skip(f"no bastion maintains {pacs} in lab {lab.name!r}")
    names = {"before": f"rot-{RUN.lower()}-c", "after": f"rot-{RUN.lower()}-d"}

    def shipped(name: str) -> set[str]:
        return {e["event_type"] for e in siem_json(lab, "events", "--contains", name) if e["host"] == pacs}

    for when, name in names.items():
        if when == "after":
            rotate(lab, pacs)
        unknown_name_at(lab, pacs, name)
        im.exec_in(lab, pacs, "sudo", "-n", "/bin/echo", name)
        wait_for(f"the {when} sshd and sudo lines at the siem", lambda n=name: shipped(n) >= {"ssh-invalid-user", "sudo-command"})
    evidence.update(names=names, sshd=mode_owner(lab, pacs, SSHD_LOG), sudo=mode_owner(lab, pacs, SUDO_LOG))
    for path, written in ((SSHD_LOG, "Invalid user {} from "), (SUDO_LOG, "COMMAND=/bin/echo {}")):
        assert len(lines_with(lab, pacs, path + ".1", written.format(names["before"]))) == 1, path
        assert lines_with(lab, pacs, path, written.format(names["before"])) == [], path
        assert len(lines_with(lab, pacs, path, written.format(names["after"]))) == 1, path
        assert mode_owner(lab, pacs, path) == mode_owner(lab, pacs, path + ".1") == "600 root root"
    assert lines_with(lab, pacs, SSHD_LOG, "Server listening on ") != []


def test_the_rotation_configuration_names_each_growing_log(running_lab: Lab) -> None:
    """What logrotate is told on each host whose image writes such logs (roles/log_rotation's
    defaults, written out), and that each rotation first removes the read position rsyslog keeps
    for the inode of the copy it removes: a host can drift only through `up`."""
    lab = running_lab
    expected = {lab.router.name: [DROPS, "/var/log/pacslab/fw-response.json"], pacs_of(lab).name: [EVENTS, AUDIT, HIDS],
                siem(lab).name: [f"{RAW_DIR}/*.log"], idp(lab).name: [IDP_AUDIT, READER_LOGS, IDP_ACCESS_LOG], proxy(lab).name: [RPROXY_LOGS],
                the(lab, "ris_servers").name: [EVENTS, AUDIT, HIDS, HL7_RECORD]}
    for host in (h.name for h in lab.group("bastions") if h.deployed):  # its own rsyslogd's files
        expected[host] = [SESSIONS, AUTH, SYSLOG]
    for host in maintained(lab):  # sudo's log and sshd's where a bastion maintains the host
        expected[host] = expected.get(host, []) + [SUDO_LOG, SSHD_LOG]
    for host, paths in expected.items():
        conf = im.exec_in(lab, host, "cat", CONF)
        named = [line.split()[0] for line in conf.splitlines() if line.endswith("{")]
        assert named == paths, (host, named)
        # before the oldest copy goes, the read position rsyslog keeps for its inode goes (a new log may get the inode)
        forget = [f'for copy in {path}.2; do inode=$(stat -c %i "$copy" 2>/dev/null) && rm -f /var/spool/rsyslog/imfile-state:"$inode" '
                  f'/var/spool/rsyslog/imfile-state:"$inode":*; done; true' for path in paths]
        assert [line.strip() for line in conf.splitlines() if line.strip().startswith("for copy in ")] == forget, host
        debug = im.exec_in(lab, host, "logrotate", "-d", "-s", "/dev/null", CONF, check=False)
        assert "error" not in debug.lower(), (host, debug)
