"""The demo: CLIP vs CyCLIP from the same seed on scikit-learn's handwritten digits, on a laptop CPU.

Held-out digits and held-out caption templates measure zero-shot accuracy; held-out image-caption
pairs measure how consistent the two embedding spaces are.
"""

from __future__ import annotations

import json
import logging
import shutil
import time
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from cyclip.config import TrainConfig  # noqa: E402
from cyclip.data import ImageCaptionDataset, write_digits_demo  # noqa: E402
from cyclip.evaluation.consistency import consistency_gaps  # noqa: E402
from cyclip.evaluation.embeddings import embed_pairs  # noqa: E402
from cyclip.evaluation.zeroshot import zeroshot_classification  # noqa: E402
from cyclip.models import load_checkpoint  # noqa: E402
from cyclip.train import resolve_device, train  # noqa: E402

log = logging.getLogger("cyclip.demo")

RUNS = {"CLIP": (0.0, 0.0), "CyCLIP": (0.25, 0.25)}


def run_demo(
    output: Path,
    model: str = "cyclip-rn-tiny",
    epochs: int = 8,
    device: str = "auto",
    workers: int = 0,
    seed: int = 0,
) -> dict[str, Any]:
    """Train both models, evaluate them, print the comparison and write JSON and plots to `output`."""
    started = time.perf_counter()
    output.mkdir(parents=True, exist_ok=True)
    for name in RUNS:  # the demo owns its run folders: start them afresh
        shutil.rmtree(output / name.lower(), ignore_errors=True)
    data = write_digits_demo(output / "data", seed=seed)
    log.info("demo data in %s", data.root)
    results: dict[str, Any] = {}
    for name, (lambda_inmodal, lambda_crossmodal) in RUNS.items():
        log.info("training %s (lambda_inmodal=%g, lambda_crossmodal=%g)", name, lambda_inmodal, lambda_crossmodal)
        config = TrainConfig(
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
            output=str(output / name.lower()),
            log_every=5,
        )
        run = train(config)
        results[name] = {**_evaluate(run.checkpoint, data, device), "history": run.history, "output": str(run.output)}
    summary = {"model": model, "epochs": epochs, "seed": seed, "runs": results}
    (output / "results.json").write_text(json.dumps(summary, indent=2))
    _plot_curves(results, output / "training_curves.png")
    _plot_comparison(results, output / "comparison.png")
    print(format_table(results))
    print(f"\nresults: {output / 'results.json'}")
    print(f"plots:   {output / 'training_curves.png'}, {output / 'comparison.png'}")
    print(f"time:    {time.perf_counter() - started:.0f} s")
    return summary


def _evaluate(checkpoint: Path, data, device: str) -> dict[str, float]:
    torch_device = resolve_device(device)
    model, preprocess, tokenizer = load_checkpoint(checkpoint, device=torch_device)
    zeroshot = zeroshot_classification(model, preprocess, tokenizer, data.zeroshot_dir, torch_device, progress=False)
    pairs = ImageCaptionDataset(data.val_csv, transform=preprocess, tokenizer=tokenizer)
    images, texts = embed_pairs(model, pairs, torch_device, progress=False)
    return {"zeroshot_top1": zeroshot["top1"], "zeroshot_top3": zeroshot["top3"], **consistency_gaps(images, texts)}


ROWS = [
    ("zero-shot top-1, held-out digits (%)", lambda r: 100 * r["zeroshot_top1"], "{:.1f}"),
    ("zero-shot top-3, held-out digits (%)", lambda r: 100 * r["zeroshot_top3"], "{:.1f}"),
    ("in-modal gap, held-out pairs", lambda r: r["inmodal_gap"], "{:.4f}"),
    ("cross-modal gap, held-out pairs", lambda r: r["crossmodal_gap"], "{:.4f}"),
    ("final train contrastive loss", lambda r: r["history"][-1]["train"]["contrastive"], "{:.4f}"),
    ("final val contrastive loss", lambda r: r["history"][-1]["val"]["contrastive"], "{:.4f}"),
    ("final val in-modal regularizer", lambda r: r["history"][-1]["val"]["inmodal_cyclic"], "{:.4f}"),
    ("final val cross-modal regularizer", lambda r: r["history"][-1]["val"]["crossmodal_cyclic"], "{:.4f}"),
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
    figure, axes = plt.subplots(1, 3, figsize=(15, 4))
    for name, result in results.items():
        metrics = _read_metrics(result["output"])
        train = [m for m in metrics if m["split"] == "train"]
        val = [m for m in metrics if m["split"] == "val"]
        zeroshot = [m for m in metrics if m["split"] == "zeroshot"]
        axes[0].plot([m["step"] for m in train], [m["contrastive"] for m in train], label=f"{name} train")
        axes[0].plot([m["step"] for m in val], [m["contrastive"] for m in val], "o--", label=f"{name} val")
        axes[1].plot([m["step"] for m in val], [m["inmodal_cyclic"] for m in val], "o-", label=f"{name} in-modal")
        axes[1].plot(
            [m["step"] for m in val], [m["crossmodal_cyclic"] for m in val], "s--", label=f"{name} cross-modal"
        )
        axes[2].plot([m["epoch"] for m in zeroshot], [100 * m["top1"] for m in zeroshot], "o-", label=name)
    axes[0].set(title="contrastive loss", xlabel="step")
    axes[1].set(title="cyclic regularizers (validation)", xlabel="step", yscale="log")
    axes[2].set(title="zero-shot top-1 on held-out digits (%)", xlabel="epoch")
    for axis in axes:
        axis.legend()
        axis.grid(alpha=0.3)
    figure.tight_layout()
    figure.savefig(path, dpi=120)
    plt.close(figure)


def _plot_comparison(results: dict[str, Any], path: Path) -> None:
    names = list(results)
    panels = [
        ("zero-shot top-1 (%)", [100 * results[n]["zeroshot_top1"] for n in names]),
        ("in-modal gap", [results[n]["inmodal_gap"] for n in names]),
        ("cross-modal gap", [results[n]["crossmodal_gap"] for n in names]),
    ]
    figure, axes = plt.subplots(1, len(panels), figsize=(12, 4))
    for axis, (title, values) in zip(axes, panels, strict=True):
        bars = axis.bar(names, values, color=["tab:blue", "tab:orange"][: len(names)])
        axis.bar_label(bars, fmt="%.3g")
        axis.set_title(title)
        axis.grid(axis="y", alpha=0.3)
    figure.suptitle("CLIP vs CyCLIP on held-out handwritten digits")
    figure.tight_layout()
    figure.savefig(path, dpi=120)
    plt.close(figure)
