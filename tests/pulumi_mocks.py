"""Run the Pulumi program under Pulumi's unit-test mocks and describe what it declared.

Pulumi documents set_mocks for unit tests: no engine, no provider plugin, no Docker. The recorded
resource inputs are normalised to the same shape as `describe_live` gives for a running lab, so the
parity test can compare the two engines directly.
"""

from __future__ import annotations

from typing import Any

import pulumi


class RecordingMocks(pulumi.runtime.Mocks):
    def __init__(self) -> None:
        self.resources: list[tuple[str, str, dict[str, Any]]] = []

    def new_resource(self, args: pulumi.runtime.MockResourceArgs) -> tuple[str, dict[str, Any]]:
        self.resources.append((args.typ, args.name, dict(args.inputs)))
        return f"{args.name}-id", dict(args.inputs)

    def call(self, args: pulumi.runtime.MockCallArgs) -> tuple[dict[str, Any], list[tuple[str, str]]]:
        return {}, []


MOCKS = RecordingMocks()
pulumi.runtime.set_mocks(MOCKS, preview=False)


def _of(typ: str) -> list[tuple[str, dict[str, Any]]]:
    return [(name, inputs) for t, name, inputs in MOCKS.resources if t == typ]


def describe_mocked() -> dict[str, Any]:
    networks = {
        i["name"]: {
            "subnet": i["ipamConfigs"][0]["subnet"],
            "gateway": i["ipamConfigs"][0]["gateway"],
            "bridge": i["options"]["com.docker.network.bridge.name"],
            "internal": bool(i.get("internal")),
        }
        for _, i in _of("docker:index/network:Network")
    }
    containers = {
        i["name"]: {
            "image": i["image"],
            "networks": sorted((n["name"], n["ipv4Address"]) for n in i.get("networksAdvanced", [])),
            "capabilities": sorted((i.get("capabilities") or {}).get("adds", [])),
            "sysctls": dict(i.get("sysctls") or {}),
            "volumes": sorted((v["volumeName"], v["containerPath"]) for v in i.get("volumes", [])),
            "ports": sorted(p["external"] for p in i.get("ports", [])),
            "hosts": {h["host"]: h["ip"] for h in i.get("hosts") or []},
        }
        for _, i in _of("docker:index/container:Container")
    }
    volumes = sorted(i["name"] for _, i in _of("docker:index/volume:Volume"))
    images = sorted(i["imageName"] for _, i in _of("docker:index/image:Image"))
    return {"networks": networks, "containers": containers, "volumes": volumes, "images": images}


def reset() -> None:
    MOCKS.resources.clear()
