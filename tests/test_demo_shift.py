"""`cyclip demo --shift`: the mean ± std over seeds, the table, and a tiny run end to end."""

from __future__ import annotations

import json

import numpy as np
import pytest

from cyclip.cli import main
from cyclip.demo import DEMO_MARKER
from cyclip.demo_shift import METRICS, TEST_SETS, format_table, run_shift_demo, summarize

KEYS = {f"{metric.key}/{test_set}" for metric in METRICS for test_set in TEST_SETS}


def test_summary_is_numpy_mean_and_sample_std_over_seeds():
    rng = np.random.default_rng(0)
    values = rng.uniform(size=(3, 2))
    per_seed = {str(seed): {"a": float(row[0]), "b": float(row[1])} for seed, row in enumerate(values)}

    summary = summarize(per_seed)

    for column, key in enumerate(("a", "b")):
        assert summary[key]["mean"] == pytest.approx(np.mean(values[:, column]), rel=1e-12)
        assert summary[key]["std"] == pytest.approx(np.std(values[:, column], ddof=1), rel=1e-12)
        assert summary[key]["values"] == values[:, column].tolist()
    assert summarize({"0": {"a": 0.5}})["a"] == {"mean": 0.5, "std": None, "values": [0.5]}


def test_table_shows_mean_plus_minus_std_in_percent_and_raw_gaps():
    stats = {key: {"mean": 0.5, "std": 0.25, "values": [0.25, 0.5, 0.75]} for key in KEYS}
    table = format_table({"model": "m", "epochs": 1, "seeds": [0, 1, 2], "summary": {"CLIP": stats, "CyCLIP": stats}})
    assert "| zero-shot top-1 (%) | typeset | 50.0 ± 25.0 | 50.0 ± 25.0 |" in table
    assert "| in-modal gap | handwritten | 0.5000 ± 0.2500 | 0.5000 ± 0.2500 |" in table
    assert len([line for line in table.splitlines() if line.startswith("| ")]) == 1 + len(KEYS)


def test_tiny_shift_demo_writes_table_json_and_figures(tmp_path):
    output = tmp_path / "demo"
    summary = run_shift_demo(output, epochs=1, device="cpu", seeds=(0,), typeset_variants=1)

    assert set(summary["summary"]) == {"CLIP", "CyCLIP"}
    for name in ("CLIP", "CyCLIP"):
        assert set(summary["summary"][name]) == KEYS
        metrics = summary["runs"][name]["0"]
        assert 0.0 <= metrics["zeroshot_top1/typeset"] <= 1.0 and metrics["inmodal_gap/typeset"] >= 0.0
    written = json.loads((output / "shift_results.json").read_text())
    assert written["seeds"] == [0] and written["summary"] == summary["summary"]
    assert (output / "shift_results.md").read_text().count("| zero-shot top-1 (%) |") == 2
    for figure in ("shift_comparison.png", "shift_examples.png"):
        assert (output / figure).stat().st_size > 10_000
    assert (output / DEMO_MARKER).is_file() and (output / "seed-0" / "cyclip" / "eval.json").is_file()


def test_shift_flag_runs_three_consecutive_seeds_from_seed(monkeypatch, tmp_path):
    calls = []
    monkeypatch.setattr("cyclip.demo_shift.run_shift_demo", lambda *args, **kwargs: calls.append((args, kwargs)))

    assert main(["demo", "--shift", "--seed", "5", "--epochs", "2", "--output", str(tmp_path / "out")]) == 0

    ((args, options),) = calls
    assert args == (tmp_path / "out",) and options["epochs"] == 2 and list(options["seeds"]) == [5, 6, 7]


def test_shift_demo_refuses_a_folder_it_did_not_make(tmp_path, capsys):
    (tmp_path / "runs").mkdir()
    (tmp_path / "runs" / "notes.txt").write_text("mine")

    assert main(["demo", "--shift", "--output", str(tmp_path / "runs")]) == 2

    assert "not empty" in capsys.readouterr().err
    assert sorted(path.name for path in (tmp_path / "runs").iterdir()) == ["notes.txt"]
