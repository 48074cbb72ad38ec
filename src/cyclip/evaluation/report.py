"""Reports of evaluation results: one checkpoint's Markdown table, several side by side, and the paper-style figures.

Results are the dict `cyclip.evaluation.tasks.run_suite` returns and `write_results` writes as eval.json:
{"checkpoint", "model", "tasks": {label: {"task", "data", "metrics" | "error"}}}. Metrics are fractions
(shown as percentages) or raw values (gaps, regularizers, alignment, uniformity, C), possibly nested one
level (few-shot: {k: {"mean", "std"}}).
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402

from cyclip.files import read_json, write_text_atomically  # noqa: E402
from cyclip.provenance import provenance  # noqa: E402

RAW_METRICS = ("gap", "regularizer", "alignment", "uniformity", "C", "num_")
CONSISTENCY_K = (1, 3, 5, 10)
NEIGHBOUR_K = (1, 5, 10)


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


def check_results_target(path: str | Path, overwrite: bool = False) -> None:
    """Refuse (ValueError) to replace an existing results file, or the Markdown table beside it, unless `overwrite`."""
    path = Path(path)
    if path.is_dir():
        raise ValueError(f"{path}: is a folder; --output takes the JSON file to write, e.g. {path / 'eval.json'}")
    existing = [item for item in (path, path.with_suffix(".md")) if item.exists()]
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


def flat_metrics(results: dict[str, Any]) -> dict[tuple[str, str], float]:
    """{(task label, metric): value} over every numeric metric; nested dicts become 'outer/inner'."""
    flat: dict[tuple[str, str], float] = {}
    for label, entry in results["tasks"].items():
        for name, value in flatten_metrics(entry.get("metrics", {})).items():
            flat[(label, name)] = value
    return flat


def format_value(metric: str, value: float) -> str:
    """Percentages with two decimals for fractions (accuracy, recall, ...), four significant digits otherwise."""
    if math.isnan(value):
        return "-"
    if any(part in metric for part in RAW_METRICS):
        return f"{value:.4g}"
    return f"{100 * value:.2f}"


def markdown_table(results: dict[str, Any]) -> str:
    """One checkpoint's metrics; fractions in percent."""
    lines = [f"Results for `{results.get('checkpoint', '?')}` ({results.get('model') or 'model'})", ""]
    if isinstance(results.get("provenance"), dict):
        lines[1:1] = ["", provenance_line(results["provenance"])]
    lines += ["| task | metric | value |", "|---|---|---:|"]
    for (label, metric), value in flat_metrics(results).items():
        lines.append(f"| {label} | {metric} | {format_value(metric, value)} |")
    for label, entry in results["tasks"].items():
        if "error" in entry:
            lines.append(f"| {label} | error | {entry['error']} |")
    return "\n".join(lines)


def provenance_line(record: dict[str, Any]) -> str:
    """'cyclip 0.1.0 (git 1a2b3c4d), torch 2.4.0, open_clip 2.26.1: `cyclip eval suite ...`' from a provenance dict."""
    commit = record.get("git_commit")
    line = f"cyclip {record.get('cyclip')}" + (
        f" (git {commit[:8]}{'-dirty' * commit.endswith('-dirty')})" if commit else ""
    )
    line += f", torch {record.get('torch')}, open_clip {record.get('open_clip')}"
    return line + (f": `{record['command']}`" if record.get("command") else "")


def comparison_rows(runs: dict[str, dict[str, Any]]) -> list[list[str]]:
    """Header plus one row per (task, metric) in any run; a Δ column (last − first) with exactly two runs."""
    flats = {name: flat_metrics(results) for name, results in runs.items()}
    keys = list(dict.fromkeys(key for flat in flats.values() for key in flat))
    names = list(runs)
    rows = [["task", "metric", *names, *(["Δ (" + names[1] + " − " + names[0] + ")"] if len(names) == 2 else [])]]
    for label, metric in keys:
        values = [flats[name].get((label, metric), math.nan) for name in names]
        row = [label, metric, *(format_value(metric, value) for value in values)]
        if len(names) == 2:
            delta = values[1] - values[0]
            row.append("-" if math.isnan(delta) else _signed(format_value(metric, delta)))
        rows.append(row)
    return rows


def comparison_table(runs: dict[str, dict[str, Any]]) -> str:
    """The comparison as Markdown (percentages for fractions)."""
    header, *rows = comparison_rows(runs)
    lines = ["| " + " | ".join(header) + " |", "|---|---|" + "---:|" * (len(header) - 2)]
    return "\n".join(lines + ["| " + " | ".join(row) + " |" for row in rows])


def format_comparison(runs: dict[str, dict[str, Any]]) -> str:
    """The comparison as aligned plain text for the terminal."""
    rows = comparison_rows(runs)
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    return "\n".join(
        "  ".join(
            cell.ljust(width) if i < 2 else cell.rjust(width)
            for i, (cell, width) in enumerate(zip(row, widths, strict=True))
        )
        for row in rows
    )


def accuracy_bars_figure(runs: dict[str, dict[str, Any]]) -> Figure | None:
    """Grouped bars per dataset: zero-shot top-1 and linear-probe score, with B − A above each group of two."""
    panels = [("zeroshot", "top1", "zero-shot top-1 (%)"), ("linear-probe", "score", "linear probe (%)")]
    panels = [panel for panel in panels if _labels_of(runs, panel[0])]
    if not panels:
        return None
    names = list(runs)
    figure, axes = plt.subplots(1, len(panels), figsize=(6 * len(panels), 4.5), squeeze=False)
    width = 0.8 / len(names)
    for axis, (task, metric, title) in zip(axes[0], panels, strict=True):
        labels = _labels_of(runs, task)
        for index, name in enumerate(names):
            values = [100 * _metric_value(runs[name], label, metric) for label in labels]
            positions = [x + (index - (len(names) - 1) / 2) * width for x in range(len(labels))]
            bars = axis.bar(positions, values, width, label=name)
            axis.bar_label(bars, fmt="%.1f", fontsize=8)
        if len(names) == 2:
            for x, label in enumerate(labels):
                a, b = (100 * _metric_value(runs[name], label, metric) for name in names)
                if not math.isnan(b - a):
                    axis.annotate(
                        f"{b - a:+.1f}",
                        (x, max(a, b)),
                        xytext=(0, 14),
                        textcoords="offset points",
                        ha="center",
                        color="tab:green" if b >= a else "tab:red",
                        fontweight="bold",
                    )
        axis.set_xticks(range(len(labels)), [label.split("/", 1)[-1] for label in labels], rotation=20)
        axis.set(title=title, ylim=(0, 115))
        axis.legend(loc="lower right")
        axis.grid(axis="y", alpha=0.3)
    figure.tight_layout()
    return figure


def consistency_figure(runs: dict[str, dict[str, Any]]) -> Figure | None:
    """consistency@k and neighbour agreement@k against k, one line per run (per consistency task)."""
    labels = _labels_of(runs, "consistency")
    if not labels:
        return None
    figure, axes = plt.subplots(1, 2, figsize=(11, 4))
    for axis, (prefix, ks, title) in zip(
        axes,
        [
            ("consistency", CONSISTENCY_K, "consistency@k"),
            ("neighbour_agreement", NEIGHBOUR_K, "neighbour agreement@k"),
        ],
        strict=True,
    ):
        for name, results in runs.items():
            for label in labels:
                values = [100 * _metric_value(results, label, f"{prefix}@{k}") for k in ks]
                axis.plot(ks, values, "o-", label=name if len(labels) == 1 else f"{name} {label}")
        axis.set(title=f"{title} (%)", xlabel="k", xticks=list(ks))
        axis.legend()
        axis.grid(alpha=0.3)
    figure.tight_layout()
    return figure


def few_shot_figure(runs: dict[str, dict[str, Any]]) -> Figure | None:
    """Few-shot probe accuracy against shots per class (log2 axis), mean ± std over seeds."""
    labels = _labels_of(runs, "few-shot")
    if not labels:
        return None
    figure, axis = plt.subplots(figsize=(6, 4))
    for name, results in runs.items():
        for label in labels:
            metrics = results["tasks"][label].get("metrics", {})
            shots = sorted(int(k) for k in metrics if k.isdigit())
            means = [100 * metrics[str(k)]["mean"] for k in shots]
            stds = [100 * metrics[str(k)]["std"] for k in shots]
            axis.errorbar(shots, means, yerr=stds, marker="o", capsize=3, label=f"{name} {label.split('/', 1)[-1]}")
    axis.set_xscale("log", base=2)
    axis.set(title="few-shot linear probe (%)", xlabel="examples per class")
    axis.legend()
    axis.grid(alpha=0.3)
    figure.tight_layout()
    return figure


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
        output = Path(output)
        output.mkdir(parents=True, exist_ok=True)
        (output / "comparison.md").write_text(written["markdown"] + "\n", encoding="utf-8")
        written["files"] = [output / "comparison.md"]
        for build, filename in (
            (accuracy_bars_figure, "accuracy.png"),
            (consistency_figure, "consistency_at_k.png"),
            (few_shot_figure, "few_shot.png"),
        ):
            figure = build(runs)
            if figure is not None:
                figure.savefig(output / filename, dpi=150)
                plt.close(figure)
                written["figures"].append(output / filename)
    return written


def flatten_metrics(metrics: dict[str, Any], prefix: str = "") -> dict[str, float]:
    """Numeric leaves of a metrics dict; nested dicts become 'outer/inner' (few-shot: '1/mean')."""
    flat: dict[str, float] = {}
    for key, value in metrics.items():
        if isinstance(value, dict):
            flat |= flatten_metrics(value, f"{prefix}{key}/")
        elif isinstance(value, int | float) and not isinstance(value, bool):
            flat[f"{prefix}{key}"] = float(value)
    return flat


def _signed(text: str) -> str:
    return text if text.startswith("-") else f"+{text}"


def _labels_of(runs: dict[str, dict[str, Any]], task: str) -> list[str]:
    """Labels of the tasks of this kind that produced metrics in some run, in first-seen order."""
    labels = (
        label
        for results in runs.values()
        for label, entry in results["tasks"].items()
        if entry.get("task") == task and "metrics" in entry
    )
    return list(dict.fromkeys(labels))


def _metric_value(results: dict[str, Any], label: str, metric: str) -> float:
    """One metric of one task as a float; NaN where the run lacks it (a failed or missing task)."""
    value = results["tasks"].get(label, {}).get("metrics", {}).get(metric)
    return float(value) if isinstance(value, int | float) else math.nan


def _run_name(path: Path) -> str:
    return path.name if path.is_dir() else (path.parent.name if path.name == "eval.json" else path.stem)
