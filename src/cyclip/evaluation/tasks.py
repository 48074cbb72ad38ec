"""The evaluation tasks: embeddings in (from a checkpoint, or from an embeddings file), metrics out.

An `Encoder` embeds each dataset once and keeps the result, so tasks that share a dataset (zero-shot,
consistency and geometry on the same folder) pay for its embeddings once. `run_task` reads a `TaskSpec`
and returns plain metrics; `run_suite` runs a list of them into one results dict (the shape that
`cyclip.evaluation.report` reads).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

import torch

from cyclip.evaluation.consistency import consistency_report
from cyclip.evaluation.datasets import open_classification, open_retrieval
from cyclip.evaluation.datasets.labelled import read_labelled_folder
from cyclip.evaluation.embeddings import embed_images, embed_texts
from cyclip.evaluation.embeddings_file import Embeddings, load_embeddings
from cyclip.evaluation.geometry import class_geometry, paired_geometry
from cyclip.evaluation.granularity import fine_coarse_accuracy, read_superclasses
from cyclip.evaluation.linear_probe import few_shot_probe, linear_probe
from cyclip.evaluation.retrieval import retrieval_recall
from cyclip.evaluation.zeroshot import class_embeddings, topk_accuracy

log = logging.getLogger("cyclip.evaluation")

TASKS = ("zeroshot", "linear-probe", "few-shot", "retrieval", "consistency", "geometry", "granularity")


@dataclass
class TaskSpec:
    """One task on one dataset; the fields are the `cyclip eval TASK` flags and the suite's YAML keys."""

    task: str
    data: str | None = None  # dataset name (with root), labelled folder, ImageFolder, Karpathy JSON or CSV
    root: str | None = None  # local copy of a named dataset
    train_data: str | None = None  # probes on folders: the labelled folder of the training split
    split: str = "test"
    image_root: str | None = None  # retrieval: folder the image paths are relative to
    superclasses: str | None = None  # granularity: JSON {"class": "superclass"}
    embeddings: str | None = None  # .npz from `cyclip eval embed`, instead of a model and data
    train_embeddings: str | None = None  # probes from files: the training split's .npz
    mean_per_class: bool | None = None  # probes: report mean per-class accuracy (default: the dataset's convention)
    seed: int = 0
    name: str | None = None  # label in reports (default: TASK/DATASET)

    def __post_init__(self) -> None:
        if self.task not in TASKS:
            raise ValueError(f"unknown task {self.task!r}; tasks: {', '.join(TASKS)}")
        if not self.data and not self.embeddings:
            raise ValueError(f"task {self.task}: give data (a dataset) or embeddings (an .npz file)")

    @classmethod
    def from_dict(cls, values: dict[str, Any], where: str) -> TaskSpec:
        known = {field.name for field in fields(cls)}
        unknown = sorted(set(values) - known)
        if unknown or "task" not in values:
            problem = f"unknown key(s) {', '.join(unknown)}" if unknown else "no 'task' key"
            raise ValueError(f"{where}: {problem}; keys: {', '.join(sorted(known))}")
        return cls(**values)

    @property
    def label(self) -> str:
        if self.name:
            return self.name
        source = self.data or self.embeddings
        named = Path(source).name if Path(source).exists() else source
        return f"{self.task}/{Path(named).stem if named.endswith(('.json', '.csv', '.tsv', '.npz')) else named}"


class Encoder:
    """A model and its preprocessing; embeds datasets on demand and remembers the results."""

    def __init__(
        self,
        model: torch.nn.Module,
        preprocess: Callable,
        tokenizer: Callable,
        device: torch.device | str = "cpu",
        batch_size: int = 256,
        workers: int = 2,
        progress: bool = True,
    ) -> None:
        self.model, self.preprocess, self.tokenizer = model.eval(), preprocess, tokenizer
        self.device, self.batch_size, self.workers, self.progress = torch.device(device), batch_size, workers, progress
        self._cache: dict[tuple, tuple[Embeddings, bool]] = {}
        self.images_embedded, self.seconds_embedding = 0, 0.0

    def labelled(self, data: str, root: str | None, split: str) -> tuple[Embeddings, bool]:
        """Image embeddings, labels and zero-shot class embeddings of a classification set (and its
        caption embeddings when it is a labelled folder with a `caption` column); plus the dataset's
        mean-per-class convention."""
        key = ("labelled", data, root, split)
        if key not in self._cache:
            dataset = open_classification(data, root, split, self.preprocess)
            started = time.perf_counter()
            images, labels = embed_images(
                self.model, dataset.dataset, self.device, self.batch_size, self.workers, self.progress
            )
            self._count(len(labels), started)
            captions = read_labelled_folder(data).captions if root is None and _is_labelled_folder(data) else None
            texts = (
                embed_texts(self.model, self.tokenizer, captions, self.device, self.batch_size, self.progress)
                if captions
                else None
            )
            embeddings = Embeddings(
                image_embeddings=images,
                text_embeddings=texts,
                labels=labels.long(),
                class_names=list(dataset.classes),
                class_embeddings=class_embeddings(
                    self.model, self.tokenizer, dataset.classes, dataset.templates, self.device
                ),
                captions=captions,
            )
            self._cache[key] = (embeddings, dataset.mean_per_class)
        return self._cache[key]

    def retrieval(self, data: str, image_root: str | None, split: str) -> Embeddings:
        key = ("retrieval", data, image_root, split)
        if key not in self._cache:
            dataset = open_retrieval(data, image_root, split, self.preprocess)
            started = time.perf_counter()
            images, _ = embed_images(
                self.model, dataset.images, self.device, self.batch_size, self.workers, self.progress
            )
            self._count(len(images), started)
            texts = embed_texts(
                self.model, self.tokenizer, dataset.captions, self.device, self.batch_size, self.progress
            )
            embeddings = Embeddings(
                image_embeddings=images,
                text_embeddings=texts,
                image_of_text=dataset.image_of_caption.long(),
                captions=list(dataset.captions),
            )
            self._cache[key] = (embeddings, False)
        return self._cache[key][0]

    def _count(self, images: int, started: float) -> None:
        self.images_embedded += images
        self.seconds_embedding += time.perf_counter() - started


def embeddings_for(spec: TaskSpec, encoder: Encoder | None, split: str | None = None) -> tuple[Embeddings, bool]:
    """The embeddings a task reads, from its .npz file or from the encoder; and the mean-per-class flag."""
    split = split or spec.split
    from_file = spec.train_embeddings if split == "train" and spec.task in ("linear-probe", "few-shot") else None
    if split != "train" and spec.embeddings:
        from_file = spec.embeddings
    if from_file:
        return load_embeddings(from_file), bool(spec.mean_per_class)
    if encoder is None:
        raise ValueError(f"task {spec.task}: give a checkpoint, or embeddings files for every split it needs")
    if spec.task == "retrieval":
        return encoder.retrieval(spec.data, spec.image_root, split), False
    if split == "train" and spec.train_data:
        return encoder.labelled(spec.train_data, spec.root, split)
    return encoder.labelled(spec.data, spec.root, split)


def run_task(spec: TaskSpec, encoder: Encoder | None = None) -> dict[str, Any]:
    """The metrics of one task (fractions, not percentages)."""
    test, mean_per_class = embeddings_for(spec, encoder)
    if spec.mean_per_class is not None:
        mean_per_class = spec.mean_per_class
    if spec.task == "retrieval":
        _need(spec, test, "text_embeddings", "image_of_text")
        return retrieval_recall(test.image_embeddings, test.text_embeddings, test.image_of_text)
    if spec.task in ("linear-probe", "few-shot"):
        train, _ = embeddings_for(spec, encoder, split="train")
        _need(spec, train, "labels")
        _need(spec, test, "labels")
        arguments = (train.image_embeddings, train.labels, test.image_embeddings, test.labels)
        device = encoder.device if encoder is not None else "cpu"
        if spec.task == "linear-probe":
            result = linear_probe(*arguments, mean_per_class=mean_per_class, seed=spec.seed, device=device)
            return {key: result[key] for key in ("score", "accuracy", "mean_per_class_accuracy", "C")}
        shots = few_shot_probe(*arguments, mean_per_class=mean_per_class, device=device)["shots"]
        return {str(k): {"mean": value["mean"], "std": value["std"]} for k, value in shots.items()}
    if spec.task != "consistency":
        _need(spec, test, "labels", "class_embeddings")
    logits = (
        test.image_embeddings.double() @ test.class_embeddings.double().T if test.class_embeddings is not None else None
    )
    if spec.task == "zeroshot":
        return {**topk_accuracy(logits, test.labels), "num_images": len(test.labels), "num_classes": logits.shape[1]}
    if spec.task == "consistency":
        _need(spec, test, "text_embeddings")
        return consistency_report(test.image_embeddings, test.text_embeddings, test.class_embeddings, test.labels)
    if spec.task == "geometry":
        metrics = class_geometry(test.image_embeddings, test.labels, test.class_embeddings)
        if test.text_embeddings is not None and test.image_of_text is None:
            pairs = paired_geometry(test.image_embeddings, test.text_embeddings)
            metrics |= {f"pairs_{key}": value for key, value in pairs.items()}
        return metrics
    # granularity
    if not spec.superclasses:
        raise ValueError("task granularity: give superclasses, a JSON file mapping each class to its superclass")
    _need(spec, test, "class_names")
    superclass_of, _ = read_superclasses(spec.superclasses, test.class_names)
    return fine_coarse_accuracy(logits, test.labels, superclass_of)


def run_suite(specs: Sequence[TaskSpec], encoder: Encoder | None) -> dict[str, dict[str, Any]]:
    """Every task into `{label: {"task", "data", "metrics"}}`; a failing task records its error and the rest go on."""
    results: dict[str, dict[str, Any]] = {}
    for spec in specs:
        entry: dict[str, Any] = {"task": spec.task, "data": spec.data or spec.embeddings}
        try:
            entry["metrics"] = run_task(spec, encoder)
        except (ValueError, FileNotFoundError, OSError) as error:
            log.warning("%s failed: %s", spec.label, error)
            entry["error"] = str(error)
        results[spec.label] = entry
    return results


def _need(spec: TaskSpec, embeddings: Embeddings, *names: str) -> None:
    missing = [name for name in names if getattr(embeddings, name) is None]
    if missing:
        source = spec.embeddings or spec.data
        raise ValueError(
            f"task {spec.task} needs {', '.join(missing)}, which {source} does not provide"
            + (" (a labelled folder needs a 'caption' column in labels.csv)" if "text_embeddings" in missing else "")
        )


def _is_labelled_folder(data: str) -> bool:
    return (Path(data) / "labels.csv").is_file() and (Path(data) / "classes.json").is_file()
