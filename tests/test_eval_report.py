"""Reports: tables and figures from hand-built results, and `cyclip compare` end to end."""

from __future__ import annotations

import json

import pytest
from PIL import Image

from cyclip.cli import main
from cyclip.evaluation.report import accuracy_bars_figure, comparison_rows, markdown_table, read_results


def results(top1: float, gap: float, probe: float) -> dict:
    return {
        "checkpoint": "run/latest.pt",
        "model": "cyclip-rn-tiny",
        "tasks": {
            "zeroshot/digits": {"task": "zeroshot", "data": "d", "metrics": {"top1": top1, "top3": 1.0}},
            "linear-probe/digits": {"task": "linear-probe", "data": "d", "metrics": {"score": probe, "C": 3.16}},
            "consistency/digits": {
                "task": "consistency",
                "data": "d",
                "metrics": {"inmodal_gap": gap, **{f"consistency@{k}": 0.5 + k / 40 for k in (1, 3, 5, 10)}},
            },
            "few-shot/digits": {"task": "few-shot", "data": "d", "metrics": {"1": {"mean": 0.4, "std": 0.05}}},
            "zeroshot/broken": {"task": "zeroshot", "data": "x", "error": "x: folder not found"},
        },
    }


def test_markdown_table_formats_fractions_as_percent_and_keeps_raw_values():
    table = markdown_table(results(0.61234, 0.0123456, 0.8))
    assert "| zeroshot/digits | top1 | 61.23 |" in table
    assert "| consistency/digits | inmodal_gap | 0.01235 |" in table
    assert "| linear-probe/digits | C | 3.16 |" in table
    assert "| few-shot/digits | 1/mean | 40.00 |" in table
    assert "| zeroshot/broken | error | x: folder not found |" in table


def test_comparison_has_one_column_per_run_and_the_difference():
    header, *rows = comparison_rows({"CLIP": results(0.60, 0.20, 0.80), "CyCLIP": results(0.625, 0.05, 0.79)})
    assert header[2:] == ["CLIP", "CyCLIP", "Δ (CyCLIP − CLIP)"]
    row = {(r[0], r[1]): r[2:] for r in rows}
    assert row[("zeroshot/digits", "top1")] == ["60.00", "62.50", "+2.50"]
    assert row[("consistency/digits", "inmodal_gap")] == ["0.2", "0.05", "-0.15"]
    assert row[("linear-probe/digits", "score")] == ["80.00", "79.00", "-1.00"]


def test_bar_heights_are_the_metrics():
    figure = accuracy_bars_figure({"A": results(0.60, 0.2, 0.8), "B": results(0.625, 0.05, 0.79)})
    zeroshot_axis, probe_axis = figure.axes
    assert [round(p.get_height(), 6) for p in zeroshot_axis.patches] == [60.0, 62.5]
    assert [round(p.get_height(), 6) for p in probe_axis.patches] == [80.0, 79.0]
    assert "+2.5" in [text.get_text() for text in zeroshot_axis.texts]


def test_compare_command_writes_table_and_figures(tmp_path, capsys):
    for name, values in (("clip", (0.6, 0.2, 0.8)), ("cyclip", (0.625, 0.05, 0.79))):
        (tmp_path / name).mkdir()
        (tmp_path / name / "eval.json").write_text(json.dumps(results(*values)))
    output = tmp_path / "cmp"
    assert main(["compare", str(tmp_path / "clip"), str(tmp_path / "cyclip"), "--output", str(output)]) == 0
    printed = capsys.readouterr().out
    assert "Δ (cyclip − clip)" in printed and "+2.50" in printed
    assert "| zeroshot/digits | top1 | 60.00 | 62.50 | +2.50 |" in (output / "comparison.md").read_text()
    for figure in ("accuracy.png", "consistency_at_k.png", "few_shot.png"):
        with Image.open(output / figure) as image:
            assert image.format == "PNG" and image.width > 500


@pytest.mark.parametrize(
    ("content", "message"), [("not json", "not valid JSON at line 1"), ('{"checkpoint": "x"}', "'tasks' mapping")]
)
def test_bad_results_file_is_one_line(tmp_path, capsys, content, message):
    (tmp_path / "a.json").write_text(content)
    assert main(["compare", str(tmp_path / "a.json")]) == 2
    error = capsys.readouterr().err
    assert message in error and error.count("\n") == 1
    with pytest.raises(ValueError, match=message):
        read_results(tmp_path / "a.json")


def test_a_run_folder_is_read_through_its_one_suite_results_file(tmp_path, capsys):
    from cyclip.cli.evaluate import suite_results_path

    assert suite_results_path(tmp_path / "run" / "latest.pt", tmp_path / "imagenet.yaml") == (
        tmp_path / "run" / "eval-imagenet.json"
    )
    (tmp_path / "exported").mkdir()
    assert suite_results_path(tmp_path / "exported", tmp_path / "imagenet.yaml") == (
        tmp_path / "exported-eval-imagenet.json"
    )
    (tmp_path / "run").mkdir()
    (tmp_path / "run" / "eval-imagenet.json").write_text(json.dumps(results(0.6, 0.2, 0.8)))
    assert read_results(tmp_path / "run")["tasks"]["zeroshot/digits"]["metrics"]["top1"] == 0.6
    (tmp_path / "run" / "eval-cifar.json").write_text(json.dumps(results(0.6, 0.2, 0.8)))
    assert main(["compare", str(tmp_path / "run")]) == 2
    error = capsys.readouterr().err
    assert error.count("\n") == 1 and "eval-cifar.json, eval-imagenet.json); pass one of them" in error
