"""Evaluation of trained models: each task is a function of embeddings, and the registry runs them on datasets.

On embeddings you already have (L2-normalised rows, as `cyclip.embed_images` / `cyclip.embed_texts` return):

    topk_accuracy(logits, labels)                       zero-shot top-k accuracy (logits = images @ classes.T)
    mean_per_class_recall(logits, labels)               zero-shot mean per-class recall
    linear_probe(train_x, train_y, test_x, test_y)      logistic-regression probe, C chosen on a validation split
    few_shot_probe(train_x, train_y, test_x, test_y)    k-shot probes, mean and std over seeds
    retrieval_recall(images, texts, image_of_text)      image->text and text->image Recall@k
    consistency_report(images, texts, classes, labels)  gaps, regularizers, neighbour agreement, consistency@k
    class_geometry(images, labels, classes)             alignment and uniformity against class embeddings
    paired_geometry(images, texts)                      alignment and uniformity of image-caption pairs
    fine_coarse_accuracy(logits, labels, superclass_of) fine vs coarse zero-shot accuracy

On datasets, as `cyclip eval` does: `run_task(TaskSpec(task, data=...), Encoder(model, preprocess, tokenizer,
device, batch_size, workers))` (`TASKS` lists the tasks); `run_suite` runs several into the results that
`write_results` writes as eval.json, `read_results` reads back and `compare_runs` puts side by side.
"""

import importlib
from typing import Any

# Imported now, not on first use: the function has its module's name, and a later `import` of the module would
# otherwise make `cyclip.evaluation.linear_probe` the module.
from cyclip.evaluation.linear_probe import few_shot_probe, linear_probe

# Each public name and its module, imported on first use: the command line imports the registry to build its
# flags, and that must not pull in open_clip (which the encoder and the datasets need).
_PUBLIC = {
    "topk_accuracy": "cyclip.evaluation.zeroshot",
    "mean_per_class_recall": "cyclip.evaluation.zeroshot",
    "retrieval_recall": "cyclip.evaluation.retrieval",
    "consistency_report": "cyclip.evaluation.consistency",
    "class_geometry": "cyclip.evaluation.geometry",
    "paired_geometry": "cyclip.evaluation.geometry",
    "fine_coarse_accuracy": "cyclip.evaluation.granularity",
    "TASKS": "cyclip.evaluation.tasks",
    "TaskSpec": "cyclip.evaluation.tasks",
    "run_task": "cyclip.evaluation.tasks",
    "run_suite": "cyclip.evaluation.tasks",
    "Encoder": "cyclip.evaluation.encoder",
    "write_results": "cyclip.evaluation.report",
    "read_results": "cyclip.evaluation.report",
    "compare_runs": "cyclip.evaluation.report",
}

__all__ = ["few_shot_probe", "linear_probe", *_PUBLIC]


def __getattr__(name: str) -> Any:
    """The names of `_PUBLIC`, imported when first used."""
    if name in _PUBLIC:
        return getattr(importlib.import_module(_PUBLIC[name]), name)
    raise AttributeError(f"module 'cyclip.evaluation' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(__all__)
