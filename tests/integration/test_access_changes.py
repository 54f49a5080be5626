"""Two lifecycle checks served by one `up`: a device revoked at the lab CA (C-ACC-06, roles/pki)
and a person disabled in the lab definition (C-ACC-01, roles/directory and roles/idp).

Each change alone cost the suite an `up` that applies it and another that undoes it (30 to 45 s
each on the reference lab). Here the CA records the revocation first, then one `up` of a copy of
the lab folder with the person disabled applies both (the copy is kept under
.pacslab/<lab>/overlay/ like a scenario's overlay, so that it is not saved as the state to reset
to); the device enrolled again, one `up` of the lab's own definition undoes both. The two changes
converge disjoint hosts (the device and the nodes whose bundles held its anchor; the directory and
the IdP), so each check still names exactly what its own change converged.

What the lab answered while changed and once restored is observed once, by the module's fixture;
each check asserts its own part.
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
from pacslab.topology import Lab

from .test_directory import (
    ACCESS_TOKEN_LIFETIME,
    INVALID,
    _idp_outline,
    _proxy_answer,
    _proxy_sessions,
    directory,
    entries,
    ldap_steps,
    one,
    password,
    person,
    suffix_of,
)
from .test_imaging import the, tls_hosts, tls_peers, tls_stations

pytestmark = pytest.mark.lifecycle

LOCK = "directory : Ensure each person disabled in the lab definition is locked until enabled again | C-ACC-01"
END = "idp : Ensure no IdP session is left to a person disabled or past their end date | C-ACC-01"


def _host_of(task: str) -> str:
    """The host of a changed task as the run's record names it: "role : task [host]"."""
    return task.rsplit("[", 1)[-1].rstrip("]")


@pytest.fixture(scope="module")
def changed(running_lab: Lab, plan: Plan) -> Iterator[dict[str, Any]]:
    """Revoke the second TLS modality at the CA and disable the first enabled person in a copy of the
    lab folder; `up` that copy once; observe both changes; enrol the device again and `up` the lab's
    own definition; observe both undone. Yields what was observed (a dict)."""
    lab = running_lab
    suffix = suffix_of(lab)
    # the device: its peers' bundles hold its anchor (and the siem's, when it is a log source)
    pacs = the(lab, "pacs_servers")
    victim = tls_stations(lab)[1]
    trusting = {h.name for h in tls_hosts(lab) if victim.name in tls_peers(lab, h)}
    if victim.name in (lab.host_vars.get(victim.name, {}).get("siem_sources") or []):  # the siem's syslog bundle holds its sources
        trusting |= {h.name for h in lab.deployed_hosts() if SIEMS in h.groups}
    # the person, and a technologist whose proxy session must go on
    who = one(lab, "enabled")
    other = next((p for p in lab.people if p.status() == "enabled" and "technologist" in p.roles), None)
    dn = person(suffix, who.name)
    own = {"dn": dn, "password": password(plan, "person", who.name)}
    overlay = state_dir(lab) / "overlay" / "access-changed"
    shutil.rmtree(overlay, ignore_errors=True)
    shutil.copytree(lab.path, overlay)
    people_file = overlay / "group_vars" / "all" / "people.yml"
    data = yaml.safe_load(people_file.read_text())
    for entry in data["lab_people"]:
        if entry["name"] == who.name:
            entry["state"] = "disabled"
    people_file.write_text(yaml.safe_dump(data, sort_keys=False))

    seen: dict[str, Any] = {"pacs": pacs, "victim": victim, "trusting": trusting, "who": who, "dn": dn, "proxy_session": None}
    assert im.dicomsim(lab, victim.name, "echo")["established"], f"{victim.name} should associate before it is revoked"
    # both may search the PACS through the proxy
    sessions = _proxy_sessions(lab, plan, [who.name, other.name]) if other and "radiologist" in who.roles else None
    im.ca(lab, "revoke", victim.name)
    try:
        seen["up"] = cli.main(["up", "--lab", str(overlay)])
        up_done = time.monotonic()
        seen["tasks"] = [t for p in json.loads((state_dir(lab) / "last-up.json").read_text())["phases"] for t in p["changed_tasks"]]
        if seen["up"] == cli.EXIT_OK:
            seen["revoked"] = im.dicomsim(lab, victim.name, "store", "--images", "1")
            seen["bundle"] = im.read_from(lab, pacs.name, "/etc/pacslab/orthanc/trusted.pem")
            [seen["refused"]] = ldap_steps(lab, [own])
            seen["held"] = entries(lab, dn, "pwdAccountLockedTime")[dn]
            seen["signed_in"] = _idp_outline(lab, plan, who.name)
            if sessions is not None:  # within the access token's lifetime after the up, the checks above included
                answers = im.wait_for("the disabled person's proxy session to end",
                                      lambda: a if (a := _proxy_answer(lab, sessions[who.name]))[0][2] != 200 else None,
                                      timeout=max(0.0, ACCESS_TOKEN_LIFETIME - (time.monotonic() - up_done)), every=5)
                seen["proxy_session"] = {"seconds_after_up": round(time.monotonic() - up_done, 1), "answers": answers,
                                         "other": _proxy_answer(lab, sessions[other.name])}
    finally:
        im.ca(lab, "reenrol", victim.name)
        seen["restored_up"] = cli.main(["up", "--lab", str(lab.path)])
        shutil.rmtree(overlay, ignore_errors=True)
    seen["restored"] = im.dicomsim(lab, victim.name, "echo")
    [seen["again"]] = ldap_steps(lab, [own])
    yield seen


@pytest.mark.control("C-ACC-06")
def test_revoked_device_is_refused_until_enrolled_again(running_lab: Lab, changed: dict[str, Any], evidence) -> None:
    """Revocation is the CA's record plus `up`: bundles are rebuilt without the node's anchor and
    the consumers reload. Enrolling again gives the node a new issuer (its old anchor stays out)."""
    lab, pacs, victim, trusting = running_lab, changed["pacs"], changed["victim"], changed["trusting"]
    assert changed["up"] == cli.EXIT_OK
    revoked = changed["revoked"]
    # the person's half of the same up converged the directory and the IdP; every other change is the revocation's
    person_hosts = {directory(lab).name} | {h.name for h in lab.group("idp_servers") if h.deployed}
    assert not person_hosts & (trusting | {victim.name}), "the two changes must converge disjoint hosts to be told apart"
    changed_hosts = {_host_of(t) for t in changed["tasks"] if _host_of(t) not in person_hosts}
    evidence.update(revoked_established=revoked["established"], anchors_after_revocation=changed["bundle"].count("BEGIN CERTIFICATE"),
                    restored=changed["restored"]["established"], hosts_changed_by_revocation=sorted(changed_hosts),
                    trusting=sorted(trusting))
    assert not revoked["established"] and not revoked["stored"]
    # the PACS's peers in the lab definition, without the revoked one (reference lab: mod-ct, ovl-gw, ws-rad, vna)
    assert changed["bundle"].count("BEGIN CERTIFICATE") == len(tls_peers(lab, pacs) - {victim.name})
    # only the nodes whose bundles held the victim's anchor (reference lab: PACS, RIS, and the siem, mod-mr being a log source)
    # re-converge, and the victim itself
    assert pacs.name in changed_hosts and changed_hosts <= trusting | {victim.name}, changed_hosts
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
    lab, dn, ended = running_lab, changed["dn"], changed["proxy_session"]
    assert changed["up"] == cli.EXIT_OK
    dir_host = directory(lab).name
    providers = [h for h in lab.group("idp_servers") if h.deployed]
    # the device's half of the same up converged its peers and itself; these are the person's hosts
    tasks = [t for t in changed["tasks"] if _host_of(t) in {dir_host} | {h.name for h in providers}]
    evidence.update(who=changed["who"].name, changed_tasks=tasks, refused=changed["refused"], held=changed["held"],
                    again=changed["again"]["bind"], idp=changed["signed_in"], proxy_session=ended)
    assert changed["refused"] == {"bind": INVALID} and changed["held"] == {"pwdAccountLockedTime": ["000001010000Z"]}
    if changed["signed_in"] is not None:  # the IdP binds as the person too: refused at the password, with a fresh TOTP code
        from .test_idp import LOGIN_FORM, PE_BADCREDENTIALS, PE_FIRSTACCESS
        assert changed["signed_in"] == [("authorize", 200, [PE_FIRSTACCESS], [LOGIN_FORM]),
                                        ("password", 200, [PE_BADCREDENTIALS], [LOGIN_FORM])]
    if ended is None:
        assert tasks == [f"{LOCK} [{dir_host}]"]
    else:
        provider = providers[0]
        assert sorted(tasks) == sorted([f"{LOCK} [{dir_host}]", f"{END} [{provider.name}]"])
        rp = next(h for h in lab.group("reverse_proxies") if h.deployed)
        # the refused refresh ends the proxy's session: to the site's root, from there to the IdP's login form
        assert ended["answers"] == [(f"{rp.name}/dicom-web/studies", "GET", 302), (f"{rp.name}/", "GET", 302),
                                    (f"{provider.name}/oauth2/authorize", "GET", 200)]
        assert ended["other"] == [(f"{rp.name}/dicom-web/studies", "GET", 200)]
    assert changed["restored_up"] == cli.EXIT_OK and changed["again"] == {"bind": "success", "whoami": f"dn:{dn}"}
