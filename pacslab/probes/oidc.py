"""A person signing in to the lab's OpenID Connect provider, as a relying party would have them do
it: the authorization code flow (OpenID Connect Core 1.0, 3.1), from a lab host, with the
standard library only (the lab hosts carry python3 and nothing else for HTTP).

The probe follows the provider's own pages: the authorization request, LemonLDAP::NG's login form
(user and password), its second-factor form (a TOTP code, RFC 6238), back to the authorization
endpoint, which answers the relying party's redirect URI with a code (the probe stops there, as a
browser would hand that URL to the relying party) and then redeems the code at the token endpoint
with the client's secret (client_secret_basic, Core section 9). Every step reports the HTTP status and, on a
portal page, LemonLDAP's result code (its ``trmsg`` attribute: 5 bad credentials, 96 bad OTP, 84
relying party refused, Lemonldap::NG::Portal::Main::Constants). Secrets travel on stdin only.
"""

from __future__ import annotations

import json
from typing import Any

from .. import people
from ..topology import Lab
from . import imaging as im

CA = "/etc/pacslab/tls/root.pem"
# Where the IdP's TOTP checker keeps the last step it accepted for each person (roles/idp).
USED_STEPS = "/var/lib/pacslab-totp"
# The scopes the relying parties ask for: the person's name and the roles claim.
SCOPE = "openid profile roles"

# What both scripts share: the page parser, a redirect handler that follows nothing, and a
# browser's cookie rule for a host name of one label (the lab's names: idp, rproxy): a cookie whose
# Domain is the host itself is kept and sent back to it (RFC 6265 5.3 step 6; Chromium and Firefox
# do so), where Python's cookiejar wants an embedded dot and drops it.
BROWSER = r"""
import html.parser, http.cookiejar, urllib.parse, urllib.request

class BrowserPolicy(http.cookiejar.DefaultCookiePolicy):
    @staticmethod
    def _own(cookie, request):
        return cookie.domain.lstrip(".") == urllib.parse.urlsplit(request.get_full_url()).hostname
    def set_ok_domain(self, cookie, request):
        return self._own(cookie, request) or super().set_ok_domain(cookie, request)
    def return_ok_domain(self, cookie, request):
        return self._own(cookie, request) or super().return_ok_domain(cookie, request)

jar = http.cookiejar.CookieJar(BrowserPolicy())

class NoRedirect(urllib.request.HTTPRedirectHandler):
    def redirect_request(self, *a, **k):
        return None

# the page's forms (action, field names and values) and LemonLDAP's result codes (trmsg)
class Forms(html.parser.HTMLParser):
    def __init__(self):
        super().__init__()
        self.forms, self.trmsg = [], []
    def handle_starttag(self, tag, attrs):
        a = dict(attrs)
        if tag == "form":
            self.forms.append({"action": a.get("action") or "", "fields": {}})
        elif tag in ("input", "button") and self.forms and a.get("name"):
            self.forms[-1]["fields"].setdefault(a["name"], a.get("value") or "")
        if a.get("trmsg"):
            self.trmsg.append(int(a["trmsg"]))
"""

LOGIN = BROWSER + r"""
import base64, html.parser, json, ssl, sys, urllib.error, urllib.parse, urllib.request

req = json.load(sys.stdin)
ctx = ssl.create_default_context(cafile=req["ca"])

# the person's browser (with their cookies) and the relying party's back channel (none of them)
browser = urllib.request.build_opener(urllib.request.HTTPSHandler(context=ctx), urllib.request.HTTPCookieProcessor(jar), NoRedirect)
backchannel = urllib.request.build_opener(urllib.request.HTTPSHandler(context=ctx), NoRedirect)


def fetch(url, data=None, headers=None, opener=browser):
    body = urllib.parse.urlencode(data).encode() if data is not None else None
    r = urllib.request.Request(url, data=body, headers=headers or {})
    try:
        resp = opener.open(r, timeout=20)
    except urllib.error.HTTPError as exc:
        resp = exc
    text = resp.read().decode("utf-8", "replace")
    return resp.status, resp.headers.get("Location"), text

def page(status, location, text):
    p = Forms()
    p.feed(text)
    return {"status": status, "location": location, "trmsg": p.trmsg, "forms": p.forms}

steps = []
issuer = req["issuer"]
auth = issuer + "/oauth2/authorize?" + urllib.parse.urlencode({
    "response_type": "code", "client_id": req["client_id"], "redirect_uri": req["redirect_uri"],
    "scope": req["scope"], "state": "pacslab-state", "nonce": "pacslab-nonce"})
try:
    status, location, text = fetch(auth)
except (OSError, ssl.SSLError) as exc:
    print(json.dumps({"steps": [{"step": "authorize", "error": f"{type(exc).__name__}: {getattr(exc, 'reason', exc)}"}]}))
    sys.exit(0)
cur = page(status, location, text)
steps.append(dict(cur, step="authorize"))

def submit(form, values, name):
    fields = dict(form["fields"])
    fields.update(values)
    action = urllib.parse.urljoin(issuer + "/", form["action"]) if form["action"] not in ("", "#") else auth
    s, loc, t = fetch(action, fields)
    # the portal answers a good form with a redirect back to the authorization endpoint
    for _ in range(5):
        if s not in (302, 303) or not loc or not loc.startswith(issuer):
            break
        s, loc, t = fetch(urllib.parse.urljoin(issuer + "/", loc))
    out = page(s, loc, t)
    steps.append(dict(out, step=name))
    return out

login = next((f for f in cur["forms"] if "user" in f["fields"] and "password" in f["fields"]), None)
if login and "password" in req:
    cur = submit(login, {"user": req["user"], "password": req["password"]}, "password")
    second = next((f for f in cur["forms"] if "code" in f["fields"]), None)
    if second and "code" in req:
        cur = submit(second, {"code": req["code"]}, "second-factor")

result = {"steps": [{k: v for k, v in s.items() if k != "forms"} | {"forms": [sorted(f["fields"]) for f in s["forms"]]} for s in steps]}
final = steps[-1].get("location") or ""
if final.startswith(req["redirect_uri"]):
    query = urllib.parse.parse_qs(urllib.parse.urlsplit(final).query)
    result["redirect"] = {k: v[0] for k, v in query.items() if k != "code"}
    if "code" in query and req.get("client_secret"):
        basic = base64.b64encode(f'{req["client_id"]}:{req["client_secret"]}'.encode()).decode()
        s, _, t = fetch(issuer + "/oauth2/token", {"grant_type": "authorization_code", "code": query["code"][0], "redirect_uri": req["redirect_uri"]},
                        {"Authorization": "Basic " + basic}, backchannel)
        token = json.loads(t) if t.startswith("{") else {"body": t[:200]}
        result["token_status"] = s
        if "id_token" in token:
            payload = token["id_token"].split(".")[1]
            result["id_token"] = json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
        result["token_error"] = token.get("error")
result["cookies"] = sorted(c.name for c in jar)
print(json.dumps(result))
"""


def login(lab: Lab, from_host: str, issuer: str, client_id: str, redirect_uri: str, *, user: str | None = None,
          password: str | None = None, code: str | None = None, client_secret: str | None = None) -> dict[str, Any]:
    """Run the authorization code flow from ``from_host`` (a lab container) as far as the given
    credentials go. Returns {"steps": [{step, status, location, trmsg, forms}], "redirect": the
    redirect URI's parameters but the code, "token_status", "id_token": its claims, "token_error",
    "cookies": the cookie names the client holds}; a TLS or connection failure is the first step's
    "error"."""
    request: dict[str, Any] = {"ca": CA, "issuer": issuer, "client_id": client_id, "redirect_uri": redirect_uri, "scope": SCOPE}
    for key, value in (("user", user), ("password", password), ("code", code), ("client_secret", client_secret)):
        if value is not None:
            request[key] = value
    result: dict[str, Any] = json.loads(im.exec_in(lab, from_host, "python3", "-c", LOGIN, input=json.dumps(request)))
    return result


def fresh_code(lab: Lab, idp_host: str, secrets_dir: str, user: str) -> str:
    """A TOTP code for ``user`` of a later step than the last code the IdP accepted for them (it
    refuses that code and any of an earlier step, RFC 6238 5.2), that it accepts now:
    people.fresh_totp, which waits only when the next step's code was used too."""
    return people.fresh_totp(people.totp_seed(secrets_dir, user), last_step(lab, idp_host, user))


def fresh_codes(lab: Lab, idp_host: str, secrets_dir: str, user: str) -> dict[int, str]:
    """The TOTP codes of ``user`` the IdP has not seen, by RFC 6238 step, for the next three
    minutes (people.totp_codes): for a browser, which types the code of the step it reaches the
    code form in (pacslab.probes.browser), so that however long it takes to start and sign in with
    the password, the code it sends is current. No wait."""
    return people.totp_codes(people.totp_seed(secrets_dir, user), last_step(lab, idp_host, user))


def last_step(lab: Lab, idp_host: str, user: str) -> int:
    """The RFC 6238 step of the last code the IdP's checker accepted for ``user``; -1 for none."""
    used = im.exec_in(lab, idp_host, "sh", "-c", f'cat "{USED_STEPS}/$1" 2>/dev/null; true', "used", user).strip()
    return int(used) if used.isdigit() else -1


BROWSE = BROWSER + r"""
import base64, html.parser, json, ssl, sys, urllib.error, urllib.parse, urllib.request

req = json.load(sys.stdin)
ctx = ssl.create_default_context(cafile=req["ca"])
browser = urllib.request.build_opener(urllib.request.HTTPSHandler(context=ctx), urllib.request.HTTPCookieProcessor(jar), NoRedirect)


# what a browser sends when it navigates (mod_auth_openidc answers 401, not a redirect, to a
# request that accepts no HTML: a script's)
NAVIGATE = {"Accept": "text/html,application/xhtml+xml,application/xml;q=0.9,*/*;q=0.8"}
# a session's cookies from an earlier browse, in the jar for the first URL's host: sent where they
# belong, and replaced by what the site sets meanwhile (a refreshed session)
for name, value in (req.get("cookies") or {}).items():
    jar.set_cookie(http.cookiejar.Cookie(0, name, value, None, False, urllib.parse.urlsplit(req["url"]).hostname, False, False,
                                         "/", True, True, None, True, None, None, {}))

def fetch(url, method="GET", data=None, headers=None):
    body = urllib.parse.urlencode(data).encode() if isinstance(data, dict) else data
    r = urllib.request.Request(url, data=body, headers=NAVIGATE | (headers or {}), method=method)
    try:
        resp = browser.open(r, timeout=20)
    except urllib.error.HTTPError as exc:
        resp = exc
    return resp.status, resp.headers, resp.read().decode("utf-8", "replace")

def where(url):
    u = urllib.parse.urlsplit(url)
    return u.netloc + u.path

steps, used = [], set()
url, method, data, headers = req["url"], "GET", None, req.get("headers") or {}
status, text = None, ""
try:
    for _ in range(20):
        status, hdrs, text = fetch(url, method, data, headers)
        p = Forms()
        p.feed(text)
        steps.append({"at": where(url), "method": method, "status": status, "trmsg": p.trmsg})
        method, data, headers = "GET", None, {}
        if status in (301, 302, 303, 307) and hdrs.get("Location"):
            url = urllib.parse.urljoin(url, hdrs["Location"])
            continue
        # the IdP's pages: the login form, then the second-factor form, each filled once
        form = next((f for f in p.forms if {"user", "password"} <= set(f["fields"])), None)
        if form is not None and "password" in req and "password" not in used:
            used.add("password")
            values = {"user": req["user"], "password": req["password"]}
        else:
            form = next((f for f in p.forms if "code" in f["fields"]), None)
            if form is None or "code" not in req or "code" in used:
                break
            used.add("code")
            values = {"code": req["code"]}
        fields = dict(form["fields"]) | values
        url = urllib.parse.urljoin(url, form["action"]) if form["action"] not in ("", "#") else url
        method, data = "POST", fields
except (OSError, ssl.SSLError) as exc:
    steps.append({"at": where(url), "error": f"{type(exc).__name__}: {getattr(exc, 'reason', exc)}"})

def answer(status, text):
    out = {"status": status}
    try:
        out["json"] = json.loads(text)
    except ValueError:
        out["text"] = text[:300]
    return out

result = {"steps": steps, "final": answer(status, text) if "error" not in steps[-1] else None}
then = []
for call in req.get("then") or []:
    try:
        body = base64.b64decode(call["body_base64"]) if "body_base64" in call else (call.get("body") or "").encode() or None
        s, _, t = fetch(call["url"], call.get("method", "GET"), body, call.get("headers") or {})
        then.append(answer(s, t))
    except (OSError, ssl.SSLError) as exc:
        then.append({"error": f"{type(exc).__name__}: {getattr(exc, 'reason', exc)}"})
result["then"] = then
result["cookies"] = sorted(f"{c.domain}:{c.name}" for c in jar)
if req.get("keep"):
    result["jar"] = {c.name: c.value for c in jar}
print(json.dumps(result))
"""


def browse(lab: Lab, from_host: str, url: str, *, user: str | None = None, password: str | None = None, code: str | None = None,
           headers: dict[str, str] | None = None, then: list[dict[str, Any]] | None = None, keep: bool = False,
           cookies: dict[str, str] | None = None) -> dict[str, Any]:
    """A person's browser on ``from_host`` (a lab container) opening ``url``: redirects followed
    (at most 20 answers), the IdP's login form filled with user and password and its second-factor
    form with ``code``, each once, when given. Every request accepts HTML as a browser's
    navigation does; ``headers`` go with the first request only and win over that. Then,
    with the cookies it holds, each request of ``then`` ({url, method, headers, body} or, for bytes,
    body_base64). ``cookies`` ({name: value}, an earlier browse's "jar") start in the jar, for the
    host of ``url``.
    Returns {"steps": [{at: host/path, method, status, trmsg}], "final": {status, json | text},
    "then": [{status, json | text} or {error}], "cookies": ["domain:name"]}, and with ``keep``
    "jar": {name: value} (a later browse sends them back in a Cookie header); a TLS or connection
    failure ends the steps with {at, error} and "final" None."""
    request: dict[str, Any] = {"ca": CA, "url": url, "headers": headers or {}, "then": then or [], "keep": keep, "cookies": cookies or {}}
    for key, value in (("user", user), ("password", password), ("code", code)):
        if value is not None:
            request[key] = value
    result: dict[str, Any] = json.loads(im.exec_in(lab, from_host, "python3", "-c", BROWSE, input=json.dumps(request)))
    return result


def session_cookie(result: dict[str, Any]) -> str:
    """The proxy session a browse(..., keep=True) signed in to, as a Cookie header: the
    mod_auth_openidc session cookie (and its chunks), by name."""
    return "; ".join(f"{k}={v}" for k, v in sorted(result["jar"].items()) if k.startswith("mod_auth_openidc_session"))
