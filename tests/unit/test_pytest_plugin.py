"""The results the pytest plugin writes for the report: a skip keeps its reason, a setup or
teardown failure is an error, a test left out by -k is recorded as deselected."""

from __future__ import annotations

import json

import pytest

pytest_plugins = ["pytester"]

SUITE = '''
import pytest

@pytest.fixture
def broken():
    raise RuntimeError("no lab")

@pytest.fixture
def leaky():
    yield
    raise RuntimeError("teardown broke")

@pytest.mark.control("C-ACC-04")
def test_ok():
    pass

@pytest.mark.control("C-ACC-04")
def test_skipped():
    pytest.skip("no scanner in this lab")

@pytest.mark.control("C-ACC-05")
def test_setup_error(broken):
    pass

@pytest.mark.control("C-ACC-06")
def test_teardown_error(leaky):
    pass

@pytest.mark.control("C-ACC-06")
def test_left_out():
    pass
'''


def test_records_say_why_a_test_did_not_pass(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(test_suite=SUITE)
    out = pytester.path / "results.json"
    pytester.runpytest("-p", "pacslab.pytest_plugin", f"--pacslab-results={out}", "-k", "not left_out")
    records = {(r["nodeid"].split("::")[1], r["outcome"]): (r["control"], r["message"]) for r in json.loads(out.read_text())}
    assert records == {
        ("test_ok", "passed"): ("C-ACC-04", ""),
        ("test_skipped", "skipped"): ("C-ACC-04", "no scanner in this lab"),
        ("test_setup_error", "error"): ("C-ACC-05", "RuntimeError: no lab"),
        ("test_teardown_error", "passed"): ("C-ACC-06", ""),
        ("test_teardown_error", "error"): ("C-ACC-06", "RuntimeError: teardown broke"),
        ("test_left_out", "deselected"): ("C-ACC-06", "deselected in this run (-k/-m)"),
    }


ORDERED = {
    "test_a.py": '''
import pytest
pytestmark = pytest.mark.lifecycle

def test_a_restart(): pass

@pytest.mark.lifecycle("last")
def test_a_down(): pass

@pytest.mark.lifecycle("first")
def test_a_cold_up(): pass

@pytest.mark.lifecycle("first")
def test_a_converge_twice(): pass
''',
    "test_b.py": '''
def test_b_steady(): pass
def test_b_steady_too(): pass
''',
    "test_c.py": '''
import pytest

@pytest.mark.lifecycle
def test_c_revoke(): pass

def test_c_steady(): pass
''',
}


def test_lifecycle_checks_run_around_the_steady_ones_in_their_place(pytester: pytest.Pytester) -> None:
    """first (in file order), steady, lifecycle, last: whatever the files' order."""
    pytester.makepyfile(**ORDERED)
    result = pytester.runpytest("-p", "pacslab.pytest_plugin", "--collect-only", "-q")
    collected = [line.split("::")[1] for line in result.outlines if "::" in line]
    assert collected == ["test_a_cold_up", "test_a_converge_twice", "test_b_steady", "test_b_steady_too", "test_c_steady",
                         "test_a_restart", "test_c_revoke", "test_a_down"]


def test_a_lifecycle_place_that_is_none_of_them_is_named(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(test_x="import pytest\n\n@pytest.mark.lifecycle('firts')\ndef test_a(): pass\n")
    result = pytester.runpytest("-p", "pacslab.pytest_plugin", "--collect-only", "-q")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    assert "test_x.py::test_a: lifecycle place 'firts': 'first', 'last' or none" in result.stderr.str()
