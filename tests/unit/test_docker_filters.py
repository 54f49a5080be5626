"""plugins/filter/pacslab_docker.py: what a warm `up` may skip, and what it must converge."""

from __future__ import annotations

import copy
import importlib.util
from dataclasses import asdict
from typing import Any

import pytest

from pacslab.plan import Attachment, ContainerPlan
from pacslab.topology import REPO_ROOT

_spec = importlib.util.spec_from_file_location("pacslab_docker", REPO_ROOT / "plugins" / "filter" / "pacslab_docker.py")
assert _spec and _spec.loader
filters = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(filters)

PLAN = asdict(ContainerPlan(name="pacslab-pacs", host="pacs", image="pacslab/orthanc:abc",
                            networks=[Attachment("pacslab-datacenter", "10.77.40.10")]))


def inspected() -> dict[str, Any]:
    """What `docker inspect` shows for a container exactly as planned."""
    return {
        "Name": "/pacslab-pacs",
        "State": {"Running": True},
        "Config": {"Image": "pacslab/orthanc:abc", "Labels": {"pacslab.spec": PLAN["spec"]}},
        "HostConfig": {"RestartPolicy": {"Name": "unless-stopped"}},
        "NetworkSettings": {"Networks": {"pacslab-datacenter": {"IPAMConfig": {"IPv4Address": "10.77.40.10"}}}},
    }


def test_a_container_as_planned_is_skipped() -> None:
    assert filters.pacslab_unconverged_containers([PLAN], [inspected()]) == []


def drift(kind: str) -> dict[str, Any]:
    c = copy.deepcopy(inspected())
    if kind == "stopped":
        c["State"]["Running"] = False
    elif kind == "other-spec":
        c["Config"]["Labels"]["pacslab.spec"] = "0" * 16
    elif kind == "extra-network":  # docker network connect by hand: a segmentation drift
        c["NetworkSettings"]["Networks"]["pacslab-internet"] = {"IPAMConfig": {"IPv4Address": "10.77.90.99"}}
    elif kind == "other-address":
        c["NetworkSettings"]["Networks"]["pacslab-datacenter"]["IPAMConfig"]["IPv4Address"] = "10.77.40.99"
    elif kind == "restart-policy":
        c["HostConfig"]["RestartPolicy"]["Name"] = "no"
    return c


@pytest.mark.parametrize("kind", ["stopped", "other-spec", "extra-network", "other-address", "restart-policy", "missing"])
def test_a_container_that_differs_is_converged(kind: str) -> None:
    found = [] if kind == "missing" else [drift(kind)]
    assert filters.pacslab_unconverged_containers([PLAN], found) == [PLAN]


def test_the_spec_covers_every_field_of_the_plan_entry() -> None:
    base = ContainerPlan(name="a", host="a", image="i", networks=[])
    assert base.spec != ContainerPlan(name="a", host="a", image="i", networks=[], sysctls={"x": "1"}).spec
    assert base.spec == ContainerPlan(name="a", host="a", image="i", networks=[]).spec


def test_a_network_with_another_subnet_is_converged() -> None:
    want = {"name": "n", "zone": "z", "bridge": "lab-z", "subnet": "10.77.1.0/24", "gateway": "10.77.1.1"}
    have = {"Name": "n", "Driver": "bridge", "Internal": True, "Options": {"com.docker.network.bridge.name": "lab-z"},
            "IPAM": {"Config": [{"Subnet": "10.77.1.0/24", "Gateway": "10.77.1.1"}]}, "Labels": {"pacslab.lab": "x", "pacslab.zone": "z"}}
    assert filters.pacslab_unconverged_networks([want], [have], {"pacslab.lab": "x"}) == []
    have["IPAM"]["Config"][0]["Subnet"] = "10.77.2.0/24"
    assert filters.pacslab_unconverged_networks([want], [have], {"pacslab.lab": "x"}) == [want]
    assert filters.pacslab_unconverged_networks([want], [{**have, "Internal": False}], {"pacslab.lab": "x"}) == [want]
