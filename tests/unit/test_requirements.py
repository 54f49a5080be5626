"""Every third-party module the project imports at run time comes from a distribution pinned with
``==`` in requirements.txt (exact pins; issue 9: a clean venv from requirements.txt alone
must run `pacslab up`)."""

from __future__ import annotations

import importlib.metadata
import re

import pytest

from tests.fresh.imports import HOST_MODULE_IMPORTS, REPO_ROOT, third_party_imports

PIN = re.compile(r"^([A-Za-z0-9][A-Za-z0-9._-]*)\s*==\s*([^\s;#]+)")


def _canonical(name: str) -> str:
    """PEP 503 normalised distribution name."""
    return re.sub(r"[-_.]+", "-", name).lower()


def pinned() -> dict[str, str]:
    """{normalised distribution name: version} of the ``name==version`` lines of requirements.txt."""
    pins: dict[str, str] = {}
    for line in (REPO_ROOT / "requirements.txt").read_text().splitlines():
        match = PIN.match(line.strip())
        if match:
            pins[_canonical(match.group(1))] = match.group(2)
    return pins


IMPORTS = third_party_imports()
MODULES = sorted({*IMPORTS, *HOST_MODULE_IMPORTS})
PROVIDERS = importlib.metadata.packages_distributions()


def test_the_collector_sees_the_imports_written_out_here() -> None:
    """The collector is not trusted blindly: these imports are known by hand to exist in the source
    (pacslab/ca.py imports cryptography, infra/lab.py pulumi_docker, the Ansible callback
    ansible), and the standard library and the project's own packages are left out."""
    assert {"cryptography", "pulumi_docker", "ansible", "yaml", "pynetdicom", "pytest"} <= set(IMPORTS)
    assert "pacslab/ca.py" in IMPORTS["cryptography"]
    assert "plugins/callback/pacslab.py" in IMPORTS["ansible"]
    assert not {"json", "pathlib", "subprocess", "pacslab", "tests", "infra", "__future__"} & set(IMPORTS)


def test_requirements_pins_exactly() -> None:
    """Each requirement line is ``name==version`` (or the project itself, ``-e .``): no ranges."""
    loose = [
        line for line in (REPO_ROOT / "requirements.txt").read_text().splitlines()
        if line.strip() and not line.lstrip().startswith("#") and line.strip() != "-e ." and not PIN.match(line.strip())
    ]
    assert not loose, f"requirements.txt lines without an exact pin: {loose}"


@pytest.mark.parametrize("module", MODULES)
def test_import_comes_from_a_pinned_distribution(module: str) -> None:
    providers = PROVIDERS.get(module, [])
    assert providers, f"{module} is imported ({IMPORTS.get(module) or HOST_MODULE_IMPORTS[module]}) but no installed distribution provides it"
    pins = pinned()
    pinned_providers = [d for d in providers if _canonical(d) in pins]
    assert pinned_providers, f"{module} comes from {providers}, none pinned with == in requirements.txt"
    for dist in pinned_providers:
        installed = importlib.metadata.version(dist)
        assert installed == pins[_canonical(dist)], f"{dist} {installed} is installed, requirements.txt pins {pins[_canonical(dist)]}"
