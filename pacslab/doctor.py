"""What this machine lacks for pacslab, and how to fix each item (`pacslab doctor`)."""

from __future__ import annotations

import os
import shutil
import sys
from dataclasses import dataclass
from pathlib import Path

from .docker import engine_location, engine_version, image_id
from .engine import ansible_playbook
from .plan import ROOTFS_TAG, read_apt_sources


@dataclass(frozen=True)
class Finding:
    name: str
    ok: bool
    detail: str
    fix: str = ""
    required: bool = True


def is_root() -> bool:
    return os.geteuid() == 0


def can_install_engine() -> bool:
    """`pacslab up` installs and starts the local engine itself only as root, with apt, locally."""
    return is_root() and shutil.which("apt-get") is not None and not os.environ.get("DOCKER_HOST")


def engine_finding() -> Finding:
    version = engine_version()
    if version:
        return Finding("Docker engine", True, f"{version} at {engine_location()}")
    if os.environ.get("DOCKER_HOST"):
        fix = f"start the engine at DOCKER_HOST={os.environ['DOCKER_HOST']}, or unset DOCKER_HOST"
    elif can_install_engine():
        fix = "pacslab up installs Debian's docker.io and starts dockerd itself (you are root)"
    else:
        fix = "as root: apt-get install docker.io && (systemctl start docker || dockerd &)"
    return Finding("Docker engine", False, f"no engine answers at {engine_location()}", fix)


def check() -> list[Finding]:
    findings = [
        Finding(
            "Python",
            sys.version_info >= (3, 11),
            sys.version.split()[0],
            "pacslab needs Python 3.11 or later",
        ),
        Finding(
            "ansible-playbook",
            ansible_playbook() is not None,
            ansible_playbook() or "not found",
            "pip install -r requirements.txt",
        ),
    ]
    try:
        import ansible_collections.community.docker  # noqa: F401

        findings.append(Finding("community.docker collection", True, "shipped with the ansible package"))
    except ImportError:
        findings.append(Finding("community.docker collection", False, "missing", "pip install -r requirements.txt"))
    findings.append(engine_finding())
    findings.append(
        Finding(
            "root",
            is_root(),
            "uid 0" if is_root() else f"uid {os.geteuid()}",
            "run as root: pacslab sets a DOCKER-USER rule and may install packages",
        )
    )
    findings.append(
        Finding(
            "iptables",
            shutil.which("iptables") is not None,
            shutil.which("iptables") or "not found",
            "apt-get install iptables (comes with docker.io)",
        )
    )
    bridge_nf = Path("/proc/sys/net/bridge/bridge-nf-call-iptables")
    findings.append(
        Finding(
            "br_netfilter",
            bridge_nf.exists(),
            "loaded" if bridge_nf.exists() else "not loaded (Docker loads it when it starts)",
            "start the Docker engine, or modprobe br_netfilter",
            required=False,
        )
    )
    apt = read_apt_sources()
    findings.append(
        Finding(
            "Debian mirror",
            bool(apt.mirror),
            apt.mirror or "no bookworm deb source in /etc/apt/sources.list(.d)",
            "the base image is bootstrapped from the host's own apt sources; add a bookworm source",
        )
    )
    have_rootfs = engine_version() is not None and image_id(ROOTFS_TAG) is not None
    findings.append(
        Finding(
            "debootstrap",
            have_rootfs or shutil.which("debootstrap") is not None,
            "rootfs image present" if have_rootfs else (shutil.which("debootstrap") or "not found"),
            "apt-get install debootstrap (pacslab up installs it as root)",
            required=not is_root(),
        )
    )
    findings.append(
        Finding(
            "pulumi CLI",
            shutil.which("pulumi") is not None,
            shutil.which("pulumi") or "not found (optional: only for `pulumi preview/up` of infra/)",
            "https://www.pulumi.com/docs/install/ ; the unit tests use Pulumi mocks and do not need it",
            required=False,
        )
    )
    return findings
