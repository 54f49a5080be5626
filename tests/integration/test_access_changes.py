"""Two lifecycle checks served by one `up`: a device revoked at the lab CA (C-ACC-06, roles/pki)
and a person disabled in the lab definition (C-ACC-01, roles/directory and roles/idp).

Each change alone cost the suite an `up` that applies it and another that undoes it (30 to 45 s
each on the reference lab). Here the CA records the revocation first, then one `up` of a copy of
the lab folder with the person disabled applies both (the copy is kept under
.pacslab/<lab>/overlay/ like a scenario's overlay, so that it is not saved as the state to reset
to); the device enrolled again, one `up` of the lab's own definition undoes both.

The two changes converge disjoint sets of hosts (asserted): the device and the nodes whose bundles
held its anchor; the directory and the IdP. Each check names exactly what changed on its own
hosts. That a disabled person changes the converge inputs of the directory and the IdP alone, so
that nothing of it can hide among the revocation's hosts, is tests/unit/test_plan.py's check.

What the lab answered while changed and once restored is observed once, by the module's fixture;
each check asserts its own part, and skips or fails on its own: a half the lab cannot take (no
second TLS modality, no enabled person) is not applied, and a proxy session that did not end is
the person check's failure alone.
"""

from __future__ import annotations

import json
import shutil
import time
from collections.abc import Iterator
from typing import Any

import pytest
import yaml

from pacslab import cli
from pacslab.plan import SIEMS, Plan, state_dir
from pacslab.probes import imaging as im
from pacslab.probes import oidc, standins
from pacslab.topology import Host, Lab

from .test_directory import INVALID, directory, entries, first, ldap_steps, password, person, suffix_of
from .test_imaging import tls_hosts, tls_peers, tls_stations

pytestmark = pytest.mark.lifecycle

LOCK = "directory : Ensure each person disabled in the lab definition is locked until enabled again | C-ACC-01"
END = "idp : Ensure no IdP session is left to a person disabled or past their end date | C-ACC-01"
# roles/idp idp_access_token_lifetime: the proxy refreshes its access token before it ends, and the
# IdP refuses the refresh once up has ended a disabled person's IdP session.
ACCESS_TOKEN_LIFETIME = 120
PROXY_READ = "/dicom-web/studies?limit=1"


def idp_outline(lab: Lab, plan: Plan, user: str) -> list[Any] | None:
    """The steps of ``user``'s sign-in at the lab's IdP (test_idp), or None in a lab without one."""
    from . import test_idp

    if not any(h.deployed for h in lab.group("idp_servers")):
        return None
    return test_idp.outline(test_idp.sign_in(lab, plan, user, code="now"))


def proxy_sessions(lab: Lab, plan: Plan, names: list[str]) -> dict[str, str] | None:
    """Each person signed in at the lab's reverse proxy from the internet computer, password and a
    fresh code (test_rproxy): {name: the Cookie header of their proxy session}; None in a lab
    without a proxy."""
    from . import test_rproxy

    if not any(h.deployed for h in lab.group("reverse_proxies")) or not lab.hosts.get(test_rproxy.CLIENT, None):
        return None
    out = {}
    for name in names:
        result = test_rproxy.browse(lab, plan, PROXY_READ, name, "now", keep=True)
        out[name] = oidc.session_cookie(result)
    return out


def proxy_answer(lab: Lab, cookie: str) -> list[tuple[str, str, int]]:
    """The proxy's answers to a browser that sends ``cookie`` again (its redirects followed)."""
    from . import test_rproxy

    rp = next(h for h in lab.group("reverse_proxies") if h.deployed)
    return test_rproxy.hops(oidc.browse(lab, test_rproxy.CLIENT, f"https://{rp.name}{PROXY_READ}", headers={"Cookie": cookie}))


def _host_of(task: str) -> str:
    """The host of a changed task as the run's record names it: "role : task [host]"."""
    return task.rsplit("[", 1)[-1].rstrip("]")


def _revocation_half(lab: Lab) -> dict[str, Any] | None:
    """The device to revoke (the second TLS modality), the PACS, and the hosts whose bundles hold
    the device's anchor (and the siem's, when it is a log source); None in a lab without one."""
    pacs = [h for h in lab.group("pacs_servers") if h.deployed]
    stations = tls_stations(lab)
    if len(pacs) != 1 or len(stations) < 2:
        return None
    victim = stations[1]
    trusting = {h.name for h in tls_hosts(lab) if victim.name in tls_peers(lab, h)}
    if victim.name in (lab.host_vars.get(victim.name, {}).get("siem_sources") or []):  # the siem's syslog bundle holds its sources
        trusting |= {h.name for h in lab.deployed_hosts() if SIEMS in h.groups}
    return {"pacs": pacs[0], "victim": victim, "trusting": trusting}


def _person_half(lab: Lab, plan: Plan) -> dict[str, Any] | None:
    """The person to disable (the first enabled one who is no vendor), a technologist whose proxy
    session must go on, and the person's DN and own credentials; None in a lab without one."""
    if not any(h.deployed for h in lab.group("directories")):
        return None
    who = first(lab, "enabled")
    if who is None:
        return None
    other = next((p for p in lab.people if p.status() == "enabled" and "technologist" in p.roles), None)
    dn = person(suffix_of(lab), who.name)
    return {"who": who, "other": other, "dn": dn, "own": {"dn": dn, "password": password(plan, "person", who.name)}}


def _revocation_at_siem(lab: Lab, victim: Host, serial: str | None) -> list[dict[str, Any]] | dict[str, str] | None:
    """The siem's events from the CA's event log (test_siem) of the revocation of ``victim``'s
    certificate ``serial``; {"timeout": why} when none came; None in a lab whose CA ships nothing."""
    from . import test_siem

    shipping = test_siem.shipping_ca(lab)
    if shipping is None:
        return None
    ca = shipping.name
    if serial is None:
        return {"timeout": f"{victim.name} had no valid certificate to revoke"}
    try:
        return list(test_siem.wait_for("the revocation at the siem", lambda: [
            e for e in test_siem.siem_json(lab, "events", "--contains", f'"{serial}"')
            if e["host"] == ca and e["event_type"] == "certificate-revoked" and serial in json.loads(e["message"])["serials"]]))
    except AssertionError as exc:
        return {"timeout": str(exc)}


@pytest.fixture(scope="module")
def changed(running_lab: Lab, plan: Plan) -> Iterator[dict[str, Any]]:
    """Revoke the second TLS modality at the CA and disable the first enabled person in a copy of the
    lab folder; `up` that copy once; observe both changes; enrol the device again and `up` the lab's
    own definition; observe both undone. Yields what was observed (a dict; "device" or "person" is
    None where the lab could not take that half)."""
    lab = running_lab
    standins.remove(lab)  # the segmentation run's, as before every lifecycle check (conftest): two ups need not handle them
    device, who = _revocation_half(lab), _person_half(lab, plan)
    seen: dict[str, Any] = {"device": device, "person": who, "proxy_session": None}
    if device is None and who is None:
        yield seen
        return
    if device:  # the revocation check asserts it
        seen["before"] = im.dicomsim(lab, device["victim"].name, "echo")
    overlay = state_dir(lab) / "overlay" / "access-changed"
    try:
        shutil.rmtree(overlay, ignore_errors=True)
        shutil.copytree(lab.path, overlay)
        if who:
            people_file = overlay / "group_vars" / "all" / "people.yml"
            data = yaml.safe_load(people_file.read_text())
            for entry in data["lab_people"]:
                if entry["name"] == who["who"].name:
                    entry["state"] = "disabled"
            people_file.write_text(yaml.safe_dump(data, sort_keys=False))
        # both may search the PACS through the proxy
        sessions = (proxy_sessions(lab, plan, [who["who"].name, who["other"].name])
                    if who and who["other"] and "radiologist" in who["who"].roles else None)
        if device:
            seen["serial"] = next((r["serial"] for r in reversed(im.ca(lab, "inventory"))  # None: left revoked by a cut run
                                   if r["name"] == device["victim"].name and r["status"] == "valid"), None)
            seen["revocation"] = im.ca(lab, "revoke", device["victim"].name)
        seen["up"] = cli.main(["up", "--lab", str(overlay)])
        up_done = time.monotonic()
        seen["tasks"] = [t for p in json.loads((state_dir(lab) / "last-up.json").read_text())["phases"] for t in p["changed_tasks"]]
        if seen["up"] == cli.EXIT_OK:
            # what the changed lab answers; the proxy session's end, a wall-clock event, is waited for last
            if device:
                seen["revoked"] = im.dicomsim(lab, device["victim"].name, "store", "--images", "1")
                seen["bundle"] = im.read_from(lab, device["pacs"].name, "/etc/pacslab/orthanc/trusted.pem")
                seen["revocation_at_siem"] = _revocation_at_siem(lab, device["victim"], seen["serial"])
            if who:
                [seen["refused"]] = ldap_steps(lab, [who["own"]])
                seen["held"] = entries(lab, who["dn"], "pwdAccountLockedTime")[who["dn"]]
                seen["signed_in"] = idp_outline(lab, plan, who["who"].name)
            if sessions is not None:
                try:  # bounded by the access token's lifetime after the up, the checks above included
                    answers = im.wait_for("the disabled person's proxy session to end",
                                          lambda: a if (a := proxy_answer(lab, sessions[who["who"].name]))[0][2] != 200 else None,
                                          timeout=max(0.0, ACCESS_TOKEN_LIFETIME - (time.monotonic() - up_done)), every=5)
                    seen["proxy_session"] = {"seconds_after_up": round(time.monotonic() - up_done, 1), "answers": answers,
                                             "other": proxy_answer(lab, sessions[who["other"].name])}
                except TimeoutError as exc:
                    seen["proxy_session"] = {"timeout": str(exc)}
    finally:
        try:
            if device:
                im.ca(lab, "reenrol", device["victim"].name)
        finally:
            seen["restored_up"] = cli.main(["up", "--lab", str(lab.path)])
            shutil.rmtree(overlay, ignore_errors=True)
    if device:
        seen["restored"] = im.dicomsim(lab, device["victim"].name, "echo")
    if who:
        [seen["again"]] = ldap_steps(lab, [who["own"]])
    yield seen


def _person_hosts(lab: Lab) -> set[str]:
    return {directory(lab).name} | {h.name for h in lab.group("idp_servers") if h.deployed}


@pytest.mark.control("C-ACC-06")
def test_revoked_device_is_refused_until_enrolled_again(running_lab: Lab, changed: dict[str, Any], evidence) -> None:
    """Revocation is the CA's record plus `up`: bundles are rebuilt without the node's anchor and
    the consumers reload. Enrolling again gives the node a new issuer (its old anchor stays out).
    Where the CA is a log source, its event log carries the revocation of the node's certificate
    to the siem: one certificate-revoked event from the CA, the node's address its destination."""
    lab, device = running_lab, changed["device"]
    if device is None:
        pytest.skip(f"lab {lab.name!r} deploys no PACS with two TLS modalities")
    pacs, victim, trusting = device["pacs"], device["victim"], device["trusting"]
    assert changed["up"] == cli.EXIT_OK, f"the up of the changed definition failed ({changed['up']})"
    assert changed["before"]["established"], f"{victim.name} did not associate before it was revoked: {changed['before']}"
    revoked = changed["revoked"]
    if changed["person"]:  # the same up converged the directory and the IdP for the person's half
        person_hosts = _person_hosts(lab)
        assert not person_hosts & (trusting | {victim.name}), "the two changes must converge disjoint hosts to be told apart"
    else:
        person_hosts = set()
    changed_hosts = {_host_of(t) for t in changed["tasks"] if _host_of(t) not in person_hosts}
    evidence.update(revoked_established=revoked["established"], anchors_after_revocation=changed["bundle"].count("BEGIN CERTIFICATE"),
                    restored=changed["restored"]["established"], hosts_changed_by_revocation=sorted(changed_hosts),
                    trusting=sorted(trusting), revocation_at_siem=changed["revocation_at_siem"])
    assert not revoked["established"] and not revoked["stored"]
    # the PACS's peers in the lab definition, without the revoked one (reference lab: mod-ct, ovl-gw, ws-rad, vna)
    assert changed["bundle"].count("BEGIN CERTIFICATE") == len(tls_peers(lab, pacs) - {victim.name})
    # only the nodes whose bundles held the victim's anchor (reference lab: PACS, RIS, and the siem, mod-mr being a log source)
    # re-converge, and the victim itself
    assert pacs.name in changed_hosts and changed_hosts <= trusting | {victim.name}, changed_hosts
    assert changed["revocation"] == {"changed": True, "name": victim.name}
    at_siem = changed["revocation_at_siem"]
    if at_siem is not None:  # the CA's event log reached the siem (C-PRT-01), the node its destination
        assert isinstance(at_siem, list), at_siem
        assert [(e["source"], e["outcome"], e["dst_ip"], json.loads(e["message"])["name"]) for e in at_siem] == [
            ("ca-events", "revoked", str(victim.address), victim.name)]
    assert changed["restored_up"] == cli.EXIT_OK and changed["restored"]["established"]


@pytest.mark.control("C-ACC-01")
def test_a_person_disabled_in_the_definition_is_locked_out_by_the_next_up(running_lab: Lab, changed: dict[str, Any], evidence) -> None:
    """The lab definition with one enabled person set to `state: disabled`: its `up` locks them in
    the directory and, where they hold an IdP session, ends it at the IdP (nothing else changes on
    either host), and that person's own password is refused, by the directory and at the IdP. A
    proxy session they opened before that `up` ends within the access token's lifetime after it
    (the proxy's refresh refused, measured), and the browser lands on the IdP's login form; one a
    technologist opened at the same time goes on (200: a technologist may search the PACS). The
    lab's own `up` enables them again."""
    lab, who, ended = running_lab, changed["person"], changed["proxy_session"]
    if who is None:
        pytest.skip(f"lab {lab.name!r} deploys no directory or defines no enabled person who is no vendor")
    assert changed["up"] == cli.EXIT_OK, f"the up of the changed definition failed ({changed['up']})"
    dir_host = directory(lab).name
    providers = [h for h in lab.group("idp_servers") if h.deployed]
    # the device's half of the same up converged its peers and itself; these are the person's hosts
    tasks = [t for t in changed["tasks"] if _host_of(t) in _person_hosts(lab)]
    evidence.update(who=who["who"].name, changed_tasks=tasks, refused=changed["refused"], held=changed["held"],
                    again=changed["again"]["bind"], idp=changed["signed_in"], proxy_session=ended)
    assert changed["refused"] == {"bind": INVALID} and changed["held"] == {"pwdAccountLockedTime": ["000001010000Z"]}
    if changed["signed_in"] is not None:  # the IdP binds as the person too: refused at the password, with a fresh TOTP code
        from .test_idp import LOGIN_FORM, PE_BADCREDENTIALS, PE_FIRSTACCESS
        assert changed["signed_in"] == [("authorize", 200, [PE_FIRSTACCESS], [LOGIN_FORM]),
                                        ("password", 200, [PE_BADCREDENTIALS], [LOGIN_FORM])]
    if ended is None:
        assert tasks == [f"{LOCK} [{dir_host}]"]
    else:
        assert "timeout" not in ended, ended["timeout"]
        provider = providers[0]
        assert sorted(tasks) == sorted([f"{LOCK} [{dir_host}]", f"{END} [{provider.name}]"])
        rp = next(h for h in lab.group("reverse_proxies") if h.deployed)
        # the refused refresh ends the proxy's session: to the site's root, from there to the IdP's login form
        assert ended["answers"] == [(f"{rp.name}/dicom-web/studies", "GET", 302), (f"{rp.name}/", "GET", 302),
                                    (f"{provider.name}/oauth2/authorize", "GET", 200)]
        assert ended["other"] == [(f"{rp.name}/dicom-web/studies", "GET", 200)]
    assert changed["restored_up"] == cli.EXIT_OK and changed["again"] == {"bind": "success", "whoami": f"dn:{who['dn']}"}
