"""The DMZ reverse proxy (issue 12, host `rproxy`): Apache with mod_auth_openidc (roles/rproxy),
C-ACC-02, C-ACC-07, C-ACC-03, C-DAT-02.

Every request comes from the remote radiologist's computer in the internet zone (flow F07: it may
reach rproxy:443 and nothing else). The computer finds the IdP's name at the proxy, which publishes
it (split horizon, pacslab.plan.web_names): the whole sign-in, the IdP's pages included, crosses the
proxy. pacslab.probes.oidc.browse is the person's browser: it follows redirects, fills the IdP's
login and second-factor forms and keeps its cookies. Each outcome is written out: where each step
landed and its HTTP status, LemonLDAP's result codes (test_idp), the DICOMweb answer and the PACS's
own record of a study a modality stored for the check, read through its REST API on the PACS host.
"""

from __future__ import annotations

import json
import secrets
from typing import Any

import pytest

from pacslab import people, response
from pacslab.plan import Plan
from pacslab.probes import imaging as im
from pacslab.probes import oidc, openssl
from pacslab.probes.https import basic_auth
from pacslab.topology import Host, Lab

from .test_idp import HTTPS_POLICY, PE_BADOTP, PE_FIRSTACCESS, idp, one, secret

# The client: a person's own computer in the internet zone.
CLIENT = "remote-rad"
# The QIDO-RS attributes compared (DICOM PS3.18 10.6): Study Instance UID, Accession Number.
STUDY_UID, ACCESSION = "0020000D", "00080050"
ACCESS_LOG = "/var/log/pacslab/rproxy-access.log"

CONNECT_ALL = r"""
import concurrent.futures, json, socket, sys
def attempt(target):
    try:
        socket.create_connection((target[0], target[1]), 4).close(); return "open"
    except TimeoutError: return "dropped"
    except ConnectionRefusedError: return "refused"
    except OSError as e: return f"error {e}"
targets = json.load(sys.stdin)
with concurrent.futures.ThreadPoolExecutor(len(targets) or 1) as pool:
    print(json.dumps(list(pool.map(attempt, [tuple(t) for t in targets]))))
"""


def connect(lab: Lab, targets: list[tuple[str, int]]) -> list[str]:
    """TCP connections from the client to each (address, port), at once: "open", "dropped" (no
    answer in 4 s), "refused" (a reset) or "error ..."."""
    return list(json.loads(im.exec_in(lab, CLIENT, "python3", "-c", CONNECT_ALL, input=json.dumps(targets))))


def proxy(lab: Lab) -> Host:
    hosts = [h for h in lab.group("reverse_proxies") if h.deployed]
    if not hosts or CLIENT not in lab.hosts or not lab.hosts[CLIENT].deployed:
        pytest.skip(f"lab {lab.name!r} deploys no reverse proxy or no {CLIENT}")
    return hosts[0]


def pacs(lab: Lab) -> Host:
    return next(h for h in lab.group("pacs_servers") if h.deployed)


def store_study(lab: Lab, prefix: str = "RP", patient_name: str | None = None) -> dict[str, str]:
    """A study a modality of the modality zone stores on the PACS (DICOM TLS), one CT image, with an
    accession number of this run (``prefix`` and six hex digits) and, when given, that Patient's
    Name: its UID as the PACS's REST API (not DICOMweb) tells, the accession, the PACS's ids of the
    study, of its one series and of its instance."""
    device = next((h for h in lab.group("modalities") if h.deployed and h.zone == "modality"), None)
    if device is None:
        pytest.skip(f"lab {lab.name!r} deploys no modality in the modality zone")
    accession = f"{prefix}{secrets.token_hex(3).upper()}"
    name = ["--patient-name", patient_name] if patient_name else []
    im.dicomsim(lab, device.name, "store", "--images", "1", "--modality", "CT", "--accession", accession, *name)
    found = im.wait_for(f"{accession} on the PACS", lambda: im.find_study(lab, pacs(lab).name, accession), timeout=60)
    record = im.orthanc(lab, pacs(lab).name, f"/studies/{found[0]}")
    return {"uid": record["MainDicomTags"]["StudyInstanceUID"], "accession": accession, "id": found[0], "series": record["Series"][0],
            "instance": im.study_instances(lab, pacs(lab).name, found[0])[0]["id"]}


@pytest.fixture(scope="module")
def study(running_lab: Lab) -> dict[str, str]:
    return store_study(running_lab)


def browse(lab: Lab, plan: Plan, path: str, user: str | None = None, code: str | None = None, **kw: Any) -> dict[str, Any]:
    """The person's browser opening https://<proxy><path>; with ``user``, their own password and
    ``code`` ("now": a TOTP code of theirs the IdP has not accepted yet)."""
    if code == "now":
        assert user is not None
        code = oidc.fresh_code(lab, idp(lab).name, plan.secrets_dir, user)
    password = people.password(plan.secrets_dir, user) if user else None
    return oidc.browse(lab, CLIENT, f"https://{proxy(lab).name}{path}", user=user, password=password, code=code, **kw)


def hops(result: dict[str, Any]) -> list[tuple[str, str, int]]:
    """Each answer as (host/path, method, HTTP status)."""
    return [(s["at"], s.get("method", ""), s.get("status", 0)) for s in result["steps"]]


@pytest.mark.control("C-ACC-02")
def test_from_the_internet_only_the_proxy_s_https_port_answers(running_lab: Lab, evidence) -> None:
    """Every service of every deployed host, dialled from the internet zone: rproxy:443 opens, every
    other one is dropped by the fw (no answer at all, not even a reset). The dial is a port scan: it
    runs in a window of authorised activity, so that the siem's port-scan alert quarantines nobody."""
    rp = proxy(running_lab)
    targets = [(str(h.address), s.port) for h in running_lab.deployed_hosts() if h.address and h.zone != "internet"
               for s in h.services if s.proto == "tcp"]
    with response.authorised(running_lab, "the exposure check's dial from the internet (tests/integration)",
                             [str(running_lab.hosts[CLIENT].address)], by="pacslab-tests"):
        outcomes = dict(zip([f"{a}:{p}" for a, p in targets], connect(running_lab, targets), strict=True))
    evidence.update(outcomes=outcomes)
    expected = {t: "dropped" for t in outcomes} | {f"{rp.address}:{rp.service('https').port}": "open"}
    assert outcomes == expected


@pytest.mark.control("C-ACC-02")
def test_a_request_without_a_session_is_sent_to_the_idp_published_by_the_proxy(running_lab: Lab, plan: Plan, evidence) -> None:
    """No session: the proxy answers a browser 302 to the IdP's authorization endpoint, which the
    internet computer reaches through the proxy (the IdP's name is the proxy's address there), where
    the IdP shows its login form; a script's request (no HTML accepted) gets 401. Nothing of the
    PACS is passed."""
    rp, provider = proxy(running_lab), idp(running_lab)
    result = browse(running_lab, plan, "/dicom-web/studies")
    script = browse(running_lab, plan, "/dicom-web/studies", headers={"Accept": "application/dicom+json"})
    evidence.update(hops=hops(result), final=result["final"], script=hops(script))
    assert hops(result) == [(f"{rp.name}/dicom-web/studies", "GET", 302), (f"{provider.name}/oauth2/authorize", "GET", 200)]
    assert result["steps"][-1]["trmsg"] == [PE_FIRSTACCESS]
    assert not [c for c in result["cookies"] if "mod_auth_openidc_session" in c]
    # a script (it accepts no HTML) is not sent to a login page it cannot use: 401
    assert hops(script) == [(f"{rp.name}/dicom-web/studies", "GET", 401)]


@pytest.mark.control("C-ACC-07")
@pytest.mark.control("C-ACC-03")
def test_a_radiologist_with_password_and_code_reads_a_study_through_the_proxy(running_lab: Lab, plan: Plan, study: dict[str, str],
                                                                               evidence) -> None:
    """Password and a fresh TOTP code at the IdP (through the proxy), back to the proxy's redirect
    URI, then the original request: a QIDO-RS search by accession number answers the study the
    PACS holds under it. With the same session, a write (POST) is refused with 403 and nothing is
    stored (the PACS's permission table refuses it: a radiologist may not upload); a path no route
    publishes answers 404; an Authorization header the browser sends itself (the PACS
    administrator with a wrong password, which the PACS answers 401) does not replace the proxy's
    own account: the answer is the same (forged identity headers: test_permissions). The proxy's access log
    names the person and their roles, and holds no query string: the code the IdP sent back is not
    in it. "Nothing stored": the modalities go on acquiring meanwhile, so every instance the PACS
    gained in that time is one whose Origin (the metadata Orthanc writes with the instance, in the
    same transaction) is the DICOM protocol, none the REST API."""
    who = one(running_lab, "enabled", "radiologist")
    held = im.instance_ids(running_lab, pacs(running_lab).name)
    query = f"/dicom-web/studies?AccessionNumber={study['accession']}"
    rp = proxy(running_lab)
    forged = {"X-Pacslab-User": "someone-else", "X-Pacslab-Roles": "pacs-admin", "Authorization": "Basic cGFjc2xhYi1hZG1pbjp4"}
    logged_before = len(im.read_from(running_lab, rp.name, ACCESS_LOG).splitlines())
    result = browse(running_lab, plan, query, who.name, "now", then=[
        {"url": f"https://{rp.name}/dicom-web/studies", "method": "POST", "headers": {"Content-Type": "application/dicom"}, "body": "x"},
        {"url": f"https://{rp.name}/system"},
        {"url": f"https://{rp.name}{query}", "headers": forged},
    ])
    evidence.update(who=who.name, hops=hops(result), final=result["final"], then=result["then"])
    provider = idp(running_lab)
    assert [h[0].split("/")[0] for h in hops(result)][:2] == [rp.name, provider.name]
    assert hops(result)[-2:] == [(f"{rp.name}/oidc/redirect", "GET", 302), (f"{rp.name}/dicom-web/studies", "GET", 200)]
    found = result["final"]["json"]
    assert [(s[STUDY_UID]["Value"], s[ACCESSION]["Value"]) for s in found] == [([study["uid"]], [study["accession"]])]
    post, other, with_forged = result["then"]
    assert (post["status"], other["status"], with_forged["status"]) == (403, 404, 200)
    assert with_forged["json"] == found
    gained = {i: im.instance_origin(running_lab, pacs(running_lab).name, i) for i in im.instance_ids(running_lab, pacs(running_lab).name) - held}
    assert {i: origin for i, origin in gained.items() if origin != "DicomProtocol"} == {}
    # the proxy logged the person and their roles, and the path back from the IdP without its query (the code)
    logged = im.read_from(running_lab, rp.name, ACCESS_LOG).splitlines()[logged_before:]
    assert [ln.split(" ", 2)[2] for ln in logged if "/oidc/redirect" in ln] == ['"GET /oidc/redirect HTTP/1.1" 302 user=- roles=-']
    assert f'"GET /dicom-web/studies HTTP/1.1" 200 user={who.name} roles={",".join(sorted(who.roles))}' in [ln.split(" ", 2)[2] for ln in logged]


@pytest.mark.control("C-ACC-02")
def test_a_proxy_session_outlives_a_restart_of_the_proxy_and_a_forged_one_does_not(running_lab: Lab, plan: Plan, evidence) -> None:
    """The session is an encrypted cookie whose key comes from the lab's passphrase: after Apache
    restarts, the same cookies are still a session (200, no hop to the IdP); the same cookies with
    one character of the session changed are none (302 to the IdP's login form)."""
    who = one(running_lab, "enabled", "radiologist")
    rp = proxy(running_lab)
    first = browse(running_lab, plan, "/dicom-web/studies?limit=1", who.name, "now", keep=True)
    im.exec_in(running_lab, rp.name, "supervisorctl", "restart", "apache2")
    port = (str(rp.address), rp.service("https").port)
    im.wait_for("the proxy's port", lambda: connect(running_lab, [port]) == ["open"] or None, timeout=30, every=1)
    cookie = oidc.session_cookie(first)
    jar = dict(part.split("=", 1) for part in cookie.split("; "))
    longest = max(jar, key=lambda k: len(jar[k]))
    changed = jar[longest][:-8] + ("A" if jar[longest][-8] != "A" else "B") + jar[longest][-7:]
    forged = "; ".join(f"{k}={changed if k == longest else v}" for k, v in sorted(jar.items()))
    again = oidc.browse(running_lab, CLIENT, f"https://{rp.name}/dicom-web/studies?limit=1", headers={"Cookie": cookie})
    other = oidc.browse(running_lab, CLIENT, f"https://{rp.name}/dicom-web/studies?limit=1", headers={"Cookie": forged})
    evidence.update(who=who.name, first=hops(first), cookies=sorted(jar), after_restart=hops(again), forged=hops(other))
    assert hops(first)[-1] == (f"{rp.name}/dicom-web/studies", "GET", 200)
    assert hops(again) == [(f"{rp.name}/dicom-web/studies", "GET", 200)]
    assert hops(other) == [(f"{rp.name}/dicom-web/studies", "GET", 302), (f"{idp(running_lab).name}/oauth2/authorize", "GET", 200)]


@pytest.mark.control("C-ACC-07")
def test_a_password_without_a_valid_code_gets_no_proxy_session(running_lab: Lab, plan: Plan, evidence) -> None:
    """The right password and a wrong code: the IdP refuses the code (PE_BADOTP), the browser never
    comes back to the proxy with a code, holds no proxy session, and its next request is sent to
    the IdP again."""
    who = one(running_lab, "enabled", "radiologist")
    rp = proxy(running_lab)
    result = browse(running_lab, plan, "/dicom-web/studies", who.name, "000000",
                    then=[{"url": f"https://{rp.name}/dicom-web/studies"}])
    evidence.update(who=who.name, hops=hops(result), then=result["then"], cookies=result["cookies"])
    assert result["steps"][-1]["trmsg"] == [PE_BADOTP] and hops(result)[-1][2] == 200
    assert not [h for h in hops(result) if h[0].startswith(f"{rp.name}/oidc/redirect")]
    assert not [c for c in result["cookies"] if "mod_auth_openidc_session" in c]
    assert result["then"][0]["status"] == 302


@pytest.mark.control("C-ACC-03")
def test_a_role_the_route_does_not_admit_is_refused_by_the_proxy(running_lab: Lab, plan: Plan, evidence) -> None:
    """An auditor signs in (the IdP admits the role to the proxy) but the DICOMweb route admits the
    roles that work with images only: 403 from the proxy, nothing passed to the PACS (its decision
    log gains no line naming the auditor)."""
    who = one(running_lab, "enabled", "auditor")
    rp = proxy(running_lab)
    decided = im.orthanc_event_count(running_lab, pacs(running_lab).name)
    result = browse(running_lab, plan, "/dicom-web/studies", who.name, "now")
    evidence.update(who=who.name, hops=hops(result), final=result["final"])
    assert hops(result)[-2:] == [(f"{rp.name}/oidc/redirect", "GET", 302), (f"{rp.name}/dicom-web/studies", "GET", 403)]
    events = im.orthanc_events(running_lab, pacs(running_lab).name, decided)
    assert [e for e in events if e.get("user") == who.name] == []


@pytest.mark.control("C-DAT-02")
@pytest.mark.control("C-ACC-02")
@pytest.mark.parametrize("case", ["tls1.3", "tls1.2-aead", "tls1.2-cbc", "tls1.1"])
def test_the_proxy_speaks_https_with_tls_1_2_aead_or_1_3_only(running_lab: Lab, case: str, evidence) -> None:
    """The published port, from the internet zone, with the lab certificate: TLS 1.3 and TLS 1.2
    with an AEAD suite negotiate; a CBC suite gets a handshake_failure alert and TLS 1.1 a
    protocol_version alert (RFC 8446 6.2), from Apache's mod_ssl."""
    rp = proxy(running_lab)
    seen = openssl.s_client(running_lab, CLIENT, str(rp.address), rp.service("https").port, "-servername", rp.name, *openssl.CASES[case])
    evidence.update(seen=seen)
    assert seen == HTTPS_POLICY[case]


# Orthanc's packaged defaults: the account Orthanc makes itself when remote access is on and no
# user is registered (orthanc:orthanc), and the sample user of its default configuration file.
ORTHANC_DEFAULTS = [("orthanc", "orthanc"), ("alice", "alicePassword")]


@pytest.mark.control("C-ACC-01")
@pytest.mark.parametrize("backend", ["pacs_servers", "vna_servers"])
def test_orthanc_s_default_credentials_are_refused_at_each_backend(running_lab: Lab, plan: Plan, backend: str, evidence) -> None:
    """From the proxy, the only host whose flows reach an Orthanc's HTTPS front (F05b, F05c), with the
    proxy's certificate, which the front requires of other hosts: the packaged default accounts and
    no account at all get 401 with Orthanc's Basic challenge; the proxy's own account of that
    backend naming a PACS administrator, as the proxy does (the twin: the same request can succeed;
    the permission table admits settings to that role), gets 200."""
    rp = proxy(running_lab)
    target = next((h for h in running_lab.group(backend) if h.deployed), None)
    if target is None:
        pytest.skip(f"lab {running_lab.name!r} deploys no host of {backend}")
    own = (rp.name, secret(plan, f"orthanc-{target.name}-{rp.name}"))  # roles/orthanc: the proxy's account bears its name
    url = f"https://{target.name}:{target.service('https').port}/system"
    admin = {"X-Pacslab-User": "adm-check", "X-Pacslab-Roles": "pacs-admin"}
    seen = basic_auth(running_lab, rp.name, [{"url": url, "account": a, "headers": admin, "cert": True} for a in [*ORTHANC_DEFAULTS, None, own]])
    labels = [a[0] if a else "no account" for a in ORTHANC_DEFAULTS] + ["no account", "the proxy's own account"]
    evidence.update(url=url, answers=dict(zip(labels, seen, strict=True)))
    challenge = 'Basic realm="Orthanc Secure Area"'
    assert seen == [[401, challenge], [401, challenge], [401, challenge], [200, None]]
