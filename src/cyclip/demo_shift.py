"""`cyclip demo --shift`: does CyCLIP hold up better than CLIP when the style of the images changes?

Both models learn from scikit-learn's handwritten digit scans (the demo's data and training runs) and are
tested zero-shot on held-out scans (in style) and on the same ten digits typeset in the fonts matplotlib
ships (`cyclip.data.typeset_digits`: shifted style, same 8x8 format). One seed says little at this
scale, so each model is trained from several seeds and every number is reported as mean ± sample
standard deviation over them.
"""

from __future__ import annotations

import json
import logging
import shutil
import statistics
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any, NamedTuple

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402
from PIL import Image  # noqa: E402

from cyclip.data import DigitsDemoData, write_digits_demo  # noqa: E402
from cyclip.data.typeset_digits import write_typeset_digits  # noqa: E402
from cyclip.demo import RUNS, claim_output, demo_train_config, evaluate_checkpoint  # noqa: E402
from cyclip.evaluation.datasets.labelled import read_labelled_folder  # noqa: E402
from cyclip.evaluation.tasks import TaskSpec  # noqa: E402
from cyclip.train import train  # noqa: E402

log = logging.getLogger("cyclip.demo")

SEEDS = (0, 1, 2)
# One caption per training scan (the plain demo writes two): half the steps per epoch, so that two
# models x three seeds fit in 10 minutes on 2 CPU cores (about 7 measured).
CAPTIONS_PER_IMAGE = 1
TEST_SETS = {"handwritten": "held-out scans, in style", "typeset": "typeset digits, shifted style"}


class Metric(NamedTuple):
    key: str  # in the JSON: "<key>/<test set>"
    label: str  # table row
    task: str  # the evaluation task that measures it
    name: str  # its name in that task's metrics
    factor: float  # display scale: 100 for fractions shown in percent
    axis_label: str  # figure axis, with the unit


METRICS = (
    Metric("zeroshot_top1", "zero-shot top-1 (%)", "zeroshot", "top1", 100.0, "zero-shot top-1 accuracy (%)"),
    Metric("inmodal_gap", "in-modal gap", "consistency", "inmodal_gap", 1.0, "in-modal gap (|Δ cosine similarity|)"),
    Metric(
        "crossmodal_gap",
        "cross-modal gap",
        "consistency",
        "crossmodal_gap",
        1.0,
        "cross-modal gap (|Δ cosine similarity|)",
    ),
    Metric("consistency@1", "consistency@1 (%)", "consistency", "consistency@1", 100.0, "consistency@1 (%)"),
)
TASK_KINDS = tuple(dict.fromkeys(metric.task for metric in METRICS))
MODEL_COLOURS = {"CLIP": "tab:blue", "CyCLIP": "tab:orange"}
DATASET = "scikit-learn handwritten digits → typeset digits"


def run_shift_demo(
    output: Path,
    model: str = "cyclip-rn-tiny",
    epochs: int = 8,
    device: str = "auto",
    workers: int = 0,
    seeds: Sequence[int] = SEEDS,
    typeset_variants: int | None = None,
) -> dict[str, Any]:
    """Train CLIP and CyCLIP from each seed, test both styles, print the table and write JSON, Markdown and plots.

    `typeset_variants` (renderings per font and digit) defaults to the generator's; tests make it small.
    """
    started = time.perf_counter()
    if not seeds or len(set(seeds)) != len(seeds):
        raise ValueError(f"seeds must be distinct and at least one, got {list(seeds)}")
    claim_output(output)
    typeset_options = {} if typeset_variants is None else {"variants": typeset_variants}
    typeset = write_typeset_digits(output / "data" / "typeset", **typeset_options)
    runs: dict[str, dict[str, dict[str, float]]] = {name: {} for name in RUNS}
    for seed in seeds:
        data = write_digits_demo(
            output / "data" / f"handwritten-seed-{seed}", seed=seed, captions_per_image=CAPTIONS_PER_IMAGE
        )
        for name in RUNS:
            run_folder = output / f"seed-{seed}" / name.lower()
            shutil.rmtree(run_folder, ignore_errors=True)  # a previous demo's run: the demo made it
            log.info("seed %d: training %s", seed, name)
            run = train(demo_train_config(data, name, run_folder, model, epochs, device, workers, seed))
            evaluation = evaluate_checkpoint(run.checkpoint, model, shift_tasks(data, typeset), device, workers)
            runs[name][str(seed)] = run_metrics(evaluation)
    summary = {
        "dataset": DATASET,
        "model": model,
        "epochs": epochs,
        "seeds": list(seeds),
        "test_sets": TEST_SETS,
        "runs": runs,
        "summary": {name: summarize(per_seed) for name, per_seed in runs.items()},
    }
    table = format_table(summary)
    (output / "shift_results.md").write_text(table + "\n")
    figures = {"shift_comparison.png": comparison_figure(summary), "shift_examples.png": examples_figure(data, typeset)}
    for filename, figure in figures.items():
        figure.savefig(output / filename, dpi=150)
        plt.close(figure)
    summary["seconds"] = round(time.perf_counter() - started, 1)
    (output / "shift_results.json").write_text(json.dumps(summary, indent=2) + "\n")
    print(table)
    print(f"\nresults: {output / 'shift_results.json'}, {output / 'shift_results.md'}")
    print(f"plots:   {', '.join(str(output / filename) for filename in figures)}")
    print(f"time:    {summary['seconds']:.0f} s")
    return summary


def shift_tasks(data: DigitsDemoData, typeset: Path) -> list[TaskSpec]:
    """Zero-shot and consistency on the in-style held-out scans and on the typeset digits."""
    folders = {"handwritten": str(data.zeroshot_dir), "typeset": str(typeset)}
    return [TaskSpec(task, folder, name=f"{task}/{name}") for name, folder in folders.items() for task in TASK_KINDS]


def run_metrics(evaluation: dict[str, Any]) -> dict[str, float]:
    """{"zeroshot_top1/typeset": value, ...} from one checkpoint's suite results (fractions stay fractions)."""
    tasks = evaluation["tasks"]
    metrics = {}
    for metric in METRICS:
        for test_set in TEST_SETS:
            entry = tasks[f"{metric.task}/{test_set}"]
            if "error" in entry:
                raise RuntimeError(f"{metric.task} on the {test_set} digits failed: {entry['error']}")
            metrics[f"{metric.key}/{test_set}"] = float(entry["metrics"][metric.name])
    return metrics


def summarize(per_seed: dict[str, dict[str, float]]) -> dict[str, dict[str, Any]]:
    """Per metric: mean, sample standard deviation (None from one seed) and the values, over seeds."""
    keys = next(iter(per_seed.values())).keys()
    summary = {}
    for key in keys:
        values = [metrics[key] for metrics in per_seed.values()]
        std = statistics.stdev(values) if len(values) > 1 else None
        summary[key] = {"mean": statistics.fmean(values), "std": std, "values": values}
    return summary


def format_table(summary: dict[str, Any]) -> str:
    """Markdown: one row per metric and test set, one column per model, cells `mean ± std`."""
    names = list(summary["summary"])
    seeds = len(summary["seeds"])
    lines = [
        f"{DATASET}: {summary['model']}, {summary['epochs']} epochs, mean ± std over {seeds} seed(s)",
        "",
        f"| metric | test set | {' | '.join(names)} |",
        "|---|---|" + "---:|" * len(names),
    ]
    for metric in METRICS:
        decimals = 1 if metric.factor == 100 else 4
        for test_set in TEST_SETS:
            cells = []
            for name in names:
                stats = summary["summary"][name][f"{metric.key}/{test_set}"]
                cell = f"{metric.factor * stats['mean']:.{decimals}f}"
                if stats["std"] is not None:
                    cell += f" ± {metric.factor * stats['std']:.{decimals}f}"
                cells.append(cell)
            lines.append(f"| {metric.label} | {test_set} | {' | '.join(cells)} |")
    return "\n".join(lines)


def comparison_figure(summary: dict[str, Any]) -> Figure:
    """One panel per metric: bars of the mean per model and test set, error bars of ±1 std, dots per seed."""
    names = list(summary["summary"])
    figure, axes = plt.subplots(1, len(METRICS), figsize=(4.2 * len(METRICS), 4.2))
    width = 0.8 / len(names)
    positions = np.arange(len(TEST_SETS))
    for axis, metric in zip(axes, METRICS, strict=True):
        factor = metric.factor
        for index, name in enumerate(names):
            stats = [summary["summary"][name][f"{metric.key}/{test_set}"] for test_set in TEST_SETS]
            x = positions + (index - (len(names) - 1) / 2) * width
            colour = MODEL_COLOURS.get(name, f"C{index}")
            bars = axis.bar(
                x,
                [factor * s["mean"] for s in stats],
                width,
                yerr=[factor * (s["std"] or 0.0) for s in stats],
                capsize=4,
                color=colour,
                alpha=0.85,
                label=name,
            )
            decimals = 1 if factor == 100 else 3
            means = [f"{factor * s['mean']:.{decimals}f}" for s in stats]
            axis.bar_label(bars, means, label_type="center", color="white", fontsize=8)
            for position, s in zip(x, stats, strict=True):
                axis.plot([position] * len(s["values"]), [factor * v for v in s["values"]], "k.", markersize=4)
        axis.set_xticks(positions, [f"{name}\n({about.split(', ')[-1]})" for name, about in TEST_SETS.items()])
        axis.set(xlabel="test set", ylabel=metric.axis_label)
        axis.grid(axis="y", alpha=0.3)
    axes[0].legend()
    seeds = len(summary["seeds"])
    figure.suptitle(
        f"{' vs '.join(names)} ({summary['model']}, {summary['epochs']} epochs) trained on scikit-learn's "
        f"handwritten digits, tested zero-shot on held-out scans and on typeset digits\n"
        f"bars: mean over {seeds} seed(s), error bars: ± 1 std, dots: single seeds",
        fontsize=10,
    )
    figure.tight_layout()
    return figure


def examples_figure(data: DigitsDemoData, typeset: Path, per_digit: int = 3) -> Figure:
    """The first `per_digit` images of each digit from both test sets, side by side: what the shift looks like."""
    figure, axes = plt.subplots(2 * per_digit, 10, figsize=(8, 1.0 * 2 * per_digit + 0.6))
    for block, (title, folder) in enumerate((("handwritten", data.zeroshot_dir), ("typeset", typeset))):
        images = read_labelled_folder(folder)
        for digit in range(10):
            paths = [path for path, label in zip(images.paths, images.labels, strict=True) if label == digit]
            for row in range(per_digit):  # spread over the set: typeset digits come font by font
                axis = axes[block * per_digit + row, digit]
                image = Image.open(paths[row * len(paths) // per_digit])
                axis.imshow(np.asarray(image), cmap="gray", vmin=0, vmax=255)
                axis.set_xticks([])
                axis.set_yticks([])
                if digit == 0 and row == 0:
                    axis.set_ylabel(title, fontsize=8)
    figure.suptitle("Held-out handwritten scans (top) and typeset digits (bottom), 8x8 pixels, 17 grey levels")
    figure.tight_layout()
    return figure
