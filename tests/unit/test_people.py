"""The lab's people (pacslab.people, issue 12): a broken people file is refused with file, key and
reason before anything changes; `pacslab users` shows what the definition says and what it means."""

from __future__ import annotations

import datetime as dt
import json
import re
from pathlib import Path
from typing import Any

import pytest
import yaml

from pacslab import cli, people
from pacslab.topology import REPO_ROOT, LabDefinitionError, load_lab

from .conftest import DEFAULT_LAB

PEOPLE_FILE = "group_vars/all/people.yml"
ADA = {"name": "rad-ada", "display_name": "Ada Reader", "roles": ["radiologist"], "owner": "radiology"}


def write_people(lab: Path, people: list[Any], services: list[Any] | None = None) -> None:
    doc: dict[str, Any] = {"lab_people": people}
    if services is not None:
        doc["lab_service_accounts"] = services
    (lab / PEOPLE_FILE).write_text("---\n" + yaml.safe_dump(doc))


# case -> (people, service accounts, key, reason)
BROKEN: dict[str, tuple[list[Any], list[Any] | None, str, str]] = {
    "unknown role": ([{**ADA, "roles": ["radiologist", "janitor"]}], None, "lab_people[0].roles", "'janitor': unknown role"),
    "no role": ([{**ADA, "roles": []}], None, "lab_people[0].roles", "a non-empty list of radiologist"),
    "vendor without an end date": ([{**ADA, "name": "vnd-x", "roles": ["vendor"]}], None,
                                   "lab_people[0].expires", "missing: a vendor's access ends on a date"),
    "end date not a date": ([{**ADA, "expires": "next spring"}], None, "lab_people[0].expires", "'next spring': a date, YYYY-MM-DD"),
    "duplicate name": ([ADA, {**ADA, "display_name": "Ada Again"}], None, "lab_people[1].name", "'rad-ada' is already lab_people[0]"),
    "a service account named like a person": ([ADA], [{"name": "rad-ada", "owner": "it", "purpose": "x"}],
                                              "lab_service_accounts[0].name", "'rad-ada' is already lab_people[0]"),
    "no owner": ([{k: v for k, v in ADA.items() if k != "owner"}], None, "lab_people[0].owner", "missing required key"),
    "blank owner": ([{**ADA, "owner": " "}], None, "lab_people[0].owner", "must be a non-empty string"),
    "service account without an owner": ([ADA], [{"name": "svc-x", "purpose": "x"}], "lab_service_accounts[0].owner", "missing required key"),
    "unknown key": ([{**ADA, "password": "hunter2hunter2"}], None, "lab_people[0].password", "unknown key"),
    "unknown state": ([{**ADA, "state": "paused"}], None, "lab_people[0].state", "'paused': one of enabled, disabled"),
    "a login name a shell would mangle": ([{**ADA, "name": "Ada Reader"}], None, "lab_people[0].name", "lower-case letters, digits or '-'"),
    "not a list": ({"rad-ada": ADA}, None, "lab_people", "must be a list of people"),  # type: ignore[dict-item]
}


@pytest.mark.parametrize("case", list(BROKEN))
def test_a_broken_people_file_is_refused_with_file_key_reason(lab_copy: Path, case: str) -> None:
    people, services, key, reason = BROKEN[case]
    write_people(lab_copy, people, services)
    with pytest.raises(LabDefinitionError) as err:
        load_lab(lab_copy)
    assert [(p.file.endswith(PEOPLE_FILE), p.key, reason in p.reason) for p in err.value.problems] == [(True, key, True)], str(err.value)


def test_people_may_be_set_in_group_vars_all_only(lab_copy: Path) -> None:
    """A host or group that set its own lab_people would change who the lab's directory holds."""
    with (lab_copy / "host_vars" / "pacs.yml").open("a") as f:
        f.write("\nlab_people: []\n")
    with pytest.raises(LabDefinitionError) as err:
        load_lab(lab_copy)
    assert [(p.key, "belongs to the whole lab" in p.reason) for p in err.value.problems] == [("pacs.lab_people", True)], str(err.value)


def test_the_reference_people_load_as_written() -> None:
    lab = load_lab(DEFAULT_LAB)
    assert [(p.name, p.roles, p.owner, p.state, p.expires) for p in lab.people] == [
        ("rad-ada", ("radiologist",), "radiology", "enabled", None),
        ("tech-tom", ("technologist",), "radiology", "enabled", None),
        ("adm-pat", ("pacs-admin",), "radiology-it", "enabled", None),
        ("aud-ines", ("auditor",), "it-security", "enabled", None),
        ("vnd-acme", ("vendor",), "biomed", "enabled", dt.date(2030, 6, 30)),
        ("vnd-old", ("vendor",), "biomed", "enabled", dt.date(2026, 1, 31)),
        ("rad-left", ("radiologist",), "radiology", "disabled", None),
    ]
    assert [(a.name, a.owner) for a in lab.service_accounts] == [("svc-idp", "it-identity")]


def test_a_lab_without_a_people_file_has_nobody(lab_copy: Path) -> None:
    (lab_copy / PEOPLE_FILE).unlink()
    lab = load_lab(lab_copy)
    assert lab.people == () and lab.service_accounts == ()


def test_status_says_what_the_definition_means_on_a_day() -> None:
    """The end date is the last day of access: expired from the day after it."""
    lab = load_lab(DEFAULT_LAB)
    doc = cli.users_document(lab, today=dt.date(2030, 6, 30))
    assert {p["name"]: p["status"] for p in doc["people"]} == {
        "rad-ada": "enabled", "tech-tom": "enabled", "adm-pat": "enabled", "aud-ines": "enabled",
        "vnd-acme": "enabled", "vnd-old": "expired", "rad-left": "disabled"}
    after = cli.users_document(lab, today=dt.date(2030, 7, 1))
    assert [p["name"] for p in after["people"] if p["status"] == "expired"] == ["vnd-acme", "vnd-old"]


def test_users_lists_people_and_service_accounts_without_a_secret(capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main(["users", "--json", "--lab", str(DEFAULT_LAB)]) == cli.EXIT_OK
    doc = json.loads(capsys.readouterr().out)
    assert doc["people"][4] == {"name": "vnd-acme", "display_name": "Acme Field Engineer", "roles": ["vendor"], "owner": "biomed",
                                "state": "enabled", "status": "enabled", "expires": "2030-06-30"}
    assert doc["service_accounts"] == [{"name": "svc-idp", "owner": "it-identity",
                                        "purpose": "the identity provider's lookups of people and roles (flow F10a)"}]
    assert not {k for p in doc["people"] for k in p} & {"password", "secret", "totp"}


# RFC 6238 appendix B: the SHA-1 seed "12345678901234567890" (ASCII), in base32, and the 8-digit
# codes at two of its times; a 6-digit code is their last six digits (RFC 4226 5.3).
RFC6238_SEED = "GEZDGNBVGY3TQOJQGEZDGNBVGY3TQOJQ"


@pytest.mark.parametrize(("at", "code"), [(59, "287082"), (1111111109, "081804"), (2000000000, "279037")])
def test_totp_codes_follow_rfc_6238(at: int, code: str) -> None:
    assert people.totp_now(RFC6238_SEED, at) == code


class _Clock:
    """time.time and time.sleep of a clock that moves only when slept."""

    def __init__(self, now: float) -> None:
        self.now = now

    def time(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.now += seconds


# Step 37037036 runs from 1111111080 to 1111111110; its code is 081804, the next two steps' 050471
# and 266759 (RFC 6238 appendix B's seed).
@pytest.mark.parametrize(("now", "last_step", "code", "slept_to"), [
    (1111111081, -1, "081804", 1111111081),                   # nothing used, 29 s left: the current code
    (1111111081, 37037036, "050471", 1111111081),             # the current step's was used: the next step's, at once
    (1111111105, -1, "050471", 1111111105),                   # 5 s left: the current code would stay 35 s, the next step's
    (1111111100, -1, "081804", 1111111100),                   # exactly 10 s left: the current code stays 40 s
    (1111111081, 37037037, "266759", 1111111110.5),           # the next step's was used too: wait for it, then the one after
    (1111111081, 37037035, "081804", 1111111081),             # an earlier step was used: the current code
])
def test_a_fresh_totp_is_of_a_later_step_than_the_last_used_and_waits_only_past_the_window(
        monkeypatch: pytest.MonkeyPatch, now: float, last_step: int, code: str, slept_to: float) -> None:
    """people.fresh_totp gives the code of the first step after the last accepted one (RFC 6238 5.2)
    that a verifier taking one step either side (RFC 6238 6) accepts now and for 40 s more, without
    waiting when the current or the next step is free."""
    clock = _Clock(now)
    monkeypatch.setattr(people.time, "time", clock.time)
    monkeypatch.setattr(people.time, "sleep", clock.sleep)
    assert people.fresh_totp(RFC6238_SEED, last_step) == code
    assert clock.now == slept_to


def test_a_last_step_beyond_the_window_is_refused_not_waited_for(monkeypatch: pytest.MonkeyPatch) -> None:
    """Two steps ahead of the clock no verifier with a one-step window accepted anything: a clock
    or time zone read wrong, said at once (the probes would otherwise wait for ever)."""
    clock = _Clock(1111111081)
    monkeypatch.setattr(people.time, "time", clock.time)
    monkeypatch.setattr(people.time, "sleep", clock.sleep)
    for call in (people.fresh_totp, people.totp_codes):
        with pytest.raises(RuntimeError, match="the last accepted TOTP step 37037038 is more than 1 step"):
            call(RFC6238_SEED, 37037038)
    assert clock.now == 1111111081


def test_the_bastions_last_code_is_read_as_its_step(monkeypatch: pytest.MonkeyPatch) -> None:
    """ssh.fresh_code reads pam_oath's last code and the time it took it from the users file line:
    050471 taken at 1111111081 (step 37037036) is the next step's code, so the fresh code is the
    step after (266759, after the wait for step 37037037); a line with no code yet means none used."""
    from pacslab.probes import ssh

    clock = _Clock(1111111081)
    monkeypatch.setattr(people.time, "time", clock.time)
    monkeypatch.setattr(people.time, "sleep", clock.sleep)
    monkeypatch.setattr(people, "totp_seed", lambda secrets_dir, name: RFC6238_SEED)
    for said, code in (("050471 2005-03-18T01:58:01L\n", "266759"), ("", "081804")):
        clock.now = 1111111081
        asked: list[tuple[str, ...]] = []
        monkeypatch.setattr(ssh.im, "exec_in", lambda lab, host, *argv, said=said, asked=asked: asked.append(argv) or said)
        assert ssh.fresh_code(None, "bastion", "/var/lib/pacslab/oath/users.oath", "secrets", "vnd-acme") == code  # type: ignore[arg-type]
        assert asked[0][0] == "awk" and asked[0][-1] == "/var/lib/pacslab/oath/users.oath"


@pytest.mark.parametrize(("code", "at", "step"), [
    ("081804", 1111111081, 37037036),     # the code of the step it was accepted in
    ("050471", 1111111081, 37037037),     # the next step's, accepted one step early
    ("081804", 1111111111, 37037036),     # the step before, accepted one step late
    ("000000", 1111111081, 37037037),     # no step of the window: its last one
])
def test_the_step_of_an_accepted_code_is_found_in_the_verifiers_window(code: str, at: int, step: int) -> None:
    """people.step_of: pam_oath keeps the last accepted code and when it was accepted, not its step."""
    assert people.step_of(RFC6238_SEED, code, at) == step


def test_the_verifiers_take_the_window_the_probes_assume() -> None:
    """The bastion's pam_oath and the IdP's checker accept TOTP_WINDOW (1) steps either side: the
    probes offer the next step's code at once on that ground."""
    pam = (REPO_ROOT / "roles" / "bastion" / "templates" / "pam-sshd.j2").read_text()
    checker = (REPO_ROOT / "roles" / "idp" / "files" / "pacslab-totp-verify").read_text()
    assert people.TOTP_WINDOW == 1
    assert re.findall(r"pam_oath\.so .*\bwindow=(\d+)", pam) == ["1"]
    assert re.findall(r"^WINDOW = (\d+)$", checker, re.MULTILINE) == ["1"]


@pytest.mark.parametrize(("last_step", "count", "codes"), [
    (-1, 2, {37037036: "081804", 37037037: "050471"}),   # nothing used: the current step's, then the next
    (37037036, 1, {37037037: "050471"}),                 # the current step's was used: from the next one
    (37037035, 1, {37037036: "081804"}),                 # an earlier step was used: from the current one
])
def test_totp_codes_by_step_leave_out_the_used_steps_and_do_not_wait(
        monkeypatch: pytest.MonkeyPatch, last_step: int, count: int, codes: dict[int, str]) -> None:
    """people.totp_codes at 1111111100 (step 37037036): RFC 6238 appendix B's codes of that step
    (07081804 at 1111111109) and the next (14050471 at 1111111111), none of a step at or before the
    last one used, and no sleep."""
    clock = _Clock(1111111100)
    monkeypatch.setattr(people.time, "time", clock.time)
    monkeypatch.setattr(people.time, "sleep", clock.sleep)
    assert people.totp_codes(RFC6238_SEED, last_step, count) == codes
    assert clock.now == 1111111100


def test_totp_codes_wait_while_the_last_step_is_ahead_of_the_clock(monkeypatch: pytest.MonkeyPatch) -> None:
    """A probe sent the next step's code early (fresh_totp): totp_codes waits for that step, so
    that its first code is the next step's of the clock, which a browser types (the current step's
    or the next one's)."""
    clock = _Clock(1111111100)
    monkeypatch.setattr(people.time, "time", clock.time)
    monkeypatch.setattr(people.time, "sleep", clock.sleep)
    assert people.totp_codes(RFC6238_SEED, 37037037, 1) == {37037038: "266759"}
    assert clock.now == 1111111110.5


def test_totp_prints_the_code_of_a_known_person_only(capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch) -> None:
    """`pacslab totp USER`: the current code from the seed up made (here the RFC's, in place of a
    lab's), nothing else on stdout; an unknown user or a lab without the seed yet is refused."""
    monkeypatch.setattr(people, "totp_seed", lambda secrets_dir, name: RFC6238_SEED)
    assert cli.main(["totp", "rad-ada", "--lab", str(DEFAULT_LAB)]) == cli.EXIT_OK
    out = capsys.readouterr()
    assert len(out.out.strip()) == 6 and out.out.strip().isdigit() and RFC6238_SEED not in out.out + out.err
    assert cli.main(["totp", "nobody", "--lab", str(DEFAULT_LAB)]) == cli.EXIT_USAGE
    assert "no person 'nobody' in lab 'default'" in capsys.readouterr().err

    def missing(secrets_dir: str, name: str) -> str:
        raise FileNotFoundError(name)

    monkeypatch.setattr(people, "totp_seed", missing)
    assert cli.main(["totp", "rad-ada", "--lab", str(DEFAULT_LAB)]) == cli.EXIT_USAGE
    assert "has no TOTP seed for 'rad-ada' yet: `pacslab up` generates it" in capsys.readouterr().err
