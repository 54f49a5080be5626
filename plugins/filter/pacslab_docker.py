"""Filters that let `pacslab up` skip Docker objects already as the plan wants them.

One `docker inspect` of every network, volume or container of the plan costs one process; a
community.docker module per object costs one each. These filters compare the inspection with the
plan and return only what still needs the module, which then converges it as before. A container
carries the digest of its plan entry (pacslab.plan.ContainerPlan.spec) as the label pacslab.spec.
What `docker update` or `docker network connect` can change in place (restart policy, networks
and addresses, state) is compared on its own; nothing else changes without a new container.
"""

from __future__ import annotations

from typing import Any

SPEC_LABEL = "pacslab.spec"


def _labels_hold(actual: dict[str, str] | None, wanted: dict[str, str]) -> bool:
    return all((actual or {}).get(k) == v for k, v in wanted.items())


def pacslab_unconverged_networks(networks: list[dict[str, Any]], inspected: list[dict[str, Any]], labels: dict[str, str]) -> list[dict[str, Any]]:
    found = {n["Name"]: n for n in inspected}
    out = []
    for want in networks:
        have = found.get(want["name"])
        ipam = ((have or {}).get("IPAM") or {}).get("Config") or []
        ok = (
            have is not None
            and have.get("Driver") == "bridge"
            and have.get("Internal") is True
            and (have.get("Options") or {}).get("com.docker.network.bridge.name") == want["bridge"]
            and [(c.get("Subnet"), c.get("Gateway")) for c in ipam] == [(want["subnet"], want["gateway"])]
            and _labels_hold(have.get("Labels"), {**labels, "pacslab.zone": want["zone"]})
        )
        if not ok:
            out.append(want)
    return out


def pacslab_missing_volumes(volumes: list[str], inspected: list[dict[str, Any]], labels: dict[str, str]) -> list[str]:
    found = {v["Name"]: v for v in inspected}
    return [v for v in volumes if v not in found or not _labels_hold(found[v].get("Labels"), labels)]


def pacslab_unconverged_containers(containers: list[dict[str, Any]], inspected: list[dict[str, Any]]) -> list[dict[str, Any]]:
    found = {c["Name"].lstrip("/"): c for c in inspected}
    out = []
    for want in containers:
        have = found.get(want["name"])
        if have is None:
            out.append(want)
            continue
        attached = {
            name: ((net.get("IPAMConfig") or {}).get("IPv4Address"))
            for name, net in ((have.get("NetworkSettings") or {}).get("Networks") or {}).items()
        }
        ok = (
            (have.get("State") or {}).get("Running") is True
            and (have.get("Config") or {}).get("Image") == want["image"]
            and ((have.get("Config") or {}).get("Labels") or {}).get(SPEC_LABEL) == want["spec"]
            and ((have.get("HostConfig") or {}).get("RestartPolicy") or {}).get("Name") == "unless-stopped"
            and attached == {a["name"]: a["ipv4_address"] for a in want["networks"]}
        )
        if not ok:
            out.append(want)
    return out


class FilterModule:
    def filters(self) -> dict[str, Any]:
        return {
            "pacslab_unconverged_networks": pacslab_unconverged_networks,
            "pacslab_missing_volumes": pacslab_missing_volumes,
            "pacslab_unconverged_containers": pacslab_unconverged_containers,
        }
