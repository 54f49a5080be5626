"""The lab definition is validated before anything runs: each broken case names file, key, reason."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from pacslab import cli
from pacslab.topology import REPO_ROOT, LabDefinitionError, load_lab, switched_off

from .conftest import DEFAULT_LAB, host, mutate


def test_reference_lab_loads() -> None:
    lab = load_lab(DEFAULT_LAB)
    assert len(lab.zones) == 10
    assert lab.router.name == "fw"
    assert {f.id for f in lab.flows} >= {"F01", "F02", "F03", "F05a", "F07", "F08a", "F09", "F10a", "F11", "F12", "F13"}
    assert all(len(z.bridge) <= 15 for z in lab.zones.values())


BROKEN = {
    "overlapping-subnets": (
        lambda h, lv, f: lv["lab_zones"]["clinical"].update(subnet="10.77.10.0/23"),
        "lab.yml", "lab_zones.", "overlaps zone",
    ),
    "address-outside-zone": (
        lambda h, lv, f: host(h, "pacs").update(lab_address="10.77.99.10"),
        "hosts.yml", "pacs.lab_address", "outside zone datacenter",
    ),
    "flow-unknown-host": (
        lambda h, lv, f: f["lab_flows"][0].update(to="pacs2"),
        "flows.yml", "lab_flows[0] (F01).to", "unknown host 'pacs2'",
    ),
    "duplicate-address": (
        lambda h, lv, f: host(h, "vna").update(lab_address="10.77.40.10"),
        "hosts.yml", "lab_address", "duplicate address 10.77.40.10",
    ),
    "duplicate-ae-title": (
        lambda h, lv, f: host(h, "mod-mr").update(lab_ae_title="CT01"),
        "hosts.yml", "mod-mr.lab_ae_title", "already the AE title of mod-ct",
    ),
    "bridge-name-too-long": (
        lambda h, lv, f: lv.update(lab_bridge_prefix="pacslab-z-"),
        "lab.yml", "lab_zones.", "Linux allows at most 15",
    ),
    "missing-required-key": (
        lambda h, lv, f: host(h, "pacs").pop("lab_owner"),
        "hosts.yml", "pacs.lab_owner", "missing required key",
    ),
    "missing-zones": (
        lambda h, lv, f: lv.pop("lab_zones"),
        "group_vars/all", "lab_zones", "missing required key",
    ),
    "router-address-reserved": (
        lambda h, lv, f: lv["lab_zones"]["dmz"].update(router="10.77.60.1"),
        "lab.yml", "lab_zones.dmz.router", "reserved",
    ),
    "flow-mixing-zone-inside-and-outside": (
        lambda h, lv, f: f["lab_flows"].append({"id": "F99", "from": ["ris", "mod-ct"], "to": "vna", "proto": "tcp", "ports": [2762], "purpose": ""}),
        "flows.yml", "(F99).from", "split it",
    ),
    "flow-to-a-port-nothing-listens-on": (
        lambda h, lv, f: f["lab_flows"].append({"id": "F99", "from": ["mod-ct"], "to": "vna", "proto": "tcp", "ports": [4242], "purpose": "x"}),
        "flows.yml", "lab_flows (F99).ports", "vna has no service on tcp [4242]",
    ),
    "planned-flow-to-a-running-service": (
        lambda h, lv, f: f["lab_flows"][0].update(service="planned"),
        "flows.yml", "lab_flows (F01).service", "already offers",
    ),
    "service-no-flow-reaches": (
        lambda h, lv, f: host(h, "vna").update(lab_services={"dicom": 2762, "https": 443, "rogue": 4444}),
        "flows.yml", "lab_flows", "no flow reaches vna's service rogue (4444/tcp)",
    ),
    "dicom-peer-without-its-flow": (
        lambda h, lv, f: f["lab_flows"].__setitem__(0, {**f["lab_flows"][0], "from": ["mod-ct", "ovl-gw"]}),
        "host_vars/pacs.yml", "pacs.orthanc_peers[1]", "no flow in lab_flows lets mod-mr reach pacs:2762/tcp",
    ),
    "flow-without-its-dicom-peer": (
        lambda h, lv, f: f["lab_flows"].append({"id": "F99", "from": ["mod-ct"], "to": "vna", "proto": "tcp", "ports": [2762], "purpose": "x"}),
        "flows.yml", "lab_flows (F99).from", "mod-ct may reach vna:2762 but is not one of its orthanc_peers",
    ),
    "hl7-sender-without-its-flow": (
        lambda h, lv, f: next(x for x in f["lab_flows"] if x["id"] == "F03").update({"from": ["zone:enterprise"]}),
        "host_vars/ris.yml", "ris.ris_hl7_senders[0]", "no flow in lab_flows lets ws-tech reach ris:2575/tcp",
    ),
    "dicom-peer-port-on-a-host-without-dicom": (
        lambda h, lv, f: host(h, "ws-rad").update(lab_services={"storage": 2762}),
        "hosts.yml", "ws-rad.lab_services", "ws-rad has no 'dicom' service",
    ),
    "bad-service": (
        lambda h, lv, f: host(h, "pacs").update(lab_services={"dicom": 2762, "https": "443/sctp"}),
        "hosts.yml", "pacs.lab_services.https", "name: port (1-65535)",
    ),
    "duplicate-flow-id": (
        lambda h, lv, f: f["lab_flows"][1].update(id="F01"),
        "flows.yml", "lab_flows[1] (F01).id", "duplicate flow id",
    ),
    "bad-port": (
        lambda h, lv, f: f["lab_flows"][0].update(ports=[70000]),
        "flows.yml", "(F01).ports", "ports 1-65535",
    ),
    "unknown-lab-key": (
        lambda h, lv, f: host(h, "pacs").update(lab_adress="10.77.40.10"),
        "hosts.yml", "pacs.lab_adress", "unknown lab key",
    ),
    "published-port-outside-dmz": (
        lambda h, lv, f: host(h, "pacs").update(lab_publish=[8042]),
        "hosts.yml", "pacs.lab_publish", "exposed",
    ),
    "unknown-zone": (
        lambda h, lv, f: host(h, "pacs").update(lab_zone="basement"),
        "hosts.yml", "pacs.lab_zone", "unknown zone 'basement'",
    ),
    "no-image-folder": (
        lambda h, lv, f: host(h, "fw").update(lab_image="nosuchimage"),
        "hosts.yml", "fw.lab_image", "no images/nosuchimage/Dockerfile",
    ),
    "controls-off-without-waivers": (
        lambda h, lv, f: host(h, "pacs").update(orthanc_controls=False),
        "hosts.yml", "pacs.orthanc_controls", "does not waive C-ACC-03, C-ACC-05, C-ACC-06, C-DAT-02, C-DAT-03, C-DET-02, C-PRT-04, C-DET-03",
    ),
    "waiver-without-justification": (
        lambda h, lv, f: lv.update(lab_waivers=[{"control": "C-DAT-01", "justification": " "}]),
        "lab.yml", "lab_waivers[0].justification", "written justification",
    ),
}


@pytest.mark.parametrize("case", list(BROKEN), ids=list(BROKEN))
def test_broken_definition_is_refused_with_file_key_reason(case: str, lab_copy: Path) -> None:
    change, file, key, reason = BROKEN[case]
    mutate(lab_copy, change)
    with pytest.raises(LabDefinitionError) as err:
        load_lab(lab_copy)
    matching = [p for p in err.value.problems if file in p.file and key in p.key and reason in p.reason]
    assert matching, f"expected {file} / {key} / {reason!r}, got:\n{err.value}"


def test_a_control_switch_in_host_vars_needs_every_waiver(lab_copy: Path) -> None:
    """orthanc_controls: false (cleartext DICOM, no AE checks, no MD5) is the ingest baseline's
    switch; a lab that waives only some of what it turns off is refused, naming the host_vars file."""
    with (lab_copy / "host_vars" / "pacs.yml").open("a") as f:
        f.write("\northanc_controls: false\n")
    waive = [{"control": c, "justification": "ingest baseline"} for c in ("C-ACC-03", "C-ACC-05", "C-ACC-06", "C-DAT-02", "C-DET-02",
                                                                                "C-PRT-04", "C-DET-03")]
    mutate(lab_copy, lambda h, lv, fl: lv.update(lab_waivers=waive))
    with pytest.raises(LabDefinitionError) as err:
        load_lab(lab_copy)
    [problem] = err.value.problems
    assert problem.file.endswith("host_vars/pacs.yml") and problem.key == "pacs.orthanc_controls"
    assert problem.reason.endswith("does not waive C-DAT-03")

    mutate(lab_copy, lambda h, lv, fl: lv["lab_waivers"].append({"control": "C-DAT-03", "justification": "ingest baseline"}))
    assert load_lab(lab_copy).hosts["pacs"].deployed


@pytest.mark.parametrize("threads", [4, 2, "eight"])
def test_an_orthanc_serving_no_more_associations_than_one_source_may_hold_is_refused(lab_copy: Path, threads: object) -> None:
    """The fw lets one source hold 4 DICOM connections at once (C-PRT-05): an Orthanc serving 4 or
    fewer associations at once is taken whole by one flooding device, so the definition is refused."""
    with (lab_copy / "host_vars" / "vna.yml").open("a") as f:
        f.write(f"\northanc_dicom_threads: {threads}\n")
    with pytest.raises(LabDefinitionError) as err:
        load_lab(lab_copy)
    [problem] = err.value.problems
    assert problem.file.endswith("host_vars/vna.yml") and problem.key == "vna.orthanc_dicom_threads"
    assert problem.reason.startswith(f"{threads!r}: vna must serve more DICOM associations at once than the 4 the fw lets one source hold")


def test_the_role_default_threads_exceed_what_one_source_may_hold(lab_copy: Path) -> None:
    with (lab_copy / "host_vars" / "vna.yml").open("a") as f:
        f.write("\northanc_dicom_threads: 5\n")
    assert load_lab(lab_copy).host_vars["vna"]["orthanc_dicom_threads"] == 5
    defaults = yaml.safe_load((REPO_ROOT / "roles" / "orthanc" / "defaults" / "main.yml").read_text())
    assert defaults["orthanc_dicom_threads"] == 8  # twice what one source may hold: room for a second device


@pytest.mark.parametrize(("file", "line", "key", "reason"), [
    ("siem.yml", "siem_silent_after: 30", "siem.siem_silent_after",
     "30: siem must wait longer than two heartbeats of its slowest watch (30 s) before it calls a host silent, or 0 to call none"),
    ("siem.yml", "siem_silent_after: soon", "siem.siem_silent_after",
     "'soon': siem must wait longer than two heartbeats of its slowest watch (30 s) before it calls a host silent, or 0 to call none"),
    ("mod-mr.yml", "pacslab_supervision_heartbeat: 0", "mod-mr.pacslab_supervision_heartbeat", "0: a whole number of seconds, at least 1"),
    ("mod-mr.yml", "pacslab_supervision_heartbeat: 50", "siem.pacslab_supervision_heartbeat",
     "45: siem must wait longer than two heartbeats of its slowest watch (100 s) before it calls a host silent, or 0 to call none"),
    ("siem.yml", "pacslab_supervision_heartbeat: 50\nsiem_silent_after: 90", "siem.siem_silent_after",
     "90: siem must wait longer than two heartbeats of its slowest watch (100 s) before it calls a host silent, or 0 to call none"),
])
def test_a_silence_no_longer_than_two_heartbeats_is_refused(lab_copy: Path, file: str, line: str, key: str, reason: str) -> None:
    """The siem calls a source silent when no heartbeat of its watch came for siem_silent_after
    seconds (log-source-silent, C-PRT-01): a wait of two heartbeats or less, or a heartbeat that is
    no whole number of seconds, would call sources silent that are not."""
    with (lab_copy / "host_vars" / file).open("a") as f:
        f.write(f"\n{line}\n")
    with pytest.raises(LabDefinitionError) as err:
        load_lab(lab_copy)
    [problem] = err.value.problems
    assert (problem.key, problem.reason) == (key, reason)


def test_a_silence_of_0_calls_no_source_silent_and_is_accepted(lab_copy: Path) -> None:
    with (lab_copy / "host_vars" / "siem.yml").open("a") as f:
        f.write("\nsiem_silent_after: 0\n")
    assert load_lab(lab_copy).host_vars["siem"]["siem_silent_after"] == 0


# What each switch turns off, written out from the controls catalogue (C-ACC-05 allow-listing,
# C-ACC-06 device certificates, C-DAT-02 DICOM TLS, C-DAT-03 MD5, C-DET-02 malware scan, C-PRT-05
# DICOM limits).
SWITCHED_OFF = {
    "orthanc_controls": ("C-ACC-03", "C-ACC-05", "C-ACC-06", "C-DAT-02", "C-DAT-03", "C-DET-02", "C-PRT-04", "C-DET-03"),
    "orthanc_dicom_allowlist": ("C-ACC-05",),
    "orthanc_dicom_peer_certificates": ("C-ACC-06",),
    "orthanc_md5": ("C-DAT-03",),
    "orthanc_dicom_tls": ("C-ACC-06", "C-DAT-02"),
    "orthanc_malware_scan": ("C-DET-02",),
    "orthanc_hids": ("C-PRT-04", "C-DET-03"),
    "firewall_dicom_limits": ("C-PRT-05",),
    "log_rotation_append_only": ("C-RSP-03",),
    "log_shipping_dicom_audit": ("C-PRT-01", "C-DAT-06", "C-DET-07"),
}


@pytest.mark.parametrize("switch", list(SWITCHED_OFF))
def test_control_switches_name_what_the_roles_turn_off(switch: str) -> None:
    assert switched_off(switch) == SWITCHED_OFF[switch]


@pytest.mark.parametrize("switch", ["orthanc_dicom_allowlist", "orthanc_dicom_peer_certificates", "orthanc_md5", "orthanc_dicom_tls"])
def test_a_scenario_switch_on_the_pacs_needs_its_waiver(lab_copy: Path, switch: str) -> None:
    """The break-and-fix switches of W3, W4 and W5: false without the waivers is refused, naming the
    file, the key and the controls; with them, the PACS is still deployed."""
    with (lab_copy / "host_vars" / "pacs.yml").open("a") as f:
        f.write(f"\n{switch}: false\n")
    with pytest.raises(LabDefinitionError) as err:
        load_lab(lab_copy)
    [problem] = err.value.problems
    assert (problem.file.endswith("host_vars/pacs.yml"), problem.key) == (True, f"pacs.{switch}")
    controls = ", ".join(SWITCHED_OFF[switch])
    assert problem.reason == f"false turns off {controls} on pacs; lab_waivers does not waive {controls}"
    mutate(lab_copy, lambda h, lv, fl: lv.update(lab_waivers=[{"control": c, "justification": "break-and-fix"} for c in SWITCHED_OFF[switch]]))
    assert load_lab(lab_copy).host_vars["pacs"][switch] is False


def test_yaml_syntax_error_names_the_line(lab_copy: Path) -> None:
    (lab_copy / "hosts.yml").write_text("all:\n  children:\n    x: {hosts: [\n")
    with pytest.raises(LabDefinitionError) as err:
        load_lab(lab_copy)
    assert len(err.value.problems) == 1  # no cascade of follow-on complaints
    assert "hosts.yml" in err.value.problems[0].file and "line" in err.value.problems[0].key


def test_quoting_slip_in_flow_mapping_is_refused(lab_copy: Path) -> None:
    """`{lab_purpose: CT (TLS, cert)}` silently makes a key 'cert)': refuse it."""
    text = (lab_copy / "hosts.yml").read_text().replace('lab_purpose: "CT simulator (DICOM TLS, device certificate)"', "lab_purpose: CT (TLS, cert)")
    (lab_copy / "hosts.yml").write_text(text)
    with pytest.raises(LabDefinitionError, match=r"cert\)"):
        load_lab(lab_copy)


@pytest.mark.parametrize("verb", ["up", "down", "status", "verify"])
def test_every_command_refuses_a_broken_lab_before_touching_anything(verb: str, lab_copy: Path, monkeypatch, capsys) -> None:
    mutate(lab_copy, BROKEN["duplicate-address"][0])

    def forbidden(*args, **kwargs):
        raise AssertionError("nothing may run for a refused lab definition")

    monkeypatch.setattr(cli, "run_playbook", forbidden)
    monkeypatch.setattr(cli, "engine_version", forbidden)
    monkeypatch.setattr(cli.subprocess, "run", forbidden)
    assert cli.main([verb, "--lab", str(lab_copy)]) == cli.EXIT_BAD_LAB
    err = capsys.readouterr().err
    assert "refused; nothing was changed" in err and "hosts.yml" in err and "duplicate address" in err


def _append(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("a") as f:
        f.write(text)


@pytest.mark.parametrize("place", ["group_vars/pacs_servers.yml", "group_vars/pacs_servers/controls.yml", "group_vars/all/controls.yml"])
def test_a_control_switch_in_any_group_vars_is_refused(place: str, lab_copy: Path) -> None:
    """Ansible reads every group's vars; so does the lab definition: a switch there is refused before
    anything changes, naming the file that sets it and the hosts it turns controls off on."""
    _append(lab_copy / place, "---\northanc_controls: false\n")
    with pytest.raises(LabDefinitionError) as err:
        load_lab(lab_copy)
    problems = [p for p in err.value.problems if p.key == "orthanc_controls"]
    assert len(problems) == 1, err.value
    assert problems[0].file.endswith(place)
    assert re.search(r" on (.*, )?pacs[,;]", problems[0].reason)
    assert problems[0].reason.endswith("does not waive C-ACC-03, C-ACC-05, C-ACC-06, C-DAT-02, C-DAT-03, C-DET-02, C-PRT-04, C-DET-03")


def test_a_control_switch_in_group_vars_inside_hosts_yml_is_refused(lab_copy: Path) -> None:
    mutate(lab_copy, lambda h, lv, f: h["all"]["children"]["vna_servers"].update(vars={"orthanc_controls": False}))
    with pytest.raises(LabDefinitionError) as err:
        load_lab(lab_copy)
    [problem] = err.value.problems
    assert problem.file.endswith("hosts.yml") and problem.key == "vna_servers.vars.orthanc_controls"
    assert "on vna" in problem.reason


def test_a_control_switch_is_a_boolean(lab_copy: Path) -> None:
    _append(lab_copy / "host_vars" / "pacs.yml", '\northanc_controls: "no"\n')
    with pytest.raises(LabDefinitionError) as err:
        load_lab(lab_copy)
    [problem] = err.value.problems
    assert problem.key == "pacs.orthanc_controls" and problem.reason == "'no': must be true or false"


def test_a_lab_wide_key_set_for_one_group_is_refused(lab_copy: Path) -> None:
    _append(lab_copy / "group_vars" / "modalities.yml", "---\nlab_prefix: other\n")
    with pytest.raises(LabDefinitionError) as err:
        load_lab(lab_copy)
    assert {p.key for p in err.value.problems} == {"lab_prefix"}
    assert all(p.file.endswith("group_vars/modalities.yml") and "group_vars/all only" in p.reason for p in err.value.problems)


@pytest.mark.parametrize(("place", "text", "key", "instead"), [
    ("host_vars/pacs.yml", "\northanc_hids_events: /var/log/elsewhere.json\n", "pacs.orthanc_hids_events", "pacslab_hids_events"),
    ("host_vars/pacs.yml", "\northanc_hids_user: watcher\n", "pacs.orthanc_hids_user", "pacslab_hids_user"),
    ("group_vars/all/old.yml", "---\nmaintenance_sudo_log: /var/log/sudo-elsewhere.log\n", "maintenance_sudo_log", "pacslab_sudo_log"),
    ("group_vars/ris_servers.yml", "---\nris_hl7_record: /tmp/hl7.json\n", "ris_hl7_record", "pacslab_hl7_record"),
    ("host_vars/pacs.yml", "\nmaintenance_sshd_log: /var/log/sshd-elsewhere.log\n", "pacs.maintenance_sshd_log", "pacslab_sshd_log"),
])
def test_a_removed_role_variable_is_refused_naming_what_replaced_it(lab_copy: Path, place: str, text: str, key: str, instead: str) -> None:
    """A lab definition written for an older pacslab that still sets a removed variable is refused
    once per place that sets it (not once per host it reaches), naming the playbooks' variable
    that replaced it: left alone it would change nothing, silently."""
    _append(lab_copy / place, text)
    with pytest.raises(LabDefinitionError) as err:
        load_lab(lab_copy)
    [problem] = err.value.problems
    assert problem.file.endswith(place) and problem.key == key
    assert problem.reason.startswith("removed, delete it: every role that reads ")
    assert f"now reads the playbooks' {instead} (playbooks/group_vars/all/" in problem.reason


@pytest.mark.parametrize(("place", "text", "key", "where"), [
    ("group_vars/all/paths.yml", "---\npacslab_hids_user: watcher\n", "pacslab_hids_user", "group_vars/all/paths.yml"),
    ("hosts.yml", None, "pacs_servers.vars.pacslab_sudo_log", "hosts.yml"),
    ("hosts.yml", "parent", "imaging.vars.pacslab_sudo_log", "hosts.yml"),
])
def test_a_playbook_wide_variable_set_where_ansible_outranks_it_is_refused(lab_copy: Path, place: str, text: str | None, key: str,
                                                                           where: str) -> None:
    """The playbooks' group_vars/all outranks a lab's group_vars/all and the group vars of hosts.yml
    (Ansible's variable precedence 3 and 4 against 5): a value set there would be silently ignored,
    in a group's vars or in its parent group's (imaging, whose child pacs_servers is)."""
    if text is None:
        mutate(lab_copy, lambda h, lv, f: h["all"]["children"]["pacs_servers"].update(vars={"pacslab_sudo_log": "/tmp/sudo.log"}))
    elif text == "parent":
        mutate(lab_copy, lambda h, lv, f: h["all"]["children"].update(
            imaging={"children": {"pacs_servers": None}, "vars": {"pacslab_sudo_log": "/tmp/sudo.log"}}))
    else:
        _append(lab_copy / place, text)
    with pytest.raises(LabDefinitionError) as err:
        load_lab(lab_copy)
    [problem] = err.value.problems
    assert problem.file.endswith(where) and problem.key == key
    assert problem.reason.startswith("changes nothing: the playbooks' playbooks/group_vars/all/")
    assert problem.reason.endswith("set it in a group's group_vars file or in host_vars")


def test_a_playbook_wide_variable_on_a_host_called_vars_is_taken(lab_copy: Path) -> None:
    """A host's own entry in hosts.yml ranks above the playbooks' group_vars/all (precedence 8
    against 5), whatever the host is called, "vars" too."""
    mutate(lab_copy, lambda h, lv, f: h["all"]["children"]["workstations"]["hosts"].update(
        vars={"lab_zone": "clinical", "lab_address": "10.77.20.99", "lab_state": "planned", "lab_owner": "radiology",
              "lab_criticality": "low", "lab_purpose": "a spare workstation", "pacslab_sudo_log": "/var/log/sudo-spare.log"}))
    assert load_lab(lab_copy).host_vars["vars"]["pacslab_sudo_log"] == "/var/log/sudo-spare.log"


def test_a_playbook_wide_variable_in_a_group_s_group_vars_file_is_taken(lab_copy: Path) -> None:
    """A group's group_vars file ranks above the playbooks' group_vars/all (precedence 6 against 5)."""
    _append(lab_copy / "group_vars" / "pacs_servers.yml", "---\npacslab_hids_user: watcher\n")
    assert load_lab(lab_copy).host_vars["pacs"]["pacslab_hids_user"] == "watcher"


@pytest.mark.parametrize("place", ["host_vars/fw.json", "host_vars/fw", "group_vars/firewalls/more/switches", "group_vars/all/switches.json"])
def test_a_switch_in_any_file_ansible_reads_is_refused_naming_that_file(lab_copy: Path, place: str) -> None:
    """Ansible reads vars files ending .yml, .yaml, .json or nothing, and folders all the way down;
    a switch there is found and refused with that file, not with hosts.yml."""
    _append(lab_copy / place, '{"firewall_dicom_limits": false}\n')
    with pytest.raises(LabDefinitionError) as err:
        load_lab(lab_copy)
    [problem] = err.value.problems
    assert problem.file.endswith(place), problem
    assert problem.key in {"firewall_dicom_limits", "fw.firewall_dicom_limits"}
    assert problem.reason.startswith("false turns off C-PRT-05 on fw")


def test_a_switch_in_a_folder_is_refused_in_the_last_file_that_sets_it(lab_copy: Path) -> None:
    """In a vars folder Ansible reads the files by name and a later one's value wins: a.yml says
    true, b.yml false; Ansible takes false, and the refusal names b.yml."""
    _append(lab_copy / "group_vars" / "firewalls" / "a.yml", "---\nfirewall_dicom_limits: true\n")
    _append(lab_copy / "group_vars" / "firewalls" / "b.yml", "---\nfirewall_dicom_limits: false\n")
    with pytest.raises(LabDefinitionError) as err:
        load_lab(lab_copy)
    [problem] = err.value.problems
    assert problem.file.endswith("group_vars/firewalls/b.yml") and problem.reason.startswith("false turns off C-PRT-05 on fw"), problem


def test_a_group_named_like_pacslab_s_own_is_refused(lab_copy: Path) -> None:
    mutate(lab_copy, lambda h, lv, f: h["all"]["children"].update(pacslab_deployed={"children": {"pacs_servers": None}}))
    with pytest.raises(LabDefinitionError) as err:
        load_lab(lab_copy)
    assert [(p.file.endswith("hosts.yml"), p.key, p.reason) for p in err.value.problems] == [
        (True, "pacslab_deployed",
         "pacslab_deployed is pacslab's own group (the deployed nodes, roles/lab_provision): call the lab's group otherwise")]


def test_a_switch_is_refused_where_ansible_takes_it_from(lab_copy: Path) -> None:
    """group_vars/all ranks above every group's vars in hosts.yml (Ansible's precedence 4 against 3):
    with the fw's group saying true in hosts.yml and group_vars/all false, Ansible takes false, and
    the refusal names group_vars/all, where the false is, not hosts.yml."""
    mutate(lab_copy, lambda h, lv, f: h["all"]["children"]["firewalls"].update(vars={"firewall_dicom_limits": True}))
    _append(lab_copy / "group_vars" / "all" / "switches.yml", "---\nfirewall_dicom_limits: false\n")
    with pytest.raises(LabDefinitionError) as err:
        load_lab(lab_copy)
    [problem] = err.value.problems
    assert (problem.file.endswith("group_vars/all/switches.yml"), problem.key) == (True, "firewall_dicom_limits"), problem
    assert problem.reason.startswith("false turns off C-PRT-05 on fw")


@pytest.mark.parametrize(("place", "reason"), [
    ("group_vars/all.yml", "Ansible does not read it: for all it reads group_vars/all alone; move its variables there"),
    ("host_vars/pacs.yaml", "Ansible does not read it: for pacs it reads host_vars/pacs.yml alone; move its variables there"),
    ("group_vars/pacs_server.yml", "no group of hosts.yml is called pacs_server: Ansible never reads it"),
    ("host_vars/pacs2.yml", "no host of hosts.yml is called pacs2: Ansible never reads it"),
    ("group_vars/pacslab_configuring.yml", "pacslab_configuring is pacslab's own group (the nodes an up configures, playbooks/up.yml): "
                                           "a lab does not set its variables; set them for a group of hosts.yml"),
])
def test_a_vars_file_ansible_never_reads_is_refused(lab_copy: Path, place: str, reason: str) -> None:
    """A second file for the same name, or one for a misspelt group or host, would be silently ignored."""
    _append(lab_copy / place, "---\northanc_threads: 8\n")
    with pytest.raises(LabDefinitionError) as err:
        load_lab(lab_copy)
    assert [(p.file[-len(place):], p.key, p.reason) for p in err.value.problems] == [(place, "(file)", reason)]


def test_a_vars_folder_with_a_suffix_and_tab_indented_json_are_read_as_ansible_reads_them(lab_copy: Path) -> None:
    """Ansible takes group_vars/<group>.yml/ as that group's folder, and reads JSON before YAML (a
    tab in the indentation is JSON's whitespace, not YAML's)."""
    _append(lab_copy / "group_vars" / "firewalls.yml" / "limits.json", '{\n\t"firewall_dicom_limits": false\n}\n')
    with pytest.raises(LabDefinitionError) as err:
        load_lab(lab_copy)
    [problem] = err.value.problems
    assert problem.file.endswith("group_vars/firewalls.yml/limits.json") and problem.reason.startswith("false turns off C-PRT-05 on fw")


def test_hidden_files_backups_and_notes_in_vars_folders_are_left_alone(lab_copy: Path) -> None:
    for name in ("group_vars/.gitkeep", "host_vars/pacs.yml~", "group_vars/README.md", "group_vars/all/.notes.yml"):
        _append(lab_copy / name, "not: [a mapping\n")
    load_lab(lab_copy)


def test_a_port_typed_beside_a_peer_is_refused(lab_copy: Path) -> None:
    """Ports come from the peer's lab_services: a second copy could disagree with the flow matrix."""
    text = (lab_copy / "host_vars" / "mod-ct.yml").read_text().replace("{name: pacs, host: pacs}", "{name: pacs, host: pacs, port: 2762}")
    (lab_copy / "host_vars" / "mod-ct.yml").write_text(text)
    with pytest.raises(LabDefinitionError) as err:
        load_lab(lab_copy)
    [problem] = err.value.problems
    assert problem.key == "mod-ct.dicom_node_peers[0].port" and "ports come from lab_services" in problem.reason


def test_reference_lab_ports_and_flows_inside_zones() -> None:
    """Written out by hand: what the reference lab's definition says each service listens on."""
    lab = load_lab(DEFAULT_LAB)
    assert {(s.name, s.proto, s.port) for s in lab.hosts["pacs"].services} == {("dicom", "tcp", 2762), ("https", "tcp", 443), ("ssh", "tcp", 22)}
    assert {(s.name, s.proto, s.port) for s in lab.hosts["ovl-gw"].services} == {("dicom-pacs", "tcp", 104), ("dicom-ris", "tcp", 105)}
    assert lab.hosts["ris"].service("hl7").port == 2575 and lab.hosts["ws-rad"].dicom_port == 2762
    # F15: the fw into the security zone; F16b: its hosts to the console; F09b: the sensor's syslog to the siem
    assert [f.id for f in lab.zone_flows] == ["F04", "F15", "F16b", "F09b", "F14"]
    assert "F04" not in {f.id for f in lab.flows}  # never a firewall rule
    assert {f.id for f in lab.flows if f.planned} == set()  # the bastion's maintenance targets run sshd
    assert {f.id for f in load_lab(REPO_ROOT / "tests" / "labs" / "alt").flows if f.planned} == {"F08b", "F08c"}


LAB_FOLDERS = sorted(p.parent for pattern in ("inventories", "bench/labs", "tests/labs") for p in REPO_ROOT.glob(f"{pattern}/*/hosts.yml"))


@pytest.mark.parametrize("folder", LAB_FOLDERS, ids=[str(p.relative_to(REPO_ROOT)) for p in LAB_FOLDERS])
def test_the_definition_is_what_ansible_inventory_lists(folder: Path) -> None:
    """The loader and Ansible agree on every lab folder in the repository: the same hosts, the same
    groups per host, and the same lab keys, as `ansible-inventory --list` prints them."""
    exe = Path(sys.executable).parent / "ansible-inventory"
    listing = json.loads(subprocess.run([str(exe), "-i", str(folder / "hosts.yml"), "--list"], capture_output=True, text=True, check=True).stdout)
    lab = load_lab(folder)
    hostvars = listing["_meta"]["hostvars"]
    assert set(hostvars) == set(lab.hosts)
    groups = {g: set(body.get("hosts", [])) for g, body in listing.items() if g not in ("_meta", "all", "ungrouped")}
    for h in lab.hosts.values():
        assert set(h.groups) == {g for g, members in groups.items() if h.name in members}, h.name
        hv = hostvars[h.name]
        assert hv.get("lab_address") == (str(h.address) if h.address else None), h.name
        assert hv.get("lab_ae_title") == h.ae_title and hv.get("lab_image") == h.image, h.name
        assert hv.get("lab_state", "deployed") == h.state, h.name
        assert {k: hv.get(k) for k in ("orthanc_peers", "dicom_node_peers", "ris_hl7_senders", "orthanc_controls")} == {
            k: lab.host_vars[h.name].get(k) for k in ("orthanc_peers", "dicom_node_peers", "ris_hl7_senders", "orthanc_controls")
        }, h.name
        assert hv["lab_prefix"] == lab.prefix and len(hv["lab_flows"]) == len(lab.all_flows)


@pytest.mark.parametrize(("sources", "reason"), [
    ("[bastion, nosuch]", "unknown host 'nosuch'"),
    ("[bastion, remote-rad]", "no flow in lab_flows lets remote-rad reach siem:6514/tcp"),
    ("bastion", "a list of host names"),
    ("[bastion, remote-rad]", "remote-rad's image client has no rsyslog with its TLS driver (rsyslog-gnutls) to ship with"),
])
def test_a_log_source_the_siem_cannot_hear_is_refused(lab_copy: Path, sources: str, reason: str) -> None:
    """siem_sources (roles/log_shipping) names known hosts, each with a flow to the siem's
    syslog-tls port (F09): the internet zone's remote-rad has none."""
    (lab_copy / "group_vars" / "all" / "monitoring.yml").write_text(f"---\nsiem_sources: {sources}\n")
    with pytest.raises(LabDefinitionError) as err:
        load_lab(lab_copy)
    problems = err.value.problems
    assert all(p.file.endswith("group_vars/all/monitoring.yml") and p.key.startswith("siem_sources") for p in problems), problems
    assert reason in [p.reason for p in problems]


def test_the_router_starts_a_flow_of_its_own_but_ends_none(lab_copy: Path) -> None:
    """F15 (fw -> siem): the fw's own connection, from its address in the siem's zone, is no firewall
    rule; a flow to the fw is refused (it offers no service of its own)."""
    lab = load_lab(DEFAULT_LAB)
    assert "F15" in {f.id for f in lab.zone_flows} and "F15" not in {f.id for f in lab.flows}
    flows = lab_copy / "group_vars" / "all" / "flows.yml"
    flows.write_text(flows.read_text().replace("    from: [fw]\n    to: siem\n", "    from: [siem]\n    to: fw\n"))
    with pytest.raises(LabDefinitionError) as err:
        load_lab(lab_copy)
    assert ("lab_flows[20] (F15).to", "fw is the router; flows pass through it, they do not end there") in {
        (p.key, p.reason) for p in err.value.problems}
