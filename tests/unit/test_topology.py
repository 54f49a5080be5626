"""The lab definition is validated before anything runs: each broken case names file, key, reason."""

from __future__ import annotations

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
    "flow-inside-one-zone": (
        lambda h, lv, f: f["lab_flows"].append({"id": "F99", "from": ["pacs"], "to": "vna", "proto": "tcp", "ports": [2762], "purpose": "x"}),
        "flows.yml", "(F99).from", "never crosses the firewall",
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
        "hosts.yml", "pacs.orthanc_controls", "does not waive C-ACC-05, C-ACC-06, C-DAT-02, C-DAT-03",
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
    waive = [{"control": c, "justification": "ingest baseline"} for c in ("C-ACC-05", "C-ACC-06", "C-DAT-02")]
    mutate(lab_copy, lambda h, lv, fl: lv.update(lab_waivers=waive))
    with pytest.raises(LabDefinitionError) as err:
        load_lab(lab_copy)
    [problem] = err.value.problems
    assert problem.file.endswith("host_vars/pacs.yml") and problem.key == "pacs.orthanc_controls"
    assert problem.reason.endswith("does not waive C-DAT-03")

    mutate(lab_copy, lambda h, lv, fl: lv["lab_waivers"].append({"control": "C-DAT-03", "justification": "ingest baseline"}))
    assert load_lab(lab_copy).hosts["pacs"].deployed


def test_control_switches_name_what_the_roles_turn_off() -> None:
    defaults = yaml.safe_load((REPO_ROOT / "roles" / "orthanc" / "defaults" / "main.yml").read_text())
    assert tuple(defaults["orthanc_controls_waived"]) == switched_off("orthanc_controls")


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
