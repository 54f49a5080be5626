"""roles/idp/files/pacslab-totp-verify, LemonLDAP::NG's external second factor, run as the portal
runs it (`pacslab-totp-verify USER CODE ADDRESS`) against a seed file and a state folder of the
test's own: its exit status and the one JSON line it logs per verdict (what the siem reads as
idp-login-success or idp-login-failure), which carries the browser's address and never the code."""

from __future__ import annotations

import importlib.machinery
import importlib.util
import json
from pathlib import Path
from types import ModuleType

import pyotp
import pytest

SCRIPT = Path(__file__).parents[2] / "roles" / "idp" / "files" / "pacslab-totp-verify"
SEED = "GEZDGNBVGY3TQOJQGEZDGNBVGY3TQOJQ"  # RFC 6238 appendix B's SHA-1 seed, in base32


@pytest.fixture
def checker(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> ModuleType:
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
    return module


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
