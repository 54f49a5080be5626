"""Map a validated lab to Docker objects: the one input of both provisioning engines.

The Ansible engine (roles/lab_provision) and the Pulumi program (infra/) each turn this plan into
networks, volumes and containers and hold no topology of their own (docs/architecture.md section 3). The
Pulumi parity test compares what each engine makes of it.
"""

from __future__ import annotations

import hashlib
import json
import re
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from .firewall import QUARANTINE_REACH, QUARANTINE_STATE, render
from .topology import CONTROL_SWITCHES, IMAGES_DIR, PEER_READ_SWITCHES, REPO_ROOT, Host, Lab, flow_between, safe_load

LABEL_LAB = "pacslab.lab"  # every Docker object of a lab carries it; down removes by it
LABEL_ROLE = "pacslab.role"  # host | standin
ROOTFS_TAG = "pacslab/rootfs:bookworm"
APT_SOURCES_DIRS = (Path("/etc/apt/sources.list.d"),)
APT_SOURCES_LIST = Path("/etc/apt/sources.list")
# New network namespaces may inherit the host's ip_forward=1: only the fw may forward.
WORKLOAD_SYSCTLS = {"net.ipv4.ip_forward": "0"}
# The capabilities a workload holds beyond Docker's defaults, by image. The siem keeps its raw
# files append-only (chattr +a, roles/log_rotation), which takes CAP_LINUX_IMMUTABLE; its rsyslogd,
# the one program there that faces the network, runs without it (roles/siem). The Orthanc hosts' own
# watch (roles/orthanc, pacslab-hids) reads every process's executable, which for another user's
# process takes CAP_SYS_PTRACE (without it, a process that makes itself non-dumpable hides it).
# Root in those containers holds it too; root there could already become any user and trace that
# user's processes, and ptrace reaches only the container's own (its PID namespace). No workload
# holds NET_ADMIN.
IMAGE_CAPABILITIES = {"siem": ["LINUX_IMMUTABLE"], "orthanc": ["SYS_PTRACE"]}


@dataclass(frozen=True)
class AptSources:
    """The host's enabled apt sources: the mirror debootstrap uses and the files the base copies."""

    mirror: str
    files: dict[str, str]  # file name -> content, written into the base image's sources.list.d


def read_apt_sources(dirs: tuple[Path, ...] = APT_SOURCES_DIRS, legacy: Path = APT_SOURCES_LIST) -> AptSources:
    """Read deb822 ``*.sources`` and one-line ``sources.list``; never hard-code a mirror."""
    files: dict[str, str] = {}
    mirror = ""
    for d in dirs:
        for f in sorted(d.glob("*.sources")) if d.is_dir() else []:
            text = f.read_text()
            files[f.name] = text
            for stanza in re.split(r"\n\s*\n", text):
                fields = dict(
                    (k.strip().lower(), v.strip())
                    for k, v in (ln.split(":", 1) for ln in stanza.splitlines() if ":" in ln and not ln.startswith("#"))
                )
                suites = fields.get("suites", "").split()
                if not mirror and "deb" in fields.get("types", "").split() and "bookworm" in suites and fields.get("enabled", "yes") != "no":
                    mirror = fields.get("uris", "").split()[0] if fields.get("uris") else ""
        for f in sorted(d.glob("*.list")) if d.is_dir() else []:
            files[f.name] = f.read_text()
    if legacy.is_file():
        text = legacy.read_text()
        lines = [ln for ln in text.splitlines() if ln.strip() and not ln.lstrip().startswith("#")]
        if lines:
            files["host-sources.list"] = text
        for ln in lines:
            parts = [p for p in ln.split() if not p.startswith("[")]
            if not mirror and len(parts) >= 3 and parts[0] == "deb" and parts[2] == "bookworm":
                mirror = parts[1]
    return AptSources(mirror=mirror, files=files)


def _tree_hash(*parts: bytes | Path) -> str:
    digest = hashlib.sha256()
    for part in parts:
        if isinstance(part, Path):
            # wheels/ is filled from requirements.txt at build time; the pins are what counts
            for f in sorted(p for p in part.rglob("*") if p.is_file() and "wheels" not in p.relative_to(part).parts):
                digest.update(str(f.relative_to(part)).encode() + b"\0" + f.read_bytes() + b"\0")
        else:
            digest.update(part + b"\0")
    return digest.hexdigest()[:12]


@dataclass(frozen=True)
class ImagePlan:
    name: str  # folder under images/
    tag: str  # pacslab/<name>:<content hash>, so a changed Dockerfile means a new tag
    context: str
    build_args: dict[str, str]
    pip_requirements: bool = False  # the folder pins Python wheels (requirements.txt) that the build copies in


@dataclass(frozen=True)
class NetworkPlan:
    name: str
    zone: str
    bridge: str
    subnet: str
    gateway: str


@dataclass(frozen=True)
class Attachment:
    """Field names follow community.docker.docker_container's ``networks`` option."""

    name: str
    ipv4_address: str


@dataclass(frozen=True)
class ContainerPlan:
    name: str
    host: str
    image: str
    networks: list[Attachment]
    capabilities: list[str] = field(default_factory=list)
    sysctls: dict[str, str] = field(default_factory=dict)
    volumes: list[dict[str, str]] = field(default_factory=list)  # {source, target, type: volume}
    published: list[int] = field(default_factory=list)
    router: str | None = None  # the default route a workload gets through the fw
    command: list[str] | None = None
    role: str = "host"
    # /etc/hosts entries, name -> IPv4 address: the web names the host may reach (web_names)
    names: dict[str, str] = field(default_factory=dict)
    spec: str = ""  # digest of every other field, the container's label pacslab.spec (computed)

    def __post_init__(self) -> None:
        # names only when set: a container planned before the field existed keeps its spec
        body = {k: v for k, v in asdict(self).items() if k != "spec" and not (k == "names" and not v)}
        object.__setattr__(self, "spec", hashlib.sha256(json.dumps(body, sort_keys=True).encode()).hexdigest()[:16])


@dataclass(frozen=True)
class Plan:
    lab: str
    prefix: str
    labels: dict[str, str]
    rootfs: str
    apt_mirror: str
    apt_sources: dict[str, str]
    base: ImagePlan
    images: list[ImagePlan]
    tools_image: str
    networks: list[NetworkPlan]
    containers: list[ContainerPlan]
    volumes: list[str]
    docker_user_comment: str
    bridge_glob: str
    firewall_ruleset: str
    firewall_host: str
    firewall_quarantine_state: str  # the fw's quarantine record; the ruleset includes its element file
    quarantine_spared_zones: list[str]  # the zones a quarantined host keeps (pacslab.firewall QUARANTINE_REACH)
    secrets_dir: str  # generated per lab on the controller (git-ignored, 0700), never defaults
    state_dir: str  # the lab's controller-side state (.pacslab/<lab>): logs, converge records
    config_digest: str  # what hosts are configured from, in full (a snapshot's restorable() compares it)
    shared_digest: str  # config_digest without the host-local keys: with host_inputs, what a warm `up` compares
    host_inputs: dict[str, str]  # host -> digest of its own control switches (roles/lab_converged)
    # container -> the inner ports of its transparent TLS fronts (roles/orthanc: stunnel hands each
    # DICOM TLS connection to Orthanc with the peer's own address). Packets from these ports are routed
    # back into the container (policy route, set from outside like the default route), to the front.
    front_ports: dict[str, list[int]] = field(default_factory=dict)
    # Orthanc host -> what it may listen on outside loopback, "proto/port" (pacslab.listeners, as
    # C-PRT-02's check reads it): its host watch (roles/orthanc, pacslab-hids) reports any other.
    # Computed here, on the controller: inside Ansible the lab's loader would see the play's extra vars.
    listeners: dict[str, list[str]] = field(default_factory=dict)

    def to_vars(self) -> dict[str, Any]:
        """Ansible extra vars: the whole plan under one key."""
        return {"pacslab_plan": asdict(self)}


def image_plan(name: str, base_tag: str) -> ImagePlan:
    context = IMAGES_DIR / name
    tag = f"pacslab/{name}:{_tree_hash(base_tag.encode(), context)}"
    return ImagePlan(
        name=name, tag=tag, context=str(context), build_args={"BASE": base_tag}, pip_requirements=(context / "requirements.txt").is_file()
    )


def build_plan(lab: Lab, apt: AptSources | None = None) -> Plan:
    apt = apt if apt is not None else read_apt_sources()
    sources_blob = json.dumps(apt.files, sort_keys=True).encode()
    base_tag = f"pacslab/base:bookworm-{_tree_hash(ROOTFS_TAG.encode(), sources_blob, IMAGES_DIR / 'base')}"
    base = ImagePlan(name="base", tag=base_tag, context=str(IMAGES_DIR / "base"), build_args={"ROOTFS": ROOTFS_TAG})
    image_names = sorted({h.image for h in lab.deployed_hosts() if h.image} | {"tools"})
    images = [image_plan(n, base_tag) for n in image_names]
    tags = {i.name: i.tag for i in images}

    networks = [
        NetworkPlan(
            name=lab.network_name(z.name),
            zone=z.name,
            bridge=z.bridge,
            subnet=str(z.subnet),
            gateway=str(z.gateway),
        )
        for z in lab.zones.values()
    ]
    containers: list[ContainerPlan] = []
    volumes: list[str] = []
    for host in lab.deployed_hosts():
        vols = [{"source": f"{lab.prefix}-{host.name}-{v.name}", "target": v.path, "type": "volume"} for v in host.volumes]
        volumes += [v["source"] for v in vols]
        assert host.image is not None
        if host.is_router:
            containers.append(
                ContainerPlan(
                    name=lab.container_name(host.name),
                    host=host.name,
                    image=tags[host.image],
                    networks=[Attachment(lab.network_name(z.name), str(z.router)) for z in lab.zones.values()],
                    capabilities=["NET_ADMIN"],
                    sysctls={"net.ipv4.ip_forward": "1"},
                    volumes=vols,
                )
            )
            continue
        assert host.zone is not None
        zone = lab.zones[host.zone]
        containers.append(
            ContainerPlan(
                name=lab.container_name(host.name),
                host=host.name,
                image=tags[host.image],
                networks=[Attachment(lab.network_name(zone.name), str(host.address))],
                capabilities=list(IMAGE_CAPABILITIES.get(host.image, [])),
                sysctls=dict(WORKLOAD_SYSCTLS),
                volumes=vols,
                published=list(host.publish),
                router=str(zone.router),
                names=web_names(lab, host),
            )
        )
    return Plan(
        lab=lab.name,
        prefix=lab.prefix,
        labels={LABEL_LAB: lab.name},
        rootfs=ROOTFS_TAG,
        apt_mirror=apt.mirror,
        apt_sources=apt.files,
        base=base,
        images=images,
        tools_image=tags["tools"],
        networks=networks,
        containers=containers,
        volumes=volumes,
        docker_user_comment=f"pacslab:{lab.name}",
        bridge_glob=f"{lab.bridge_prefix}+",
        firewall_ruleset=render(lab),
        firewall_host=lab.router.name,
        firewall_quarantine_state=QUARANTINE_STATE,
        quarantine_spared_zones=[z for z in QUARANTINE_REACH if z in lab.zones],
        secrets_dir=str(REPO_ROOT / ".pacslab" / lab.name / "secrets"),
        state_dir=str(REPO_ROOT / ".pacslab" / lab.name),
        config_digest=config_digest(lab),
        shared_digest=config_digest(lab, shared=True),
        host_inputs=host_inputs(lab),
        front_ports=front_ports(lab),
        listeners=watched_listeners(lab),
    )


def web_names(lab: Lab, host: Host) -> dict[str, str]:
    """The /etc/hosts entries of ``host`` (name -> IPv4 address). OpenID Connect and browsers work
    with names (the issuer, the redirect URIs, the certificate a page is served with) and the lab
    has no DNS server: each deployed host whose ``https`` service a flow lets ``host`` reach, at its
    lab address; and, split horizon, each identity provider (group idp_servers) that ``host`` may
    not reach but a reverse proxy it may reach publishes (the internet zone signs in through the
    proxy), at that proxy's address."""
    names: dict[str, str] = {}
    for target in lab.deployed_hosts():
        if target.name == host.name or "https" not in {s.name for s in target.services}:
            continue
        if flow_between(lab, host.name, target.name, "tcp", target.service("https").port):
            names[target.name] = str(target.address)
    proxies = [p for p in lab.group("reverse_proxies") if p.name in names]
    for idp in lab.group("idp_servers"):
        if idp.deployed and idp.name not in names and idp.name != host.name and proxies:
            names[idp.name] = str(proxies[0].address)
    return names


def front_ports(lab: Lab) -> dict[str, list[int]]:
    """The Orthanc hosts whose DICOM TLS is a transparent stunnel front (orthanc_controls, the
    default): container -> [the inner port its answers are routed back from] (pacslab.listeners
    front_inner_port, which the listener check reads too)."""
    from .listeners import front_inner_port

    inner = {lab.container_name(h.name): front_inner_port(lab, h) for h in lab.deployed_hosts()}
    return {name: [port] for name, port in inner.items() if port is not None}


def watched_listeners(lab: Lab) -> dict[str, list[str]]:
    """Each deployed Orthanc host's expected listeners (pacslab.listeners), sorted, as "proto/port"."""
    from .listeners import expected_listeners

    return {h.name: [f"{proto}/{port}" for proto, port in sorted(expected_listeners(lab, h.name))]
            for h in lab.deployed_hosts() if h.image == "orthanc"}


# What the configure plays read besides the plan: roles, playbooks, plugins, the tools the roles
# copy into hosts, and the lab folder (host and group variables). Secrets are left out: they are
# generated during the first `up`, and counting them would make the second one converge again.
CONFIG_SOURCES = ("roles", "playbooks", "plugins", "ansible.cfg", "pacslab/ca.py", "pacslab/dicomsim.py", "pacslab/orders.py")


def read_by_plays(path: Path) -> bool:
    """Whether a file of CONFIG_SOURCES (an absolute path in this checkout) is one the configure
    plays can read: not a role's README.md, which pacslab.docs writes from the role's argument
    specs (those are counted), so regenerating the documentation converges no host again."""
    parts = path.relative_to(REPO_ROOT).parts
    return not (len(parts) == 3 and parts[0] == "roles" and parts[2] == "README.md")


def config_digest(lab: Lab, shared: bool = False) -> str:
    """sha256 (16 hex digits) of CONFIG_SOURCES and the lab folder, file by file. shared: the part
    every host is configured from - the lab folder's YAML read with the control switches and
    lab_waivers left out (HOST_LOCAL_KEYS): such a switch is read by its own host's roles only, and
    a waiver by no role but the assert that the definition already enforced (pacslab.topology), so
    switching such a control off on the PACS re-converges the PACS alone (host_inputs). A switch
    its peers read too (topology.PEER_READ_SWITCHES: orthanc_dicom_tls) is left out as well: it goes
    into the host_inputs of its host and of every host that names that host as a peer."""
    digest = hashlib.sha256()
    for root in [REPO_ROOT / s for s in CONFIG_SOURCES] + [lab.path]:
        files = [root] if root.is_file() else sorted(root.rglob("*"))
        for f in files:
            if f.is_file() and "__pycache__" not in f.parts and (root == lab.path or read_by_plays(f)):
                body = f.read_bytes()
                if shared and root == lab.path and f.suffix in (".yml", ".yaml"):
                    data = _without(safe_load(body), HOST_INPUT_KEYS)
                    if not data:  # host-local keys alone (an overlay's host_vars/fw.yml): as if the file were not there
                        continue
                    body = json.dumps(data, sort_keys=True, default=str).encode()
                digest.update(str(f.relative_to(REPO_ROOT if root != lab.path else lab.path)).encode() + b"\0" + body + b"\0")
    return digest.hexdigest()[:16]


# Variables no role reads from another host: each host's own value goes into its host_inputs.
HOST_LOCAL_KEYS = (frozenset(CONTROL_SWITCHES) - PEER_READ_SWITCHES) | {"lab_waivers"}
# What the shared digest leaves out: those, and the switches a host's peers read (host_inputs
# counts each of those for its host and for the hosts that name it in orthanc_peers or dicom_node_peers).
HOST_INPUT_KEYS = HOST_LOCAL_KEYS | PEER_READ_SWITCHES | {"lab_people", "lab_service_accounts"}
# The groups whose roles read the lab's people (roles/directory: entries and passwords; roles/idp:
# TOTP seeds): the people count in their hosts' inputs only, so disabling a person re-converges the
# directory and the IdP, not every node.
PEOPLE_READERS = frozenset({"directories", "idp_servers"})
# The group that holds the people's passwords (what `pacslab users` needs deployed for a login).
DIRECTORIES = "directories"
SIEMS = "siem_servers"
SCANNERS = "scanners"  # the hosts whose sweeps discover the lab's devices (roles/scanner, pacslab.discovery)
SIEM_USER = "pacslab-siem"  # roles/siem siem_user: who reads and writes the store
# The lab-definition keys in which a host names its DICOM peers (pacslab.topology checks them).
PEER_KEYS = ("orthanc_peers", "dicom_node_peers")


def _without(data: Any, keys: frozenset[str]) -> Any:
    """``data`` with every mapping key in ``keys`` removed, at any depth."""
    if isinstance(data, dict):
        return {k: _without(v, keys) for k, v in data.items() if k not in keys}
    if isinstance(data, list):
        return [_without(v, keys) for v in data]
    return data


def host_inputs(lab: Lab) -> dict[str, str]:
    """Per deployed host: sha256 (16 hex digits) of the control switches it sets (as Ansible resolves
    them for it) and of the PEER_READ_SWITCHES each of its DICOM peers sets (keyed "<peer>.<switch>"),
    the part of its inputs config_digest(shared=True) leaves out. W5's switch on the PACS thus
    re-converges the PACS and the hosts that dial it or that it dials, not the whole lab. A
    directory or an IdP (groups PEOPLE_READERS) counts the lab's people and service accounts as well."""
    out = {}
    for host in lab.deployed_hosts():
        hv = lab.host_vars.get(host.name, {})
        switches = {k: hv[k] for k in sorted(CONTROL_SWITCHES) if k in hv}
        peers = {str(p["host"]) for key in PEER_KEYS for p in hv.get(key) or [] if isinstance(p, dict) and "host" in p}
        for peer in sorted(peers):
            peer_vars = lab.host_vars.get(peer, {})
            switches.update({f"{peer}.{k}": peer_vars[k] for k in sorted(PEER_READ_SWITCHES) if k in peer_vars})
        if PEOPLE_READERS & set(host.groups):
            switches["lab_people"] = [asdict(p) for p in lab.people]
            switches["lab_service_accounts"] = [asdict(a) for a in lab.service_accounts]
        out[host.name] = hashlib.sha256(json.dumps(switches, sort_keys=True, default=str).encode()).hexdigest()[:16]
    return out


def state_dir(lab: Lab) -> Path:
    """Where pacslab keeps generated files for one lab (git-ignored)."""
    path = REPO_ROOT / ".pacslab" / lab.name
    path.mkdir(parents=True, exist_ok=True)
    return path
