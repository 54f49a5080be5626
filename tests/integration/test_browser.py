"""Multi-factor authentication in a real browser (issue 12, C-ACC-07, PR.AC-7): Debian's chromium,
headless, driven by Playwright on the remote radiologist's computer in the internet zone
(pacslab.probes.browser), through the fw to the proxy's only published port, signs in at the IdP
(password, then a TOTP code the test computes from the person's per-lab seed) and lands on the
PACS's image viewer (orthanc-webviewer, behind the proxy's /pacs/ route and the PACS's permission
table), which shows the series of a study a modality stored under an accession number of this run.
The screenshot is the report's evidence.

The twins, in the same browser: the right password with no code, a wrong code, and the code that
has just signed the same person in (RFC 6238 5.2): the IdP refuses (PE_BADOTP, or the code form
waits), the browser never reaches the viewer, holds no proxy session, and opening the viewer again
lands on the IdP's login form. Each expectation is written out: where the browser landed, the
IdP's result codes, what the viewer's corner says, the cookies it holds.
"""

from __future__ import annotations

import secrets
from typing import Any

import pytest

from pacslab import people
from pacslab.plan import Plan
from pacslab.probes import browser, oidc
from pacslab.probes import imaging as im
from pacslab.topology import Lab

from .test_idp import PE_BADOTP, PE_FIRSTACCESS, PORTAL_LOG, idp, one, wrong_code
from .test_rproxy import CLIENT, proxy, store_study

VIEWER = "/pacs/web-viewer/app/viewer.html"
# What the study carries (pacslab.dicomsim store): the probe's patient ID, the name given, no study
# description (no order), the series description of dicomsim's synthetic series.
PATIENT_ID = "PROBE-1"
SERIES_DESCRIPTION = "pacslab synthetic CT"
SESSION_COOKIE = "mod_auth_openidc_session"


@pytest.fixture(scope="module")
def viewed(running_lab: Lab) -> dict[str, str]:
    """A one-image CT study a modality of the modality zone stores on the PACS (DICOM TLS), under an
    accession number and a patient name of this run; the PACS's id of its one series."""
    proxy(running_lab)
    name = f"VIEWER^CHECK{secrets.token_hex(3).upper()}"
    return store_study(running_lab, "BR", name) | {"patient_name": name}


def url(lab: Lab, series: str) -> str:
    return f"https://{proxy(lab).name}{VIEWER}?series={series}"


def portal_log(lab: Lab) -> list[str]:
    """The lines of the IdP portal's log (roles/idp: LemonLDAP::NG and its TOTP checker's verdicts)."""
    return im.read_from(lab, idp(lab).name, PORTAL_LOG).splitlines()


def hosts(result: dict[str, Any]) -> list[str]:
    """The hosts the browser's pages came from, in order, each once per run of pages."""
    seen: list[str] = []
    for n in result["navigations"]:
        host = n["at"].split("/")[0]
        if not seen or seen[-1] != host:
            seen.append(host)
    return seen


@pytest.mark.control("C-ACC-07")
def test_in_a_real_browser_password_and_code_open_the_viewer_on_the_study(running_lab: Lab, plan: Plan, viewed: dict[str, str],
                                                                          evidence, evidence_dir) -> None:
    """The radiologist's browser opens the viewer on the study's series: the proxy sends it to the
    IdP's login form (PE_FIRSTACCESS), the password leads to the code form, the code back to the
    proxy, which serves the viewer; the viewer's corner names the study's patient and series, and
    its canvas holds an image (more than one grey level, some of it lit)."""
    who = one(running_lab, "enabled", "radiologist")
    codes = oidc.fresh_codes(running_lab, idp(running_lab).name, plan.secrets_dir, who.name)
    logged_before = len(portal_log(running_lab))
    result = browser.open_page(running_lab, CLIENT, url(running_lab, viewed["series"]), user=who.name,
                               password=people.password(plan.secrets_dir, who.name), code=codes, screenshot=True)
    shot = evidence_dir / "C-ACC-07-viewer.png"
    shot.write_bytes(result["screenshot"])
    rp, provider = proxy(running_lab).name, idp(running_lab).name
    idp_said = [ln for ln in portal_log(running_lab)[logged_before:] if who.name in ln]
    evidence.update(who=who.name, accession=viewed["accession"], navigations=result["navigations"], forms=result["forms"],
                    final=result.get("final"), trmsg=result["trmsg"], viewer=result["viewer"], cookies=result["cookies"], error=result["error"],
                    code_step=result.get("code_step"), code_left_s=result.get("code_left_s"), idp_said=idp_said,
                    signed_in_ms=result.get("signed_in_ms"), displayed_ms=result.get("displayed_ms"),
                    screenshot=f"{evidence_dir.name}/{shot.name}")
    # where the browser stopped and what the portal logged, in the message of a failed sign-in
    stopped = {"final": result.get("final"), "trmsg": result["trmsg"], "code_step": result.get("code_step"),
               "code_left_s": result.get("code_left_s"), "idp_said": idp_said}
    assert result["error"] is None, stopped
    assert [(f["at"], f["form"], f["trmsg"]) for f in result["forms"]] == [
        (f"{provider}/oauth2/authorize", "login", [PE_FIRSTACCESS]), (f"{provider}/oauth2/authorize", "code", [])], stopped
    assert result["code_step"] in codes, stopped
    assert hosts(result) == [rp, provider, rp], stopped
    assert result["navigations"][0] == {"at": f"{rp}{VIEWER}", "method": "GET", "status": 302}
    assert result["navigations"][-2:] == [{"at": f"{rp}/oidc/redirect", "method": "GET", "status": 302},
                                          {"at": f"{rp}{VIEWER}", "method": "GET", "status": 200}]
    assert result["final"] == f"{rp}{VIEWER}"
    assert result["viewer"]["topright"] == [PATIENT_ID, viewed["patient_name"], "", SERIES_DESCRIPTION]
    canvas = result["viewer"]["canvas"]
    assert canvas["width"] > 0 and canvas["grey_levels"] > 1 and canvas["lit"] > 0.01, canvas
    assert f"{rp}:{SESSION_COOKIE}" in result["cookies"]


@pytest.mark.control("C-ACC-07")
@pytest.mark.parametrize("case", ["no-code", "wrong-code", "replayed-code"])
def test_in_a_real_browser_a_password_without_a_valid_fresh_code_never_reaches_the_viewer(
        running_lab: Lab, plan: Plan, viewed: dict[str, str], case: str, evidence) -> None:
    """The same browser and person, the right password: with no code the browser stays at the code
    form; a wrong code, or the code another browser of the same person has just signed in with, is
    refused (PE_BADOTP). Either way no proxy session cookie, no viewer, and opening the viewer again
    lands on the IdP's login form (PE_FIRSTACCESS): nothing was signed in."""
    who = one(running_lab, "enabled", "radiologist")
    password = people.password(plan.secrets_dir, who.name)
    target = url(running_lab, viewed["series"])
    first = None
    if case == "no-code":
        code = None
    elif case == "wrong-code":
        code = wrong_code(plan, who.name)
    else:
        codes = oidc.fresh_codes(running_lab, idp(running_lab).name, plan.secrets_dir, who.name)
        first = browser.open_page(running_lab, CLIENT, target, user=who.name, password=password, code=codes)
        code = codes.get(first.get("code_step"))  # the code that signed the first browser in
    result = browser.open_page(running_lab, CLIENT, target, user=who.name, password=password, code=code, again=True)
    rp, provider = proxy(running_lab).name, idp(running_lab).name
    evidence.update(who=who.name, first=first and {"final": first["final"], "viewer": first["viewer"] is not None,
                                                   "code_step": first.get("code_step")},
                    navigations=result["navigations"], forms=result["forms"], trmsg=result["trmsg"], cookies=result["cookies"],
                    again=result.get("again"))
    if first is not None:  # the code was good, once
        assert first["final"] == f"{rp}{VIEWER}" and first["viewer"] is not None and code is not None
    assert [(f["at"], f["form"], f["trmsg"]) for f in result["forms"]] == [
        (f"{provider}/oauth2/authorize", "login", [PE_FIRSTACCESS]), (f"{provider}/oauth2/authorize", "code", [])]
    # where the browser stayed: the code form, waiting; or the IdP's refusal of the code (no form)
    assert result["trmsg"] == ([] if case == "no-code" else [PE_BADOTP])
    assert result["error"] is None and result["viewer"] is None
    assert hosts(result) == [rp, provider]
    assert [c for c in result["cookies"] if SESSION_COOKIE in c] == []
    assert result["again"] == {"navigations": [{"at": f"{rp}{VIEWER}", "method": "GET", "status": 302},
                                               {"at": f"{provider}/oauth2/authorize", "method": "GET", "status": 200}],
                               "final": f"{provider}/oauth2/authorize", "trmsg": [PE_FIRSTACCESS]}
