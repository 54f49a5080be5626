"""The plan both engines map: apt sources read from the host, content-hash image tags, no privileges."""

from __future__ import annotations

import re
import shutil
from pathlib import Path

import pytest
import yaml

from pacslab.plan import AptSources, build_plan, read_apt_sources
from pacslab.topology import load_lab

from .conftest import DEFAULT_LAB

APT = AptSources(mirror="http://mirror.example/debian", files={"debian.sources": "Types: deb\n"})


def test_deb822_sources_give_the_main_mirror_not_security(tmp_path: Path) -> None:
    d = tmp_path / "sources.list.d"
    d.mkdir()
    (d / "debian.sources").write_text(
        "Types: deb\nURIs: http://deb.example/debian-security\nSuites: bookworm-security\nComponents: main\n\n"
        "Types: deb\nURIs: http://deb.example/debian\nSuites: bookworm bookworm-updates\nComponents: main\n"
    )
    (d / "old.list.disabled-by-farm").write_text("deb http://nope/ bookworm main\n")
    apt = read_apt_sources((d,), tmp_path / "sources.list")
    assert apt.mirror == "http://deb.example/debian"
    assert list(apt.files) == ["debian.sources"]


def test_one_line_sources_list(tmp_path: Path) -> None:
    legacy = tmp_path / "sources.list"
    legacy.write_text("# comment\ndeb [arch=amd64] http://ftp.example/debian bookworm main\ndeb http://security.example bookworm-security main\n")
    apt = read_apt_sources((tmp_path / "none",), legacy)
    assert apt.mirror == "http://ftp.example/debian"
    assert "host-sources.list" in apt.files


def test_only_the_router_holds_net_admin_and_forwards() -> None:
    """The fw routes (NET_ADMIN); the siem seals its raw files append-only (LINUX_IMMUTABLE); the
    Orthanc hosts' watch reads every process's executable (SYS_PTRACE); every other workload holds
    Docker's defaults alone."""
    lab = load_lab(DEFAULT_LAB)
    plan = build_plan(lab, APT)
    for c in plan.containers:
        if c.host == "fw":
            assert c.capabilities == ["NET_ADMIN"] and c.sysctls == {"net.ipv4.ip_forward": "1"}
            assert len(c.networks) == len(lab.zones) and c.router is None
        else:
            expected = {"siem": ["LINUX_IMMUTABLE"], "pacs": ["SYS_PTRACE"], "vna": ["SYS_PTRACE"], "ris": ["SYS_PTRACE"]}
            assert c.capabilities == expected.get(c.host, []), c.host
            assert c.sysctls == {"net.ipv4.ip_forward": "0"}


def test_image_tags_follow_content(tmp_path: Path) -> None:
    a = build_plan(load_lab(DEFAULT_LAB), APT)
    b = build_plan(load_lab(DEFAULT_LAB), AptSources(APT.mirror, {"debian.sources": "Types: deb\nURIs: other\n"}))
    assert a == build_plan(load_lab(DEFAULT_LAB), APT)  # stable: a warm up rebuilds nothing
    assert a.base.tag != b.base.tag  # other apt sources, other base
    assert {i.name for i in a.images} == {"bastion", "ca", "client", "dicom", "dir", "fw", "idp", "orthanc", "rproxy", "scanner", "sensor", "siem",
                                          "tools"}
    assert all(i.tag.startswith(f"pacslab/{i.name}:") for i in a.images)


def test_hosts_find_the_web_names_they_may_reach_and_the_internet_finds_the_idp_at_the_proxy() -> None:
    """Split horizon from the flow matrix: the clinical zone (F05a, F10b) and the proxy (F10b) reach
    the IdP itself, the proxy its backends (F05b, F05c); the internet zone (F07 only) finds the
    IdP's name at the proxy's address; hosts without a flow to an HTTPS service get no entry (and
    keep their container spec)."""
    names = {c.host: c.names for c in build_plan(load_lab(DEFAULT_LAB), APT).containers}
    assert names["ws-rad"] == names["ws-tech"] == {"idp": "10.77.10.11", "rproxy": "10.77.60.10", "siem": "10.77.50.10"}
    assert names["rproxy"] == {"idp": "10.77.10.11", "pacs": "10.77.40.10", "vna": "10.77.40.11"}
    assert names["remote-rad"] == names["attacker"] == names["vendor-eng"] == {"idp": "10.77.60.10", "rproxy": "10.77.60.10"}
    assert names["sensor"] == {"siem": "10.77.50.10"}  # F16b: the security zone's hosts reach the console
    assert names["scanner"] == {"siem": "10.77.50.10", "pacs": "10.77.40.10", "vna": "10.77.40.11"}  # and F12: any port of the datacenter
    assert {h for h, n in names.items() if n} == {"ws-rad", "ws-tech", "rproxy", "remote-rad", "attacker", "vendor-eng", "sensor", "scanner"}


def test_without_the_flow_to_the_proxy_the_internet_gets_no_name(lab_copy: Path) -> None:
    """Negative twin: the internet zone's one flow (F07) removed, it finds neither name."""
    flows = lab_copy / "group_vars/all/flows.yml"
    data = yaml.safe_load(flows.read_text())
    data["lab_flows"] = [f for f in data["lab_flows"] if f["id"] != "F07"]
    flows.write_text(yaml.safe_dump(data))
    names = {c.host: c.names for c in build_plan(load_lab(lab_copy), APT).containers}
    assert names["remote-rad"] == {} and names["rproxy"]["idp"] == "10.77.10.11"


def test_networks_are_one_per_zone_with_the_bridge_name() -> None:
    plan = build_plan(load_lab(DEFAULT_LAB), APT)
    assert [(n.name, n.bridge, n.subnet) for n in plan.networks][:2] == [
        ("pacslab-enterprise", "lab-enterprise", "10.77.10.0/24"),
        ("pacslab-clinical", "lab-clinical", "10.77.20.0/24"),
    ]
    assert plan.docker_user_comment == "pacslab:default" and plan.bridge_glob == "lab-+"


def test_a_role_s_generated_readme_is_no_converge_input(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """pacslab.docs writes each role's README.md from its argument specs (counted): regenerating it
    must not make a warm `up` converge every host again. What the plays read is counted, and so is
    a README.md deeper in a role (a file a task may copy)."""
    from pacslab import plan as plan_module

    role = tmp_path / "roles" / "idp"
    for rel, text in (("README.md", "# idp\n"), ("tasks/main.yml", "---\n[]\n"), ("files/notes/README.md", "copied\n")):
        (role / rel).parent.mkdir(parents=True, exist_ok=True)
        (role / rel).write_text(text)
    monkeypatch.setattr(plan_module, "REPO_ROOT", tmp_path)
    lab = load_lab(DEFAULT_LAB)
    before = plan_module.config_digest(lab)
    (role / "README.md").write_text("# idp, regenerated\n")
    assert plan_module.config_digest(lab) == before
    for rel in ("tasks/main.yml", "files/notes/README.md"):
        (role / rel).write_text("changed\n")
        assert plan_module.config_digest(lab) != before, rel
        before = plan_module.config_digest(lab)


def test_a_switch_on_one_host_changes_only_that_hosts_converge_inputs(lab_copy: Path) -> None:
    """W4's break-and-fix switch on the PACS (with its waiver): the shared digest is unchanged, only
    the PACS's own inputs differ, so a warm `up` re-converges the PACS alone; the full digest (what a
    snapshot is tied to) differs. A flow added (W2's) changes the shared digest: every host runs."""
    before = build_plan(load_lab(lab_copy), APT)
    with (lab_copy / "host_vars" / "pacs.yml").open("a") as f:
        f.write("\northanc_md5: false\n")
    lab_yml = lab_copy / "group_vars" / "all" / "lab.yml"
    lab_yml.write_text(lab_yml.read_text().replace("lab_waivers: []", "lab_waivers: [{control: C-DAT-03, justification: W4 break-and-fix}]"))
    after = build_plan(load_lab(lab_copy), APT)
    assert after.shared_digest == before.shared_digest and after.config_digest != before.config_digest
    assert {h for h in after.host_inputs if after.host_inputs[h] != before.host_inputs[h]} == {"pacs"}
    # W12's: a host_vars file of its own for the fw, holding the switch alone (the lab has none). In
    # a folder of its own: Ansible's host_vars plugin remembers, per process, which files a folder had.
    w12_dir = lab_copy.parent / "w12"
    shutil.copytree(lab_copy, w12_dir)
    assert not (w12_dir / "host_vars" / "fw.yml").exists()
    (w12_dir / "host_vars" / "fw.yml").write_text("---\nfirewall_dicom_limits: false\n")
    w12_yml = w12_dir / "group_vars" / "all" / "lab.yml"
    w12_yml.write_text(w12_yml.read_text().replace("W4 break-and-fix}]", "W4 break-and-fix}, {control: C-PRT-05, justification: W12}]"))
    w12 = build_plan(load_lab(w12_dir), APT)
    assert w12.shared_digest == before.shared_digest
    assert {h for h in w12.host_inputs if w12.host_inputs[h] != before.host_inputs[h]} == {"pacs", "fw"}
    # W5's: the peers of a PACS without DICOM TLS dial it in cleartext, so the switch is an input of
    # the PACS and of the hosts that name it as a peer (reference lab: its modalities, the reading
    # workstation, the VNA), not of the others (the RIS, the technologists' workstation, the gateway).
    w5_dir = lab_copy.parent / "w5"
    shutil.copytree(lab_copy, w5_dir)
    with (w5_dir / "host_vars" / "pacs.yml").open("a") as f:
        f.write("orthanc_dicom_tls: false\n")
    w5_yml = w5_dir / "group_vars" / "all" / "lab.yml"
    w5_waivers = "W4 break-and-fix}, {control: C-ACC-06, justification: W5}, {control: C-DAT-02, justification: W5}]"
    w5_yml.write_text(w5_yml.read_text().replace("W4 break-and-fix}]", w5_waivers))
    w5 = build_plan(load_lab(w5_dir), APT)
    assert w5.shared_digest == before.shared_digest
    assert {h for h in w5.host_inputs if w5.host_inputs[h] != after.host_inputs[h]} == {"pacs", "mod-ct", "mod-mr", "mod-legacy", "ws-rad", "vna"}
    flows = lab_copy / "group_vars" / "all" / "flows.yml"
    flows.write_text(flows.read_text() + "  - {id: F90, from: [zone:legacy], to: zone:datacenter, proto: any, ports: any, purpose: flat}\n")
    assert build_plan(load_lab(lab_copy), APT).shared_digest != before.shared_digest


def test_a_person_disabled_changes_only_the_directory_s_and_the_idp_s_inputs(lab_copy: Path) -> None:
    """The people are read by the directory (entries, locks) and the IdP (TOTP seeds) only: a person
    disabled in people.yml leaves the shared digest alone and re-converges dir and idp."""
    before = build_plan(load_lab(lab_copy), APT)
    people = lab_copy / "group_vars" / "all" / "people.yml"
    text = people.read_text()
    assert "name: rad-ada," in text
    people.write_text(text.replace("name: rad-ada,", "name: rad-ada, state: disabled,"))
    after = build_plan(load_lab(lab_copy), APT)
    assert after.shared_digest == before.shared_digest
    assert {h for h in after.host_inputs if after.host_inputs[h] != before.host_inputs[h]} == {"dir", "idp"}


ENGINE_HOST_REFUSALS = {
    "not JSON": ("{ansible_host: x}", "PACSLAB_ENGINE_HOST: not JSON"),
    "not an object": ('["x"]', "PACSLAB_ENGINE_HOST: must be a JSON object of Ansible connection variables"),
    "not an ansible variable": ('{"ansible_host": "d2", "docker_host": "tcp://d2"}', "PACSLAB_ENGINE_HOST: docker_host: only ansible_* variables"),
    "a password": ('{"ansible_connection": "ssh", "ansible_host": "d2", "ansible_password": "hunter2"}',
                   "PACSLAB_ENGINE_HOST: ansible_password: no password in an environment variable"),
    "no connection": ('{"ansible_host": "d2"}', "PACSLAB_ENGINE_HOST: ansible_connection missing"),
}


@pytest.mark.parametrize("case", list(ENGINE_HOST_REFUSALS))
def test_a_broken_engine_host_is_refused(monkeypatch: pytest.MonkeyPatch, case: str) -> None:
    from pacslab.engine import EngineHostError, engine_host_vars

    value, message = ENGINE_HOST_REFUSALS[case]
    monkeypatch.setenv("PACSLAB_ENGINE_HOST", value)
    with pytest.raises(EngineHostError, match="^" + re.escape(message)):
        engine_host_vars()


def test_the_engine_host_is_this_machine_unless_named(monkeypatch: pytest.MonkeyPatch) -> None:
    import sys

    from pacslab.engine import engine_host_vars

    monkeypatch.delenv("PACSLAB_ENGINE_HOST", raising=False)
    assert engine_host_vars() == {"ansible_connection": "local", "ansible_python_interpreter": sys.executable}
    monkeypatch.setenv("PACSLAB_ENGINE_HOST", '{"ansible_connection": "ssh", "ansible_host": "docker2", "ansible_port": 2222}')
    assert engine_host_vars() == {"ansible_connection": "ssh", "ansible_host": "docker2", "ansible_port": "2222"}


def test_a_class_hosts_connection_reaches_the_engine_variable_whole(monkeypatch: pytest.MonkeyPatch) -> None:
    """What a class file gives a Docker host becomes PACSLAB_ENGINE_HOST with Ansible's defaults
    written out (ssh, the inventory name as host), and engine_host_vars reads it back."""
    from pacslab.engine import engine_host_value, engine_host_vars

    assert engine_host_value("here", {"ansible_connection": "local"}) == ""
    monkeypatch.setenv("PACSLAB_ENGINE_HOST", engine_host_value("docker3", {"ansible_user": "root"}))
    assert engine_host_vars() == {"ansible_connection": "ssh", "ansible_host": "docker3", "ansible_user": "root"}


def test_no_role_reads_another_hosts_switch_or_the_waivers() -> None:
    """What the shared converge digest rests on (plan.HOST_LOCAL_KEYS): a control switch is read by
    its own host's roles only, and the waivers by no role but the switch assert. A role that reads
    one through hostvars, or the waivers anywhere else, would need them back in the shared digest."""
    from pacslab.plan import HOST_LOCAL_KEYS, REPO_ROOT

    assert_file = "roles/orthanc/tasks/main.yml"  # the switch assert: it reads lab_waivers
    offending = []
    for f in sorted((REPO_ROOT / "roles").rglob("*")):
        if f.suffix not in (".yml", ".j2") or not f.is_file() or "meta" in f.parts:
            continue
        where = f.relative_to(REPO_ROOT).as_posix()
        for n, line in enumerate(f.read_text().splitlines(), 1):
            for key in HOST_LOCAL_KEYS:
                if key in line and ("hostvars" in line or (key == "lab_waivers" and where != assert_file)):
                    offending.append(f"{where}:{n}")
    assert offending == []


def test_each_orthanc_host_is_given_the_listeners_its_watch_allows() -> None:
    """Written out from the reference lab's flows and roles/orthanc's declared extras: the flows'
    ports (DICOM TLS, HTTPS, the bastion's SSH to the PACS, HL7 to the RIS), the DICOM front's
    inner port 4242 and Orthanc's HTTP 8042. Computed on the controller (roles/orthanc pacslab-hids)."""
    plan = build_plan(load_lab(DEFAULT_LAB), APT)
    assert plan.listeners == {"pacs": ["tcp/22", "tcp/443", "tcp/2762", "tcp/4242", "tcp/8042"],
                              "vna": ["tcp/443", "tcp/2762", "tcp/4242", "tcp/8042"],
                              "ris": ["tcp/2575", "tcp/2762", "tcp/4242", "tcp/8042"]}
