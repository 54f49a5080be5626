"""The third-party modules pacslab imports when it runs on the host, found by reading its source.

Shared by the unit test that holds every such import to an exact pin in requirements.txt
(tests/unit/test_requirements.py) and by the fresh-machine check, which imports each of them from a
virtual environment made on a bare Debian 12 (tests/fresh/check_imports.py). Standard library only:
the fresh check runs it before anything else is known to work.
"""

from __future__ import annotations

import ast
import sys
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[2]
# Python that runs on the host (the CLI, the Pulumi program, Ansible plugins, tests, benchmarks).
# roles/orthanc/files/pacslab_orthanc.py is not here: it runs inside Orthanc's embedded Python in
# the pacs image, whose packages come from that image's Dockerfile, not from requirements.txt.
HOST_SOURCE_DIRS = ("pacslab", "infra", "plugins", "tests", "bench")
# The project's own top-level packages (imported from the checkout, not installed from PyPI).
OWN_PACKAGES = frozenset({"pacslab", "infra", "tests", "bench", "plugins"})
# Imported on the host by Ansible modules the roles run there, not by pacslab's own source:
# community.docker's modules (docker_image, docker_network, docker_container ...) import requests.
HOST_MODULE_IMPORTS = {"requests": "community.docker modules run on the host (roles/lab_images, roles/lab_provision)"}


def source_files(root: Path = REPO_ROOT, dirs: tuple[str, ...] = HOST_SOURCE_DIRS) -> list[Path]:
    """Every ``*.py`` under ``dirs`` of ``root``, sorted; caches and virtual environments excluded."""
    files: list[Path] = []
    for d in dirs:
        files += [p for p in (root / d).rglob("*.py") if not {"__pycache__", ".venv"} & set(p.parts)]
    return sorted(files)


def _imports(root: Path, dirs: tuple[str, ...]) -> list[tuple[str, str]]:
    """(dotted module name, relative file) for every third-party absolute import under ``dirs``.

    Every ``import x.y`` and ``from x.y import z`` anywhere in a file counts, also those inside
    functions (they run later, but they run). Raises SyntaxError for a file Python cannot parse.
    """
    found: list[tuple[str, str]] = []
    for path in source_files(root, dirs):
        for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
            if isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                names = [node.module]
            else:
                continue
            for name in names:
                top = name.split(".")[0]
                if top not in sys.stdlib_module_names and top not in OWN_PACKAGES and top != "__future__":
                    found.append((name, str(path.relative_to(root))))
    return found


def third_party_imports(root: Path = REPO_ROOT, dirs: tuple[str, ...] = HOST_SOURCE_DIRS) -> dict[str, list[str]]:
    """{top-level name: [relative file, ...]} of the third-party modules the source imports."""
    found: dict[str, set[str]] = {}
    for name, file in _imports(root, dirs):
        found.setdefault(name.split(".")[0], set()).add(file)
    return {name: sorted(files) for name, files in sorted(found.items())}


def modules_to_import(root: Path = REPO_ROOT) -> dict[str, str]:
    """{module: why} for every third-party module the host needs at run time: the full dotted names
    the source imports (so ``ansible_collections.community.docker`` is tried, not only its
    namespace), plus HOST_MODULE_IMPORTS."""
    wanted: dict[str, str] = {}
    for name, file in _imports(root, HOST_SOURCE_DIRS):
        wanted.setdefault(name, f"imported by {file}")
    wanted.update(HOST_MODULE_IMPORTS)
    return dict(sorted(wanted.items()))
