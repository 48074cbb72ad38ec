"""Reports: tables and figures from hand-built results, and `cyclip compare` end to end."""

from __future__ import annotations

import json

import matplotlib.colors
import pytest
from PIL import Image

from cyclip.cli import main
from cyclip.evaluation.report import comparison_rows, markdown_table, read_results


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
                "metrics": {
                    "inmodal_gap": gap,
                    "crossmodal_gap": gap / 2,
                    **{f"consistency@{k}": 0.5 + k / 40 for k in (1, 3, 5, 10)},
                },
            },
            "few-shot/digits": {"task": "few-shot", "data": "d", "metrics": {"1": {"mean": 0.4, "std": 0.05}}},
            "zeroshot/broken": {"task": "zeroshot", "data": "x", "error": "x: folder not found"},
        },
    }


def test_markdown_table_shows_fractions_directions_counts_and_errors():
    table = markdown_table(results(0.61234, 0.0123456, 0.8))
    assert "| zeroshot/digits | top1 ↑ | 0.6123 |" in table
    assert "| consistency/digits | inmodal_gap ↓ | 0.01235 |" in table
    assert "| linear-probe/digits | C (setting) | 3.16 |" in table
    assert "| few-shot/digits | 1-shot ↑ | 0.4000 ± 0.0500 |" in table
    assert "| zeroshot/broken | error | x: folder not found |" in table
    assert "Fractions in [0, 1] unless noted" in table


def test_comparison_has_a_column_per_run_directions_and_differences_only_where_they_mean_something():
    clip, cyclip = results(0.60, 0.20, 0.80), results(0.625, 0.05, 0.79)
    clip["tasks"]["zeroshot/digits"]["metrics"]["num_images"] = 360
    cyclip["tasks"]["zeroshot/digits"]["metrics"]["num_images"] = 360
    cyclip["tasks"]["zeroshot/broken"] = {"task": "zeroshot", "data": "x", "metrics": {"top1": 0.5}}
    del cyclip["tasks"]["few-shot/digits"]
    header, *rows = comparison_rows({"CLIP": clip, "CyCLIP": cyclip})
    assert header == ["task", "metric", "CLIP", "CyCLIP", "Δ CyCLIP − CLIP"]
    row = {(r[0], r[1]): r[2:] for r in rows}
    assert row[("zeroshot/digits", "top1 ↑")] == ["0.6000", "0.6250", "+0.0250 better"]
    assert row[("consistency/digits", "inmodal_gap ↓")] == ["0.2", "0.05", "-0.15 better"]
    assert row[("linear-probe/digits", "score ↑")] == ["0.8000", "0.7900", "-0.0100 worse"]
    assert row[("zeroshot/digits", "num_images (count)")] == ["360", "360", ""]  # shown, never a difference
    assert row[("linear-probe/digits", "C (setting)")] == ["3.16", "3.16", ""]
    assert row[("zeroshot/broken", "status")] == ["failed: x: folder not found", "ok", ""]
    assert row[("zeroshot/broken", "top1 ↑")] == ["failed", "0.5000", ""]
    assert row[("few-shot/digits", "status")] == ["ok", "missing", ""]
    assert row[("few-shot/digits", "1-shot ↑")] == ["0.4000 ± 0.0500", "missing", ""]


def test_figures_show_fractions_from_zero_with_labelled_axes_titles_and_one_colour_per_run():
    from cyclip.evaluation import figures

    runs = {"A": results(0.60, 0.2, 0.8), "B": results(0.625, 0.05, 0.79)}
    for k, mean in ((2, 0.5), (4, 0.6), (8, 0.7), (16, 0.75)):
        for run in runs.values():
            run["tasks"]["few-shot/digits"]["metrics"][str(k)] = {"mean": mean, "std": 0.01}
    colours = figures.run_colours(list(runs))
    drawn = {name: build(runs, colours) for name, build in figures.FIGURES}
    zeroshot_axis, probe_axis = drawn["accuracy.png"].axes
    assert [round(p.get_height(), 6) for p in zeroshot_axis.patches] == [0.6, 0.625]
    assert [round(p.get_height(), 6) for p in probe_axis.patches] == [0.8, 0.79]
    assert "B − A: +0.025" in [text.get_text() for text in zeroshot_axis.texts]
    gaps_axis = drawn["consistency_gaps.png"].axes[0]
    assert [round(p.get_height(), 6) for p in gaps_axis.patches] == [0.2, 0.1, 0.05, 0.025]  # A's two, then B's
    few_shot_axis = drawn["few_shot.png"].axes[0]
    assert few_shot_axis.get_xscale() == "log"
    assert [tick.get_text() for tick in few_shot_axis.get_xticklabels()] == ["1", "2", "4", "8", "16"]
    for name, figure in drawn.items():
        assert "A vs B" in figure.get_suptitle(), name
        for axis in figure.axes:
            assert axis.get_xlabel() or axis.get_xticklabels(), name
            assert axis.get_ylabel(), name
            assert axis.get_ylim()[0] == 0, name  # never zoomed onto a difference
            assert "digits" in axis.get_title() + figure.get_suptitle(), name
            drawn_runs = set()
            for container in axis.containers:  # bars (one container per run) and error bars
                parts = container.patches if hasattr(container, "patches") else [container.lines[0]]
                for part in parts:
                    colour = part.get_facecolor() if hasattr(part, "get_facecolor") else part.get_color()
                    assert matplotlib.colors.same_color(colour, colours[container.get_label()]), name
                drawn_runs.add(container.get_label())
            for line in axis.lines:
                if line.get_label() in runs:
                    assert matplotlib.colors.same_color(line.get_color(), colours[line.get_label()]), name
                    drawn_runs.add(line.get_label())
            assert drawn_runs == set(runs), name


def test_compare_command_writes_table_and_figures(tmp_path, capsys):
    for name, values in (("clip", (0.6, 0.2, 0.8)), ("cyclip", (0.625, 0.05, 0.79))):
        (tmp_path / name).mkdir()
        (tmp_path / name / "eval.json").write_text(json.dumps(results(*values)))
    output = tmp_path / "cmp"
    assert main(["compare", str(tmp_path / "clip"), str(tmp_path / "cyclip"), "--output", str(output)]) == 0
    printed = capsys.readouterr().out
    assert "Δ cyclip − clip" in printed and "+0.0250 better" in printed
    assert "| zeroshot/digits | top1 ↑ | 0.6000 | 0.6250 | +0.0250 better |" in (output / "comparison.md").read_text()
    for figure in ("accuracy.png", "consistency_gaps.png", "consistency_at_k.png", "few_shot.png"):
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
