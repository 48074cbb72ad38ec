"""The figures of `cyclip compare`: accuracy, consistency gaps, consistency@k and few-shot curves of several runs.

Every figure names its dataset and the runs in its title, labels both axes with their units, draws each run
in the same colour in every panel and figure (`run_colours`), and starts accuracy axes at 0 with the full
0-1 range, so that a difference of a few thousandths looks as small as it is. Values are fractions, as in
the results files.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
from matplotlib.axes import Axes  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402

from cyclip.evaluation.consistency import CONSISTENCY_K, NEIGHBOUR_K  # noqa: E402
from cyclip.evaluation.report import labels_of, metric_value  # noqa: E402
from cyclip.files import atomic_path  # noqa: E402

Runs = dict[str, dict[str, Any]]
Colours = dict[str, Any]
CONSISTENCY_PANELS = (  # metric prefix, its ks, title, x-axis label
    ("consistency", CONSISTENCY_K, "consistency@k", "k (top-k zero-shot classes of the image)"),
    ("neighbour_agreement", NEIGHBOUR_K, "neighbour agreement@k", "k (nearest neighbours)"),
)
FRACTION_LIMITS = (0.0, 1.05)  # accuracy-like axes: always the whole range, never zoomed onto a difference
GAPS = (  # metric, and its tick label: what the gap averages over pairs j != k
    ("inmodal_gap", "in-modal gap\n|⟨I_j,I_k⟩ − ⟨T_j,T_k⟩|"),
    ("crossmodal_gap", "cross-modal gap\n|⟨I_j,T_k⟩ − ⟨I_k,T_j⟩|"),
)


def run_colours(names: Sequence[str]) -> Colours:
    """One colour per run, in the order given: the same run is drawn in the same colour everywhere."""
    palette = plt.get_cmap("tab10")
    return {name: palette(index % 10) for index, name in enumerate(names)}


def write_figures(runs: Runs, output: Path) -> list[Path]:
    """Every figure the results allow, as PNG files in `output` (each written atomically); their paths."""
    colours = run_colours(list(runs))
    written = []
    for filename, build in FIGURES:
        figure = build(runs, colours)
        if figure is None:
            continue
        with atomic_path(output / filename) as temporary:
            figure.savefig(temporary, dpi=150, format="png")
        plt.close(figure)
        written.append(output / filename)
    return written


def accuracy_figure(runs: Runs, colours: Colours) -> Figure | None:
    """Grouped bars per dataset: zero-shot top-1 and linear-probe accuracy, with B − A above each pair of bars."""
    panels = [
        (metric, title, labels_of(runs, task))
        for task, metric, title in (("zeroshot", "top1", "zero-shot top-1"), ("linear-probe", "score", "linear probe"))
    ]
    panels = [panel for panel in panels if panel[2]]
    if not panels:
        return None
    names = list(runs)
    figure, axes = plt.subplots(1, len(panels), figsize=(5.5 * len(panels), 4.8), squeeze=False, layout="constrained")
    for axis, (metric, title, labels) in zip(axes[0], panels, strict=True):
        values = {name: [metric_value(runs[name], label, metric) for label in labels] for name in names}
        _grouped_bars(axis, values, colours, "%.3f")
        if len(names) == 2:
            first, second = names
            for x, (a, b) in enumerate(zip(values[first], values[second], strict=True)):
                if a == a and b == b:  # both present (not NaN)
                    axis.annotate(
                        f"{second} − {first}: {b - a:+.3f}",
                        (x, max(a, b)),
                        xytext=(0, 16),
                        textcoords="offset points",
                        ha="center",
                        color="tab:green" if b >= a else "tab:red",
                        fontweight="bold",
                    )
        axis.set_xticks(range(len(labels)), [_dataset(label) for label in labels])
        axis.set(title=title, xlabel="dataset", ylabel="accuracy (fraction of test images)", ylim=(0, 1.12))
        axis.set_yticks([0, 0.2, 0.4, 0.6, 0.8, 1.0])
        axis.grid(axis="y", alpha=0.3)
    datasets = list(dict.fromkeys(_dataset(label) for *_, labels in panels for label in labels))
    return _finish(figure, f"Accuracy on {', '.join(datasets)}", colours)


def consistency_gaps_figure(runs: Runs, colours: Colours) -> Figure | None:
    """The in-modal and cross-modal consistency gaps (what CyCLIP's regularizers reduce), one bar per run and one
    panel per dataset."""
    labels = labels_of(runs, "consistency")
    if not labels:
        return None
    figure, axes = plt.subplots(1, len(labels), figsize=(6 * len(labels), 4.8), squeeze=False, layout="constrained")
    for axis, label in zip(axes[0], labels, strict=True):
        values = {name: [metric_value(runs[name], label, metric) for metric, _ in GAPS] for name in runs}
        _grouped_bars(axis, values, colours, "%.4f")
        highest = max((value for heights in values.values() for value in heights if value == value), default=0.0)
        axis.set_xticks(range(len(GAPS)), [text for _, text in GAPS])
        axis.set(
            title=f"on {_dataset(label)} (lower is better)",
            ylabel="mean |Δ cosine similarity|",
            ylim=(0, 1.2 * highest if highest > 0 else 1),
        )
        axis.grid(axis="y", alpha=0.3)
    return _finish(figure, "Consistency gaps between the image and text spaces", colours)


def consistency_at_k_figure(runs: Runs, colours: Colours) -> Figure | None:
    """consistency@k and neighbour agreement@k against k, one line per run, one row of panels per dataset."""
    labels = labels_of(runs, "consistency")
    if not labels:
        return None
    figure, axes = plt.subplots(
        len(labels), 2, figsize=(11, 4.2 * len(labels) + 0.8), squeeze=False, layout="constrained"
    )
    for row, label in zip(axes, labels, strict=True):
        for axis, (prefix, ks, title, xlabel) in zip(row, CONSISTENCY_PANELS, strict=True):
            absent = []
            for name, results in runs.items():
                values = [metric_value(results, label, f"{prefix}@{k}") for k in ks]
                axis.plot(ks, values, "o-", label=name, color=colours[name])
                absent += [name] if all(value != value for value in values) else []
            _note_absent(axis, absent)
            axis.set(
                title=f"{title} on {_dataset(label)}",
                xlabel=xlabel,
                ylabel="fraction of image-caption pairs",
                xticks=list(ks),
                ylim=FRACTION_LIMITS,
            )
            axis.grid(alpha=0.3)
    return _finish(figure, "Consistency of the image and text spaces (higher is better)", colours)


def few_shot_figure(runs: Runs, colours: Colours) -> Figure | None:
    """Few-shot probe accuracy against examples per class (log2 axis, ticks at the shots), mean ± std over
    seeds; one panel per dataset."""
    labels = labels_of(runs, "few-shot")
    if not labels:
        return None
    figure, axes = plt.subplots(1, len(labels), figsize=(6 * len(labels), 4.8), squeeze=False, layout="constrained")
    for axis, label in zip(axes[0], labels, strict=True):
        all_shots: set[int] = set()
        absent = []
        for name, results in runs.items():
            metrics = results["tasks"].get(label, {}).get("metrics", {})
            shots = sorted(int(k) for k in metrics if k.isdigit())
            absent += [] if shots else [name]
            all_shots.update(shots)
            means = [metrics[str(k)]["mean"] for k in shots]
            stds = [metrics[str(k)]["std"] for k in shots]
            axis.errorbar(shots, means, yerr=stds, marker="o", capsize=3, label=name, color=colours[name])
        _shot_axis(axis, sorted(all_shots))
        _note_absent(axis, absent)
        axis.set(
            title=f"on {_dataset(label)} (mean ± std over seeds)",
            xlabel="training examples per class (k)",
            ylabel="accuracy (fraction of test images)",
            ylim=FRACTION_LIMITS,
        )
        axis.grid(alpha=0.3)
    return _finish(figure, "Few-shot linear probe", colours)


def _grouped_bars(axis: Axes, values: dict[str, list[float]], colours: Colours, label_format: str) -> None:
    """One bar per run in each group (x = 0, 1, ...), labelled with its value, or 'missing' where a run has none;
    bars no wider than 0.3."""
    width = min(0.8 / len(values), 0.3)
    groups = len(next(iter(values.values())))
    for index, (name, heights) in enumerate(values.items()):
        positions = [x + (index - (len(values) - 1) / 2) * width for x in range(groups)]
        bars = axis.bar(positions, heights, width, label=name, color=colours[name])
        axis.bar_label(bars, labels=[label_format % h if h == h else "" for h in heights], fontsize=8)
        for position, height in zip(positions, heights, strict=True):
            if height != height:  # NaN: the run has no such result
                axis.text(position, 0, " missing", rotation=90, ha="center", va="bottom", fontsize=8, color="grey")
    axis.set_xlim(-0.6, groups - 0.4)


def _finish(figure: Figure, what: str, colours: Colours) -> Figure:
    """The title (what the figure shows, then the runs compared) and one legend for the whole figure: a run has
    one colour in every panel."""
    handles = [plt.Rectangle((0, 0), 1, 1, color=colour) for colour in colours.values()]
    figure.suptitle(f"{what}\n{' vs '.join(colours)}")
    figure.legend(handles, list(colours), loc="outside lower center", ncol=len(colours))
    return figure


def _note_absent(axis: Axes, names: list[str]) -> None:
    """Say in the panel which runs have no results for it (a failed or missing task), rather than leave them out."""
    if names:
        text = f"no results: {', '.join(names)}"
        axis.text(0.98, 0.03, text, transform=axis.transAxes, ha="right", va="bottom", color="grey", fontsize=9)


def _shot_axis(axis: Axes, shots: list[int]) -> None:
    """A log2 x-axis with one tick per shot count, labelled 1, 2, 4, 8, 16 (not 2^0, 2^1, ...)."""
    axis.set_xscale("log", base=2)
    axis.set_xticks(shots, [str(k) for k in shots])
    axis.minorticks_off()
    if shots:
        axis.set_xlim(shots[0] / 1.4, shots[-1] * 1.4)


def _dataset(label: str) -> str:
    """The dataset part of a task label ('zeroshot/digits' -> 'digits')."""
    return label.split("/", 1)[-1]


FIGURES: tuple[tuple[str, Callable[[Runs, Colours], Figure | None]], ...] = (
    ("accuracy.png", accuracy_figure),
    ("consistency_gaps.png", consistency_gaps_figure),
    ("consistency_at_k.png", consistency_at_k_figure),
    ("few_shot.png", few_shot_figure),
)
