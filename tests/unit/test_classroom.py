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


def test_vars_files_of_every_form_ansible_reads_are_moved(lab_copy: Path, tmp_path: Path) -> None:
    """A lab may keep its vars as JSON, in a file without a suffix, or in a host's folder: Ansible
    reads each (DataLoader.find_vars_files), so a student lab's copy of each is moved too, and a
    .json stays JSON."""
    import json

    import yaml

    lab_yml = lab_copy / "group_vars" / "all" / "lab.yml"
    (lab_copy / "group_vars" / "all" / "lab.json").write_text(json.dumps(yaml.safe_load(lab_yml.read_text())))
    lab_yml.unlink()
    tech = lab_copy / "host_vars" / "ws-tech.yml"
    (lab_copy / "host_vars" / "ws-tech").write_text(tech.read_text() + "\nextra_peer: 10.77.40.10\n")
    tech.unlink()
    (lab_copy / "host_vars" / "ws-rad").mkdir()
    (lab_copy / "host_vars" / "ws-rad.yml").rename(lab_copy / "host_vars" / "ws-rad" / "main")
    (lab_copy / "host_vars" / "ws-rad" / "peer.yml").write_text("extra_peer: 10.77.40.11\n")
    student = classroom.derive(load_lab(lab_copy), 1, tmp_path)
    one = load_lab(student)
    assert (one.name, str(one.address_space), str(one.zones["datacenter"].subnet)) == ("default-s1", "10.78.0.0/16", "10.78.40.0/24")
    assert json.loads((student / "group_vars" / "all" / "lab.json").read_text())["lab_name"] == "default-s1"
    assert one.host_vars["ws-tech"]["extra_peer"] == "10.78.40.10"
    assert one.host_vars["ws-rad"]["extra_peer"] == "10.78.40.11"


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


CLASS_FILE = """
all:
  children:
    docker_hosts:
      hosts:
        here: {docker_host: "unix:///var/run/docker.sock", ansible_connection: local}
        engine2:
          docker_host: unix:///run/pacslab-engine2/docker.sock
          ansible_connection: community.docker.docker
          ansible_host: pacslabtest-engine2
          ansible_docker_extra_args: --host=unix:///var/run/docker.sock
          ansible_python_interpreter: /usr/bin/python3
        docker3: {docker_host: "ssh://root@docker3.example.org", ansible_host: docker3.example.org, ansible_user: root}
"""


def test_a_class_file_lists_docker_hosts_in_order_with_their_connections(tmp_path: Path) -> None:
    (tmp_path / "class.yml").write_text(CLASS_FILE)
    hosts = classroom.load_docker_hosts(tmp_path / "class.yml")
    assert [(h.name, h.docker_host) for h in hosts] == [("here", "unix:///var/run/docker.sock"),
                                                         ("engine2", "unix:///run/pacslab-engine2/docker.sock"),
                                                         ("docker3", "ssh://root@docker3.example.org")]
    assert hosts[1].connection == {"ansible_connection": "community.docker.docker", "ansible_host": "pacslabtest-engine2",
                                   "ansible_docker_extra_args": "--host=unix:///var/run/docker.sock",
                                   "ansible_python_interpreter": "/usr/bin/python3"}
    # what `pacslab up` gets for each: this machine needs no PACSLAB_ENGINE_HOST
    assert hosts[0].environment() == {"DOCKER_HOST": "unix:///var/run/docker.sock", "PACSLAB_ENGINE_HOST": ""}
    assert hosts[2].environment() == {"DOCKER_HOST": "ssh://root@docker3.example.org",
                                      "PACSLAB_ENGINE_HOST": '{"ansible_connection": "ssh", "ansible_host": "docker3.example.org", '
                                                             '"ansible_user": "root"}'}
    # a host that names neither: Ansible's defaults written out, not the lab's Docker connection
    bare = classroom.DockerHost("docker4.example.org", "ssh://root@docker4.example.org", {})
    assert bare.environment()["PACSLAB_ENGINE_HOST"] == '{"ansible_connection": "ssh", "ansible_host": "docker4.example.org"}'
    # five students on three hosts: 1 and 4 here, 2 and 5 on engine2, 3 on docker3
    students = [load_lab(classroom.derive(load_lab(DEFAULT_LAB), i, tmp_path / "s")) for i in range(1, 6)]
    assert [classroom.place(students, hosts)[str(s.path)].name for s in students] == ["here", "engine2", "docker3", "here", "engine2"]


CLASS_FILE_REFUSALS = {
    "no group": ("all:\n  hosts:\n    a: {docker_host: 'unix:///x'}\n", "docker_hosts", "no such group, or it lists no host"),
    "no docker_host": ("all:\n  children:\n    docker_hosts:\n      hosts:\n        a: {ansible_host: a}\n", "a.docker_host",
                       "None: the engine's URL, like unix:///var/run/docker.sock"),
    "not a URL": ("all:\n  children:\n    docker_hosts:\n      hosts:\n        a: {docker_host: 'docker2:2375'}\n", "a.docker_host",
                  "'docker2:2375': the engine's URL"),
    "an engine twice": ("all:\n  children:\n    docker_hosts:\n      hosts:\n        a: {docker_host: 'tcp://d:2376'}\n"
                        "        b: {docker_host: 'tcp://d:2376'}\n", "b.docker_host",
                        "tcp://d:2376: the engine of a too; a Docker host is listed once"),
    "a password": ("all:\n  children:\n    docker_hosts:\n      hosts:\n        a: {docker_host: 'ssh://d', ansible_password: hunter2}\n",
                   "a.ansible_password", "no password here: it would travel in an environment; use an SSH key"),
}


@pytest.mark.parametrize("case", list(CLASS_FILE_REFUSALS))
def test_a_broken_class_file_is_refused_with_file_key_and_reason(tmp_path: Path, case: str) -> None:
    text, key, reason = CLASS_FILE_REFUSALS[case]
    (tmp_path / "class.yml").write_text(text)
    with pytest.raises(classroom.ClassError) as err:
        classroom.load_docker_hosts(tmp_path / "class.yml")
    assert [(p.file, p.key) for p in err.value.problems] == [(str(tmp_path / "class.yml"), key)]
    assert err.value.problems[0].reason.startswith(reason), err.value.problems[0].reason
    assert "hunter2" not in str(err.value)


def test_a_missing_class_file_is_refused(tmp_path: Path) -> None:
    with pytest.raises(classroom.ClassError) as err:
        classroom.load_docker_hosts(tmp_path / "nope.yml")
    assert [(p.key, p.reason) for p in err.value.problems] == [("(file)", "no such file")]


def test_a_class_that_grows_keeps_each_student_where_it_runs(tmp_path: Path) -> None:
    """Four students on [a, b]; the class file gains c: students 1 and 2 stay on a and b, 3 goes to
    c, 4 to a. A file that drops b, or gives b another URL, is refused while a student runs there."""
    a, b, c = (classroom.DockerHost(n, f"tcp://{n}:2376") for n in "abc")
    students = [load_lab(classroom.derive(load_lab(DEFAULT_LAB), i, tmp_path / "s")) for i in range(1, 5)]
    placed = {str(s.path): h for s, h in zip(students[:2], (a, b), strict=True)}
    where = classroom.place(students, [a, b, c], placed)
    assert [where[str(s.path)].name for s in students] == ["a", "b", "c", "a"]


@pytest.mark.parametrize("hosts", [["a"], ["a", "b2"]], ids=["host-dropped", "url-changed"])
def test_a_class_file_that_would_leave_a_lab_behind_is_refused(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, hosts: list[str]) -> None:
    import json

    lab = load_lab(DEFAULT_LAB)
    monkeypatch.setattr(classroom, "state_dir", lambda lab: tmp_path)
    (tmp_path / "class").mkdir()
    (tmp_path / "class" / "placement.json").write_text(json.dumps({
        "/x/default-s1": {"host": "a", "docker_host": "tcp://a:2376", "connection": {}},
        "/x/default-s2": {"host": "b", "docker_host": "tcp://b:2376", "connection": {}}}))
    urls = {"a": "tcp://a:2376", "b2": "tcp://b-other:2376"}
    entries = "".join(f"        {h.rstrip('2')}: {{docker_host: '{urls[h]}'}}\n" for h in hosts)
    (tmp_path / "new.yml").write_text("all:\n  children:\n    docker_hosts:\n      hosts:\n" + entries)
    with pytest.raises(classroom.ClassError, match=r"has a class on a \(tcp://a:2376\), b \(tcp://b:2376\): `pacslab class down` first, or keep"):
        classroom.docker_hosts(lab, tmp_path / "new.yml")


def test_a_new_class_is_placed_by_its_file_and_a_class_from_before_stays_here(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """class.json alone (a class brought up before class files): every member on this machine.
    Once the class's hosts file is kept (every `class up` keeps one before it derives), class.json
    says nothing about placement: a new class is placed by its file."""
    import json

    lab = load_lab(DEFAULT_LAB)
    monkeypatch.setattr(classroom, "state_dir", lambda lab: tmp_path)
    (tmp_path / "class").mkdir()
    (tmp_path / "class" / "class.json").write_text(json.dumps({"lab": "default", "students": ["/x/default-s1"]}))
    assert {p: h.name for p, h in classroom.placement(lab).items()} == {"/x/default-s1": "local"}
    classroom.keep_placement(lab)
    classroom.keep_docker_hosts(lab, "all: {}\n")
    assert {p: h.name for p, h in classroom.placement(lab).items()} == {"/x/default-s1": "local"}  # written down
    (tmp_path / "class" / "placement.json").unlink()
    assert classroom.placement(lab) == {}  # class.json of a class being derived now, with its hosts file kept
