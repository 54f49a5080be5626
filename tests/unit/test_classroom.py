"""pacslab.classroom: student labs derived from one lab, with values written out for the reference
lab: names, prefixes, bridges, addresses and published ports moved, nothing else."""

from __future__ import annotations

import ipaddress
from pathlib import Path

import pytest

from pacslab import classroom
from pacslab.topology import load_lab

from .conftest import DEFAULT_LAB


def test_student_labs_are_moved_and_loadable(tmp_path: Path) -> None:
    lab = load_lab(DEFAULT_LAB)
    one, two = (load_lab(classroom.derive(lab, i, tmp_path)) for i in (1, 2))
    assert (one.name, one.prefix, one.bridge_prefix, str(one.address_space)) == ("default-s1", "pacslabs1", "ls1-", "10.78.0.0/16")
    assert (two.name, two.prefix, two.bridge_prefix, str(two.address_space)) == ("default-s2", "pacslabs2", "ls2-", "10.79.0.0/16")
    assert (str(one.hosts["pacs"].address), str(one.zones["datacenter"].subnet), str(one.zones["datacenter"].router)) == (
        "10.78.40.10", "10.78.40.0/24", "10.78.40.254")
    assert one.hosts["rproxy"].publish == (1443,) and two.hosts["rproxy"].publish == (2443,)
    assert one.container_name("pacs") == "pacslabs1-pacs" and one.zones["datacenter"].bridge == "ls1-datacenter"
    # Nothing else changes: the same hosts, flows, AE titles, services and host variables.
    assert sorted(one.hosts) == sorted(lab.hosts)
    assert [(f.id, f.ports) for f in one.flows] == [(f.id, f.ports) for f in lab.flows]
    assert {h: (x.ae_title, x.services) for h, x in one.hosts.items()} == {h: (x.ae_title, x.services) for h, x in lab.hosts.items()}
    def own(vars_: dict) -> dict:  # the definition's variables, without what Ansible adds about the inventory's place
        return {h: {k: v for k, v in hv.items() if not k.startswith(("ansible_", "inventory_", "lab_address", "lab_publish"))}
                for h, hv in vars_.items()}
    assert own(one.host_vars) == own(lab.host_vars)
    # No two labs share an address.
    spaces = [lab.address_space, one.address_space, two.address_space]
    assert not any(a.overlaps(b) for i, a in enumerate(spaces) for b in spaces[i + 1:])


def test_a_space_that_would_leave_the_private_range_is_refused(lab_copy: Path, tmp_path: Path) -> None:
    """10.255.0.0/16 has no room for a student: 11.0.0.0/16 is public."""
    for path in [lab_copy / "hosts.yml", lab_copy / "group_vars" / "all" / "lab.yml", *(lab_copy / "host_vars").glob("*.yml")]:
        path.write_text(path.read_text().replace("10.77.", "10.255."))
    lab = load_lab(lab_copy)
    assert lab.address_space == ipaddress.IPv4Network("10.255.0.0/16")
    with pytest.raises(classroom.ClassError, match=r"student 1: 10.255.0.0/16 moved by 1 spaces is 11.0.0.0/16, outside the private range"):
        classroom.derive(lab, 1, tmp_path)


def test_a_class_size_out_of_range_is_refused() -> None:
    with pytest.raises(classroom.ClassError, match="a class has 1 to 50 student labs"):
        classroom.derive_class(load_lab(DEFAULT_LAB), 0)


def test_an_address_inside_a_longer_value_is_refused(lab_copy: Path, tmp_path: Path) -> None:
    """An address the derivation cannot move (here inside a URL in a host variable) would point a
    student lab at the reference lab: refused, naming the file and the address."""
    (lab_copy / "host_vars" / "ws-tech.yml").write_text((lab_copy / "host_vars" / "ws-tech.yml").read_text()
                                                       + "\nextra_url: https://10.77.40.10/\n")
    with pytest.raises(classroom.ClassError, match=r"student 1: host_vars/ws-tech.yml still holds 10.77.40.10 of 10.77.0.0/16"):
        classroom.derive(load_lab(lab_copy), 1, tmp_path)


def test_an_address_with_its_prefix_keeps_its_host_bits() -> None:
    space = ipaddress.IPv4Network("10.77.0.0/16")
    assert classroom._shift({"a": "10.77.40.10/24", "b": ["10.77.40.0/24", "10.77.1.2"], "c": "10.99.0.1"}, space, 65536) == {
        "a": "10.78.40.10/24", "b": ["10.78.40.0/24", "10.78.1.2"], "c": "10.99.0.1"}
