"""cyclip's metrics in clip_benchmark's result layout, so that they sit in the same tables as its numbers.

`clip_benchmark eval` writes one JSON file per (model, dataset, task):

    {"dataset": "cifar10", "model": "ViT-B-32", "pretrained": "laion2b_s34b_b79k",
     "task": "zeroshot_classification", "metrics": {...}, "language": "en"}

with these metrics (fractions in [0, 1], as cyclip's):

    zeroshot_classification  acc1, acc5 (NaN below 5 classes), mean_per_class_recall
    linear_probe             lp_acc1, lp_acc5 (NaN below 5 classes), lp_mean_per_class_recall
    zeroshot_retrieval       image_retrieval_recall@k (a caption finds its image: cyclip's text_to_image_R@k),
                             text_retrieval_recall@k (an image finds one of its captions: image_to_text_R@k)

`clip_benchmark build` collects such files into one CSV.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

__all__ = ["CLIP_BENCHMARK_TASKS", "clip_benchmark_record"]

CLIP_BENCHMARK_TASKS = {
    "zeroshot": "zeroshot_classification",
    "linear-probe": "linear_probe",
    "retrieval": "zeroshot_retrieval",
}


def clip_benchmark_record(
    task: str, metrics: Mapping[str, Any], dataset: str, model: str, pretrained: str
) -> dict[str, Any]:
    """The clip_benchmark result of one cyclip task's metrics (`run_task`'s output)."""
    if task not in CLIP_BENCHMARK_TASKS:
        raise ValueError(
            f"--format clip_benchmark: clip_benchmark has no task {task!r}; it covers {', '.join(CLIP_BENCHMARK_TASKS)}"
        )
    return {
        "dataset": dataset,
        "model": model,
        "pretrained": pretrained,
        "task": CLIP_BENCHMARK_TASKS[task],
        "metrics": _METRICS[task](metrics),
        "language": "en",
    }


def _zeroshot(metrics: Mapping[str, Any]) -> dict[str, float]:
    return {
        "acc1": metrics["top1"],
        "acc5": metrics.get("top5", math.nan),
        "mean_per_class_recall": metrics["mean_per_class_recall"],
    }


def _linear_probe(metrics: Mapping[str, Any]) -> dict[str, float]:
    return {
        "lp_acc1": metrics["accuracy"],
        "lp_acc5": metrics.get("top5_accuracy", math.nan),
        "lp_mean_per_class_recall": metrics["mean_per_class_accuracy"],
    }


def _retrieval(metrics: Mapping[str, Any]) -> dict[str, float]:
    ks = sorted(int(key.split("@")[1]) for key in metrics if key.startswith("text_to_image_R@"))
    converted = {f"image_retrieval_recall@{k}": metrics[f"text_to_image_R@{k}"] for k in ks}
    return converted | {f"text_retrieval_recall@{k}": metrics[f"image_to_text_R@{k}"] for k in ks}


_METRICS = {"zeroshot": _zeroshot, "linear-probe": _linear_probe, "retrieval": _retrieval}
