"""Lab lifecycle (platform, no control): idempotent up, exact down, recovery after an interrupted up.

These tests take the lab down and bring it back. The plugin runs them after the steady checks,
except two placed around them (pacslab.pytest_plugin): the interrupted `up` and the idempotence
check that reads its record run first, so that their cold `up` is the one the whole run uses (on
a fresh machine the suite's only one); `down` runs last and leaves the lab down.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from pacslab import cli
from pacslab.docker import docker, image_id, lab_objects
from pacslab.engine import run_playbook
from pacslab.plan import SIEMS, Plan
from pacslab.probes import imaging as im
from pacslab.topology import REPO_ROOT, Lab

pytestmark = pytest.mark.lifecycle

BYSTANDER_NET = "pacslab-test-bystander"
BYSTANDER_SUBNET = "10.78.250.0/24"  # outside every lab's address space; no traffic is sent to it
BYSTANDER_RULE = ["DOCKER-USER", "-s", "192.0.2.1/32", "-m", "comment", "--comment", "pacslab-test-bystander", "-j", "RETURN"]
# Another lab's host INPUT rules as roles/docker_host writes them (its own bridge prefix and comment):
# on interfaces that do not exist, so they match nothing while the test runs.
BYSTANDER_INPUT = ["INPUT", "-i", "pacslabtst-+", "-m", "conntrack", "!", "--ctstate", "ESTABLISHED,RELATED",
                   "-m", "comment", "--comment", "pacslab:test-bystander", "-j", "DROP"]


def last_up(state: Path) -> dict:
    return json.loads((state / "last-up.json").read_text())


def test_second_up_changes_nothing_and_rebuilds_nothing(running_lab: Lab, plan: Plan, state: Path) -> None:
    before = {i.tag: image_id(i.tag) for i in plan.images}
    assert cli.main(["up", "--lab", str(running_lab.path)]) == cli.EXIT_OK
    run = last_up(state)
    changed = [t for p in run["phases"] for t in p["changed_tasks"]]
    assert run["changed"] == 0, f"a second up changed: {changed}"
    assert {i.tag: image_id(i.tag) for i in plan.images} == before


# The groups of up.yml's DICOM-node play: the nodes that roles/lab_converged may skip.
CONVERGE_CACHED_GROUPS = {"pacs_servers", "vna_servers", "ris_servers", "modalities", "overlay_gateways", "workstations", "directories", "bastions",
                          "idp_servers", "reverse_proxies", "external_actors"}
# Tasks a DICOM node runs at the least when it converges in full (a client-only node: its pki
# enrolment and bundle, the DICOM tools, the record); a node the cache skips runs three.
FULL_CONVERGE_MIN_TASKS = 15
# The task of up that puts a workload's default route back (roles/lab_provision, phase routes).
ROUTES_TASK = "lab_provision : Ensure each workload's default route points at the fw of its zone | C-ACC-04 [localhost]"


def test_a_hand_edit_and_a_restarted_container_are_put_back_by_one_up_that_converges_only_them(running_lab: Lab, state: Path) -> None:
    """Two kinds of drift, repaired by one warm up (each check once cost an up of its own):
    - a file edited by hand on the PACS: a warm up skips hosts whose inputs and managed files
      match their last converge (roles/lab_converged); the edit breaks the match, and up puts the
      file back, converging the PACS alone;
    - the CT's container restarted (an engine restart, `docker restart`): it comes back with
      Docker's useless default route, so its traffic goes nowhere (fail closed), status says
      `restarted` and fails, and up puts its route back and the CT in service.
    Nothing changes but the PACS's tasks and the routes' task (the one that put the CT's back)."""
    lab = running_lab
    container, path = lab.container_name("pacs"), "/etc/pacslab/orthanc/orthanc.json"
    original = docker("exec", container, "cat", path).stdout
    docker("exec", container, "sed", "-i", 's/"DicomCheckCalledAet": true/"DicomCheckCalledAet": false/', path)
    assert docker("exec", container, "cat", path).stdout != original
    assert im.dicomsim(lab, "mod-ct", "echo")["established"]
    docker("restart", lab.container_name("mod-ct"))
    states = {r["host"]: r["state"] for r in cli.host_rows(lab)}
    assert states["mod-ct"] == "restarted" and states["pacs"] == "running"
    assert cli.main(["status", "--lab", str(lab.path)]) == cli.EXIT_PHASE_FAILED
    assert not im.dicomsim(lab, "mod-ct", "echo")["established"], "a restarted modality must fail closed"

    assert cli.main(["up", "--lab", str(lab.path)]) == cli.EXIT_OK
    changed = [t for p in last_up(state)["phases"] for t in p["changed_tasks"]]
    assert docker("exec", container, "cat", path).stdout == original
    assert cli.lab_is_up(lab)
    assert im.dicomsim(lab, "mod-ct", "echo")["established"]
    pacs = [t for t in changed if t.endswith("[pacs]")]
    assert pacs and [t for t in changed if t not in pacs] == [ROUTES_TASK], changed


@pytest.fixture
def bystanders() -> Iterator[None]:
    """A network, a DOCKER-USER rule and INPUT rules (IPv4, IPv6) that are not the lab's: down must
    leave them alone."""
    docker("network", "create", "--internal", "--subnet", BYSTANDER_SUBNET, BYSTANDER_NET)
    subprocess.run(["iptables", "-I", *BYSTANDER_RULE], check=True)
    subprocess.run(["iptables", "-I", *BYSTANDER_INPUT], check=True)
    subprocess.run(["ip6tables", "-I", *BYSTANDER_INPUT], check=True)
    try:
        yield
    finally:
        subprocess.run(["iptables", "-D", *BYSTANDER_RULE], check=False)
        subprocess.run(["iptables", "-D", *BYSTANDER_INPUT], check=False)
        subprocess.run(["ip6tables", "-D", *BYSTANDER_INPUT], check=False)
        docker("network", "rm", BYSTANDER_NET, check=False)


@pytest.mark.lifecycle("last")
def test_down_removes_exactly_what_the_lab_created(running_lab: Lab, plan: Plan, state: Path, bystanders: None) -> None:
    ipv6 = Path("/proc/sys/net/ipv6").exists()  # without IPv6 in the kernel there is no ip6tables rule to hold
    assert cli.host_rules(plan) == {"DOCKER-USER": True, "DOCKER-USER-DNAT": True, "INPUT": True} | ({"INPUT6": True} if ipv6 else {})
    assert cli.main(["down", "--lab", str(running_lab.path)]) == cli.EXIT_OK
    assert lab_objects("container", running_lab.name) == []
    assert lab_objects("network", running_lab.name) == []
    assert cli.host_rules(plan) == {"DOCKER-USER": False, "DOCKER-USER-DNAT": False, "INPUT": False} | ({"INPUT6": False} if ipv6 else {})
    for command, chain in (("iptables", "INPUT"), ("ip6tables", "INPUT"), ("iptables", "DOCKER-USER")):  # nothing of the lab's is left
        listing = subprocess.run([command, "-S", chain], capture_output=True, text=True, check=True).stdout
        assert f'"{plan.docker_user_comment}"' not in listing and f" {plan.docker_user_comment} " not in listing, listing
    # volumes are kept unless asked
    assert sorted(v["Name"] for v in lab_objects("volume", running_lab.name)) == sorted(plan.volumes)
    # and nothing else went
    assert docker("network", "inspect", BYSTANDER_NET, check=False).returncode == 0
    assert subprocess.run(["iptables", "-C", *BYSTANDER_RULE], check=False).returncode == 0
    assert subprocess.run(["iptables", "-C", *BYSTANDER_INPUT], check=False).returncode == 0
    assert subprocess.run(["ip6tables", "-C", *BYSTANDER_INPUT], check=False).returncode == 0

    # a second down changes nothing but what it is newly asked for: with --volumes, the volumes,
    # after the append-only flag of the siem's raw files is cleared (Docker cannot remove them)
    assert cli.main(["down", "--volumes", "--lab", str(running_lab.path)]) == cli.EXIT_OK
    summary = json.loads((state / "summary-down.json").read_text())
    changed = [t for p in summary["phases"] for t in p["changed_tasks"]]
    siem = any(SIEMS in h.groups for h in running_lab.deployed_hosts())  # the reference lab's seals its raw files
    released = ["lab_provision : Ensure no file of the volumes to remove is append-only any more [localhost]"] if siem else []
    assert changed == [*released, "lab_provision : Ensure the lab's volumes are removed (pacslab down --volumes) [localhost]"], changed
    assert lab_objects("volume", running_lab.name) == []


@pytest.mark.lifecycle("first")
def test_up_after_an_interrupted_up_completes(lab: Lab, plan: Plan) -> None:
    """From a lab with nothing of its own (a lab that is up is taken down first, with its volumes),
    kill `pacslab up` (and its Ansible) once the networks exist; the next up completes. It is the
    cold `up` of a lifecycle run: every later check uses the lab it leaves."""
    if any(lab_objects(kind, lab.name) for kind in ("container", "network", "volume")):
        assert cli.main(["down", "--volumes", "--lab", str(lab.path)]) == cli.EXIT_OK
    proc = subprocess.Popen(
        [sys.executable, "-m", "pacslab.cli", "up", "--lab", str(lab.path)],
        cwd=REPO_ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, start_new_session=True,
    )
    seen = []
    deadline = time.monotonic() + 600
    assert proc.stdout is not None
    for line in proc.stdout:
        seen.append(line)
        if line.strip().startswith("networks") or time.monotonic() > deadline:
            break
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    assert any(line.strip().startswith("networks") for line in seen), "".join(seen)
    assert lab_objects("network", lab.name), "the interrupted up should have left its networks"

    assert cli.main(["up", "--lab", str(lab.path)]) == cli.EXIT_OK
    running = {c["Config"]["Labels"]["pacslab.host"] for c in lab_objects("container", lab.name) if c["State"]["Running"]}
    assert running == {h.name for h in lab.deployed_hosts()}
    assert cli.lab_is_up(lab)
    assert cli.host_rule_present(plan)


def _converged_in_full(run: dict, lab: Lab, nodes: list) -> bool:
    """Whether a recorded run converged every node and container in full (not skipped)."""
    phases = {p["phase"]: p for p in run.get("phases", [])}
    configure, hosts = phases.get("configure", {}), phases.get("hosts", {})
    return bool(run.get("ok")) and configure.get("ok", 0) >= FULL_CONVERGE_MIN_TASKS * len(nodes) \
        and hosts.get("ok", 0) >= len(lab.deployed_hosts())


@pytest.mark.lifecycle("first")
def test_every_role_converged_twice_in_full_changes_nothing_the_second_time(running_lab: Lab, plan: Plan, state: Path) -> None:
    """Real idempotence (the second-run check dev-sec runs in molecule). up.yml runs with
    both skips bypassed, as `pacslab up --full` does (lab_converged_force: no node is ended before
    its roles; lab_provision_force: every network, volume and container goes through its
    community.docker module), so every role runs every task; it must report changed=0, and names
    each changed task (role : task [host]) when it does not. The first full converge is the cold
    `up` the test above ends with (new containers: nothing to skip; both run before the steady
    checks), checked from its record; run alone, this test converges in full once more first."""
    nodes = [h for h in running_lab.deployed_hosts() if CONVERGE_CACHED_GROUPS & set(h.groups)]
    assert nodes
    if not _converged_in_full(last_up(state), running_lab, nodes):
        first = run_playbook(running_lab, plan, "up.yml", state, extra=cli.FULL_CONVERGE, quiet=True)
        assert first.ok, first.failures
    second = run_playbook(running_lab, plan, "up.yml", state, extra=cli.FULL_CONVERGE, quiet=True)
    assert second.ok, second.failures

    changed = [t for p in second.phases for t in p["changed_tasks"]]
    assert second.changed == 0, f"the second full converge changed {second.changed} task(s): {changed}"
    # The cache really was bypassed: a warm `up` that skips every node runs about 66 tasks in
    # `configure` on the reference lab, a full converge about 313; and every container went
    # through docker_container (one task each), not only those that differ.
    assert _converged_in_full({"ok": True, "phases": second.phases}, running_lab, nodes), second.phases
