"""Security properties of the Pulumi program, asserted on Pulumi's mocks (no engine needed)."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pulumi
import pytest
import yaml

from infra.lab import deploy  # noqa: I001  (after the mocks are set)
from pacslab.plan import AptSources, build_plan
from pacslab.topology import REPO_ROOT, load_lab
from tests import pulumi_mocks
from tests.unit.conftest import DEFAULT_LAB, host, mutate

APT = AptSources(mirror="http://mirror.example/debian", files={"debian.sources": "Types: deb\n"})


def declared(lab_dir: Path):
    """Run the program for a lab; resolve once every container's outputs are known."""
    pulumi_mocks.reset()
    res = deploy(build_plan(load_lab(lab_dir), APT))
    outputs = [h.container.networks_advanced for h in res.hosts] + [z.network.name for z in res.zones.values()]
    return pulumi.Output.all(*outputs).apply(lambda _: pulumi_mocks.describe_mocked())


@pytest.fixture
def dmz_lab(lab_copy: Path) -> Path:
    """The reference lab with rproxy deployed (tools image), so a published port exists to check."""
    mutate(lab_copy, lambda h, lv, f: host(h, "rproxy").update(lab_state="deployed", lab_image="tools"))
    monitoring = lab_copy / "group_vars/all/monitoring.yml"  # the tools image has no rsyslog to ship the proxy's access log with
    sources = yaml.safe_load(monitoring.read_text())
    monitoring.write_text(yaml.safe_dump(sources | {"siem_sources": [s for s in sources["siem_sources"] if s != "rproxy"]}))
    return lab_copy


@pulumi.runtime.test
def test_only_the_dmz_proxy_publishes_443(dmz_lab: Path):
    def check(d):
        published = {n: c["ports"] for n, c in d["containers"].items() if c["ports"]}
        assert published == {"pacslab-rproxy": [443]}

    return declared(dmz_lab).apply(check)


@pulumi.runtime.test
def test_each_container_only_on_its_zone_network(dmz_lab: Path):
    lab = load_lab(dmz_lab)

    def check(d):
        for name, c in d["containers"].items():
            hostname = name.removeprefix("pacslab-")
            h = lab.hosts[hostname]
            if h.is_router:
                assert sorted(c["networks"]) == sorted((lab.network_name(z.name), str(z.router)) for z in lab.zones.values())
            else:
                assert c["networks"] == [(lab.network_name(h.zone), str(h.address))]

    return declared(dmz_lab).apply(check)


@pulumi.runtime.test
def test_net_admin_only_on_fw_and_networks_internal(dmz_lab: Path):
    def check(d):
        holders = sorted(n for n, c in d["containers"].items() if "NET_ADMIN" in c["capabilities"])
        assert holders == ["pacslab-fw"]
        assert all(n["internal"] for n in d["networks"].values())
        assert all(len(n["bridge"]) <= 15 for n in d["networks"].values())
        assert d["containers"]["pacslab-rproxy"]["sysctls"] == {"net.ipv4.ip_forward": "0"}

    return declared(dmz_lab).apply(check)


@pulumi.runtime.test
def test_containers_get_the_web_names_of_the_plan_in_etc_hosts():
    """The internet computer finds the IdP at the proxy (split horizon); a host without a flow to an
    HTTPS service gets no entry."""
    def check(d):
        assert d["containers"]["pacslab-remote-rad"]["hosts"] == {"idp": "10.77.60.10", "rproxy": "10.77.60.10"}
        assert d["containers"]["pacslab-ws-rad"]["hosts"] == {"idp": "10.77.10.11", "rproxy": "10.77.60.10", "siem": "10.77.50.10"}
        assert d["containers"]["pacslab-pacs"]["hosts"] == {}

    return declared(DEFAULT_LAB).apply(check)


@pulumi.runtime.test
def test_a_published_port_outside_the_dmz_fails_the_check(dmz_lab: Path):
    """Negative twin: the same check flags a port published by a datacenter host."""
    lab = dmz_lab
    text = yaml.safe_load((lab / "group_vars/all/lab.yml").read_text())
    text["lab_zones"]["datacenter"]["exposed"] = True  # only so the definition accepts it
    (lab / "group_vars/all/lab.yml").write_text(yaml.safe_dump(text))
    mutate(lab, lambda h, lv, f: host(h, "pacs").update(lab_state="deployed", lab_image="tools", lab_publish=[8042]))
    monitoring = lab / "group_vars/all/monitoring.yml"  # the tools image has no rsyslog to ship the PACS's events with
    sources = yaml.safe_load(monitoring.read_text())
    monitoring.write_text(yaml.safe_dump(sources | {"siem_sources": [s for s in sources["siem_sources"] if s != "pacs"]}))

    def check(d):
        published = {n: c["ports"] for n, c in d["containers"].items() if c["ports"]}
        assert published != {"pacslab-rproxy": [443]} and published["pacslab-pacs"] == [8042]

    return declared(lab).apply(check)


def test_pulumi_preview_on_a_local_backend(tmp_path: Path) -> None:
    """With a pulumi CLI on PATH, preview the real program against a file backend."""
    if shutil.which("pulumi") is None:
        pytest.skip("no pulumi CLI on this machine (it cannot be installed from package registries); the mocked tests above cover the program")
    env = {"PULUMI_BACKEND_URL": f"file://{tmp_path}", "PULUMI_CONFIG_PASSPHRASE": "pacslab-test", "PATH": __import__("os").environ["PATH"]}
    subprocess.run(["pulumi", "stack", "init", "test"], cwd=REPO_ROOT, env=env, check=True)
    proc = subprocess.run(["pulumi", "preview", "--non-interactive"], cwd=REPO_ROOT, env=env, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "pacslab:lab:Zone" in proc.stdout


def test_program_reads_the_same_definition() -> None:
    assert load_lab(DEFAULT_LAB).name == yaml.safe_load((REPO_ROOT / "Pulumi.yaml").read_text())["config"]["lab"]["default"].split("/")[-1]
