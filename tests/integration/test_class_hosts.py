"""A class over two Docker hosts (issue 11): the class file is an Ansible inventory listing this
machine's engine and a second engine (Debian's dockerd in a container, with every capability but
CAP_SYS_RESOURCE, which this machine lacks, its own /var/lib/docker on a volume, no network of its
own). `pacslab class up --count 2 --hosts FILE` puts student 1 here and student 2 on the second
engine (playbooks/class.yml), each lab's host rules on its own engine's machine, and a scenario runs
in the lab on the second engine as in the reference; student 1 and the reference lab, on the same
engine, do not reach each other (each SYN dropped by the sender's own fw and logged as egress);
`class down` leaves neither engine anything. One class serves every check of a class: a class on one
engine is the same derivation and the same playbook with a single Docker host.

The class is derived from a slim copy of the reference lab (SLIM_HOSTS deployed, every other host
planned, the modalities as clients, under its own name): the derivation, placement and playbook
are the same for any lab, and two student labs of the whole reference lab cost this 2-core machine
about nine minutes more (two full converges and every image copied to the second engine) for no
check more."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import time
from pathlib import Path

import pytest
import yaml

from pacslab import classroom, cli
from pacslab import scenario as sc
from pacslab.docker import docker, image_id, lab_objects
from pacslab.firewall import PREFIX_EGRESS
from pacslab.plan import _tree_hash, build_plan
from pacslab.probes import imaging as im
from pacslab.probes import segmentation as seg
from pacslab.probes import standins
from pacslab.topology import Lab, load_lab

pytestmark = pytest.mark.lifecycle

ENGINE = "pacslabtest-engine2"
HERE = Path(__file__).parent / "engine"
# What the checks below need of a student lab: its fw and CA, and W3's PACS, CT and MR (the MR
# attacks; the cross-lab attempt, a bare TCP connect, goes from the CT to the other lab's PACS). The
# modalities run as clients (_slim_copy: dicom_node_mode client, their peers among SLIM_HOSTS only):
# the CLI W3 uses, without the service that polls the RIS's worklist every few seconds. With the
# RIS planned, the polls would go unanswered, and their retried SYNs put the modalities in the fw's
# DICOM rate-limit set (C-PRT-05) within a minute, where the PACS no longer hears them. Deploying
# the RIS instead, and ws-tech, its HL7 sender (without one its HL7 front does not start), made
# each student's cold `up` converge two more nodes on this 2-core machine.
SLIM_HOSTS = frozenset({"fw", "ca", "pacs", "mod-ct", "mod-mr"})
SLIM_NAMES = {"lab_name": "classcheck", "lab_prefix": "pcc", "lab_bridge_prefix": "cc-"}


def _slim_copy(lab: Lab, out: Path) -> Lab:
    """A copy of ``lab``'s folder in ``out`` with SLIM_NAMES, every host but SLIM_HOSTS planned
    (lab_state: planned: in the plan and the flow matrix, nothing started for it), and its
    modalities among them clients whose peers are among them too."""
    target = out / SLIM_NAMES["lab_name"]
    shutil.copytree(lab.path, target)
    hosts_yml = target / "hosts.yml"
    doc = yaml.safe_load(hosts_yml.read_text())

    def plan_all_but_slim(group: dict) -> None:
        for name, host in (group.get("hosts") or {}).items():
            if name not in SLIM_HOSTS:
                host["lab_state"] = "planned"
        for child in (group.get("children") or {}).values():
            plan_all_but_slim(child)

    plan_all_but_slim(doc["all"])
    hosts_yml.write_text(yaml.safe_dump(doc, sort_keys=False))
    for modality in (h for h in lab.group("modalities") if h.name in SLIM_HOSTS):
        host_vars = target / "host_vars" / f"{modality.name}.yml"
        own = yaml.safe_load(host_vars.read_text())
        own |= {"dicom_node_mode": "client",
                "dicom_node_peers": [p for p in own.get("dicom_node_peers") or [] if p["host"] in SLIM_HOSTS]}
        host_vars.write_text(yaml.safe_dump(own, sort_keys=False))
    lab_yml = target / "group_vars" / "all" / "lab.yml"
    lab_yml.write_text(yaml.safe_dump(yaml.safe_load(lab_yml.read_text()) | SLIM_NAMES, sort_keys=False))
    slim = load_lab(target)
    assert {h.name for h in slim.deployed_hosts()} == SLIM_HOSTS
    return slim


@pytest.fixture(scope="module")
def slim_lab(running_lab: Lab, tmp_path_factory: pytest.TempPathFactory) -> Lab:
    return _slim_copy(running_lab, tmp_path_factory.mktemp("slim"))


def _engine_cmd(*argv: str) -> str:
    return docker("exec", ENGINE, *argv, timeout=60).stdout


@pytest.fixture(scope="module")
def second_engine(running_lab: Lab, slim_lab: Lab, tmp_path_factory: pytest.TempPathFactory):
    """The second engine, answering at a socket in a temporary folder; stopped and removed at the
    end. Its /var/lib/docker (the volume ENGINE) is kept from one run to the next for the images a
    student lab runs: copying all of them (1.3 GB in the engine's store, through one archive) cost
    each run about 47 s of the 45-minute `make test` (249 s against 202 s for this module). Before
    the class, _second_engine_reused leaves it nothing but those images, and not the CA's, which
    class up copies there again (`docker volume rm pacslabtest-engine2` frees the volume)."""
    base = build_plan(running_lab).base.tag
    tag = f"pacslabtest/engine:{_tree_hash(base.encode(), HERE)}"
    docker("build", "-q", "--build-arg", f"BASE={base}", "-t", tag, str(HERE), timeout=900)
    run = tmp_path_factory.mktemp("engine2")
    docker("rm", "-f", ENGINE, check=False)
    docker("run", "-d", "--name", ENGINE, "--network", "none", "--cap-add", "ALL", "--cap-drop", "SYS_RESOURCE",
           "--security-opt", "seccomp=unconfined", "--security-opt", "apparmor=unconfined", "--security-opt", "systempaths=unconfined",
           "--cgroupns", "host", "-v", "/sys/fs/cgroup:/sys/fs/cgroup:rw", "-v", f"{ENGINE}:/var/lib/docker", "-v", f"{run}:/run/engine",
           tag, "dockerd", "-H", "unix:///var/run/docker.sock", "-H", "unix:///run/engine/docker.sock", "--cgroup-parent", f"/{ENGINE}")
    url = f"unix://{run}/docker.sock"
    try:
        for _ in range(60):
            if subprocess.run(["docker", "--host", url, "version"], capture_output=True, check=False).returncode == 0:
                break
            time.sleep(1)
        else:
            pytest.fail(f"the second engine did not answer: {docker('logs', ENGINE, check=False).stderr[-1500:]}")
        _second_engine_reused(url, slim_lab)
        yield url
    finally:
        docker("stop", "--time", "30", ENGINE, check=False, timeout=60)  # dockerd shuts its kept store down cleanly
        docker("rm", "-f", ENGINE, check=False)


def ca_image(slim_lab: Lab) -> str:
    [tag] = [i.tag for i in build_plan(slim_lab).images if i.name == "ca"]
    return tag


def _second_engine_reused(url: str, slim_lab: Lab) -> None:
    """Whatever an earlier run left on the second engine (at ``url``) gone but the images class up
    would copy there, as they are on this machine's engine: every container, network and volume
    (a run killed before its class down leaves a student lab's, which would start again with the
    engine); every image under another tag, or under a kept tag but another image id (one rebuilt
    here since); and the CA's, so that class up copies it there again (a build there would give
    another id: test_each_student_runs_on_its_own_docker_host)."""
    def engine2(*argv: str) -> list[str]:
        return docker("--host", url, *argv, timeout=120).stdout.split()

    if containers := engine2("ps", "-aq"):
        engine2("rm", "-f", *containers)
    engine2("network", "prune", "--force")
    if volumes := engine2("volume", "ls", "-q"):
        engine2("volume", "rm", "--force", *volumes)
    kept = set(classroom.class_images(build_plan(slim_lab))) - {ca_image(slim_lab)}
    held = dict(line.split(" ", 1) for line in docker("--host", url, "image", "ls", "--format", "{{.Repository}}:{{.Tag}} {{.ID}}",
                                                      timeout=120).stdout.splitlines() if "<none>" not in line)
    here = {t: image_id(t) for t in kept & set(held)}
    if gone := [t for t, short in held.items() if t not in here or not (here[t] or "").removeprefix("sha256:").startswith(short)]:
        engine2("image", "rm", "--force", *gone)
    engine2("image", "prune", "--force")


@pytest.fixture(scope="module")
def class_of_two(slim_lab: Lab, second_engine: str, tmp_path_factory: pytest.TempPathFactory):
    hosts = tmp_path_factory.mktemp("class") / "docker-hosts.yml"
    hosts.write_text(json.dumps({"all": {"children": {"docker_hosts": {"hosts": {
        "here": {"docker_host": "unix:///var/run/docker.sock", "ansible_connection": "local"},
        "engine2": {"docker_host": second_engine, "ansible_connection": "community.docker.docker", "ansible_host": ENGINE,
                    "ansible_docker_extra_args": "--host=unix:///var/run/docker.sock", "ansible_python_interpreter": "/usr/bin/python3"},
    }}}}}))
    rc = cli.main(["class", "up", "--count", "2", "--hosts", str(hosts), "--lab", str(slim_lab.path)])
    students = classroom.members(slim_lab)
    yield rc, students, second_engine
    if classroom.members(slim_lab):
        cli.main(["class", "down", "--lab", str(slim_lab.path)])


CONNECT = """
import socket, sys
try:
    socket.create_connection((sys.argv[1], int(sys.argv[2])), 4); print("open")
except TimeoutError: print("dropped")
except ConnectionRefusedError: print("refused")
except OSError as e: print("error", e)
"""


def _attempt(src_lab: Lab, dst_lab: Lab) -> tuple[str, list[dict]]:
    """From src_lab's first modality to dst_lab's PACS DICOM port (both labs on this machine's
    engine): the outcome, and src_lab's fw log lines for it."""
    src, dst = src_lab.hosts["mod-ct"], dst_lab.hosts["pacs"]
    offset = standins.drop_log_mark(src_lab)
    outcome = im.exec_in(src_lab, src.name, "python3", "-c", CONNECT, str(dst.address), str(dst.dicom_port)).strip()
    lines = im.wait_for("the egress line", lambda: [e for e in seg.parse_drop_log(standins.read_drop_log(src_lab, offset))
                                                     if e.get("dest_ip") == str(dst.address)] or None, timeout=15, every=1)
    return outcome, lines


def _names(kind: str, lab: str, url: str) -> list[str]:
    saved = os.environ.get("DOCKER_HOST")
    os.environ["DOCKER_HOST"] = url
    try:
        return sorted(o["Name"].lstrip("/") for o in lab_objects(kind, lab))
    finally:
        if saved is None:
            os.environ.pop("DOCKER_HOST")
        else:
            os.environ["DOCKER_HOST"] = saved


def test_each_student_runs_on_its_own_docker_host(slim_lab: Lab, class_of_two, evidence) -> None:
    """Student 1 on this machine's engine, student 2 on the second one: each lab's containers on its
    own engine and none on the other; its host rules (the DOCKER-USER accept) on its own engine's
    machine only."""
    rc, (one, two), engine2 = class_of_two
    here = "unix:///var/run/docker.sock"
    where = {s.name: classroom.engine_of(slim_lab, s).name for s in (one, two)}
    containers = {(s.name, e): len(_names("container", s.name, url)) for s in (one, two) for e, url in (("here", here), ("engine2", engine2))}
    evidence.update(placement=where, containers={f"{k[0]}@{k[1]}": v for k, v in containers.items()})
    assert rc == 0 and where == {"classcheck-s1": "here", "classcheck-s2": "engine2"}
    assert containers[("classcheck-s1", "engine2")] == 0 and containers[("classcheck-s2", "here")] == 0
    assert containers[("classcheck-s1", "here")] == containers[("classcheck-s2", "engine2")] == len(SLIM_HOSTS)
    # the CA's image, removed from the second engine before the class (_second_engine_reused), was copied there from this one
    ca = ca_image(slim_lab)
    assert docker("--host", engine2, "image", "inspect", "--format", "{{.Id}}", ca).stdout.strip() == image_id(ca)
    rules_engine2 = _engine_cmd("iptables", "-S", "DOCKER-USER")
    rules_here = subprocess.run(["iptables", "-S", "DOCKER-USER"], capture_output=True, text=True, check=True).stdout
    assert "pacslab:classcheck-s2" in rules_engine2 and "pacslab:classcheck-s2" not in rules_here
    assert "pacslab:classcheck-s1" in rules_here and "pacslab:classcheck-s1" not in rules_engine2


@pytest.mark.parametrize("direction", ["student-to-reference", "reference-to-student"])
def test_one_lab_cannot_reach_another(running_lab: Lab, class_of_two, direction: str, evidence) -> None:
    """Student 1 shares this machine's engine with the reference lab: a connection from either lab's
    modality to the other's PACS is dropped by the sender's own fw, and only that fw logs it, as egress."""
    _, (one, _), _ = class_of_two
    src_lab, dst_lab = (one, running_lab) if direction == "student-to-reference" else (running_lab, one)
    outcome, lines = _attempt(src_lab, dst_lab)
    evidence.update(src=f"{src_lab.name}/mod-ct", dst=f"{dst_lab.name}/pacs {dst_lab.hosts['pacs'].address}", outcome=outcome,
                    prefixes=sorted({e.get("oob.prefix") for e in lines}))
    assert outcome == "dropped"
    assert {e.get("oob.prefix") for e in lines} == {PREFIX_EGRESS}
    assert {e.get("src_ip") for e in lines} == {str(src_lab.hosts["mod-ct"].address)}


def test_class_status_reads_each_student_on_its_engine(slim_lab: Lab, class_of_two, capsys, evidence) -> None:
    rc = cli.main(["class", "status", "--json", "--lab", str(slim_lab.path)])
    rows = json.loads(capsys.readouterr().out)
    evidence.update(rows=[{k: r[k] for k in ("lab", "docker_host", "up", "memory_mib")} for r in rows])
    assert rc == 0
    assert [(r["lab"], r["docker_host"], r["up"]) for r in rows] == [("classcheck-s1", "here", True), ("classcheck-s2", "engine2", True)]
    assert all(r["memory_mib"] > 100 for r in rows)


def test_a_scenario_runs_in_the_lab_on_the_second_engine(slim_lab: Lab, class_of_two, evidence) -> None:
    """W3 defended in student 2 (on the second engine): the forged study refused with the same
    A-ASSOCIATE-RJ and TLS alert as in the reference lab, and reset to the state before."""
    _, (_, two), _ = class_of_two
    with classroom.on_engine(classroom.engine_of(slim_lab, two)):
        scenario = sc.find(two, "W3")
        record = sc.run_scenario(two, scenario, "defended")
        reset = sc.reset_scenario(two, scenario)
    evidence.update(steps={s["id"]: s["result"] for s in record["steps"]})
    assert [(s["id"], s["problems"]) for s in record["steps"] if not s["as_expected"]] == []
    assert reset["equal"], reset


def test_class_down_leaves_neither_engine_anything(running_lab: Lab, slim_lab: Lab, class_of_two, evidence) -> None:
    """Last in the module: both student labs' containers, networks and volumes gone from their
    engines, and student 2's host rules from the second engine's machine; the reference lab as before."""
    _, (one, two), engine2 = class_of_two
    here = "unix:///var/run/docker.sock"
    reference = {k: _names(k, running_lab.name, here) for k in ("container", "network", "volume")}
    assert cli.main(["class", "down", "--lab", str(slim_lab.path)]) == 0
    left = {f"{s.name}@{e}": sum(len(_names(k, s.name, url)) for k in ("container", "network", "volume"))
            for s in (one, two) for e, url in (("here", here), ("engine2", engine2))}
    evidence.update(left=left)
    assert set(left.values()) == {0}
    assert "pacslab:classcheck-s2" not in _engine_cmd("iptables", "-S", "DOCKER-USER")
    assert {k: _names(k, running_lab.name, here) for k in ("container", "network", "volume")} == reference
    assert classroom.members(slim_lab) == []
