"""A person's real browser: Debian's chromium, headless, driven by Playwright, on a lab host that
carries both (images/client: the internet zone's computers), or in a throw-away container of that
image inside another host's network namespace (``open_page``'s ``browser_image``).

The browser is a new one each time: a fresh profile whose certificate store (the NSS database
Chromium reads on Linux, in the profile's home) trusts the lab root the host was given
(/etc/pacslab/tls/root.pem, read from that host) and nothing of the lab besides, no cookie, no cache. It opens a URL,
and wherever it lands on LemonLDAP::NG's pages it does what the person would: the login form gets
user and password, the second-factor form the TOTP code (RFC 6238: the one given, or, of codes
given by step, the one of the step it gets there in), each once and only when given;
a person without a code stops at the code form. When it lands on the image viewer
(orthanc-webviewer's viewer.html) it waits until the viewer has drawn the first image, then reads
what the viewer shows: the lines of its top-right corner (patient ID, patient name, study and
series description) and the canvas's pixels (its size, how many grey levels it holds, the share of
pixels that are not black).

Secrets (password, code) reach the script on stdin, never in argv. Timings are milliseconds from
the first navigation: when the browser came back from the IdP (the first answer from the URL's host
after it left it: "signed_in_ms") and when the viewer had drawn ("displayed_ms").
"""

from __future__ import annotations

import base64
import json
from typing import Any

from .. import people
from ..docker import docker
from ..plan import LABEL_LAB, LABEL_ROLE
from ..redact import redact
from ..topology import Lab
from . import imaging as im

CHROMIUM = "/usr/bin/chromium"
CA = "/etc/pacslab/tls/root.pem"

SCRIPT = r"""
import base64, json, os, subprocess, sys, tempfile, time, urllib.parse
from playwright.sync_api import sync_playwright, Error as PlaywrightError, TimeoutError as PlaywrightTimeout

req = json.load(sys.stdin)
out = {"navigations": [], "forms": [], "trmsg": [], "viewer": None, "tables": [], "cookies": [], "error": None}

def where(url):
    u = urllib.parse.urlsplit(url)
    return u.netloc + u.path

home = tempfile.mkdtemp(prefix="pacslab-browser-")
# the profile's certificate store: Chromium on Linux takes locally trusted roots from NSS only
db = "sql:" + os.path.join(home, ".pki", "nssdb")
os.makedirs(os.path.join(home, ".pki", "nssdb"))
subprocess.run(["certutil", "-N", "-d", db, "--empty-password"], check=True, capture_output=True)
ca = os.path.join(home, "lab-root.pem")
with open(ca, "w") as f:
    f.write(req["ca_pem"])
subprocess.run(["certutil", "-A", "-d", db, "-n", "lab root", "-t", "C,,", "-i", ca], check=True, capture_output=True)

# the code to type now: the one given, or, of the codes given by RFC 6238 step, the current
# step's, else the next one's (a verifier that takes one step either side accepts both)
def code_now():
    if "codes" not in req:
        return req.get("code")
    now, length = time.time(), req["totp_step"]
    step = int(now // length)
    for s in (step, step + 1):
        if str(s) in req["codes"]:
            out["code_step"], out["code_left_s"] = s, round((step + 1) * length - now, 1)
            return req["codes"][str(s)]
    out["code_step"] = None
    return None

start = time.monotonic()
def ms():
    return round((time.monotonic() - start) * 1000)

with sync_playwright() as p:
    browser = p.chromium.launch(executable_path=req["chromium"], args=["--no-sandbox"], env={"HOME": home, "PATH": os.environ["PATH"]})
    context = browser.new_context(viewport={"width": 1280, "height": 800})
    page = context.new_page()
    home_host, away = urllib.parse.urlsplit(req["url"]).netloc, []

    # every page the browser navigates to (redirects included), with its HTTP status; the first
    # answer from the URL's host after the browser left it is the sign-in's return
    def navigated(r):
        if not (r.request.is_navigation_request() and r.request.frame == page.main_frame):
            return
        host = urllib.parse.urlsplit(r.url).netloc
        if host != home_host:
            away.append(host)
        elif away and "signed_in_ms" not in out:
            out["signed_in_ms"] = ms()
        out["navigations"].append({"at": where(r.url), "method": r.request.method, "status": r.status})

    page.on("response", navigated)
    try:
        start = time.monotonic()
        page.goto(req["url"], wait_until="load", timeout=req["timeout_ms"])
        used = set()
        for _ in range(4):
            page.wait_for_load_state("load")
            codes = [int(c) for c in page.eval_on_selector_all("[trmsg]", "els => els.map(e => e.getAttribute('trmsg'))") if c and c.isdigit()]
            out["trmsg"] = codes
            if page.locator("input[name=user]").count() and page.locator("input[name=password]").count():
                form, fields = "login", {"user": req.get("user"), "password": req.get("password")}
            elif page.locator("input[name=code]").count():
                form, fields = "code", {"code": code_now()}
            else:
                break
            out["forms"].append({"at": where(page.url), "form": form, "trmsg": codes})
            if form in used or None in fields.values():
                break
            used.add(form)
            for name, value in fields.items():
                page.fill(f"input[name={name}]", value)
            with page.expect_navigation(wait_until="load", timeout=30000):
                page.locator(f"input[name={next(iter(fields))}]").press("Enter")
        out["final"] = where(page.url)
        out["title"] = page.title()
        out["tables"] = page.evaluate(
            "Array.from(document.querySelectorAll('table[id]')).map(t => ({id: t.id,"
            " rows: Array.from(t.tBodies).flatMap(b => Array.from(b.rows)).map(r => Array.from(r.cells).map(c => c.innerText.trim()))}))")
        if "/web-viewer/app/viewer.html" in page.url:
            # the viewer fills its top-right corner from the series' record, then draws the first image
            page.wait_for_function("document.querySelectorAll('#topright span span').length > 0", timeout=30000)
            page.wait_for_function(
                "(() => { const c = document.querySelector('#dicomImage canvas'); if (!c || !c.width) return false;"
                " const d = c.getContext('2d').getImageData(0, 0, c.width, c.height).data;"
                " for (let i = 0; i < d.length; i += 4) if (d[i] || d[i+1] || d[i+2]) return true; return false; })()",
                timeout=30000)
            out["displayed_ms"] = ms()
            out["viewer"] = page.evaluate(
                "(() => { const c = document.querySelector('#dicomImage canvas');"
                " const d = c.getContext('2d').getImageData(0, 0, c.width, c.height).data;"
                " const levels = new Set(); let lit = 0;"
                " for (let i = 0; i < d.length; i += 4) { levels.add(d[i]); if (d[i] || d[i+1] || d[i+2]) lit++; }"
                " return {topright: Array.from(document.querySelectorAll('#topright span span')).map(s => s.textContent),"
                "         canvas: {width: c.width, height: c.height, grey_levels: levels.size, lit: lit / (d.length / 4)}}; })()")
    except PlaywrightError as exc:  # a page that never came (timeout), or a network or TLS error
        out["error"] = ("timeout: " if isinstance(exc, PlaywrightTimeout) else "") + str(exc).splitlines()[0]
        out["final"] = where(page.url)
    if req.get("again") and not out["error"]:
        # the same browser opens the URL once more: where a session (or none) takes it
        before = len(out["navigations"])
        try:
            page.goto(req["url"], wait_until="load", timeout=30000)
            out["again"] = {"navigations": out["navigations"][before:], "final": where(page.url),
                            "trmsg": [int(c) for c in page.eval_on_selector_all("[trmsg]", "els => els.map(e => e.getAttribute('trmsg'))")
                                      if c and c.isdigit()]}
        except PlaywrightError as exc:
            out["again"] = {"navigations": out["navigations"][before:], "error": str(exc).splitlines()[0]}
        del out["navigations"][before:]
    if req.get("screenshot"):
        out["screenshot"] = base64.b64encode(page.screenshot(full_page=False)).decode()
    out["cookies"] = sorted(c["domain"].lstrip(".") + ":" + c["name"] for c in context.cookies())
    browser.close()
print(json.dumps(out))
"""


def open_page(lab: Lab, from_host: str, url: str, *, user: str | None = None, password: str | None = None,
              code: str | dict[int, str] | None = None, again: bool = False, screenshot: bool = False, timeout: float = 120,
              page_timeout: float = 30, browser_image: str | None = None) -> dict[str, Any]:
    """Open ``url`` in a new headless chromium on ``from_host``, signing in at the IdP with what is
    given (see the module's docstring). The browser runs in ``from_host`` itself (a lab container
    with images/client), or, given ``browser_image`` (the client image's tag), in a throw-away
    container of that image inside ``from_host``'s network namespace: the same address, routes and
    /etc/hosts, for a host whose own image carries no browser (a DICOM workstation: least
    functionality). Either way the profile trusts the root ``from_host`` was given. ``code`` is
    one TOTP code, or the codes by RFC 6238 step (pacslab.probes.oidc.fresh_codes), of which the
    browser types the current step's (or the next one's) when it reaches the code form.

    Returns {"navigations": [{at: host/path, method, status}], "forms": [{at, form: "login" |
    "code", trmsg: [LemonLDAP result codes on that page]}], "trmsg": the codes on the last page,
    "final": host/path where the browser stayed, "title", "tables": [{id, rows: [[cell text]]}]
    (every table with an id on the last page, body rows only), "viewer": None or {"topright": [str],
    "canvas": {width, height, grey_levels, lit (0..1)}}, "cookies": ["domain:name"],
    "signed_in_ms", "displayed_ms" (when reached), "code_step" and "code_left_s" (with codes by
    step, at the code form: the step typed, None when none fit, and the seconds the current step
    had left), "screenshot": PNG bytes (with ``screenshot``,
    the last page the browser showed), "again" (with ``again``: the same browser opens ``url``
    once more; {navigations, final, trmsg} or {navigations, error}; "navigations" and "final" above
    are from before), "error": None, "timeout: ..." (the first page did not come within
    ``page_timeout`` seconds, or a later one within 30) or the browser's network or TLS error
    (net::ERR_...)}. Raises RuntimeError when the browser itself could not run (the probe's exit
    status)."""
    request: dict[str, Any] = {"ca_pem": im.read_from(lab, from_host, CA), "chromium": CHROMIUM, "url": url, "again": again,
                               "screenshot": screenshot, "timeout_ms": round(page_timeout * 1000)}
    for key, value in (("user", user), ("password", password), ("code", code)):
        if isinstance(value, dict):
            request["codes"], request["totp_step"] = {str(step): c for step, c in value.items()}, people.TOTP_STEP
        elif value is not None:
            request[key] = value
    if browser_image is None:
        printed = im.exec_in(lab, from_host, "python3", "-c", SCRIPT, input=json.dumps(request), timeout=timeout)
    else:
        proc = docker("run", "--rm", "-i", "--label", f"{LABEL_LAB}={lab.name}", "--label", f"{LABEL_ROLE}=standin",
                      "--network", f"container:{lab.container_name(from_host)}", "--cap-drop", "ALL",
                      browser_image, "python3", "-c", SCRIPT, input=json.dumps(request), timeout=timeout, check=False)
        if proc.returncode != 0:
            raise RuntimeError(f"the browser in {from_host}'s network namespace exited {proc.returncode}: {redact(proc.stderr.strip()[-800:])}")
        printed = proc.stdout
    result: dict[str, Any] = json.loads(printed)
    if "screenshot" in result:
        result["screenshot"] = base64.b64decode(result["screenshot"])
    return result
