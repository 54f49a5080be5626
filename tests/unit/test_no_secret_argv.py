"""No credential is put into a command line (issue 9, item 7): a container's argv is visible to
every process in it, and a failing command's argv used to reach exceptions and reports.

Python: no call passes a credential option (``-u``/``--user``/``--password``...) together with a
secret (``admin_password(...)``, a ``*password*`` name) among its arguments. Roles: no task's
``argv``/``cmd`` names a password variable. Credentials go on stdin (``curl -K -``,
pacslab.probes.imaging.curl_user; the command module's ``stdin``).
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest
import yaml

from pacslab.topology import REPO_ROOT

CREDENTIAL_OPTIONS = {"-u", "--user", "--password", "-p", "--pass", "--proxy-user"}
PY_DIRS = ("pacslab", "infra", "plugins", "tests", "bench", "scenarios")
SELF = Path(__file__).resolve()
# Files that build such an argv on purpose, with a made-up value, to prove the redaction.
PLANTS = {REPO_ROOT / "tests" / "unit" / "test_redact.py": "plants a fake password in evidence and messages"}


def _mentions_secret(node: ast.AST) -> bool:
    for sub in ast.walk(node):
        name = sub.attr if isinstance(sub, ast.Attribute) else sub.id if isinstance(sub, ast.Name) else ""
        if "password" in name.lower() or "secret" in name.lower():
            return True
    return False


def secret_argv_calls(path: Path) -> list[int]:
    """Line numbers in ``path`` of calls (their positional arguments, and lists passed to them) and
    of list or tuple literals (an argv built first, run later) that hold a credential option and a
    reference to a secret."""
    lines = set()
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.Call):
            args: list[ast.expr] = list(node.args)
            for arg in node.args:
                if isinstance(arg, ast.List | ast.Tuple):
                    args += arg.elts
        elif isinstance(node, ast.List | ast.Tuple):
            args = list(node.elts)
        else:
            continue
        options = {a.value for a in args if isinstance(a, ast.Constant) and isinstance(a.value, str)}
        if options & CREDENTIAL_OPTIONS and any(_mentions_secret(a) for a in args):
            lines.add(node.lineno)
    return sorted(lines)


def python_files() -> list[Path]:
    files: list[Path] = []
    for d in PY_DIRS:
        files += [p for p in (REPO_ROOT / d).rglob("*.py") if "__pycache__" not in p.parts and p.resolve() != SELF and p not in PLANTS]
    return sorted(files)


def test_the_scan_finds_the_old_curl_call(tmp_path: Path) -> None:
    """The scan itself can fail: the call exec_in's callers used to make is found, the stdin form is not."""
    probe = tmp_path / "probe.py"
    probe.write_text(
        'im.exec_in(lab, "pacs", "curl", "-s", "-u", f"{im.ADMIN}:{im.admin_password(lab, \'pacs\')}", "https://pacs/system")\n'
        'argv = ["curl", "-u", f"{ADMIN}:{admin_password(lab, host)}"]\nrun(argv)\n'
        'subprocess.run(["curl", "-u", "a:" + orthanc_password])\n'
        'im.exec_in(lab, "pacs", "curl", "-K", "-", "https://pacs/system", input=im.curl_user(lab, "pacs"))\n'
    )
    assert secret_argv_calls(probe) == [1, 2, 4]


@pytest.mark.parametrize("path", python_files(), ids=lambda p: str(p.relative_to(REPO_ROOT)))
def test_no_python_call_puts_a_secret_in_argv(path: Path) -> None:
    assert secret_argv_calls(path) == [], f"{path.relative_to(REPO_ROOT)}: a credential in argv; pass it on stdin (curl -K -)"


def _tasks(node: object) -> list[dict[str, object]]:
    found: list[dict[str, object]] = []
    if isinstance(node, list):
        for item in node:
            found += _tasks(item)
    elif isinstance(node, dict):
        found.append(node)
        for key in ("block", "rescue", "always"):
            found += _tasks(node.get(key))
    return found


def role_task_files() -> list[Path]:
    return sorted([*REPO_ROOT.glob("roles/*/tasks/*.yml"), *REPO_ROOT.glob("roles/*/handlers/*.yml"), *REPO_ROOT.glob("playbooks/*.yml")])


@pytest.mark.parametrize("path", role_task_files(), ids=lambda p: str(p.relative_to(REPO_ROOT)))
def test_no_task_puts_a_password_in_argv(path: Path) -> None:
    offenders = []
    for task in _tasks(yaml.safe_load(path.read_text())):
        for module, args in task.items():
            if not isinstance(args, dict) or module in ("vars", "block", "rescue", "always"):
                continue
            for key in ("argv", "cmd", "_raw_params"):
                if "password" in yaml.safe_dump(args.get(key, "")).lower():
                    offenders.append(f"{task.get('name')}: {module}.{key}")
        for module in ("ansible.builtin.command", "ansible.builtin.shell", "command", "shell"):
            if isinstance(task.get(module), str) and "password" in str(task[module]).lower():
                offenders.append(f"{task.get('name')}: {module}")
    assert offenders == [], f"{path.relative_to(REPO_ROOT)}: a password in a command line: {offenders}"
