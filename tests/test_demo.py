"""`cyclip demo` owns only the folders it made: it refuses to replace anything else."""

from __future__ import annotations

from cyclip.cli import main
from cyclip.demo import DEMO_MARKER, claim_output


def test_demo_refuses_a_folder_holding_real_runs(tmp_path, capsys):
    run = tmp_path / "runs" / "clip"
    run.mkdir(parents=True)
    (run / "latest.pt").write_bytes(b"weeks of training")

    assert main(["demo", "--output", str(tmp_path / "runs"), "--epochs", "1"]) == 2

    error = capsys.readouterr().err.strip()
    assert len(error.splitlines()) == 1 and "not empty" in error and str(tmp_path / "runs") in error
    assert (run / "latest.pt").read_bytes() == b"weeks of training"
    assert not (tmp_path / "runs" / DEMO_MARKER).exists()


def test_demo_refuses_a_file_as_output(tmp_path, capsys):
    target = tmp_path / "results.txt"
    target.write_text("keep me")
    assert main(["demo", "--output", str(target)]) == 2
    assert "is a file" in capsys.readouterr().err
    assert target.read_text() == "keep me"


def test_demo_takes_an_empty_or_previous_demo_folder(tmp_path):
    fresh = tmp_path / "fresh"
    claim_output(fresh)
    assert (fresh / DEMO_MARKER).is_file()
    (fresh / "clip").mkdir()  # what a previous demo leaves behind
    claim_output(fresh)  # a previous demo: accepted again
    empty = tmp_path / "empty"
    empty.mkdir()
    claim_output(empty)
    assert (empty / DEMO_MARKER).is_file()
