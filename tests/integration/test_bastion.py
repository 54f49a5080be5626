"""The vendor bastion (issue 12, host `bastion`; roles/bastion and roles/maintenance): C-MNT-01
vendor remote maintenance, C-MNT-02 an administrative action logged with the person's name.

The vendor engineer's computer (`vendor-eng`, internet zone) runs OpenSSH's own client, driven as a
person types (pacslab.probes.ssh), against the bastion's host key the lab generated (never learnt on
first use). The bastion asks for the person's password, then their TOTP code (RFC 6238; pam_oath
refuses a code it already accepted), starts a shell that tlog records (keys typed and output), and
its `maint TARGET` opens a shell on a maintenance target as the person's own account there, with a
key only the bastion's broker can read; the target takes that key from the bastion's address only.

A vendor signs in at most once per 30-second step, beyond the next step's code taken early (a
replayed code, or one of an earlier step, is refused), so one session of the
enabled vendor serves the checks that need one (module fixture `maintenance`), asking for every
forwarding at once; the replay twin replays its very code.

Each expectation is written out: the prompts the client met, the words the client printed
(OpenSSH's and PAM's own), the bastion's and the target's log lines.

The module's refused sign-ins (a wrong password, an ended account, a person who is no vendor ...)
are six failures from the vendor's computer within a minute: the siem raises ssh-brute-force about
it, and a vendor's sign-in from it within ten minutes would raise brute-force-success, which
quarantines the computer. They are the suite's own, so the module runs in a window of authorised
activity for that computer; test_response proves the quarantine of a break-in.
"""

from __future__ import annotations

import json
import secrets
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from pacslab import listeners, people
from pacslab.people import Person
from pacslab.plan import SIEMS, Plan
from pacslab.probes import imaging as im
from pacslab.probes import ssh, standins
from pacslab.topology import Host, Lab

from .test_idp import one, refusals_authorised, wrong_code

CLIENT = "vendor-eng"
TARGET = "pacs"  # F08b: the bastion's maintenance target the checks use
MARK = f"pacslab-mark-{secrets.token_hex(4)}"  # typed on the target in this run's session
SUDO_LOG = "/var/log/pacslab/sudo.log"  # the maintained host's sudo log (pacslab_sudo_log, playbooks/group_vars/all/maintenance.yml)
SSHD_LOG = "/var/log/pacslab/sshd.log"  # and its sshd's (pacslab_sshd_log, the same file)
# Local ports of the forwardings the vendor asks for (on the vendor's computer, -L and -D) and the
# remote one (on the bastion, -R).
LOCAL, SOCKS, REMOTE = 18042, 11080, 2222
DENIED = "Permission denied (keyboard-interactive)."
EXPIRED = "Your account has expired; please contact your system administrator."


def bastion(lab: Lab) -> Host:
    hosts = [h for h in lab.group("bastions") if h.deployed]
    if not hosts or CLIENT not in lab.hosts or not lab.hosts[CLIENT].deployed:
        pytest.skip(f"lab {lab.name!r} deploys no bastion and vendor engineer")
    return hosts[0]


@pytest.fixture(scope="module", autouse=True)
def _refusals_authorised(running_lab: Lab) -> Iterator[None]:
    """The module's refused sign-ins in a window of authorised activity for CLIENT (the module's docstring)."""
    with refusals_authorised(running_lab, CLIENT, "test_bastion's refused sign-ins"):
        yield


def var(lab: Lab, host: str, name: str) -> str:
    return str(listeners.role_var(lab, host, "bastion", name))


def host_key(plan: Plan, host: str) -> str:
    """The public host key the lab generated for ``host`` ("ssh-ed25519 AAAA...")."""
    return " ".join((Path(plan.secrets_dir) / f"ssh-host-{host}.pub").read_text().split()[:2])


def login(lab: Lab, plan: Plan, user: str, *, password: str | None = None, code: str | None = None, **kw: Any) -> dict[str, Any]:
    """A session of ``user`` from the vendor's computer to the bastion, with their own password unless
    another is given, and ``code`` ("now": a TOTP code of theirs the bastion has not accepted; None:
    no code)."""
    b = bastion(lab)
    if code == "now":
        code = ssh.fresh_code(lab, b.name, var(lab, b.name, "bastion_oath_file"), plan.secrets_dir, user)
    return ssh.session(lab, CLIENT, b.name, user, known_host_key=host_key(plan, b.name), notice=var(lab, b.name, "bastion_notice"),
                       password=password if password is not None else people.password(plan.secrets_dir, user), code=code, **kw)


def vendor(lab: Lab, status: str) -> Person:
    return one(lab, status, "vendor")


def auth_log(lab: Lab) -> list[str]:
    """The bastion's sign-in log (sshd, PAM, sudo), one line each."""
    b = bastion(lab)
    return im.exec_in(lab, b.name, "cat", var(lab, b.name, "bastion_auth_log")).splitlines()


def records(lab: Lab, host: str, user: str) -> list[dict[str, Any]]:
    """tlog's records of ``user``'s sessions in the bastion's session log (JSON after "tlog: ")."""
    text = im.exec_in(lab, host, "cat", var(lab, host, "bastion_sessions_log"))
    out = []
    for line in text.splitlines():
        _, sep, payload = line.partition(" tlog: ")
        if sep:
            record = json.loads(payload)
            if record.get("user") == user:
                out.append(record)
    return out


@pytest.fixture(scope="module")
def maintenance(running_lab: Lab, plan: Plan) -> dict[str, Any]:
    """One session of the enabled vendor: password and code, every forwarding asked for (-L and -D
    to the PACS's HTTPS port, -R to the bastion's), then `maint pacs` and, on the PACS, who they are,
    where they are, the run's mark, a refused and an allowed administrative action (restarting the
    PACS's sshd, which ends the session on the PACS: the bastion's shell comes back)."""
    person = vendor(running_lab, "enabled")
    target = running_lab.hosts[TARGET].address
    b = bastion(running_lab)
    since = siem_mark(running_lab)
    code = ssh.fresh_code(running_lab, b.name, var(running_lab, b.name, "bastion_oath_file"), plan.secrets_dir, person.name)
    logged = len(auth_log(running_lab))
    result = login(running_lab, plan, person.name, code=code,
                   options=("-L", f"{LOCAL}:{target}:443", "-D", str(SOCKS), "-R", f"{REMOTE}:127.0.0.1:22"),
                   connect=({"port": LOCAL}, {"port": SOCKS, "socks": [str(target), 443]}),
                   commands=("id -un", {"command": f"maint {TARGET}", "shell": True}, "id -un", "ip -4 -brief address show scope global",
                             f"echo {MARK}", "sudo -n /bin/cat /etc/shadow",
                             # last: restarting the target's sshd ends the maintenance sessions it holds, this one too
                             "sudo -n /usr/bin/supervisorctl restart sshd"))
    ended = time.monotonic()
    time.sleep(float(var(running_lab, b.name, "bastion_latency")) + 2)  # tlog logs what it holds within its latency
    return {"person": person.name, "code": code, "result": result, "log": auth_log(running_lab)[logged:], "siem_since": since, "ended": ended}


def record(event: dict[str, Any]) -> dict[str, Any]:
    """The tlog record a siem event's raw message holds ({} for a message that is not one)."""
    try:
        data = json.loads(event["message"] or "")
    except ValueError:
        return {}
    return data if isinstance(data, dict) else {}


def siem_mark(lab: Lab) -> int | None:
    """The id the siem gives a line the bastion logs now (as root, tag pacslab-probe): what it stores
    later has a higher id. None where the lab deploys no siem or the bastion is no log source."""
    from .test_siem import siem_json, wait_for  # test_siem imports this module's helpers

    b = bastion(lab).name
    sources = lab.host_vars.get(b, {}).get("siem_sources") or []
    if not any(h.deployed for h in lab.group(SIEMS)) or b not in sources:
        return None
    mark = f"pacslab-siem-mark-{secrets.token_hex(4)}"
    im.exec_in(lab, b, "logger", "-t", "pacslab-probe", mark)
    return int(wait_for(f"the bastion's line {mark} in the siem", lambda: siem_json(lab, "events", "--contains", mark))[0]["id"])


def siem_events(lab: Lab, since: int | None, *search: str) -> list[dict[str, Any]]:
    """The siem's events after event ``since`` (``search``: --contains TEXT); the check is skipped
    where there is no mark (siem_mark)."""
    from .test_siem import siem_json

    if since is None:
        pytest.skip(f"lab {lab.name!r} deploys no siem, or its bastion is no log source")
    return siem_json(lab, "events", "--since-id", str(since), *search)


def unknown_name_at(lab: Lab, target: str, name: str) -> str:
    """From the bastion (as root, no key the target takes), an SSH sign-in at ``target``'s
    maintenance sshd under ``name``, which no account there has: sshd logs "Invalid user <name>
    from <the bastion's address> port N" and ends the connection (ssh exits 255); what ssh said."""
    host = lab.hosts[target]
    port = next((s.port for s in host.services if s.name == "ssh"), 22)
    return im.exec_in(lab, bastion(lab).name, "ssh", "-n", "-o", "BatchMode=yes", "-o", "StrictHostKeyChecking=no", "-o",
                      "UserKnownHostsFile=/dev/null", "-o", "ConnectTimeout=5", "-p", str(port), f"{name}@{host.address}", "true", check=(255,))


def outputs(result: dict[str, Any]) -> list[str]:
    return [c["output"].replace("\r", "").strip().split("\n", 1)[-1] if "\n" in c["output"].replace("\r", "").strip() else ""
            for c in result["commands"]]


@pytest.mark.control("C-MNT-01")
def test_password_and_code_open_a_recorded_shell_and_maint_a_shell_on_the_target_as_the_person(
        running_lab: Lab, maintenance: dict[str, Any], evidence) -> None:
    r, person = maintenance["result"], maintenance["person"]
    evidence.update(prompts=r["prompts"], commands=r["commands"])
    assert r["prompts"] == ["password", "code"]
    assert r["notice"] is True and r["shell"] is True, r["transcript"][-600:]
    assert all(c["done"] for c in r["commands"]), r["commands"]
    out = outputs(r)
    assert out[0] == person  # on the bastion, as themselves
    assert out[2] == person  # on the target, as their own account there
    assert f"{running_lab.hosts[TARGET].address}/" in out[3]  # the target's address
    assert out[4] == MARK


@pytest.mark.control("C-MNT-01")
def test_the_recording_holds_what_was_typed_on_the_target_and_what_it_showed(running_lab: Lab, maintenance: dict[str, Any], evidence) -> None:
    b = bastion(running_lab)
    recs = records(running_lab, b.name, maintenance["person"])
    typed = "".join(r["in_txt"] for r in recs)
    shown = "".join(r["out_txt"] for r in recs)
    evidence.update(records=len(recs), sessions=sorted({r["rec"] for r in recs}))
    assert f"maint {TARGET}\n" in typed
    assert f"echo {MARK}\n" in typed
    assert f"{MARK}\r\n" in shown.replace(f"echo {MARK}\r\n", "")  # the output, not only the echo of the keys
    assert "sudo -n /usr/bin/supervisorctl restart sshd\n" in typed


@pytest.mark.control("C-MNT-01")
def test_the_recording_is_in_the_siem_as_the_bastion_holds_it_and_no_event_holds_the_password(
        running_lab: Lab, plan: Plan, maintenance: dict[str, Any], evidence) -> None:
    """C-MNT-01 (c): the session's recording reaches the siem (tlog, the bastion's rsyslog, syslog
    over TLS) and is found there by what the vendor typed (`pacslab events --contains`): every
    record of the session, as the bastion holds it, from host bastion, naming the person. The twin:
    the password the vendor typed at the bastion's prompt is in none of the events the siem stored
    since the session began (tlog records the shell, not the sign-in)."""
    b, person = bastion(running_lab), maintenance["person"]
    session = {r["rec"] for r in records(running_lab, b.name, person) if f"echo {MARK}\n" in r["in_txt"]}
    held = sorted((r for r in records(running_lab, b.name, person) if r["rec"] in session), key=lambda r: r["id"])

    def shipped() -> list[dict[str, Any]]:
        found = [e for e in siem_events(running_lab, maintenance["siem_since"], "--contains", person)
                 if e["source"] == "tlog" and record(e).get("rec") in session]
        return found if len(found) >= len(held) else []

    from .test_siem import wait_for
    found = wait_for(f"the {len(held)} records of {person}'s session in the siem", shipped)
    after_end = round(time.monotonic() - maintenance["ended"], 1)
    stored = siem_events(running_lab, maintenance["siem_since"])
    password = people.password(plan.secrets_dir, person)
    evidence.update(session=sorted(session), records=len(held), found_after_session_end_s=after_end, events_since=len(stored),
                    searched=[(e["id"], e["host"], e["event_type"], e["user"]) for e in found][:5])
    assert len(session) == 1 and held
    assert {(e["host"], e["event_type"], e["user"], e["outcome"]) for e in found} == {(b.name, "vendor-session", person, "recorded")}
    assert sorted((record(e) for e in found), key=lambda r: r["id"]) == held
    assert [e["id"] for e in stored if password in (e["message"] or "")] == []


@pytest.mark.control("C-MNT-02")
def test_the_administrative_actions_reach_the_siem_and_only_the_refused_one_raises_sudo_refused(
        running_lab: Lab, maintenance: dict[str, Any], evidence) -> None:
    """C-MNT-02 (the record in the SIEM): the PACS ships sudo's log (roles/log_shipping), so both of
    the vendor's sudo uses on the PACS are sudo-command events from host pacs naming them: the
    refused `cat /etc/shadow` (outcome command-not-allowed) raises sudo-refused about the PACS and
    the person; the allowed restart (outcome allowed) is in no alert."""
    from .test_siem import siem_json, wait_for

    person = maintenance["person"]
    if TARGET not in (running_lab.host_vars.get(TARGET, {}).get("siem_sources") or []):
        pytest.skip(f"{TARGET} is no log source of lab {running_lab.name!r}: its sudo log stays on it")

    def used() -> list[dict[str, Any]]:
        found = [e for e in siem_events(running_lab, maintenance["siem_since"], "--contains", f" : {person} : ")
                 if e["source"] == "sudo" and e["host"] == TARGET]
        return found if len(found) >= 2 else []

    found = wait_for(f"{person}'s two sudo uses on {TARGET} in the siem", used)
    uses = [(e["event_type"], e["user"], e["outcome"], e["message"].rsplit(" ; COMMAND=", 1)[-1]) for e in found]
    refused = next(e["id"] for e in found if e["outcome"] != "allowed")
    allowed = next(e["id"] for e in found if e["outcome"] == "allowed")
    raised = wait_for(f"sudo-refused with event {refused}", lambda: [a for a in siem_json(running_lab, "alerts")
                                                                       if a["rule"] == "sudo-refused" and refused in a["events"]])
    evidence.update(uses=uses, alerts=[(a["id"], a["entities"], a["severity"]) for a in raised])
    assert uses == [("sudo-command", person, "command-not-allowed", "/bin/cat /etc/shadow"),
                    ("sudo-command", person, "allowed", "/usr/bin/supervisorctl restart sshd")]
    assert [(a["entities"], a["severity"]) for a in raised] == [({"host": TARGET, "user": person}, "medium")]
    assert [a["id"] for a in siem_json(running_lab, "alerts") if allowed in a["events"]] == []


@pytest.mark.control("C-PRT-01")
def test_the_sign_in_at_the_target_reaches_the_siem_from_its_own_sshd_and_a_name_it_does_not_know_as_invalid(
        running_lab: Lab, maintenance: dict[str, Any], evidence) -> None:
    """The PACS ships its maintenance sshd's log (pacslab_sshd_log, roles/log_shipping): the vendor's
    sign-in there, with the bastion's key for them, is an ssh-login-success event from host pacs
    naming the person and the bastion's address, in no vendor-outside-window alert (that rule is
    about the sign-in at the bastion, which the session made first). The twin: a name the PACS has
    no account for, this run's, tried from the bastion, is an ssh-invalid-user event from host
    pacs with the bastion's address, and no success."""
    from .test_siem import evaluated_after, siem_json, utc_now, wait_for

    lab, person, b = running_lab, maintenance["person"], bastion(running_lab)
    if TARGET not in (lab.host_vars.get(TARGET, {}).get("siem_sources") or []):
        pytest.skip(f"{TARGET} is no log source of lab {lab.name!r}: its sshd log stays on it")
    nobody = f"nobody-{secrets.token_hex(3)}"
    said = unknown_name_at(lab, TARGET, nobody)

    def at_target(text: str) -> Any:
        return lambda: [e for e in siem_events(lab, maintenance["siem_since"], "--contains", text) if e["host"] == TARGET and e["source"] == "sshd"]

    signed_in = wait_for(f"{person}'s sign-in at {TARGET} in the siem", at_target(f"Accepted publickey for {person} from "))
    invalid = wait_for(f"{nobody} at {TARGET} in the siem", at_target(f"user {nobody} from "))
    evaluated_after(lab, utc_now())
    alerts = [(a["rule"], a["id"]) for a in siem_json(lab, "alerts") if {e["id"] for e in signed_in} & set(a["events"])]
    evidence.update(signed_in=[e["message"] for e in signed_in], invalid=[e["message"] for e in invalid], said=said, alerts=alerts)
    assert {(e["event_type"], e["user"], e["src_ip"], e["outcome"]) for e in signed_in} == {("ssh-login-success", person, str(b.address), "success")}
    assert alerts == []
    assert {(e["event_type"], e["user"], e["src_ip"], e["outcome"]) for e in invalid} == {("ssh-invalid-user", nobody, str(b.address), "failure")}


@pytest.mark.control("C-MNT-01")
def test_every_forwarding_the_vendor_asks_for_is_refused(running_lab: Lab, maintenance: dict[str, Any], evidence) -> None:
    r = maintenance["result"]
    transcript = r["transcript"].replace("\r", "")
    evidence.update(connect=r["connect"], client=[ln for ln in transcript.splitlines() if "forward" in ln or "open failed" in ln])
    assert f"Warning: remote port forwarding failed for listen port {REMOTE}" in transcript
    assert transcript.count("open failed: administratively prohibited") == 2  # -L, then -D
    assert r["connect"][0] == {"port": LOCAL, "outcome": "closed"}
    assert r["connect"][1]["outcome"] != "socks reply 0"  # SOCKS5 0: succeeded
    # the bastion's log: both channels refused, each naming where it was meant to go
    refused = [ln.split("]: ", 1)[-1] for ln in maintenance["log"] if "refused local port forward" in ln]
    target = running_lab.hosts[TARGET].address
    assert [ln.split(", ")[-1] for ln in refused] == [f"target {target} port 443"] * 2, refused


@pytest.mark.control("C-MNT-02")
def test_an_administrative_action_on_the_target_is_logged_with_the_person_s_name(running_lab: Lab, maintenance: dict[str, Any], evidence) -> None:
    person = maintenance["person"]
    log = im.exec_in(running_lab, TARGET, "cat", SUDO_LOG)
    mine = [ln for ln in log.splitlines() if f" : {person} : " in ln]
    evidence.update(sudo=mine[-2:])
    assert any("USER=root ; COMMAND=/usr/bin/supervisorctl restart sshd" in ln and "command not allowed" not in ln for ln in mine)
    assert any("command not allowed" in ln and "COMMAND=/bin/cat /etc/shadow" in ln for ln in mine)
    assert f"Sorry, user {person} is not allowed to execute '/bin/cat /etc/shadow' as root" in outputs(maintenance["result"])[5]
    sshd = im.exec_in(running_lab, TARGET, "cat", SSHD_LOG)
    assert f"Accepted publickey for {person} from {bastion(running_lab).address} port" in sshd


def refused(lab: Lab, r: dict[str, Any], log: list[str], who: str, prompts: list[str], evidence: dict[str, Any]) -> None:
    """The client met ``prompts``, got no shell, printed OpenSSH's refusal, and the bastion logged the
    failure for ``who`` from the vendor's computer."""
    transcript = r["transcript"].replace("\r", "")
    evidence.update(prompts=r["prompts"], said=r["said"], log=log)
    assert r["shell"] is False and r["prompts"] == prompts
    assert DENIED in transcript
    client = lab.hosts[CLIENT].address
    invalid = "" if who in {p.name for p in lab.people if "vendor" in p.roles} else "invalid user "
    assert f"Failed keyboard-interactive/pam for {invalid}{who} from {client} port" in "\n".join(log)


@pytest.mark.control("C-MNT-01")
@pytest.mark.parametrize("case", ["no-code", "wrong-password", "expired-vendor", "not-a-vendor"])
def test_a_password_alone_a_wrong_one_or_an_ended_account_gets_no_shell(running_lab: Lab, plan: Plan, case: str, evidence) -> None:
    """No code: the client stays at the code prompt. A wrong password: no code is asked for. The
    expired vendor's right password and code: PAM's "account has expired". A person who is not a
    vendor (a radiologist, with their own password): no account here."""
    person = vendor(running_lab, "enabled").name
    logged = len(auth_log(running_lab))
    if case == "no-code":
        r = login(running_lab, plan, person)
        evidence.update(prompts=r["prompts"], said=r["said"])
        assert r["shell"] is False and r["prompts"] == ["password", "code"]  # left at the code prompt
        return
    if case == "wrong-password":  # the code is never asked for: a wrong one shows that
        who, r = person, login(running_lab, plan, person, password="Not" + secrets.token_hex(8), code=wrong_code(plan, person))
        prompts = ["password"]
    elif case == "expired-vendor":
        who = vendor(running_lab, "expired").name
        r, prompts = login(running_lab, plan, who, code="now"), ["password", "code"]
    else:
        who = one(running_lab, "enabled", "radiologist").name
        r, prompts = login(running_lab, plan, who, code="000000"), ["password"]
    log = [ln.split("]: ", 1)[-1] for ln in auth_log(running_lab)[logged:]]
    refused(running_lab, r, log, who, prompts, evidence)
    if case == "expired-vendor":
        assert EXPIRED in r["transcript"]
        assert f"pam_unix(sshd:account): account {who} has expired (account expired)" in log


@pytest.mark.control("C-MNT-01")
@pytest.mark.parametrize("case", ["wrong-code", "replayed-code"])
def test_a_wrong_or_replayed_code_gets_no_shell(running_lab: Lab, plan: Plan, maintenance: dict[str, Any], case: str, evidence) -> None:
    """The enabled vendor's right password with a code that is none of theirs, or with the code their
    session above was just let in with (pam_oath refuses a code it accepted: RFC 6238 5.2)."""
    person = maintenance["person"]
    logged = len(auth_log(running_lab))
    code = wrong_code(plan, person) if case == "wrong-code" else maintenance["code"]
    r = login(running_lab, plan, person, code=code)
    log = [ln.split("]: ", 1)[-1] for ln in auth_log(running_lab)[logged:]]
    refused(running_lab, r, log, person, ["password", "code"], evidence)


@pytest.mark.control("C-MNT-01")
def test_the_vendor_reaches_the_bastion_only_and_the_bastion_the_targets_ssh_only(running_lab: Lab, evidence) -> None:
    b = bastion(running_lab)
    pacs, ct = running_lab.hosts[TARGET].address, running_lab.hosts["mod-ct"].address
    from_vendor = standins.probe(running_lab.container_name(CLIENT), [
        {"id": "bastion:22", "addr": str(b.address), "port": 22, "proto": "tcp"},
        {"id": "pacs:22", "addr": str(pacs), "port": 22, "proto": "tcp"},
        {"id": "mod-ct:22", "addr": str(ct), "port": 22, "proto": "tcp"},
    ])
    from_bastion = standins.probe(running_lab.container_name(b.name), [
        {"id": "pacs:22", "addr": str(pacs), "port": 22, "proto": "tcp"},
        {"id": "mod-ct:22", "addr": str(ct), "port": 22, "proto": "tcp"},
        {"id": "pacs:443", "addr": str(pacs), "port": 443, "proto": "tcp"},
        {"id": "pacs:2762", "addr": str(pacs), "port": 2762, "proto": "tcp"},
    ])
    evidence.update(from_vendor=from_vendor, from_bastion=from_bastion)
    assert from_vendor == {"bastion:22": "open:?", "pacs:22": "dropped", "mod-ct:22": "dropped"}
    assert from_bastion == {"pacs:22": "open:?", "mod-ct:22": "open:?", "pacs:443": "dropped", "pacs:2762": "dropped"}
