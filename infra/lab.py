"""Pulumi components for a pacslab lab: one Zone per zone network, one Host per container.

Thin by design (docs/architecture.md section 3): everything comes from pacslab.plan, the same plan the
Ansible engine applies; this module only maps it to pulumi_docker resources. The fw ruleset and
routes are configuration, applied afterwards by `pacslab up` (Ansible), which then finds every
Docker object already as planned and changes nothing.
"""

from __future__ import annotations

from dataclasses import dataclass

import pulumi
import pulumi_docker as docker

from pacslab.plan import ContainerPlan, ImagePlan, NetworkPlan, Plan


def _labels(labels: dict[str, str]) -> list[docker.NetworkLabelArgs]:
    return [docker.NetworkLabelArgs(label=k, value=v) for k, v in sorted(labels.items())]


class Zone(pulumi.ComponentResource):
    """pacslab:lab:Zone - one internal bridge network (no route out, no NAT)."""

    def __init__(self, net: NetworkPlan, labels: dict[str, str], opts: pulumi.ResourceOptions | None = None):
        super().__init__("pacslab:lab:Zone", net.zone, None, opts)
        self.network = docker.Network(
            net.name,
            name=net.name,
            driver="bridge",
            internal=True,
            ipam_configs=[docker.NetworkIpamConfigArgs(subnet=net.subnet, gateway=net.gateway)],
            options={"com.docker.network.bridge.name": net.bridge},
            labels=_labels(labels | {"pacslab.zone": net.zone}),
            opts=pulumi.ResourceOptions(parent=self),
        )
        self.register_outputs({"network": self.network.name})


class Host(pulumi.ComponentResource):
    """pacslab:lab:Host - a container with fixed addresses, its volumes, and no capability beyond
    Docker's defaults but its plan's (the fw's NET_ADMIN; the siem's LINUX_IMMUTABLE, whose raw files
    are append-only: remove its volumes with `pacslab down --volumes`, which clears the flag first,
    not with `pulumi destroy`, which Docker would refuse)."""

    def __init__(
        self,
        spec: ContainerPlan,
        image: pulumi.Input[str],
        zones: dict[str, Zone],
        labels: dict[str, str],
        opts: pulumi.ResourceOptions | None = None,
    ):
        super().__init__("pacslab:lab:Host", spec.host, None, opts)
        child = pulumi.ResourceOptions(parent=self)
        self.volumes = [
            docker.Volume(
                v["source"],
                name=v["source"],
                labels=[docker.VolumeLabelArgs(label=k, value=val) for k, val in sorted(labels.items())],
                opts=child,
            )
            for v in spec.volumes
        ]
        self.container = docker.Container(
            spec.name,
            name=spec.name,
            hostname=spec.host,
            image=image,
            command=spec.command,
            networks_advanced=[
                docker.ContainerNetworksAdvancedArgs(name=zones[a.name].network.name, ipv4_address=a.ipv4_address) for a in spec.networks
            ],
            capabilities=docker.ContainerCapabilitiesArgs(adds=spec.capabilities) if spec.capabilities else None,
            sysctls=spec.sysctls or None,
            hosts=[docker.ContainerHostArgs(host=n, ip=ip) for n, ip in sorted(spec.names.items())] or None,
            volumes=[
                docker.ContainerVolumeArgs(volume_name=vol.name, container_path=v["target"])
                for vol, v in zip(self.volumes, spec.volumes, strict=True)
            ],
            ports=[docker.ContainerPortArgs(internal=p, external=p, protocol="tcp") for p in spec.published],
            labels=[
                docker.ContainerLabelArgs(label=k, value=v)
                for k, v in sorted((labels | {"pacslab.role": spec.role, "pacslab.host": spec.host, "pacslab.spec": spec.spec}).items())
            ],
            restart="unless-stopped",
            must_run=True,
            opts=child,
        )
        self.register_outputs({"container": self.container.name})


@dataclass
class LabResources:
    zones: dict[str, Zone]
    images: dict[str, docker.Image]
    hosts: list[Host]


def _image(spec: ImagePlan) -> docker.Image:
    return docker.Image(
        spec.name,
        image_name=spec.tag,
        build=docker.DockerBuildArgs(context=spec.context, dockerfile=f"{spec.context}/Dockerfile", args=spec.build_args),
        skip_push=True,
    )


def deploy(plan: Plan) -> LabResources:
    """Declare the lab's Docker objects. The base image (debootstrap + import) must exist already."""
    zones = {n.name: Zone(n, plan.labels) for n in plan.networks}
    images = {i.tag: _image(i) for i in plan.images}
    hosts = [Host(c, images[c.image].image_name, zones, plan.labels) for c in plan.containers]
    return LabResources(zones=zones, images=images, hosts=hosts)
