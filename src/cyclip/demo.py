"""The demo: CLIP vs CyCLIP from the same seed on scikit-learn's handwritten digits, on a laptop CPU.

Held-out digits and held-out caption templates measure zero-shot accuracy; held-out image-caption
pairs measure how consistent the two embedding spaces are. Both runs then go through the evaluation
suite and `cyclip compare`'s table and figures.
"""

from __future__ import annotations

import json
import logging
import shutil
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from cyclip.config import TrainConfig  # noqa: E402
from cyclip.data import DigitsDemoData, write_digits_demo  # noqa: E402
from cyclip.evaluation.encoder import Encoder  # noqa: E402
from cyclip.evaluation.figures import run_colours  # noqa: E402
from cyclip.evaluation.report import compare_runs, write_results  # noqa: E402
from cyclip.evaluation.settings import EvalConfig  # noqa: E402
from cyclip.evaluation.tasks import RETRIEVAL, TASKS, TaskSpec, run_suite  # noqa: E402
from cyclip.models import load_checkpoint  # noqa: E402
from cyclip.objective import TERM_NAMES  # noqa: E402
from cyclip.runtime import resolve_device  # noqa: E402
from cyclip.train import train  # noqa: E402

log = logging.getLogger("cyclip.demo")

RUNS = {"CLIP": (0.0, 0.0), "CyCLIP": (0.25, 0.25)}
# Written first into the demo's folder: only a folder holding it may have its run folders replaced.
DEMO_MARKER = ".cyclip-demo"


def run_demo(output: Path, *, model: str, epochs: int, device: str, workers: int, seed: int) -> dict[str, Any]:
    """Train both models, evaluate them, print the comparison and write JSON and plots to `output`."""
    started = time.perf_counter()
    claim_output(output)
    for name in RUNS:  # a previous demo's run folders: the demo made them, so it starts them afresh
        shutil.rmtree(output / name.lower(), ignore_errors=True)
    data = write_digits_demo(output / "data", seed=seed)
    log.info("demo data in %s", data.root)
    results: dict[str, Any] = {}
    for name, (lambda_inmodal, lambda_crossmodal) in RUNS.items():
        log.info("training %s (lambda_inmodal=%g, lambda_crossmodal=%g)", name, lambda_inmodal, lambda_crossmodal)
        config = demo_train_config(data, name, output / name.lower(), model, epochs, device, workers, seed)
        run = train(config)
        evaluation = evaluate_checkpoint(run.checkpoint, model, evaluation_tasks(data), device, workers)
        results[name] = {"eval": evaluation, "history": run.history, "output": str(run.output)}
    summary = {"model": model, "epochs": epochs, "seed": seed, "runs": results}
    (output / "results.json").write_text(json.dumps(summary, indent=2))
    _plot_curves(results, output / "training_curves.png")
    written = compare_runs(
        [Path(result["output"]) / "eval.json" for result in results.values()], names=list(results), output=output
    )
    print(format_table(results))
    print(f"\nresults: {output / 'results.json'}, {output / 'comparison.md'} (every evaluation metric)")
    figures = [str(path) for path in written.get("figures", []) if path]
    print(f"plots:   {', '.join([str(output / 'training_curves.png'), *figures])}")
    print(f"time:    {time.perf_counter() - started:.0f} s")
    return summary


def claim_output(output: Path) -> None:
    """Make `output` the demo's folder; refuse a folder with other content (the demo never deletes what it did
    not create, and `runs/clip` may be a real run)."""
    if output.exists() and not output.is_dir():
        raise ValueError(f"--output {output} is a file, not a folder; choose another --output for the demo")
    if output.is_dir() and any(output.iterdir()) and not (output / DEMO_MARKER).is_file():
        raise ValueError(
            f"--output {output} is not empty and holds no previous demo; choose a new or empty folder "
            "(the demo replaces its own run folders there and never touches anything else)"
        )
    output.mkdir(parents=True, exist_ok=True)
    (output / DEMO_MARKER).write_text("This folder was made by `cyclip demo`, which may replace its contents.\n")


def demo_train_config(
    data: DigitsDemoData, name: str, output: Path, model: str, epochs: int, device: str, workers: int, seed: int
) -> TrainConfig:
    """The demo's training run of model `name` (a key of RUNS) on the digits."""
    lambda_inmodal, lambda_crossmodal = RUNS[name]
    return TrainConfig(
        train_data=str(data.train_csv),
        val_data=str(data.val_csv),
        zeroshot_data=str(data.zeroshot_dir),
        model=model,
        lambda_inmodal=lambda_inmodal,
        lambda_crossmodal=lambda_crossmodal,
        epochs=epochs,
        batch_size=64,
        lr=1e-3,
        wd=0.1,
        warmup=50,
        workers=workers,
        seed=seed,
        device=device,
        output=str(output),
        log_every=5,
    )


def evaluation_tasks(data: DigitsDemoData) -> list[TaskSpec]:
    """The suite the demo runs on each model: every registered task, on the held-out digits (retrieval on the
    held-out image-caption pairs; the probes train on their own split; parity groups the digits)."""
    heldout = str(data.zeroshot_dir)
    options = {"train_data": str(data.probe_train_dir), "superclasses": str(data.superclasses)}
    specs = []
    for task in TASKS.values():
        given: dict[str, Any] = {option: value for option, value in options.items() if option in task.options}
        label = f"{task.name}/digits" + ("-parity" if "superclasses" in given else "")
        source = str(data.val_csv) if task.dataset == RETRIEVAL else heldout
        specs.append(TaskSpec(task.name, source, name=label, **given))
    return specs


def evaluate_checkpoint(
    checkpoint: Path, model_name: str, tasks: list[TaskSpec], device: str, workers: int
) -> dict[str, Any]:
    """The suite's results, also written as eval.json / eval.md beside the checkpoint (as `cyclip eval suite`)."""
    settings = EvalConfig(device=device, workers=workers)
    torch_device = resolve_device(settings.device)
    model, preprocess, tokenizer = load_checkpoint(checkpoint, device=torch_device)
    encoder = Encoder(model, preprocess, tokenizer, torch_device, settings.batch_size, settings.workers, progress=False)
    results = run_suite(tasks, encoder, checkpoint, model_name)
    write_results(results, checkpoint.parent / "eval.json")
    return results


def _metric_getter(task: str, name: str) -> Callable[[dict[str, Any]], float]:
    """A function reading one metric of one task from a demo run's results."""
    return lambda run: run["eval"]["tasks"][task]["metrics"][name]


ROWS = [  # label, value, format: fractions in [0, 1] like every other output
    ("zero-shot top-1, held-out digits ↑", _metric_getter("zeroshot/digits", "top1"), "{:.4f}"),
    ("linear probe, held-out digits ↑", _metric_getter("linear-probe/digits", "score"), "{:.4f}"),
    ("in-modal gap, held-out pairs ↓", _metric_getter("consistency/digits", "inmodal_gap"), "{:.4f}"),
    ("cross-modal gap, held-out pairs ↓", _metric_getter("consistency/digits", "crossmodal_gap"), "{:.4f}"),
    ("consistency@1, held-out pairs ↑", _metric_getter("consistency/digits", "consistency@1"), "{:.4f}"),
    ("final train contrastive loss", lambda r: r["history"][-1]["train"][TERM_NAMES.contrastive], "{:.4f}"),
    ("final val contrastive loss", lambda r: r["history"][-1]["val"][TERM_NAMES.contrastive], "{:.4f}"),
    ("final val in-modal regularizer", lambda r: r["history"][-1]["val"][TERM_NAMES.inmodal_cyclic], "{:.4f}"),
    ("final val cross-modal regularizer", lambda r: r["history"][-1]["val"][TERM_NAMES.crossmodal_cyclic], "{:.4f}"),
]


def format_table(results: dict[str, Any]) -> str:
    names = list(results)
    lines = [f"| metric | {' | '.join(names)} |", "|---|" + "---|" * len(names)]
    for label, value, fmt in ROWS:
        lines.append(f"| {label} | {' | '.join(fmt.format(value(results[name])) for name in names)} |")
    return "\n".join(lines)


def _read_metrics(run_output: str) -> list[dict[str, Any]]:
    with open(Path(run_output) / "metrics.jsonl") as lines:
        return [json.loads(line) for line in lines]


def _plot_curves(results: dict[str, Any], path: Path) -> None:
    """Losses, regularizers and zero-shot accuracy during training, each run in its colour of the comparison
    figures (training solid, validation dashed)."""
    colours = run_colours(list(results))
    contrastive, inmodal, crossmodal = TERM_NAMES.contrastive, TERM_NAMES.inmodal_cyclic, TERM_NAMES.crossmodal_cyclic
    figure, axes = plt.subplots(1, 3, figsize=(15, 4.5), layout="constrained")
    for name, result in results.items():
        metrics = _read_metrics(result["output"])
        train = [m for m in metrics if m["split"] == "train"]
        val = [m for m in metrics if m["split"] == "val"]
        zeroshot = [m for m in metrics if m["split"] == "zeroshot"]
        colour = colours[name]
        axes[0].plot([m["epoch"] for m in train], [m[contrastive] for m in train], color=colour, label=f"{name} train")
        axes[0].plot([m["epoch"] for m in val], [m[contrastive] for m in val], "o--", color=colour, label=f"{name} val")
        axes[1].plot([m["epoch"] for m in val], [m[inmodal] for m in val], "o-", color=colour, label=f"{name} in-modal")
        axes[1].plot(
            [m["epoch"] for m in val], [m[crossmodal] for m in val], "s--", color=colour, label=f"{name} cross-modal"
        )
        axes[2].plot([m["epoch"] for m in zeroshot], [m["top1"] for m in zeroshot], "o-", color=colour, label=name)
    axes[0].set(title="contrastive loss", xlabel="epoch", ylabel="cross-entropy (nats)")
    axes[1].set(
        title="cyclic regularizers (validation)", xlabel="epoch", ylabel="regularizer value (log scale)", yscale="log"
    )
    axes[2].set(title="zero-shot top-1", xlabel="epoch", ylabel="accuracy (fraction of images)", ylim=(0, 1.05))
    for axis in axes:
        axis.legend()
        axis.grid(alpha=0.3)
    figure.suptitle(f"Training on the demo's digits, held-out digits for validation: {' vs '.join(results)}")
    figure.savefig(path, dpi=120)
    plt.close(figure)
