"""pytest plugin: the ``control`` marker, saved evidence, and a results file for the report.

``@pytest.mark.control("C-ACC-04")`` ties a test to a catalogue control (controls.yml). The
``evidence`` fixture keeps what a test observed (probe outcomes, log lines, rule text); it goes into
the report next to the verdict. ``--pacslab-results=FILE`` writes one JSON record per test.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

_RECORDS = pytest.StashKey[list[dict[str, Any]]]()
_EVIDENCE = pytest.StashKey[dict[str, Any]]()


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("pacslab")
    group.addoption("--lab", default="inventories/default", help="lab definition folder for integration tests")
    group.addoption("--pacslab-results", default=None, help="write per-test results with control ids (JSON)")


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "control(id): the catalogue control (controls.yml) this test proves")
    config.addinivalue_line("markers", "lifecycle: tears the lab down and brings it back (runs last)")
    config.stash[_RECORDS] = []


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Lifecycle tests take the lab down and up again: they run after every other test."""
    items.sort(key=lambda item: item.get_closest_marker("lifecycle") is not None)


@pytest.fixture
def evidence(request: pytest.FixtureRequest) -> dict[str, Any]:
    """A dict the test fills with what it observed; saved with its result."""
    store: dict[str, Any] = {}
    request.node.stash[_EVIDENCE] = store
    return store


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Any:
    report = yield
    if report.when == "call" or (report.when == "setup" and report.outcome != "passed"):
        marker = item.get_closest_marker("control")
        record = {
            "nodeid": item.nodeid,
            "control": marker.args[0] if marker and marker.args else None,
            "outcome": report.outcome,
            "seconds": round(report.duration, 3),
            "evidence": item.stash.get(_EVIDENCE, {}),
            "message": str(report.longrepr.reprcrash.message)[:2000]
            if report.failed and hasattr(report.longrepr, "reprcrash") and report.longrepr.reprcrash
            else "",
        }
        item.config.stash[_RECORDS].append(record)
    return report


def pytest_sessionfinish(session: pytest.Session) -> None:
    path = session.config.getoption("--pacslab-results")
    if path:
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        Path(path).write_text(json.dumps(session.config.stash[_RECORDS], indent=1, default=str))
