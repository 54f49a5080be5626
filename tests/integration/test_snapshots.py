"""Snapshots of the running lab (issue 11): a restore puts back the state saved, seen by the state
fingerprint and, independently, by the instance counts and a study's absence; the twin shows the
fingerprint naming what changed before the restore; a snapshot of another lab definition is refused
with nothing changed; `pacslab reset` restores the state after the first up."""

from __future__ import annotations

import json
import time

import pytest

from pacslab import cli, fingerprint, snapshot
from pacslab.probes import imaging as im
from pacslab.topology import Lab

from .test_imaging import the, tls_stations
from .test_scenarios import counts

NAME = "itest-snapshot"


@pytest.fixture(scope="module")
def saved(running_lab: Lab):
    meta = snapshot.save(running_lab, NAME, overwrite=True)
    yield meta
    snapshot.remove(running_lab, NAME)


def test_a_restore_puts_back_the_state_saved(running_lab: Lab, saved, evidence) -> None:
    lab = running_lab
    pacs = the(lab, "pacs_servers").name
    counted = counts(lab)
    accession = f"SNAP{int(time.time()) % 10**6}"
    stored = im.dicomsim(lab, tls_stations(lab)[0].name, "store", "--images", "3", "--accession", accession)
    assert len(stored["stored"]) == 3
    im.wait_for("the forward to the VNA", lambda: counts(lab)[the(lab, "vna_servers").name] == counted[the(lab, "vna_servers").name] + 3 or None,
                timeout=60, every=1)
    changed = fingerprint.differences(saved["fingerprint"], fingerprint.take(lab))
    result = snapshot.restore(lab, NAME)
    evidence.update(changed_before_restore=changed, seconds=result["seconds"], differences=result["differences"])
    assert any(line.startswith(f"orthanc:{pacs}: 3 instances added") for line in changed), changed  # the twin: a change shows
    assert result["equal"] and result["differences"] == [], result
    assert counts(lab) == counted and im.find_study(lab, pacs, accession) == []
    after = im.dicomsim(lab, tls_stations(lab)[0].name, "echo")  # the PACS serves again
    assert (after["outcome"], after["status"]) == ("established", "0x0000"), after


def test_a_snapshot_of_another_lab_definition_is_refused(running_lab: Lab, saved) -> None:
    lab = running_lab
    meta_file = snapshot.snapshots_dir(lab) / NAME / "meta.json"
    meta = json.loads(meta_file.read_text())
    before = fingerprint.take(lab)
    meta_file.write_text(json.dumps({**meta, "config_digest": "0" * 64}))
    try:
        with pytest.raises(snapshot.SnapshotError, match="cannot be restored: it was taken from another definition of lab .*; nothing was changed"):
            snapshot.restore(lab, NAME)
    finally:
        meta_file.write_text(json.dumps(meta))
    assert fingerprint.differences(before, fingerprint.take(lab)) == []


def test_reset_returns_to_the_state_after_the_first_up(running_lab: Lab, capsys, evidence) -> None:
    """A study stored after up is gone after `pacslab reset`, and the state equals the one `up` saved."""
    lab = running_lab
    meta_file = snapshot.snapshots_dir(lab) / snapshot.AFTER_UP / "meta.json"
    assert meta_file.is_file(), "the up of this session saved no _up"
    meta = json.loads(meta_file.read_text())
    assert snapshot.restorable(lab, meta) is None, snapshot.restorable(lab, meta)  # up saves it again when it is not
    pacs = the(lab, "pacs_servers").name
    accession = f"RESET{int(time.time()) % 10**6}"
    assert len(im.dicomsim(lab, tls_stations(lab)[0].name, "store", "--images", "2", "--accession", accession)["stored"]) == 2
    rc = cli.main(["reset", "--lab", str(lab.path), "--json"])
    out = json.loads(capsys.readouterr().out)
    evidence.update(seconds=out["seconds"], differences=out["differences"])
    assert rc == 0 and out["equal"], out
    assert im.find_study(lab, pacs, accession) == []
    assert fingerprint.differences(meta["fingerprint"], fingerprint.take(lab), ignore=("converged",)) == []
