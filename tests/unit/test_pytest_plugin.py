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
