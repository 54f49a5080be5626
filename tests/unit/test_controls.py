"""The control catalogue and the tests agree (docs/architecture.md section 7).

A control marked implemented (or partial: part of it built, the rest named) needs at least one integration test carrying its id and a role task
that names it; a test may only name a known control; a control not implemented has no test.
"""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest

from pacslab.report import STATUSES, load_controls
from pacslab.topology import REPO_ROOT

CONTROLS, _ = load_controls()
ID_RE = re.compile(r"^C-[A-Z]{3}-[0-9]{2}$")
CSF_RE = re.compile(r"^(ID|PR|DE|RS|RC)\.[A-Z]{2}-[0-9]+$")


def marked_controls(folder: Path) -> dict[str, list[str]]:
    """control id -> test files whose tests (or module pytestmark) carry pytest.mark.control(id)."""
    found: dict[str, list[str]] = {}
    for path in sorted(folder.rglob("test_*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            if (
                isinstance(node, ast.Call)
                and isinstance(node.func, ast.Attribute)
                and node.func.attr == "control"
                and isinstance(node.func.value, ast.Attribute)
                and node.func.value.attr == "mark"
                and node.args
                and isinstance(node.args[0], ast.Constant)
            ):
                found.setdefault(str(node.args[0].value), []).append(path.name)
    return found


MARKED = marked_controls(REPO_ROOT / "tests" / "integration")


def test_catalogue_entries_are_well_formed() -> None:
    assert len(CONTROLS) >= 40
    for cid, c in CONTROLS.items():
        assert ID_RE.match(cid), cid
        assert c.status in STATUSES, cid
        assert bool(c.missing) == (c.status == "partial"), f"{cid}: a partial control names what is missing, and only it"
        assert c.csf and all(CSF_RE.match(s) for s in c.csf), cid
        assert c.sp800_53 and c.title and c.proves, cid


def test_every_test_names_a_known_control() -> None:
    unknown = sorted(set(MARKED) - set(CONTROLS))
    assert unknown == [], f"tests name controls missing from controls.yml: {unknown}"


@pytest.mark.parametrize("cid", sorted(CONTROLS))
def test_implemented_means_tested_and_enforced(cid: str) -> None:
    control = CONTROLS[cid]
    if control.status == "not_implemented":
        assert cid not in MARKED, f"{cid} has tests ({MARKED.get(cid)}) but controls.yml says not_implemented"
        return
    assert MARKED.get(cid), f"{cid} is marked {control.status} but no integration test carries it"
    assert control.roles, f"{cid}: implemented without an enforcing role"
    tasks = "\n".join(p.read_text() for r in control.roles for p in (REPO_ROOT / "roles" / r / "tasks").glob("*.yml"))
    assert tasks, f"{cid}: roles {control.roles} have no tasks"
    # a task name ends with "| " and the controls it enforces, separated by spaces
    assert re.search(rf"\| (?:C-[A-Z]+-\d+ )*{cid}\b", tasks), f"{cid}: no task of {control.roles} names the control (task name ending '| {cid}')"


def test_marker_scan_sees_module_level_marks(tmp_path: Path) -> None:
    """The scan itself can fail: it finds a module pytestmark and a decorator, and nothing else."""
    (tmp_path / "test_x.py").write_text(
        'import pytest\npytestmark = pytest.mark.control("C-AAA-01")\n'
        '@pytest.mark.control("C-BBB-02")\ndef test_a(): pass\n'
        'def test_b(): control("C-CCC-03")\n'
    )
    assert set(marked_controls(tmp_path)) == {"C-AAA-01", "C-BBB-02"}
