"""Reports of evaluation results: the results files, one checkpoint's table and several runs side by side.

Results are the dict `cyclip.evaluation.tasks.run_suite` returns and `write_results` writes as eval.json:
{"checkpoint", "model", "tasks": {label: {"task", "data", "metrics" | "error"}}, "provenance"}. Metrics are
fractions in [0, 1] (accuracies, recalls, agreements: never percentages, in files and on screen alike), raw
values (gaps, regularizers, alignment, uniformity), counts (num_*) or settings (the probe's C); few-shot
nests {k: {"mean", "std"}} and names the k it skipped under "skipped". `metric_kind` says which a metric is
and in which direction it is better; counts and settings are shown but never reported as differences.
The figures of a comparison are drawn by `cyclip.evaluation.figures`.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cyclip.files import read_json, write_text_atomically
from cyclip.provenance import provenance

HIGHER, LOWER = "↑", "↓"
# Name parts of metrics that are better when lower (raw values), and of those that are not compared at all.
_LOWER_IS_BETTER = ("gap", "regularizer", "alignment", "uniformity", "loss")
_COUNTS = ("num_",)
_SETTINGS = ("C",)


def read_results(path: str | Path) -> dict[str, Any]:
    """A suite results file, or a run folder holding one (eval.json, or its one eval-SUITE.json), checked for the
    expected shape."""
    path = Path(path)
    if path.is_dir():
        path = _results_in_folder(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: results file not found; write it with `cyclip eval suite`")
    results = read_json(path, "results file")
    if not isinstance(results, dict) or not isinstance(results.get("tasks"), dict):
        raise ValueError(f"{path}: expected an object with a 'tasks' mapping, as `cyclip eval suite` writes")
    for label, entry in results["tasks"].items():
        if not isinstance(entry, dict) or not isinstance(entry.get("metrics", entry.get("error")), dict | str):
            raise ValueError(f"{path}: task {label!r} has neither 'metrics' nor 'error'")
    return results


def check_results_target(path: str | Path, overwrite: bool = False, table: bool = True) -> None:
    """Refuse (ValueError) to replace an existing results file, or with `table` the Markdown table beside it,
    unless `overwrite`; and refuse a folder."""
    path = Path(path)
    if path.is_dir():
        raise ValueError(f"{path}: is a folder; --output takes the file to write, e.g. {path / 'eval.json'}")
    existing = [item for item in (path, path.with_suffix(".md") if table else path) if item.exists()]
    if existing and not overwrite:
        raise ValueError(f"{existing[0]}: exists; pass --overwrite to replace it, or --output another file")


def _results_in_folder(folder: Path) -> Path:
    """The results file of a run folder: eval.json (the demo's), else its only eval-SUITE.json (the suite's)."""
    suites = sorted(folder.glob("eval-*.json"))
    if (folder / "eval.json").is_file() or not suites:
        return folder / "eval.json"
    if len(suites) > 1:
        raise ValueError(
            f"{folder}: holds several results files ({', '.join(p.name for p in suites)}); pass one of them"
        )
    return suites[0]


def write_results(results: dict[str, Any], path: str | Path, overwrite: bool = False) -> tuple[Path, Path]:
    """Write a suite's results as JSON to `path` and as the Markdown table beside it (.md); both atomically.
    Existing files are replaced only with `overwrite` (`check_results_target`).

    The one writer of eval.json / eval.md, for `cyclip eval suite` and the demo alike; both record the
    provenance (versions, git commit, command line).
    """
    check_results_target(path, overwrite)
    path = Path(path)
    table = path.with_suffix(".md")
    results = {**results, "provenance": results.get("provenance") or provenance()}
    write_text_atomically(path, json.dumps(results, indent=2) + "\n")
    write_text_atomically(table, markdown_table(results) + "\n")
    return path, table


@dataclass(frozen=True)
class MetricKind:
    """What a metric is: its better direction (HIGHER, LOWER, or "" for counts and settings, which are shown but
    never compared), whether it is a fraction in [0, 1], and a note shown instead of a direction."""

    better: str
    fraction: bool
    note: str = ""

    @property
    def compared(self) -> bool:
        return bool(self.better)


def metric_kind(metric: str) -> MetricKind:
    """The kind of a metric from its name (the last part of 'task/metric' or 'k-shot')."""
    leaf = metric.rsplit("/", 1)[-1]
    if leaf.startswith(_COUNTS):
        return MetricKind("", False, "count")
    if leaf in _SETTINGS:
        return MetricKind("", False, "setting")
    if any(part in leaf for part in _LOWER_IS_BETTER):
        return MetricKind(LOWER, False)
    return MetricKind(HIGHER, True)


def format_value(metric: str, value: float) -> str:
    """Fractions with four decimals, counts as integers, everything else with four significant digits."""
    if math.isnan(value):
        return "-"
    kind = metric_kind(metric)
    if kind.note == "count":
        return f"{value:.0f}"
    return f"{value:.4f}" if kind.fraction else f"{value:.4g}"


def metric_label(metric: str) -> str:
    """The metric with its better direction, or what it is when it is not compared: 'top1 ↑', 'C (setting)'."""
    kind = metric_kind(metric)
    return f"{metric} {kind.better}" if kind.better else f"{metric} ({kind.note})"


@dataclass
class Cell:
    """One run's entry in a row: a value (with a spread for few-shot means), or why there is none."""

    value: float = math.nan
    spread: float | None = None
    status: str = ""  # "missing", "failed: ...", "skipped: ..."

    def text(self, metric: str, width: int | None = None) -> str:
        if self.status:
            return self.status if width is None or len(self.status) <= width else self.status[: width - 1] + "…"
        shown = format_value(metric, self.value)
        return shown if self.spread is None else f"{shown} ± {format_value(metric, self.spread)}"


@dataclass
class Row:
    task: str
    metric: str  # a metric name, or "status" for the row saying a task failed or is missing in some run
    cells: list[Cell]


def result_rows(runs: dict[str, dict[str, Any]]) -> list[Row]:
    """Every (task, metric) of any run, in first-seen order, one cell per run. A task that failed or is missing
    in some run gets a "status" row saying so (and its metric cells say "failed" / "missing")."""
    names = list(runs)
    labels = list(dict.fromkeys(label for results in runs.values() for label in results["tasks"]))
    rows = []
    for label in labels:
        entries = [runs[name]["tasks"].get(label) for name in names]
        values = [_metric_cells(entry.get("metrics", {})) if entry else {} for entry in entries]
        statuses = [_status(entry) for entry in entries]
        if any(statuses):
            rows.append(Row(label, "status", [Cell(status=status or "ok") for status in statuses]))
        for metric in dict.fromkeys(metric for cells in values for metric in cells):
            cells = [
                cells.get(metric, Cell(status=(status.split(":")[0] if status else "missing")))
                for cells, status in zip(values, statuses, strict=True)
            ]
            rows.append(Row(label, metric, cells))
    return rows


def _status(entry: dict[str, Any] | None) -> str:
    if entry is None:
        return "missing"
    return f"failed: {entry['error']}" if "error" in entry else ""


def _metric_cells(metrics: dict[str, Any]) -> dict[str, Cell]:
    """{metric: Cell} of one task's metrics; few-shot's {k: {"mean", "std"}} become 'k-shot' cells."""
    cells: dict[str, Cell] = {}
    skipped = metrics.get("skipped")
    skipped = skipped if isinstance(skipped, dict) else {}
    for key, value in metrics.items():
        if key == "skipped":
            continue
        if isinstance(value, dict) and "mean" in value:
            cells[f"{key}-shot"] = Cell(float(value["mean"]), float(value.get("std", math.nan)))
        elif isinstance(value, int | float) and not isinstance(value, bool):
            cells[key] = Cell(float(value))
    for k, why in skipped.items():
        cells[f"{k}-shot"] = Cell(status=f"skipped: {why}")
    return cells


def markdown_table(results: dict[str, Any]) -> str:
    """One checkpoint's metrics as Markdown: each metric with its better direction, failures as rows."""
    lines = [f"Results for `{results.get('checkpoint', '?')}` ({results.get('model') or 'model'})", ""]
    if isinstance(results.get("provenance"), dict):
        lines[1:1] = ["", provenance_line(results["provenance"])]
    lines += [UNITS, "", "| task | metric | value |", "|---|---|---:|"]
    for row in result_rows({"": results}):
        metric = "error" if row.metric == "status" else metric_label(row.metric)
        status = row.cells[0].status.removeprefix("failed: ")
        lines.append(f"| {row.task} | {metric} | {_escape(status or row.cells[0].text(row.metric))} |")
    return "\n".join(lines)


UNITS = "Fractions in [0, 1] unless noted; ↑ higher is better, ↓ lower is better."


def format_metrics(metrics: dict[str, Any]) -> str:
    """One task's metrics for the terminal, one per line: '  top1 ↑  0.6123'."""
    rows = result_rows({"": {"tasks": {"": {"metrics": metrics}}}})
    labelled = [(metric_label(row.metric), row.cells[0].text(row.metric)) for row in rows]
    width = max((len(label) for label, _ in labelled), default=0)
    return "\n".join(f"  {label:<{width}}  {text}" for label, text in labelled)


def provenance_line(record: dict[str, Any]) -> str:
    """'cyclip 0.1.0 (git 1a2b3c4d), torch 2.4.0, open_clip 2.26.1: `cyclip eval suite ...`' from a provenance dict."""
    commit = record.get("git_commit")
    dirty = "-dirty" if commit and commit.endswith("-dirty") else ""
    line = f"cyclip {record.get('cyclip')}" + (f" (git {commit[:8]}{dirty})" if commit else "")
    line += f", torch {record.get('torch')}, open_clip {record.get('open_clip')}"
    return line + (f": `{record['command']}`" if record.get("command") else "")


def comparison_rows(runs: dict[str, dict[str, Any]], width: int | None = None) -> list[list[str]]:
    """Header plus one row per (task, metric): the metric with its better direction, one column per run, and a
    difference column per run after the first (that run minus the first, with "better"/"worse"). Counts and
    settings have no difference; statuses (failed, missing, skipped) are cut to `width` characters."""
    names = list(runs)
    header = ["task", "metric", *names, *(f"Δ {name} − {names[0]}" for name in names[1:])]
    table = [header]
    for row in result_rows(runs):
        metric = row.metric if row.metric == "status" else metric_label(row.metric)
        cells = [cell.text(row.metric, width) for cell in row.cells]
        deltas = [_delta(row.metric, row.cells[0], cell) for cell in row.cells[1:]]
        table.append([row.task, metric, *cells, *deltas])
    return table


def _delta(metric: str, first: Cell, other: Cell) -> str:
    """'+0.0250 better' (the direction read from the metric's kind); empty for counts, settings and statuses."""
    kind = metric_kind(metric)
    difference = other.value - first.value
    if metric == "status" or not kind.compared or math.isnan(difference):
        return ""
    shown = format_value(metric, difference)
    shown = shown if shown.startswith("-") else f"+{shown}"
    if difference == 0:
        return shown
    improved = (difference > 0) == (kind.better == HIGHER)
    return f"{shown} {'better' if improved else 'worse'}"


def comparison_table(runs: dict[str, dict[str, Any]]) -> str:
    """The comparison as Markdown, with the units line above it."""
    header, *rows = comparison_rows(runs)
    lines = [UNITS, "", "| " + " | ".join(header) + " |", "|---|---|" + "---:|" * (len(header) - 2)]
    return "\n".join(lines + ["| " + " | ".join(_escape(cell) for cell in row) + " |" for row in rows])


def format_comparison(runs: dict[str, dict[str, Any]]) -> str:
    """The comparison as aligned plain text for the terminal (statuses cut to 40 characters)."""
    rows = comparison_rows(runs, width=40)
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    lines = [
        "  ".join(
            cell.ljust(width) if i < 2 else cell.rjust(width)
            for i, (cell, width) in enumerate(zip(row, widths, strict=True))
        ).rstrip()
        for row in rows
    ]
    return "\n".join([UNITS, "", *lines])


def compare_runs(paths: list[str | Path], names: list[str] | None = None, output: Path | None = None) -> dict[str, Any]:
    """Read the results, and with `output` write comparison.md and the figures there; returns the tables and paths."""
    if names is not None and len(names) != len(paths):
        raise ValueError(f"got {len(names)} names for {len(paths)} runs; give one name per run")
    names = names or [_run_name(Path(path)) for path in paths]
    runs = dict(zip(names, (read_results(path) for path in paths), strict=True))
    if len(runs) != len(paths):
        raise ValueError("two runs have the same name; pass --names")
    written: dict[str, Any] = {"text": format_comparison(runs), "markdown": comparison_table(runs), "figures": []}
    if output is not None:
        from cyclip.evaluation.figures import write_figures  # matplotlib: only when figures are asked for

        output = Path(output)
        if output.exists() and not output.is_dir():
            raise ValueError(f"--output {output}: is a file; compare writes into a folder (comparison.md, figures)")
        write_text_atomically(output / "comparison.md", written["markdown"] + "\n")
        written["files"] = [output / "comparison.md"]
        written["figures"] = write_figures(runs, output)
    return written


def metric_value(results: dict[str, Any], label: str, metric: str) -> float:
    """One metric of one task as a float; NaN where the run lacks it (a failed or missing task)."""
    value = results["tasks"].get(label, {}).get("metrics", {}).get(metric)
    return float(value) if isinstance(value, int | float) else math.nan


def labels_of(runs: dict[str, dict[str, Any]], task: str) -> list[str]:
    """Labels of the tasks of this kind that produced metrics in some run, in first-seen order."""
    labels = (
        label
        for results in runs.values()
        for label, entry in results["tasks"].items()
        if entry.get("task") == task and "metrics" in entry
    )
    return list(dict.fromkeys(labels))


def _escape(cell: str) -> str:
    return cell.replace("|", "\\|").replace("\n", " ")


def _run_name(path: Path) -> str:
    return path.name if path.is_dir() else (path.parent.name if path.name.startswith("eval") else path.stem)
