"""The lab directory (issue 12, host `dir`): OpenLDAP slapd holding the lab definition's people,
roles and service accounts (roles/directory), C-ACC-01 and C-ACC-03.

Every bind is a real LDAP simple bind over LDAPS to the directory's lab address, made with
python-ldap on the directory host itself (the only lab host with an LDAP client; pacslab.probes.ldap); the lab root
verifies the server's certificate. Passwords are the ones `up` generated for this lab, read from
.pacslab/<lab>/secrets/ and handed to the probe on stdin, never in an argv. Each expected outcome is
the LDAP result (RFC 4511 4.1.9) written out, with slapd's diagnostic message where it has one.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest

from pacslab.people import Person
from pacslab.plan import Plan
from pacslab.probes import imaging as im
from pacslab.probes import ldap, openssl
from pacslab.topology import Host, Lab

from .test_class_hosts import CONNECT


def directory(lab: Lab) -> Host:
    """The lab's directory host; the check is skipped in a lab that deploys none."""
    hosts = [h for h in lab.group("directories") if h.deployed]
    if not hosts:
        pytest.skip(f"lab {lab.name!r} deploys no directory")
    return hosts[0]


def first(lab: Lab, status: str, vendor: bool = False) -> Person | None:
    """The first person of the definition whose status (today) is ``status``, a vendor or not; None
    when the definition has none."""
    return next((p for p in lab.people if p.status() == status and ("vendor" in p.roles) == vendor), None)


def one(lab: Lab, status: str, vendor: bool = False) -> Person:
    """first(), or the check skipped when the definition has no such person."""
    found = first(lab, status, vendor)
    if found is None:
        pytest.skip(f"lab {lab.name!r} defines no {'vendor' if vendor else 'person'} who is {status}")
    return found


INVALID = ldap.INVALID


@pytest.fixture(scope="module")
def suffix(running_lab: Lab) -> str:
    return suffix_of(running_lab)


suffix_of = ldap.suffix  # the directory's suffix (pacslab.probes.ldap)
person = ldap.person  # a person's DN


def password(plan: Plan, kind: str, name: str) -> str:
    return (Path(plan.secrets_dir) / f"{kind}-{name}").read_text().split()[0]


def ldap_steps(lab: Lab, steps: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Run the probe's steps against the directory's LDAPS address from the directory itself; one result per step."""
    return ldap.steps_on(lab, directory(lab), steps)


def as_root(lab: Lab, *argv: str, input: str | None = None) -> str:
    """An OpenLDAP tool as the directory's manager: the local root over ldapi:/// (SASL EXTERNAL)."""
    return im.exec_in(lab, directory(lab).name, *argv, "-Q", "-Y", "EXTERNAL", "-H", "ldapi:///", input=input)


# python-ldap's LDIF parser (RFC 2849: folded lines, base64 values) on the directory host.
LDIF_TO_JSON = r"""
import io, json, sys
import ldif
records = ldif.LDIFRecordList(io.StringIO(sys.stdin.read()))
records.parse()
print(json.dumps({dn: {k: [v.decode() for v in vs] for k, vs in attrs.items()} for dn, attrs in records.all_records}))
"""


def entries(lab: Lab, base: str, *attrs: str) -> dict[str, dict[str, list[str]]]:
    """dn -> attribute -> values, as the manager reads them (ldapsearch's LDIF, parsed by python-ldap)."""
    out = as_root(lab, "ldapsearch", "-LLL", "-b", base, *attrs)
    found: dict[str, dict[str, list[str]]] = json.loads(im.exec_in(lab, directory(lab).name, "python3", "-c", LDIF_TO_JSON, input=out))
    return found


@pytest.mark.control("C-ACC-01")
@pytest.mark.parametrize("case", ["anonymous", "name-without-password"])
def test_a_bind_without_credentials_is_refused(running_lab: Lab, suffix: str, case: str, evidence) -> None:
    """No anonymous bind (olcDisallows bind_anon), no unauthenticated bind (a DN and no password,
    RFC 4513 5.1.2, refused by slapd's default)."""
    step = {} if case == "anonymous" else {"dn": person(suffix, one(running_lab, "enabled").name)}
    [result] = ldap_steps(running_lab, [step])
    evidence.update(result=result)
    expected = {
        "anonymous": {"error": "INAPPROPRIATE_AUTH", "code": 48, "info": "anonymous bind disallowed"},
        "name-without-password": {"error": "UNWILLING_TO_PERFORM", "code": 53, "info": "unauthenticated bind (DN with no password) disallowed"},
    }[case]
    assert result == {"bind": expected}


# Administrators an OpenLDAP install is known for: Debian's slapd package makes cn=admin under the
# suffix of the machine's domain (dc=nodomain without one), with the password debconf asked for;
# OpenLDAP's sample slapd.conf has cn=Manager with "secret". The lab's manager is the local root
# over ldapi only (SASL EXTERNAL): no name with a password manages the directory.
PACKAGED_ADMINS = ["cn=admin,{suffix}", "cn=admin,dc=nodomain", "cn=Manager,{suffix}"]
PACKAGED_PASSWORDS = ["admin", "secret", "password"]


@pytest.mark.control("C-ACC-01")
def test_no_packaged_administrator_binds(running_lab: Lab, suffix: str, evidence) -> None:
    """Each packaged administrator's name with each well-known password: invalid credentials (49),
    as for any wrong password (the twin, an enabled person with their own password, binds in the
    next test)."""
    steps = [{"dn": dn.format(suffix=suffix), "password": pw} for dn in PACKAGED_ADMINS for pw in PACKAGED_PASSWORDS]
    results = ldap_steps(running_lab, steps)
    evidence.update(tried=[s["dn"] for s in steps[::len(PACKAGED_PASSWORDS)]], results=results)
    assert results == [{"bind": INVALID}] * len(steps)


@pytest.mark.control("C-ACC-01")
@pytest.mark.parametrize("vendor", [False, True], ids=["person", "vendor-before-the-end-date"])
def test_an_enabled_person_binds_with_the_password_generated_for_the_lab(running_lab: Lab, plan: Plan, suffix: str, vendor: bool,
                                                                         evidence) -> None:
    """The twin of the refusals below: an enabled person, and a vendor before their end date, bind."""
    who = one(running_lab, "enabled", vendor)
    [result] = ldap_steps(running_lab, [{"dn": person(suffix, who.name), "password": password(plan, "person", who.name)}])
    evidence.update(who=who.name, result=result)
    assert result == {"bind": "success", "whoami": f"dn:{person(suffix, who.name)}"}


@pytest.mark.control("C-ACC-01")
@pytest.mark.parametrize(("status", "vendor"), [("disabled", False), ("expired", True)], ids=["disabled", "vendor-after-the-end-date"])
def test_a_person_disabled_or_expired_in_the_definition_cannot_bind(running_lab: Lab, plan: Plan, suffix: str, status: str, vendor: bool,
                                                                    evidence) -> None:
    """`state: disabled`: locked until enabled again (pwdAccountLockedTime 000001010000Z); a vendor
    whose `expires` has passed: pwdEndTime, the end of that day. Each is refused with their own,
    correct password (set when the entry was made)."""
    who = one(running_lab, status, vendor)
    dn = person(suffix, who.name)
    [result] = ldap_steps(running_lab, [{"dn": dn, "password": password(plan, "person", who.name)}])
    held = entries(running_lab, dn, "pwdAccountLockedTime", "pwdEndTime")[dn]
    evidence.update(who=who.name, result=result, held=held)
    assert result == {"bind": INVALID}
    if status == "disabled":
        assert held == {"pwdAccountLockedTime": ["000001010000Z"]}
    else:
        assert who.expires is not None and held == {"pwdEndTime": [f"{who.expires:%Y%m%d}235959Z"]}


@pytest.mark.control("C-ACC-01")
def test_repeated_failed_binds_lock_the_account(running_lab: Lab, plan: Plan, suffix: str, evidence) -> None:
    """Four wrong passwords and then the right one: in (a success clears the count). Five wrong
    ones: the right one is refused too, and the entry carries pwdAccountLockedTime. The lock is
    lifted afterwards (as an administrator would), so that the lab is as before."""
    who = one(running_lab, "enabled")
    dn, right = person(suffix, who.name), password(plan, "person", who.name)
    wrong = {"dn": dn, "password": "not-" + right[:8]}
    try:
        below = ldap_steps(running_lab, [wrong] * 4 + [{"dn": dn, "password": right}])
        at = ldap_steps(running_lab, [wrong] * 5 + [{"dn": dn, "password": right}])
        locked = entries(running_lab, dn, "pwdAccountLockedTime")[dn]
    finally:
        # pwdFailureTime is the overlay's alone (no user modification); the next good bind clears it
        as_root(running_lab, "ldapmodify", input=f"dn: {dn}\nchangetype: modify\ndelete: pwdAccountLockedTime\n-\n")
    evidence.update(who=who.name, below=[r["bind"] if isinstance(r["bind"], str) else r["bind"]["error"] for r in below], locked=locked)
    assert [r["bind"] for r in below] == [INVALID] * 4 + ["success"]
    assert [r["bind"] for r in at] == [INVALID] * 6
    assert list(locked) == ["pwdAccountLockedTime"] and re.fullmatch(r"\d{14}Z", locked["pwdAccountLockedTime"][0])
    assert ldap_steps(running_lab, [{"dn": dn, "password": right}])[0]["bind"] == "success"


@pytest.mark.control("C-ACC-03")
def test_a_service_account_reads_people_but_no_password_and_writes_nothing(running_lab: Lab, plan: Plan, suffix: str, evidence) -> None:
    """A service account (the IdP's read-only bind) reads every person, not their password hashes,
    and is refused a change (insufficientAccess). Its twin: a person reads their own entry, and the
    people's folder does not even exist for them (noSuchObject: slapd does not disclose it)."""
    if not running_lab.service_accounts:
        pytest.skip(f"lab {running_lab.name!r} defines no service account")
    svc_name, who = running_lab.service_accounts[0].name, one(running_lab, "enabled")
    svc = {"dn": f"cn={svc_name},ou=services,{suffix}", "password": password(plan, "service", svc_name)}
    own = {"dn": person(suffix, who.name), "password": password(plan, "person", who.name)}
    change = {"dn": person(suffix, who.name), "attr": "cn", "value": "Changed By A Service"}
    as_svc, as_person, as_self = ldap_steps(running_lab, [
        {**svc, "search": {"base": f"ou=people,{suffix}", "attrs": ["uid", "userPassword"]}, "modify": change},
        {**own, "search": {"base": f"ou=people,{suffix}", "attrs": ["uid"]}},
        {**own, "search": {"base": person(suffix, who.name), "attrs": ["uid"]}},
    ])
    evidence.update(service=svc_name, svc_sees=sorted(as_svc["search"]), svc_modify=as_svc["modify"], person_sees=as_person["search"])
    assert as_svc["bind"] == "success"
    assert as_svc["search"] == {f"ou=people,{suffix}": {}, **{person(suffix, p.name): {"uid": [p.name]} for p in running_lab.people}}
    assert as_svc["modify"] == {"error": "INSUFFICIENT_ACCESS", "code": 50, "info": ""}
    assert as_person["search"] == {"error": "NO_SUCH_OBJECT", "code": 32, "info": ""}
    assert as_self["search"] == {person(suffix, who.name): {"uid": [who.name]}}
    assert entries(running_lab, person(suffix, who.name), "cn")[person(suffix, who.name)] == {"cn": [who.display_name]}


@pytest.mark.control("C-ACC-01")
def test_the_directory_holds_exactly_the_definitions_accounts_each_with_an_owner(running_lab: Lab, suffix: str, evidence) -> None:
    """C-ACC-01 (c): the directory holds the definition's people (each with its owner as ou), one
    group per role with exactly its people, and the service accounts with theirs; nothing more."""
    people = entries(running_lab, f"ou=people,{suffix}", "uid", "ou")
    groups = entries(running_lab, f"ou=groups,{suffix}", "cn", "member")
    services = entries(running_lab, f"ou=services,{suffix}", "cn", "ou")
    held = {v["uid"][0]: v.get("ou") for v in people.values() if "uid" in v}
    members = {v["cn"][0]: sorted(m.split(",")[0].removeprefix("uid=") for m in v.get("member", [])) for v in groups.values() if "cn" in v}
    evidence.update(people=held, groups=members)
    assert held == {p.name: [p.owner] for p in running_lab.people}
    roles = sorted({r for p in running_lab.people for r in p.roles})
    assert members == {r: sorted(p.name for p in running_lab.people if r in p.roles) for r in roles}
    assert {v["cn"][0]: v.get("ou") for v in services.values() if "cn" in v} == {a.name: [a.owner] for a in running_lab.service_accounts}


@pytest.mark.control("C-DAT-02")
@pytest.mark.parametrize("case", ["tls1.3", "tls1.2-aead", "tls1.2-cbc", "tls1.1", "cleartext-389"])
def test_the_directory_speaks_ldaps_with_tls_1_2_or_later_only(running_lab: Lab, case: str, evidence) -> None:
    """LDAPS with the lab certificate: TLS 1.3, TLS 1.2 with an AEAD suite. A CBC suite or TLS 1.1:
    slapd ends the handshake by closing the connection, without an alert (OpenSSL: unexpected eof),
    and nothing is negotiated. Nothing listens on LDAP's cleartext port 389."""
    host = directory(running_lab)
    if case == "cleartext-389":
        out = im.exec_in(running_lab, host.name, "python3", "-c", CONNECT, str(host.address), "389").strip()
        evidence.update(outcome=out)
        assert out == "refused"
        return
    seen = openssl.s_client(running_lab, host.name, str(host.address), host.service("ldaps").port, *openssl.CASES[case])
    evidence.update(seen=seen)
    assert seen == {
        "tls1.3": {"protocol": "TLSv1.3", "cipher": "TLS_AES_256_GCM_SHA384", "verify": "OK"},
        "tls1.2-aead": {"protocol": "TLSv1.2", "cipher": "ECDHE-ECDSA-AES128-GCM-SHA256", "verify": "OK"},
        "tls1.2-cbc": {"closed": "unexpected eof"},
        "tls1.1": {"closed": "unexpected eof"},
    }[case]


# A person disabled in the lab definition (C-ACC-01): test_access_changes.py, whose one `up` also revokes a device.
