"""Secrets stay out of exceptions and reports: pacslab.redact and the pytest plugin, without Docker.

The plugin's redaction is run on a real inner pytest session (pytester) whose tests fail with a
planted secret; the integration twin (tests/integration/test_secrets.py) does the same with a real
lab secret and a failing curl in a lab container.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from pacslab import redact as redact_mod
from pacslab.redact import REDACTED, redact, redact_tree, secret_values

pytest_plugins = ["pytester"]

PASSWORD = "Zq7LmN2pXv9RtY4wKb8HcJ3sDf6GaE1u"  # 32 letters and digits, as the password lookup makes them


@pytest.fixture
def state_root(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A .pacslab folder with one lab's secrets: a password file as Ansible writes it, one with a
    salt, one PEM key; STATE_ROOT points at it."""
    secrets = tmp_path / "state" / "lab1" / "secrets"
    secrets.mkdir(parents=True)
    (secrets / "orthanc-pacs").write_text(PASSWORD + "\n")
    (secrets / "orthanc-vna").write_text("shortpw salt=SaltSaltSalt12\n")
    (secrets / "node.key").write_text("-----BEGIN PRIVATE KEY-----\nMIGHAgEAMBMGByqGSM49AgEGCCqGSM49\nAwEHBG0wawIBAQQg\n-----END PRIVATE KEY-----\n")
    # an SSH key pair as community.crypto.openssh_keypair writes it: the private half is secret, the
    # public half (whose comment names the person) is not
    (secrets / "maint-bastion-vnd-acme").write_text(
        "-----BEGIN OPENSSH PRIVATE KEY-----\nb3BlbnNzaC1rZXktdjEAAAAABG5vbmU\n-----END OPENSSH PRIVATE KEY-----\n")
    (secrets / "maint-bastion-vnd-acme.pub").write_text("ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIPublicHalf vnd-acme via bastion\n")
    monkeypatch.setattr(redact_mod, "STATE_ROOT", tmp_path / "state")
    return tmp_path / "state"


def test_secret_values_reads_each_file_of_each_lab(state_root: Path) -> None:
    assert secret_values() == sorted([PASSWORD, "SaltSaltSalt12", "MIGHAgEAMBMGByqGSM49AgEGCCqGSM49", "AwEHBG0wawIBAQQg",
                                      "b3BlbnNzaC1rZXktdjEAAAAABG5vbmU"], key=lambda v: (-len(v), v))


def test_secret_values_without_state_is_empty(tmp_path: Path) -> None:
    assert secret_values(tmp_path / "nothing") == []


def test_redact_replaces_every_occurrence_and_keeps_the_rest(state_root: Path) -> None:
    text = f"curl -u pacslab-admin:{PASSWORD} https://pacs/system; again {PASSWORD}"
    assert redact(text) == f"curl -u pacslab-admin:{REDACTED} https://pacs/system; again {REDACTED}"
    assert redact("shortpw is too short to be told from a word") == "shortpw is too short to be told from a word"


def test_redact_cuts_pieces_of_a_secret_that_pytest_shortened(state_root: Path) -> None:
    """pytest prints a long compared string as 'head...tail': the tail of a secret after the
    ellipsis (and the head before one) goes too; a piece shorter than 8 characters stays."""
    assert redact(f"assert 'pacs: sh exi...{PASSWORD[-13:]}' == 'x'") == f"assert 'pacs: sh exi...{REDACTED}' == 'x'"
    assert redact(f"'{PASSWORD[:10]}...done'") == f"'{REDACTED}...done'"
    assert redact(f"'...{PASSWORD[-5:]}'") == f"'...{PASSWORD[-5:]}'"


def test_redact_tree_walks_keys_values_and_sequences() -> None:
    tree = {"argv": ["-u", f"a:{PASSWORD}"], PASSWORD: ("x", 3, None)}
    assert redact_tree(tree, [PASSWORD]) == {"argv": ["-u", f"a:{REDACTED}"], REDACTED: ("x", 3, None)}


PLANTED = f'''
import pytest

SECRET = "{PASSWORD}"

@pytest.mark.control("C-DAT-02")
def test_raises_with_secret(evidence, record_property):
    evidence["argv"] = ["curl", "-u", "pacslab-admin:" + SECRET]
    record_property("cmd", "curl -u pacslab-admin:" + SECRET)
    print("stdout carries", SECRET)
    raise RuntimeError("curl -u pacslab-admin:" + SECRET + " failed (22)")

def test_assert_with_secret(record_testsuite_property):
    record_testsuite_property("planted", SECRET)  # reaches junit.xml by no test report
    assert SECRET == "", "planted"

def test_compare_with_secret():
    assert "the server refused " + SECRET + " for this user" == "the server refused nobody"

def test_fails_without_secret():
    assert 1 == 2, "plain failure"

@pytest.mark.skip(reason="skipped because of " + SECRET)
def test_skip_with_secret():
    pass
'''


def test_plugin_redacts_results_junit_and_terminal(state_root: Path, pytester: pytest.Pytester) -> None:
    pytester.makepyfile(test_planted=PLANTED)
    results, junit = pytester.path / "results.json", pytester.path / "junit.xml"
    # in process: the inner session reads the secrets folder this test's STATE_ROOT points at
    run = pytester.runpytest_inprocess(
        "-p", "pacslab.pytest_plugin", "-o", "junit_logging=all", "-rA", f"--pacslab-results={results}", f"--junitxml={junit}",
    )
    run.assert_outcomes(failed=4, skipped=1)
    texts = {"results.json": results.read_text(), "junit.xml": junit.read_text(), "terminal": run.stdout.str() + run.stderr.str()}
    pieces = [PASSWORD[i : i + 12] for i in range(len(PASSWORD) - 11)]  # pytest shortens long compared strings
    for name, text in texts.items():
        assert not [p for p in pieces if p in text], f"{name} holds the planted secret, or a piece of it"
    records = {r["nodeid"].split("::")[1]: r for r in json.loads(texts["results.json"])}
    assert records["test_raises_with_secret"]["message"] == f"RuntimeError: curl -u pacslab-admin:{REDACTED} failed (22)"
    assert records["test_raises_with_secret"]["evidence"] == {"argv": ["curl", "-u", f"pacslab-admin:{REDACTED}"]}
    assert records["test_raises_with_secret"]["control"] == "C-DAT-02"
    assert records["test_assert_with_secret"]["message"].startswith("AssertionError: planted")
    # A failure without a secret keeps pytest's own structured report (its one-line message).
    assert records["test_fails_without_secret"]["message"] == "AssertionError: plain failure\nassert 1 == 2"
    assert f"skipped because of {REDACTED}" in texts["terminal"]
    for name in ("junit.xml", "terminal"):
        assert "test_raises_with_secret" in texts[name] and f"pacslab-admin:{REDACTED}" in texts[name], name
    assert f"stdout carries {REDACTED}" in texts["junit.xml"]
    assert f'value="curl -u pacslab-admin:{REDACTED}"' in texts["junit.xml"]
    assert f'<property name="planted" value="{REDACTED}"' in texts["junit.xml"]
