"""roles/idp/files/pacslab-totp-verify, LemonLDAP::NG's external second factor, run as the portal
runs it (`pacslab-totp-verify USER CODE ADDRESS`) against a seed file and a state folder of the
test's own: its exit status and the one JSON line it logs per verdict (what the siem reads as
idp-login-success or idp-login-failure), which carries the browser's address and never the code;
and the IdP's audit trail (roles/idp/files/pacslab_idp_audit.py): the User Authentication message
of each verdict, and of each refusal in the portal's log as rsyslog hands it over."""

from __future__ import annotations

import importlib.machinery
import importlib.util
import io
import json
import xml.etree.ElementTree as ET
from pathlib import Path
from types import ModuleType

import pyotp
import pytest

SCRIPT = Path(__file__).parents[2] / "roles" / "idp" / "files" / "pacslab-totp-verify"
SEED = "GEZDGNBVGY3TQOJQGEZDGNBVGY3TQOJQ"  # RFC 6238 appendix B's SHA-1 seed, in base32


@pytest.fixture
def trail(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> ModuleType:
    """roles/idp's pacslab_idp_audit (the IdP's audit trail), writing to a file of the test's own."""
    monkeypatch.syspath_prepend(str(IDP_FILES))
    module = importlib.import_module("pacslab_idp_audit")
    (tmp_path / "idp-audit.json").write_text(json.dumps({"source": "idp", "site": "pacslab test"}))
    monkeypatch.setattr(module, "AUDIT_CONFIG", str(tmp_path / "idp-audit.json"))
    monkeypatch.setattr(module, "AUDIT_LOG", str(tmp_path / "idp-audit.log"))
    monkeypatch.setattr(module, "AUDIT_LIB", str(AUDIT_LIB))
    return module


@pytest.fixture
def checker(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, trail: ModuleType) -> ModuleType:
    loader = importlib.machinery.SourceFileLoader("pacslab_totp_verify", str(SCRIPT))
    spec = importlib.util.spec_from_loader(loader.name, loader)
    assert spec is not None
    module = importlib.util.module_from_spec(spec)
    loader.exec_module(module)
    seeds = tmp_path / "seeds.json"
    seeds.write_text(json.dumps({"rad-ada": SEED}))
    (tmp_path / "state").mkdir()
    monkeypatch.setattr(module, "SEEDS", str(seeds))
    monkeypatch.setattr(module, "STATE_DIR", str(tmp_path / "state"))
    monkeypatch.setattr(module, "ADDRESS", "")
    monkeypatch.setattr(module, "AUDIT_LIB", str(IDP_FILES))
    return module


AUDIT_LIB = Path(__file__).parents[2] / "roles" / "orthanc" / "files"  # pacslab_audit.py, installed on the IdP by roles/idp
IDP_FILES = SCRIPT.parent  # pacslab_idp_audit.py, installed beside it


def messages(trail: ModuleType) -> list[ET.Element]:
    """The audit file's messages, one per line."""
    path = Path(trail.AUDIT_LOG)
    return [ET.fromstring(line) for line in path.read_text().splitlines()] if path.exists() else []


def user_authentication(root: ET.Element) -> dict[str, object]:
    """What A.5.3.12 asks of a User Authentication message, as read from it."""
    ident, source = root.find("EventIdentification"), root.find("AuditSourceIdentification")
    assert ident is not None and source is not None
    codes = [(c.get("csd-code"), c.get("codeSystemName")) for c in ident]
    return {"event": codes, "action": ident.get("EventActionCode"), "outcome": ident.get("EventOutcomeIndicator"),
            "participants": [(p.get("UserID"), p.get("UserIsRequestor"), p.get("NetworkAccessPointID"), p.get("NetworkAccessPointTypeCode"))
                             for p in root.findall("ActiveParticipant")],
            "source": (source.get("AuditSourceID"), source.get("AuditEnterpriseSiteID"), [c.get("csd-code") for c in source]),
            "objects": root.findall("ParticipantObjectIdentification")}


LOGIN = [("110114", "DCM"), ("110122", "DCM")]  # EventID User Authentication, EventTypeCode Login
IDP_SOURCE = ("idp", "pacslab test", ["6"])  # AuditSourceTypeCode 6: security server


def verdicts(capsys: pytest.CaptureFixture[str]) -> list[dict[str, str]]:
    return [json.loads(line) for line in capsys.readouterr().err.splitlines()]


def test_an_accepted_code_then_the_same_code_again_are_logged_with_the_address_and_without_the_code(
        checker: ModuleType, capsys: pytest.CaptureFixture[str]) -> None:
    code = pyotp.TOTP(SEED).now()
    first = checker.main(["pacslab-totp-verify", "rad-ada", code, "10.77.20.10"])
    again = checker.main(["pacslab-totp-verify", "rad-ada", code, "10.77.20.10"])
    err = capsys.readouterr().err
    assert (first, again) == (0, 1)
    assert code not in err
    assert [json.loads(line) for line in err.splitlines()] == [
        {"event": "totp", "user": "rad-ada", "src_ip": "10.77.20.10", "verdict": "accepted"},
        {"event": "totp", "user": "rad-ada", "src_ip": "10.77.20.10", "verdict": "refused: code already used"}]


@pytest.mark.parametrize(("argv", "logged"), [
    # the portal had no address for the session: LemonLDAP passes an empty word
    (["rad-ada", "000000", ""], {"event": "totp", "user": "rad-ada", "verdict": "refused: wrong code"}),
    # what is no IP address is not logged as one
    (["rad-ada", "000000", "10.77.20.10 (forged)"], {"event": "totp", "user": "rad-ada", "verdict": "refused: wrong code"}),
    (["rad-ada", "000000"], {"event": "totp", "user": "rad-ada", "verdict": "refused: wrong code"}),
    (["nobody", "000000", "10.77.20.10"], {"event": "totp", "user": "nobody", "src_ip": "10.77.20.10", "verdict": "refused: no seed"}),
    (["rad-ada", "12345", "10.77.20.10"], {"event": "totp", "user": "rad-ada", "src_ip": "10.77.20.10", "verdict": "refused: not a 6-digit code"}),
    (["rad ada", "000000", "10.77.20.10"], {"event": "totp", "user": "rad ada", "src_ip": "10.77.20.10", "verdict": "refused: usage"}),
])
def test_a_refused_code_is_logged_with_why(checker: ModuleType, capsys: pytest.CaptureFixture[str], argv: list[str],
                                           logged: dict[str, str]) -> None:
    if argv[1] == "000000" and pyotp.TOTP(SEED).verify("000000", valid_window=1):
        pytest.skip("000000 is a current code of the seed")
    assert checker.main(["pacslab-totp-verify", *argv]) == 1
    assert verdicts(capsys) == [logged]


def test_each_verdict_from_an_address_is_a_user_authentication_message(checker: ModuleType, trail: ModuleType,
                                                                       capsys: pytest.CaptureFixture[str]) -> None:
    """PS3.15 A.5.3.12: the accepted code completes a sign-in (outcome 0), the same code again is
    refused (outcome 4); each message names the person as requestor at the browser's address (an
    IP: type 2) and the IdP as the node that authenticated, from the IdP as a security server."""
    code = pyotp.TOTP(SEED).now()
    assert [checker.main(["pacslab-totp-verify", "rad-ada", code, "10.77.20.10"]) for _ in range(2)] == [0, 1]
    found = [user_authentication(m) for m in messages(trail)]
    people = [("rad-ada", "true", "10.77.20.10", "2"), ("lemonldap@idp", "false", "idp", "1")]
    assert found == [{"event": LOGIN, "action": "E", "outcome": "0", "participants": people, "source": IDP_SOURCE, "objects": []},
                     {"event": LOGIN, "action": "E", "outcome": "4", "participants": people, "source": IDP_SOURCE, "objects": []}]
    assert code not in Path(trail.AUDIT_LOG).read_text()
    assert [v["verdict"] for v in verdicts(capsys)] == ["accepted", "refused: code already used"]


def test_a_verdict_without_an_address_writes_no_message(checker: ModuleType, trail: ModuleType, capsys: pytest.CaptureFixture[str]) -> None:
    """A.5.3.12 requires the user's network access point: without the browser's address the verdict
    is logged, and no message is written."""
    assert checker.main(["pacslab-totp-verify", "rad-ada", pyotp.TOTP(SEED).now(), ""]) == 0
    assert messages(trail) == [] and [v["verdict"] for v in verdicts(capsys)] == ["accepted"]


def test_a_message_that_cannot_be_built_leaves_the_verdict_standing(checker: ModuleType, trail: ModuleType, capsys: pytest.CaptureFixture[str],
                                                                   tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(trail, "AUDIT_CONFIG", str(tmp_path / "missing.json"))
    assert checker.main(["pacslab-totp-verify", "rad-ada", pyotp.TOTP(SEED).now(), "10.77.20.10"]) == 0
    logged = verdicts(capsys)
    assert [line.get("verdict") for line in logged] == ["accepted", None]
    assert logged[1]["event"] == "audit-failed" and logged[1]["error"].startswith("FileNotFoundError")
    assert messages(trail) == []


# The portal's log as rsyslog's omprog hands it to pacslab_idp_audit (roles/log_shipping,
# log_shipping_image_readers): LemonLDAP::NG 2.16's own lines, as the IdP wrote them in the lab.
PORTAL_LOG = """\
[Sun Dec  6 22:41:16 2026] [LLNG:84] [warn] Bad password for rad-ada (10.77.20.10)
[Sun Dec  6 22:41:16 2026] [LLNG:84] [warn] idp-9025a0-c273-guess0 was not found in LDAP directory (10.77.20.11)
{"event": "totp", "user": "rad-ada", "src_ip": "10.77.20.10", "verdict": "accepted"}
[Sun Dec  6 22:41:18 2026] [LLNG:83] [notice] User rad-ada successfully authenticated at level 2
[Sun Dec  6 22:41:18 2026] [LLNG:83] [notice] rad-ada connected
[Sun Dec  6 22:41:20 2026] [LLNG:83] [warn] Bad password for rad-ada (10.77.20.10) (forged)
"""


def test_each_refused_password_or_unknown_name_in_the_portals_log_is_a_refused_login(trail: ModuleType) -> None:
    """PS3.15 A.5.3.12: a password LemonLDAP refused and a name the directory does not hold are
    each a Login, outcome 4, naming the name as typed at the browser's address; every other line
    (the checker's verdict, which it audits itself, a completed sign-in, a line with words after
    the address) writes nothing. omprog's protocol: "OK" once ready, then once per line read."""
    out, err = io.StringIO(), io.StringIO()
    assert trail.main(io.StringIO(PORTAL_LOG), out, err) == 0
    assert out.getvalue() == "OK\n" * 7 and err.getvalue() == ""
    found = [user_authentication(m) for m in messages(trail)]
    assert found == [
        {"event": LOGIN, "action": "E", "outcome": "4", "source": IDP_SOURCE, "objects": [],
         "participants": [("rad-ada", "true", "10.77.20.10", "2"), ("lemonldap@idp", "false", "idp", "1")]},
        {"event": LOGIN, "action": "E", "outcome": "4", "source": IDP_SOURCE, "objects": [],
         "participants": [("idp-9025a0-c273-guess0", "true", "10.77.20.11", "2"), ("lemonldap@idp", "false", "idp", "1")]}]


def test_a_refusal_that_cannot_be_written_is_said_and_the_next_line_is_read(trail: ModuleType, tmp_path: Path,
                                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(trail, "AUDIT_LOG", str(tmp_path / "no such folder" / "idp-audit.log"))
    out, err = io.StringIO(), io.StringIO()
    assert trail.main(io.StringIO(PORTAL_LOG), out, err) == 0
    assert out.getvalue() == "OK\n" * 7
    failed = [json.loads(line) for line in err.getvalue().splitlines()]
    assert [(f["event"], f["user"], f["error"].split(":")[0]) for f in failed] == [
        ("audit-failed", "rad-ada", "FileNotFoundError"), ("audit-failed", "idp-9025a0-c273-guess0", "FileNotFoundError")]


def test_a_line_that_is_not_utf8_is_read_and_so_is_the_next(trail: ModuleType) -> None:
    """A byte that is no UTF-8 in the portal's log (the reader's input is bytes) does not stop the
    reader: its refusal is a Login naming the name with U+FFFD where the byte was, and the refusal
    on the next line is one too."""
    lines = b"[Sun Dec  6 22:41:20 2026] [LLNG:83] [warn] Bad password for r\xffad (10.77.20.10)\n" + \
        b"[Sun Dec  6 22:41:21 2026] [LLNG:83] [warn] Bad password for rad-ada (10.77.20.10)\n"
    out, err = io.StringIO(), io.StringIO()
    assert trail.main(trail.portal_lines(io.BytesIO(lines)), out, err) == 0
    assert out.getvalue() == "OK\n" * 3 and err.getvalue() == ""
    assert [m["participants"][0][0] for m in map(user_authentication, messages(trail))] == ["r\ufffdad", "rad-ada"]


def test_a_carriage_return_inside_a_message_is_no_line_end(trail: ModuleType) -> None:
    """omprog hands one message per line feed and waits for one "OK" each: a carriage return inside
    a message (rsyslog passes it) must not make two lines, or the confirmations run ahead."""
    lines = b"[Sun Dec  6 22:41:20 2026] [LLNG:83] [warn] a line\rwith a carriage return\n" + \
        b"[Sun Dec  6 22:41:21 2026] [LLNG:83] [warn] Bad password for rad-ada (10.77.20.10)\n"
    out, err = io.StringIO(), io.StringIO()
    assert trail.main(trail.portal_lines(io.BytesIO(lines)), out, err) == 0
    assert out.getvalue() == "OK\n" * 3 and err.getvalue() == ""


def test_a_reader_that_fails_says_it_stopped_and_exits_1(trail: ModuleType) -> None:
    """A failure outside a message's writing (here the input itself) is an audit-failed line that
    says the reader stopped, naming no one, and exit 1 (omprog starts it again)."""
    class Broken(io.StringIO):
        def __iter__(self):  # type: ignore[override]
            yield "[Sun Dec  6 22:41:21 2026] [LLNG:83] [warn] Bad password for rad-ada (10.77.20.10)\n"
            raise OSError("the pipe went away")

    out, err = io.StringIO(), io.StringIO()
    assert trail.main(Broken(), out, err) == 1
    assert out.getvalue() == "OK\n" * 2
    assert [json.loads(line) for line in err.getvalue().splitlines()] == [
        {"event": "audit-failed", "message": "user_authentication", "error": "the reader stopped: OSError: the pipe went away"}]
