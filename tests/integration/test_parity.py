"""Engine parity (platform): the Pulumi program, run on Pulumi's mocks, declares exactly the Docker
objects the Ansible engine created on the live lab - names, networks, subnets, addresses, images,
capabilities, sysctls, volumes, published ports, /etc/hosts entries. Any difference fails."""

from __future__ import annotations

from typing import Any

import pulumi

from infra.lab import deploy  # noqa: I001  (after the mocks are set)
from pacslab.docker import image_id, lab_objects
from pacslab.plan import LABEL_ROLE
from pacslab.topology import Lab
from tests import pulumi_mocks


def describe_live(lab: Lab) -> dict[str, Any]:
    networks = {
        n["Name"]: {
            "subnet": n["IPAM"]["Config"][0]["Subnet"],
            "gateway": n["IPAM"]["Config"][0]["Gateway"],
            "bridge": n["Options"].get("com.docker.network.bridge.name"),
            "internal": n["Internal"],
        }
        for n in lab_objects("network", lab.name)
    }
    containers = {}
    for c in lab_objects("container", lab.name):
        if c["Config"]["Labels"].get(LABEL_ROLE) != "host":
            continue  # stand-ins of the segmentation check are test fixtures, not lab hosts
        containers[c["Name"].lstrip("/")] = {
            "image": c["Config"]["Image"],
            "networks": sorted((net, s["IPAMConfig"]["IPv4Address"]) for net, s in c["NetworkSettings"]["Networks"].items()),
            "capabilities": sorted(cap.removeprefix("CAP_") for cap in c["HostConfig"]["CapAdd"] or []),
            "sysctls": dict(c["HostConfig"].get("Sysctls") or {}),
            "volumes": sorted((m["Name"], m["Destination"]) for m in c["Mounts"] if m["Type"] == "volume"),
            "ports": sorted(int(k.split("/")[0]) for k in c["HostConfig"].get("PortBindings") or {}),
            "hosts": dict(e.split(":", 1) for e in c["HostConfig"].get("ExtraHosts") or []),  # "name:address"
        }
    volumes = sorted(v["Name"] for v in lab_objects("volume", lab.name))
    return {"networks": networks, "containers": containers, "volumes": volumes}


@pulumi.runtime.test
def test_pulumi_program_matches_what_ansible_created(running_lab: Lab, plan, evidence):
    live = describe_live(running_lab)
    pulumi_mocks.reset()
    res = deploy(plan)
    outputs = [h.container.networks_advanced for h in res.hosts] + [z.network.name for z in res.zones.values()]

    def check(_: Any) -> None:
        mocked = pulumi_mocks.describe_mocked()
        evidence.update(networks=len(mocked["networks"]), containers=sorted(mocked["containers"]), volumes=mocked["volumes"])
        for kind in ("networks", "containers", "volumes"):
            assert mocked[kind] == live[kind], f"{kind} differ:\n pulumi: {mocked[kind]}\n live:   {live[kind]}"
        assert all(image_id(tag) for tag in mocked["images"]), "an image the program builds is not the one up built"

    return pulumi.Output.all(*outputs).apply(check)
