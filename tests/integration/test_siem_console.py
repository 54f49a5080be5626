"""The siem's console (issue 13, C-RSP-01, RS.AN-1): the alerts and cases over HTTPS with the lab's
certificate, for the security and clinical zones only (flow F16), checked in a real browser.

The browser is Debian's chromium driven by Playwright (pacslab.probes.browser), run inside a
reading workstation's network namespace: the workstation's address, routes and /etc/hosts, the
lab root it was given (its own image, a DICOM node's, carries no browser). It opens the console by
the siem's name and finds this run's alert (test_siem's `guessing`: five wrong passwords at the
bastion, each with a user name of this run) with its case, then the alert's page with the five
guesses behind it.

The twin: a browser of the internet zone (a computer with a browser of its own) opens the same page
by the siem's address (the internet has no name for it: no flow, no /etc/hosts entry). The fw drops the
connection and logs the drop, which the siem holds; the browser gets no page.
"""

from __future__ import annotations

import time
from typing import Any

import pytest

from pacslab.plan import Plan
from pacslab.probes import browser
from pacslab.probes import imaging as im
from pacslab.topology import Host, Lab, flow_between

from .test_bastion import CLIENT
from .test_siem import guessing, siem, siem_json, wait_for  # noqa: F401 (guessing: a fixture)

TITLE = "Alerts and cases - pacslab siem"
# What a page of the console is answered with (roles/siem/files/pacslab_siem.py CONSOLE_HEADERS)
HEADERS = {
    "content-type": "text/html; charset=utf-8",
    "content-security-policy": "default-src 'none'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'",
    "strict-transport-security": "max-age=31536000",
    "x-content-type-options": "nosniff",
    "x-frame-options": "DENY",
    "referrer-policy": "no-referrer",
    "cache-control": "no-store",
}


def port(lab: Lab) -> int:
    return siem(lab).service("https").port


def workstation(lab: Lab) -> Host:
    """A deployed reading workstation that the flows let reach the console."""
    found = sorted((h for h in lab.deployed_hosts() if "workstations" in h.groups
                    and flow_between(lab, h.name, siem(lab).name, "tcp", port(lab))), key=lambda h: h.name)
    if not found:
        pytest.skip(f"lab {lab.name!r} has no workstation that may reach the siem's console")
    return found[0]


def outsider(lab: Lab) -> Host:
    """A deployed computer with a browser of its own (images/client) that no flow lets reach the console."""
    found = sorted((h for h in lab.deployed_hosts() if h.image == "client"
                    and not flow_between(lab, h.name, siem(lab).name, "tcp", port(lab))), key=lambda h: h.name)
    if not found:
        pytest.skip(f"lab {lab.name!r} has no computer with a browser outside the console's flow")
    return found[0]


def client_image(plan: Plan) -> str:
    return next(i.tag for i in plan.images if i.name == "client")


def headers_from(lab: Lab, host: str, url: str) -> dict[str, Any]:
    """The status and headers ``host`` gets for ``url`` (Python's urllib, trusting the lab root only)."""
    script = ("import json, ssl, sys, urllib.request\n"
              "ctx = ssl.create_default_context(cafile='/etc/pacslab/tls/root.pem')\n"
              "with urllib.request.urlopen(sys.argv[1], context=ctx, timeout=15) as r:\n"
              "    print(json.dumps({'status': r.status, 'headers': {k.lower(): v for k, v in r.headers.items()}}))\n")
    result: dict[str, Any] = im._json(im.exec_in(lab, host, "python3", "-c", script, url))
    return result


@pytest.mark.control("C-RSP-01")
def test_a_workstation_s_browser_shows_this_run_s_alert_its_case_and_the_events_behind_it(
        running_lab: Lab, plan: Plan, guessing: dict[str, Any], evidence, evidence_dir) -> None:  # noqa: F811
    """The alerts table has the ssh-brute-force alert about the vendor's computer with its case; the
    cases table has that case with what hosts.yml says of the computer (vendor, internet, low); the
    alert's own page lists the guesses behind it, two lines of sshd each (the unknown user, the
    failure), with the user name of this run."""
    lab = running_lab
    ws, name = workstation(lab).name, siem(lab).name
    alert, case = guessing["alert"], guessing["case"]
    vendor = str(lab.hosts[CLIENT].address)
    page = browser.open_page(lab, ws, f"https://{name}/", browser_image=client_image(plan), screenshot=True)
    shot = evidence_dir / "C-RSP-01-console.png"
    shot.write_bytes(page.get("screenshot", b""))
    evidence.update(workstation=ws, navigations=page["navigations"], error=page["error"], alert=alert["id"], case=case["id"],
                    screenshot=f"{evidence_dir.name}/{shot.name}")
    assert page["error"] is None
    assert page["navigations"] == [{"at": f"{name}/", "method": "GET", "status": 200}]
    assert page["title"] == TITLE
    tables = {t["id"]: t["rows"] for t in page["tables"]}
    row = [r for r in tables["alerts"] if r[0] == str(alert["id"])]
    assert len(row) == 1, tables["alerts"][:5]
    assert row[0][1:4] + row[0][7:] == ["ssh-brute-force", "medium", f"src_ip={vendor}", str(case["id"])]
    row = [r for r in tables["cases"] if r[0] == str(case["id"])]
    assert len(row) == 1, tables["cases"][:5]
    assert row[0][1:4] + row[0][5:9] == [CLIENT, "", "open", "vendor", "internet", "low", vendor]  # no person: a host's case
    assert str(alert["id"]) in row[0][9].split()

    detail = browser.open_page(lab, ws, f"https://{name}/alerts/{alert['id']}", browser_image=client_image(plan))
    evidence.update(detail=detail["navigations"])
    assert detail["error"] is None
    assert detail["title"] == f"Alert {alert['id']} - pacslab siem"
    events = {t["id"]: t["rows"] for t in detail["tables"]}["events"]
    failures = [(r[4], r[5], r[6]) for r in events if r[5] in guessing["users"]]
    assert sorted(failures) == sorted((kind, u, f"{vendor} ({CLIENT})") for u in guessing["users"]
                                      for kind in ("ssh-invalid-user", "ssh-login-failure"))

    answered = headers_from(lab, ws, f"https://{name}/")
    evidence.update(headers=answered)
    assert answered["status"] == 200
    assert {k: answered["headers"].get(k) for k in HEADERS} == HEADERS


@pytest.mark.control("C-RSP-01")
def test_the_internet_zone_s_browser_gets_no_console_and_the_fw_logs_the_drop(running_lab: Lab, evidence) -> None:
    """An internet computer's browser opens the console by the siem's address: no page comes (the
    browser gives up after 8 s), and the siem holds the fw's drop of that connection (internet
    zone to the siem's HTTPS port)."""
    lab = running_lab
    target, remote = siem(lab), outsider(lab)
    started = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime())  # the drop's time (the fw's clock, UTC) is no earlier
    page = browser.open_page(lab, remote.name, f"https://{target.address}/", page_timeout=8)
    evidence.update(navigations=page["navigations"], error=page["error"])
    assert page["navigations"] == [] and page["tables"] == []
    assert page["error"] is not None and page["error"].startswith("timeout: "), page["error"]

    def dropped() -> list[dict[str, Any]]:
        return [e for e in siem_json(lab, "events", "--contains", str(target.address))
                if e["event_type"] == "fw-drop" and e["time"] >= started and e["src_ip"] == str(remote.address)
                and e["dst_ip"] == str(target.address) and str(e["dst_port"]) == str(port(lab))]

    drop = wait_for("the fw's drop of the browser's connection", dropped)[0]
    evidence.update(drop={k: drop[k] for k in ("id", "src_ip", "dst_ip", "dst_port", "outcome", "src_zone")})
    assert (drop["outcome"], drop["src_zone"]) == ("deny", remote.zone)
