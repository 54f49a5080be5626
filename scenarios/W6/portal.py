"""From this host, each attempt of args.attempts ({user, password} or {user, leaked: true}: the
person's real password, from CONTEXT['passwords'], as a breach leaked it) signs in to the viewer
the reverse proxy publishes, as a script with a browser's manners would: a new cookie jar, the
viewer's page (args.path), the redirects to the IdP (published by the proxy), its login form filled
with user and password; no TOTP code (the attacker has none). Then the viewer's page once more
with the same cookies. Result per attempt: the user, LemonLDAP's result codes on the page the
password led to (5 bad credentials; the second-factor form shows none), whether that page asks for
a code, whether the browser came back to the proxy signed in, and the HTTP status of the viewer's
page when asked again (200: a session; 302: sent to the IdP again). Plus the codes, per attempt."""

import html.parser
import http.cookiejar
import json
import ssl
import urllib.error
import urllib.parse
import urllib.request

args, hosts = CONTEXT["args"], CONTEXT["hosts"]  # noqa: F821 (given by the scenario runner)
leaked = CONTEXT["passwords"]  # noqa: F821
proxy = next(name for name, h in sorted(hosts.items()) if h["deployed"] and "reverse_proxies" in h["groups"])
start = f"https://{proxy}{args['path']}"
context = ssl.create_default_context(cafile="/etc/pacslab/tls/root.pem")
NAVIGATE = {"Accept": "text/html,application/xhtml+xml;q=0.9,*/*;q=0.8"}


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


def attempt(user, password):
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
    asks_code = any("code" in f["fields"] for f in page.forms)
    signed_in = urllib.parse.urlsplit(url).netloc == proxy
    try:
        again = opener.open(urllib.request.Request(start, headers=NAVIGATE), timeout=20).status
    except urllib.error.HTTPError as exc:
        again = exc.code
    return {"user": user, "trmsg": page.trmsg, "asks_code": asks_code, "signed_in": signed_in, "viewer_again": again}


results = [attempt(a["user"], leaked[a["user"]] if a.get("leaked") else a["password"]) for a in args["attempts"]]
print(json.dumps({
    "attempts": results,
    "trmsg": [r.get("trmsg") for r in results],
    "asks_code": [r.get("asks_code") for r in results],
    "signed_in": [r.get("signed_in") for r in results],
    "viewer_again": [r.get("viewer_again") for r in results],
}))
