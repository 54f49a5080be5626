"""The lab's identity provider (issue 12, host `idp`): LemonLDAP::NG 2.16 as OpenID Connect
provider (roles/idp), C-ACC-07, C-ACC-01, C-ACC-03, C-DAT-02.

Every sign-in is the authorization code flow (OpenID Connect Core 1.0, 3.1) run from the radiology
workstation (clinical zone, flow F10b) by pacslab.probes.oidc, as the lab's reverse proxy is
registered: its client id, redirect URI and the secret `up` generated for it. Passwords and TOTP
codes (RFC 6238, from the seed `up` generated for each person, the code `pacslab totp` prints) reach
the probe on stdin. Each outcome is written out: the HTTP status, LemonLDAP's result code on its
pages (trmsg: 9 first access, 5 bad credentials, 96 bad OTP, 84 unauthorized partner; Lemonldap::NG::
Portal::Main::Constants), the redirect to the relying party and the claims of the ID token.

A person signs in at most once per 30-second TOTP step, beyond the next step's code taken early (the
checker's window is one step either side): the IdP refuses a code whose step is not later than the
last one it accepted for them. The checks that succeed therefore each sign in a different
person, and the replay check replays the very code that just succeeded.

The module's refused sign-ins (the lockout's five wrong passwords, the demo users', wrong and
replayed codes) and its sign-ins after them come from one workstation: the siem raises
idp-brute-force-success about it, whose containment would quarantine the reading workstation. They
are the suite's own, so the module runs in a window of authorised activity for that workstation (the
alert is raised, its decision withheld); test_response proves the quarantine of a break-in.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from pacslab import people, response
from pacslab.people import Person
from pacslab.plan import Plan
from pacslab.probes import imaging as im
from pacslab.probes import oidc, openssl
from pacslab.topology import Host, Lab

from . import test_directory as td

# The client of the sign-ins (sign_in's default): a clinical workstation (flow F10b reaches idp:443 from clinical).
CLIENT = "ws-rad"


@contextlib.contextmanager
def refusals_authorised(lab: Lab, client: str, what: str) -> Iterator[None]:
    """A window of authorised activity for ``client`` while the block runs (pacslab.response.authorised):
    a module's own refused sign-ins from it, which a sign-in after them would make a break-in."""
    if client not in lab.hosts or not lab.hosts[client].deployed:
        yield
        return
    with response.authorised(lab, f"{what} (tests/integration)", [str(lab.hosts[client].address)], by="pacslab-tests"):
        yield


@pytest.fixture(scope="module", autouse=True)
def _refusals_authorised(running_lab: Lab) -> Iterator[None]:
    """The module's refused sign-ins in a window of authorised activity for CLIENT (the module's docstring)."""
    with refusals_authorised(running_lab, CLIENT, "test_idp's refused sign-ins"):
        yield


# The IdP portal's log (roles/idp: LemonLDAP::NG's output and its TOTP checker's verdicts).
PORTAL_LOG = "/var/log/pacslab/llng.log"
# LemonLDAP::NG's result codes (Lemonldap::NG::Portal::Main::Constants, 2.0.16).
PE_FIRSTACCESS, PE_BADCREDENTIALS, PE_UNAUTHORIZEDPARTNER, PE_BADOTP = 9, 5, 84, 96
# What s_client sees of the lab's HTTPS policy (the IdP's nginx and the proxy's Apache alike), per
# pacslab.probes.openssl case: TLS 1.3 and TLS 1.2 with AEAD suites, the lab certificate verified.
HTTPS_POLICY = {
    "tls1.3": {"protocol": "TLSv1.3", "cipher": "TLS_AES_256_GCM_SHA384", "verify": "OK"},
    "tls1.2-aead": {"protocol": "TLSv1.2", "cipher": "ECDHE-ECDSA-AES128-GCM-SHA256", "verify": "OK"},
    "tls1.2-cbc": {"alert": "handshake failure"},
    "tls1.1": {"alert": "protocol version"},
}
LOGIN_FORM = ["checkLogins", "password", "skin", "timezone", "token", "url", "user"]
CODE_FORM = ["checkLogins", "code", "skin", "stayconnected", "token"]


def idp(lab: Lab) -> Host:
    hosts = [h for h in lab.group("idp_servers") if h.deployed]
    if not hosts:
        pytest.skip(f"lab {lab.name!r} deploys no identity provider")
    return hosts[0]


def relying_party(lab: Lab) -> Host:
    hosts = lab.group("reverse_proxies")
    if not hosts:
        pytest.skip(f"lab {lab.name!r} has no reverse proxy to act as relying party")
    return hosts[0]


def one(lab: Lab, status: str, role: str | None = None) -> Person:
    """The first person whose status (today) is ``status`` and, if given, who holds ``role``."""
    found = [p for p in lab.people if p.status() == status and (role is None or role in p.roles)]
    if not found:
        pytest.skip(f"lab {lab.name!r} defines no {role or 'person'} who is {status}")
    return found[0]


def secret(plan: Plan, name: str) -> str:
    return (Path(plan.secrets_dir) / name).read_text().split()[0]


def wrong_code(plan: Plan, user: str) -> str:
    """A code that is none of the person's codes of the previous, current and next 30-second step."""
    seed = people.totp_seed(plan.secrets_dir, user)
    now = time.time()
    codes = {people.totp_now(seed, at) for at in (now - 30, now, now + 30)}
    return next(c for c in ("000000", "111111", "222222") if c not in codes)


def sign_in(lab: Lab, plan: Plan, user: str, *, password: str | None = None, code: str | None = None, client: str = CLIENT,
            **kw: Any) -> dict[str, Any]:
    """The flow for ``user`` from ``client``, with their own password unless another is given, and
    ``code`` (the string "now" for a TOTP code of theirs the IdP has not accepted yet; None stops
    after the password)."""
    host, rp = idp(lab), relying_party(lab)
    if code == "now":
        code = oidc.fresh_code(lab, host.name, plan.secrets_dir, user)
    return oidc.login(lab, client, f"https://{host.name}", rp.name, f"https://{rp.name}/oidc/redirect", user=user,
                      password=password if password is not None else people.password(plan.secrets_dir, user), code=code,
                      client_secret=secret(plan, f"oidc-{rp.name}"), **kw)


def outline(result: dict[str, Any]) -> list[tuple[str, int, list[int], list[list[str]]]]:
    """Each step as (step, HTTP status, LemonLDAP result codes, field names of each form)."""
    return [(s["step"], s.get("status", 0), s.get("trmsg", []), s.get("forms", [])) for s in result["steps"]]


@pytest.mark.control("C-ACC-07")
@pytest.mark.control("C-ACC-03")
@pytest.mark.parametrize("role", ["radiologist", "technologist", "auditor"])
def test_password_and_totp_code_sign_in_and_the_id_token_carries_the_roles(running_lab: Lab, plan: Plan, role: str, evidence) -> None:
    """Login form, then the second-factor form, then a redirect to the relying party with a code
    that the back channel redeems for an ID token: issued by the IdP to that client, about that
    person, with their roles as the directory's groups hold them."""
    who = one(running_lab, "enabled", role)
    result = sign_in(running_lab, plan, who.name, code="now")
    rp = relying_party(running_lab)
    evidence.update(who=who.name, steps=outline(result), claims=result.get("id_token"))
    assert outline(result) == [("authorize", 200, [PE_FIRSTACCESS], [LOGIN_FORM]), ("password", 200, [], [CODE_FORM]),
                               ("second-factor", 302, [], [])]
    assert result["steps"][-1]["location"].startswith(f"https://{rp.name}/oidc/redirect?")
    assert result["redirect"]["state"] == "pacslab-state" and result["token_status"] == 200
    claims = result["id_token"]
    assert {k: claims[k] for k in ("iss", "aud", "azp", "sub", "preferred_username", "nonce", "roles", "acr")} == {
        "iss": f"https://{idp(running_lab).name}", "aud": [rp.name], "azp": rp.name, "sub": who.name,
        "preferred_username": who.name, "nonce": "pacslab-nonce", "roles": sorted(who.roles), "acr": "loa-2"}


@pytest.mark.control("C-ACC-07")
@pytest.mark.parametrize("case", ["no-code", "wrong-code", "replayed-code"])
def test_a_password_without_a_valid_fresh_code_gets_no_session(running_lab: Lab, plan: Plan, case: str, evidence) -> None:
    """The right password alone stops at the second-factor form; a wrong code, or the code that
    has just signed the same person in (RFC 6238 5.2), is refused with PE_BADOTP: no redirect to the
    relying party, no SSO session cookie (only LemonLDAP's pending-data cookie)."""
    who = one(running_lab, "enabled", "pacs-admin")
    first = None
    if case == "no-code":
        result = sign_in(running_lab, plan, who.name)
    elif case == "wrong-code":
        result = sign_in(running_lab, plan, who.name, code=wrong_code(plan, who.name))
    else:
        code = oidc.fresh_code(running_lab, idp(running_lab).name, plan.secrets_dir, who.name)
        first = sign_in(running_lab, plan, who.name, code=code)
        result = sign_in(running_lab, plan, who.name, code=code)
    evidence.update(who=who.name, first=outline(first) if first else None, steps=outline(result), cookies=result["cookies"])
    if first is not None:
        assert outline(first)[-1] == ("second-factor", 302, [], []) and first["token_status"] == 200
    expected = [("authorize", 200, [PE_FIRSTACCESS], [LOGIN_FORM]), ("password", 200, [], [CODE_FORM])]
    if case != "no-code":
        expected.append(("second-factor", 200, [PE_BADOTP], []))
    assert outline(result) == expected
    assert "redirect" not in result and "id_token" not in result
    assert result["cookies"] == ["llngsessionpdata"]


@pytest.mark.control("C-ACC-01")
@pytest.mark.parametrize("case", ["disabled", "vendor-after-the-end-date", "demo-dwho", "demo-rtyler", "demo-msmith", "admin"])
def test_nobody_the_definition_does_not_enable_gets_past_the_password(running_lab: Lab, plan: Plan, case: str, evidence) -> None:
    """A person disabled in the definition and a vendor past their end date, each with their own
    password; LemonLDAP's demo users with the demo's passwords (their names) and admin:admin: the
    login form answers PE_BADCREDENTIALS and asks again; no second-factor form is reached."""
    if case == "disabled":
        user, password = one(running_lab, "disabled").name, None
    elif case == "vendor-after-the-end-date":
        user, password = one(running_lab, "expired", "vendor").name, None
    else:
        user = "admin" if case == "admin" else case.removeprefix("demo-")
        password = user
    result = sign_in(running_lab, plan, user, password=password, code="000000")
    evidence.update(user=user, steps=outline(result))
    assert outline(result) == [("authorize", 200, [PE_FIRSTACCESS], [LOGIN_FORM]), ("password", 200, [PE_BADCREDENTIALS], [LOGIN_FORM])]
    assert "redirect" not in result and result["cookies"] == ["llngsessionpdata"]


@pytest.mark.control("C-ACC-03")
def test_a_vendor_signs_in_but_the_viewer_s_relying_party_refuses_them(running_lab: Lab, plan: Plan, evidence) -> None:
    """An enabled vendor passes both factors (their bastion sign-in uses the same identity) but the
    relying party's access rule admits the viewer's roles only: PE_UNAUTHORIZEDPARTNER, no code."""
    who = one(running_lab, "enabled", "vendor")
    result = sign_in(running_lab, plan, who.name, code="now")
    evidence.update(who=who.name, steps=outline(result))
    assert outline(result) == [("authorize", 200, [PE_FIRSTACCESS], [LOGIN_FORM]), ("password", 200, [], [CODE_FORM]),
                               ("second-factor", 200, [PE_UNAUTHORIZEDPARTNER], [])]
    assert "redirect" not in result and "id_token" not in result


@pytest.mark.control("C-ACC-07")
def test_repeated_wrong_passwords_at_the_idp_lock_the_account_and_leave_events(running_lab: Lab, plan: Plan, evidence) -> None:
    """Five wrong passwords through the portal (the directory's ppolicy: five failures lock): the
    sixth attempt, with the right password and a fresh code, is refused at the password too, the
    directory holds pwdAccountLockedTime, and the portal logged each failure with the person and
    the source address. The lock is lifted afterwards as an administrator would (then one good bind
    clears the failure count), so that the lab is as before."""
    who = one(running_lab, "enabled", "pacs-admin")
    dn = td.person(f"dc={running_lab.name},dc=pacslab", who.name)
    log = PORTAL_LOG
    host = idp(running_lab)
    logged_before = len(im.read_from(running_lab, host.name, log).splitlines())
    try:
        wrong = [sign_in(running_lab, plan, who.name, password="not-the-password") for _ in range(5)]
        right = sign_in(running_lab, plan, who.name, code="now")
        locked = td.entries(running_lab, dn, "pwdAccountLockedTime")[dn]
        events = [ln for ln in im.read_from(running_lab, host.name, log).splitlines()[logged_before:] if who.name in ln]
    finally:
        td.as_root(running_lab, "ldapmodify", input=f"dn: {dn}\nchangetype: modify\ndelete: pwdAccountLockedTime\n-\n")
        td.ldap_steps(running_lab, [{"dn": dn, "password": people.password(plan.secrets_dir, who.name)}])
    evidence.update(who=who.name, wrong=[outline(r)[-1] for r in wrong], right=outline(right), locked=locked, events=events)
    refused = ("password", 200, [PE_BADCREDENTIALS], [LOGIN_FORM])
    assert [outline(r)[-1] for r in wrong] == [refused] * 5
    assert outline(right)[-1] == refused and "redirect" not in right
    assert list(locked) == ["pwdAccountLockedTime"]
    client = running_lab.hosts[CLIENT].address
    assert [e.split("] ", 3)[-1] for e in events] == [f"Bad password for {who.name} ({client})"] * 6


@pytest.mark.control("C-DAT-02")
@pytest.mark.parametrize("case", ["tls1.3", "tls1.2-aead", "tls1.2-cbc", "tls1.1"])
def test_the_idp_speaks_https_with_tls_1_2_aead_or_1_3_only(running_lab: Lab, case: str, evidence) -> None:
    """The portal's HTTPS port, from the client's zone, with the lab certificate: TLS 1.3 and TLS
    1.2 with an AEAD suite negotiate; a CBC suite gets a handshake_failure alert and TLS 1.1 a
    protocol_version alert (RFC 8446 6.2), from nginx's OpenSSL."""
    host = idp(running_lab)
    seen = openssl.s_client(running_lab, CLIENT, str(host.address), host.service("https").port, *openssl.CASES[case])
    evidence.update(seen=seen)
    assert seen == HTTPS_POLICY[case]
