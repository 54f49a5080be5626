"""pacslab.listeners: what each host may listen on (C-PRT-02), with expectations written by hand."""

from __future__ import annotations

import functools
from pathlib import Path
from typing import Any

import pytest
import yaml

from pacslab.listeners import Drift, ExtraListener, compare, declared_extras, expected_listeners, front_inner_port, outside_loopback, service_roles
from pacslab.plan import front_ports
from pacslab.topology import REPO_ROOT, load_lab

from .conftest import DEFAULT_LAB, host, mutate

loaded = functools.cache(load_lab)  # the repository's labs, read once (Ansible's inventory manager is slow)

# The reference lab, read off flows.yml and roles/orthanc by hand: F01/F05d (2762) and F05b (443)
# to the PACS, F04 (2762, inside the datacenter) and F05c (443) to the VNA, F02 (2762) and F03
# (2575) to the RIS (no flow reaches its 443: that front listens on loopback), F06 (2762) to the
# workstation, F14 (104, 105, inside the legacy segment) to the gateway; Orthanc's HTTP port 8042
# (declared by the role) and its DICOM port behind the TLS front, 4242 (the role's default), on the
# three Orthanc hosts; F08a/F08b/F08c (22) to the bastion and its maintenance targets (the PACS and
# the CT); F12/F12b (any port, the scanner's) name no listener; F10a (636) to the directory; F10b
# (443) to the IdP; nothing ends at fw, ca, ws-tech, the sensor (it only watches), the other
# modalities or the internet zone.

REFERENCE = {
    "pacs": {("tcp", 22), ("tcp", 443), ("tcp", 2762), ("tcp", 4242), ("tcp", 8042)},
    "vna": {("tcp", 443), ("tcp", 2762), ("tcp", 4242), ("tcp", 8042)},
    "ris": {("tcp", 2575), ("tcp", 2762), ("tcp", 4242), ("tcp", 8042)},
    "ws-rad": {("tcp", 2762)},
    "ovl-gw": {("tcp", 104), ("tcp", 105)},
    "ws-tech": set(),
    "mod-ct": {("tcp", 22)},
    "mod-mr": set(),
    "mod-legacy": set(),
    "ca": set(),
    "dir": {("tcp", 636)},
    "idp": {("tcp", 443)},
    "rproxy": {("tcp", 443)},
    "bastion": {("tcp", 22)},
    "siem": {("tcp", 443), ("tcp", 6514), ("tcp", 8443)},  # console (F16), syslog over TLS, containment decisions (F15, fw only)
    "sensor": set(),
    "scanner": set(),
    "remote-rad": set(),
    "vendor-eng": set(),
    "attacker": set(),
    "fw": set(),
}


@pytest.mark.parametrize("host", sorted(REFERENCE))
def test_reference_lab_listeners_written_out(host: str) -> None:
    assert expected_listeners(loaded(DEFAULT_LAB), host) == REFERENCE[host]


def test_every_deployed_host_of_the_reference_lab_is_written_out() -> None:
    assert {h.name for h in loaded(DEFAULT_LAB).deployed_hosts()} == set(REFERENCE)


def test_planned_and_unknown_hosts_are_refused() -> None:
    lab = loaded(DEFAULT_LAB)
    with pytest.raises(ValueError, match="offsite is planned"):
        expected_listeners(lab, "offsite")
    with pytest.raises(KeyError):
        expected_listeners(lab, "nosuchhost")


def _add_flow(lab_copy: Path, flow: dict[str, Any], services: dict[str, dict[str, Any]]) -> None:
    """Add a flow and the services it reaches (the definition refuses a flow to a deployed host
    without its service in lab_services)."""

    def change(hosts: dict[str, Any], lab_vars: dict[str, Any], flows: dict[str, Any]) -> None:
        flows["lab_flows"].append(flow)
        for name, svc in services.items():
            host(hosts, name).setdefault("lab_services", {}).update(svc)

    mutate(lab_copy, change)


def test_a_flow_to_a_zone_gives_every_host_of_the_zone_the_port(lab_copy: Path) -> None:
    _add_flow(lab_copy, {"id": "F90", "from": ["zone:clinical"], "to": "zone:datacenter", "proto": "tcp", "ports": [9090], "purpose": "t"},
              {h: {"t": 9090} for h in ("pacs", "vna", "ris")})
    lab = load_lab(lab_copy)
    assert expected_listeners(lab, "ris") == {("tcp", 2575), ("tcp", 2762), ("tcp", 4242), ("tcp", 8042), ("tcp", 9090)}
    assert expected_listeners(lab, "ws-rad") == {("tcp", 2762)}  # the source zone gains nothing


def test_a_udp_flow_is_a_udp_listener(lab_copy: Path) -> None:
    _add_flow(lab_copy, {"id": "F91", "from": ["mod-ct"], "to": "ws-rad", "proto": "udp", "ports": [11112, 11113], "purpose": "t"},
              {"ws-rad": {"a": "11112/udp", "b": "11113/udp"}})
    assert expected_listeners(load_lab(lab_copy), "ws-rad") == {("tcp", 2762), ("udp", 11112), ("udp", 11113)}


def test_orthanc_declares_its_http_port_with_a_reason() -> None:
    extras = declared_extras("orthanc")
    defaults = yaml.safe_load((REPO_ROOT / "roles" / "orthanc" / "defaults" / "main.yml").read_text())
    assert [(e.proto, e.port) for e in extras] == [("tcp", 8042)]
    assert extras[0].port == defaults["orthanc_http_port"]
    assert "1.10.1" in extras[0].reason and "401" in extras[0].reason
    assert declared_extras("dicom_node") == () and declared_extras("ris") == ()


def test_the_front_inner_port_is_the_role_default_unless_the_host_sets_it(lab_copy: Path) -> None:
    """The listener check and the reply routing read one number: the PACS moved to 4300 listens
    there and nowhere on 4242, and the plan routes 4300 back to its front."""
    lab = load_lab(lab_copy)
    assert front_inner_port(lab, lab.hosts["pacs"]) == 4242 and front_inner_port(lab, lab.hosts["mod-ct"]) is None
    pacs_vars = lab_copy / "host_vars" / "pacs.yml"
    pacs_vars.write_text(pacs_vars.read_text() + "orthanc_dicom_inner_port: 4300\n")
    moved = load_lab(lab_copy)
    assert expected_listeners(moved, "pacs") == {("tcp", 22), ("tcp", 443), ("tcp", 2762), ("tcp", 4300), ("tcp", 8042)}
    assert front_ports(moved)["pacslab-pacs"] == [4300] and front_ports(moved)["pacslab-vna"] == [4242]


@pytest.mark.parametrize("entry", [{"proto": "sctp", "port": 1, "reason": "x"}, {"proto": "tcp", "port": 0, "reason": "x"},
                                   {"proto": "tcp", "port": 80, "reason": " "}])
def test_an_extra_listener_without_proto_port_or_reason_is_refused(tmp_path: Path, entry: dict[str, Any]) -> None:
    (tmp_path / "r" / "defaults").mkdir(parents=True)
    (tmp_path / "r" / "defaults" / "main.yml").write_text(yaml.safe_dump({"r_extra_listeners": [entry]}))
    with pytest.raises(ValueError, match=r"r_extra_listeners\[0\]"):
        declared_extras("r", roles_dir=tmp_path)


def test_a_well_formed_extra_listener_is_read(tmp_path: Path) -> None:
    (tmp_path / "r" / "defaults").mkdir(parents=True)
    (tmp_path / "r" / "defaults" / "main.yml").write_text(yaml.safe_dump({"r_extra_listeners": [{"proto": "udp", "port": 69, "reason": "tftp"}]}))
    assert declared_extras("r", roles_dir=tmp_path) == (ExtraListener("r", "udp", 69, "tftp"),)


def test_loopback_and_unix_sockets_are_not_counted() -> None:
    specs = [  # as testinfra's get_listening_sockets() writes them (ss -nl)
        "tcp://0.0.0.0:443", "tcp://:::2762", "tcp://127.0.0.11:34963", "udp://127.0.0.11:44586", "tcp://127.0.0.1:8042",
        "tcp://::1:5432", "tcp://::ffff:127.0.0.1:80", "udp://fe80::1%eth0:546", "udp://0.0.0.0:4444", "udp://:::4444",
        "tcp://10.77.31.20:104", "unix:///run/supervisor.sock.1",
    ]
    assert outside_loopback(specs) == {("tcp", 443), ("tcp", 2762), ("udp", 546), ("udp", 4444), ("tcp", 104)}


@pytest.mark.parametrize("spec", ["sctp://0.0.0.0:1", "tcp://0.0.0.0", "tcp://nothost:80"])
def test_a_malformed_socket_spec_is_refused(spec: str) -> None:
    with pytest.raises(ValueError):
        outside_loopback([spec])


def test_compare_names_what_is_extra_and_what_is_missing() -> None:
    drift = compare({("tcp", 443), ("tcp", 4471), ("udp", 4471)}, {("tcp", 443), ("tcp", 2762)})
    assert drift == Drift(unexpected=(("tcp", 4471), ("udp", 4471)), missing=(("tcp", 2762),))
    assert drift and str(drift) == (
        "listening but not in the lab definition: 4471/tcp, 4471/udp; in the lab definition but not listening: 2762/tcp"
    )
    assert not compare({("tcp", 443)}, {("tcp", 443)})


ALT_LAB = REPO_ROOT / "tests" / "labs" / "alt"
# The second lab, read off its flows.yml by hand: DICOM on 11112, HL7 on 2577, the gateway on 4104/4105.
ALT = {
    "pacs": {("tcp", 443), ("tcp", 11112), ("tcp", 4242), ("tcp", 8042)},
    "ris": {("tcp", 2577), ("tcp", 11112), ("tcp", 4242), ("tcp", 8042)},
    "ws-rad": {("tcp", 11112)},
    "ovl-gw": {("tcp", 4104), ("tcp", 4105)},
    "mod-ct": set(),
}


@pytest.mark.parametrize("host", sorted(ALT))
def test_second_lab_listeners_written_out(host: str) -> None:
    assert expected_listeners(loaded(ALT_LAB), host) == ALT[host]


@pytest.mark.parametrize("lab_path", [DEFAULT_LAB, ALT_LAB], ids=["default", "alt"])
def test_flows_and_lab_services_agree(lab_path: Path) -> None:
    """Two readings of one definition: the flows' ports equal each host's lab_services plus the
    listeners its roles declare (a flow that names no service, or a service no flow reaches,
    would show here even if the loader let it through)."""
    lab = loaded(lab_path)
    for h in lab.deployed_hosts():
        declared = {(s.proto, s.port) for s in h.services} | ({("tcp", 4242), ("tcp", 8042)} if h.image == "orthanc" else set())
        assert expected_listeners(lab, h.name) == declared, h.name


def test_the_service_roles_are_read_from_the_configure_play_written_out() -> None:
    """Which host each service role configures, as playbooks/up.yml's configure play lists it, for
    the reference lab's hosts (written by hand from hosts.yml: images and groups)."""
    lab = loaded(DEFAULT_LAB)
    applied = {role: sorted(h.name for h in lab.deployed_hosts() if applies(h)) for role, applies in service_roles().items()}
    assert applied == {
        "orthanc": ["pacs", "ris", "vna"], "ris": ["ris"], "dicom_node": ["mod-ct", "mod-legacy", "mod-mr", "ovl-gw", "ws-rad", "ws-tech"],
        "directory": ["dir"], "idp": ["idp"], "rproxy": ["rproxy"], "bastion": ["bastion"], "siem": ["siem"], "sensor": ["sensor"],
        "scanner": ["scanner"], "firewall": ["fw"]}
    assert list(applied) == ["orthanc", "ris", "dicom_node", "directory", "idp", "rproxy", "bastion", "siem", "sensor", "scanner", "firewall"]


@pytest.mark.parametrize(("entries", "why"), [
    ([{"role": "orthanc", "by": "host:pacs"}], "by 'host:pacs' is neither"),
    ([{"role": "orthanc", "by": "image:"}], "by 'image:' is neither"),
    ([{"role": "ris", "by": "group:ris_servers"}, {"role": "ris", "by": "image:orthanc"}], "ris is listed twice"),
    (None, "one play lists pacslab_service_roles, not 0"),
])
def test_a_service_role_list_it_cannot_read_is_refused(tmp_path: Path, entries: Any, why: str) -> None:
    playbook = tmp_path / "up.yml"
    plays = [{"hosts": "all", "vars": {"pacslab_service_roles": entries} if entries else {}, "tasks": []}]
    playbook.write_text(yaml.safe_dump(plays))
    with pytest.raises(ValueError, match=why):
        service_roles(playbook)
