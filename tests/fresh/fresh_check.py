"""`make fresh-check`: the README's install path on a fresh Debian 12 machine, in a throw-away container.

The container starts from the lab's own bookworm root filesystem (``pacslab/rootfs:bookworm``,
debootstrap minbase, imported by `pacslab up`'s images phase, roles/lab_images): Debian with
neither python3 nor make. It gets a clean copy of the repository (the tracked files as they are in
the working tree, through ``git stash create`` + ``git archive``: no .venv, no .pacslab, nothing
untracked) and runs tests/fresh/inside.sh, which installs Debian's python3 and make, runs
``make doctor`` and asserts what a new user must see. The container is removed at the end,
whatever happens.

Network: Docker's default bridge, because the install needs the package registries (Debian's
mirror and PyPI) exactly as this machine reaches them. A fresh machine of this workplace has the
same registry configuration as this one, so the container gets this host's copy of it, read-only
(it is configuration, not state the check may change): the apt sources, pip's global config files,
the PIP_* environment and the CA bundle pip trusts (the egress proxy re-signs TLS with a workplace
CA). Folders that only this host holds (local wheel folders, the host's venv, its pip cache) are not
given: the container must fetch what it needs itself, as a fresh machine would. No pip cache is
mounted either: the download (109 MB, about 30 s from this host) is a small part of the time; pip
installing the requirements on two busy cores is most of it (491 s and 842 s for the whole check).

FRESH_IMAGE names another image to start from (e.g. pacslab/base:bookworm-<hash>, which already has
python3: the check then fails at its first assertion, as it should).

Exit codes: 0 passed; 1 an assertion inside failed; 4 this machine cannot run the check (no
Docker engine, no rootfs image: run `make up` first).
"""

from __future__ import annotations

import configparser
import os
import shlex
import signal
import subprocess
import sys
import time
from pathlib import Path
from types import FrameType

REPO_ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO_ROOT))
from pacslab.plan import APT_SOURCES_DIRS, APT_SOURCES_LIST, ROOTFS_TAG  # noqa: E402

IMAGE = os.environ.get("FRESH_IMAGE", ROOTFS_TAG)
PIP_CONFIGS = (Path("/etc/pip.conf"), Path("/etc/xdg/pip"))  # pip's global (site-wide) configuration
CONTAINER_CA = "/run/host-registry/ca-bundle.crt"
EXIT_FAILED = 1
EXIT_MACHINE = 4


def host_pip_ca() -> Path | None:
    """The CA bundle this host's pip trusts: PIP_CERT, else ``cert`` in a global pip config file,
    else Debian's system bundle when present."""
    if os.environ.get("PIP_CERT"):
        return Path(os.environ["PIP_CERT"])
    for conf in (Path("/etc/xdg/pip/pip.conf"), Path("/etc/pip.conf")):
        parser = configparser.ConfigParser()
        parser.read(conf)
        if parser.has_option("global", "cert"):
            return Path(parser.get("global", "cert"))
    system = Path("/etc/ssl/certs/ca-certificates.crt")
    return system if system.is_file() else None


def registry_mounts_and_env() -> list[str]:
    """``docker create`` arguments (read-only mounts, environment) that give the container this
    host's registry configuration, and print what was passed and what was left out."""
    args: list[str] = []
    mounted: list[Path] = []
    for src in [*APT_SOURCES_DIRS, APT_SOURCES_LIST, *PIP_CONFIGS]:
        if src.exists():
            args += ["--mount", f"type=bind,source={src},target={src},readonly"]
            mounted.append(src)
    ca = host_pip_ca()
    if ca is not None and ca.is_file():
        # Not at its own path: Debian's ca-certificates (a recommended package) writes
        # /etc/ssl/certs/ca-certificates.crt itself, and a read-only file there would break its install.
        args += ["--mount", f"type=bind,source={ca.resolve()},target={CONTAINER_CA},readonly", "--env", f"PIP_CERT={CONTAINER_CA}"]
    for key, value in sorted(os.environ.items()):
        if not key.startswith("PIP_") or key == "PIP_CERT":
            continue
        paths = [v for v in value.split() if v.startswith("/") or v.startswith("file:")]
        if paths and not all(any(Path(p.removeprefix("file://")).is_relative_to(m) for m in mounted) for p in paths):
            print(f"fresh: not passed: {key}={value} (a folder of this host, not a registry)")
            continue
        args += ["--env", f"{key}={value}"]
    print("fresh: registry configuration given read-only:", ", ".join(str(m) for m in mounted) + (f", CA bundle {ca}" if ca else ""))
    return args


def docker(*argv: str, check: bool = True, capture: bool = True) -> subprocess.CompletedProcess[str]:
    """Run the docker CLI; ``capture=False`` streams its output to ours."""
    return subprocess.run(["docker", *argv], text=True, check=check, capture_output=capture)


def source_archive() -> bytes:
    """A tar of the tracked files as they are in the working tree, under pacslab/."""
    stash = subprocess.run(["git", "stash", "create"], cwd=REPO_ROOT, capture_output=True, text=True, check=True).stdout.strip()
    rev = stash or "HEAD"
    return subprocess.run(["git", "archive", "--format=tar", "--prefix=pacslab/", rev], cwd=REPO_ROOT, capture_output=True, check=True).stdout


def main() -> int:
    if docker("version", "--format", "{{.Server.Version}}", check=False).returncode != 0:
        print("fresh: no Docker engine answers; run `make up` first (it installs and starts one as root)", file=sys.stderr)
        return EXIT_MACHINE
    if docker("image", "inspect", IMAGE, check=False).returncode != 0:
        print(f"fresh: image {IMAGE} is missing; run `make up` first (its images phase, roles/lab_images, builds it)", file=sys.stderr)
        return EXIT_MACHINE
    # Not under a lab's name prefix (pacslab-...): nothing of a lab may match it.
    name = f"fresh-check-{os.getpid()}"
    mounts = registry_mounts_and_env()

    def terminate(signum: int, frame: FrameType | None) -> None:
        raise SystemExit(128 + signum)

    signal.signal(signal.SIGTERM, terminate)
    start = time.monotonic()
    rc = EXIT_FAILED
    try:
        create = ["create", "--name", name, "--label", "pacslab.fresh-check=1", "--network", "bridge", "--workdir", "/root/pacslab",
                  *mounts, IMAGE, "bash", "tests/fresh/inside.sh"]
        print("fresh: docker", shlex.join(create))
        docker(*create)
        subprocess.run(["docker", "cp", "-", f"{name}:/root"], input=source_archive(), capture_output=True, check=True)
        docker("start", "--attach", name, check=False, capture=False)
        rc = int(docker("inspect", "--format", "{{.State.ExitCode}}", name).stdout.strip())
    except subprocess.CalledProcessError as exc:
        print(f"fresh: {shlex.join(exc.cmd)} exited {exc.returncode}: {exc.stderr!r}", file=sys.stderr)
    finally:
        docker("rm", "--force", "--volumes", name, check=False)
        print(f"fresh: container {name} removed; {time.monotonic() - start:.0f} s in all")
    print("fresh: PASSED" if rc == 0 else f"fresh: FAILED (inside.sh exited {rc})")
    return 0 if rc == 0 else EXIT_FAILED


if __name__ == "__main__":
    sys.exit(main())
