"""The evaluation tasks as a registry: embeddings in (from a checkpoint, or from an embeddings file), metrics out.

`TASKS` is the table of every task: what its dataset is, which embeddings it needs, which options it takes
and the function that turns embeddings into metrics. `cyclip eval TASK`, the suite and the demo read
their task lists from it, so a new task is one runner and one row here. `run_task` reads a `TaskSpec`
and returns plain metrics; `run_suite` runs a list of them into one results dict (the shape that
`cyclip.evaluation.report` reads and writes).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

from cyclip.evaluation.consistency import consistency_report
from cyclip.evaluation.embeddings_file import Embeddings, load_embeddings
from cyclip.evaluation.geometry import class_geometry, paired_geometry
from cyclip.evaluation.granularity import fine_coarse_accuracy, read_superclasses
from cyclip.evaluation.linear_probe import DEFAULT_SHOTS, FEW_SHOT_SEEDS, few_shot_probe, linear_probe
from cyclip.evaluation.retrieval import retrieval_recall
from cyclip.evaluation.zeroshot import mean_per_class_recall, topk_accuracy

if TYPE_CHECKING:  # the registry is imported to build the command line: it stays free of open_clip
    from cyclip.evaluation.encoder import Encoder

log = logging.getLogger("cyclip.evaluation")

CLASSIFICATION, RETRIEVAL = "classification", "retrieval"  # what a task's `data` names


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
    seed: int = 0  # probes: the validation split's draw; few-shot: the first of its seeds
    shots: tuple[int, ...] = DEFAULT_SHOTS  # few-shot: examples per class (YAML's list or "1,2,4" is parsed)
    name: str | None = None  # label in reports (default: TASK/DATASET)

    def __post_init__(self) -> None:
        if self.task not in TASKS:
            raise ValueError(f"unknown task {self.task!r}; tasks: {', '.join(TASKS)}")
        if not self.data and not self.embeddings:
            raise ValueError(f"task {self.task}: give data (a dataset) or embeddings (an .npz file)")
        self.shots = parse_shots(self.shots)

    @classmethod
    def from_dict(cls, values: dict[str, Any], where: str) -> TaskSpec:
        known = {item.name for item in fields(cls)}
        unknown = sorted(set(values) - known)
        if unknown or "task" not in values:
            problem = f"unknown key(s) {', '.join(unknown)}" if unknown else "no 'task' key"
            raise ValueError(f"{where}: {problem}; keys: {', '.join(sorted(known))}")
        try:
            return cls(**values)
        except ValueError as error:
            raise ValueError(f"{where}: {error}") from None

    @property
    def label(self) -> str:
        if self.name:
            return self.name
        source = str(self.data or self.embeddings)
        named = Path(source).name if Path(source).exists() else source
        return f"{self.task}/{Path(named).stem if named.endswith(('.json', '.csv', '.tsv', '.npz')) else named}"


def parse_shots(value: Sequence[int] | int | str, where: str = "shots") -> tuple[int, ...]:
    """Shots per class as sorted distinct integers >= 1, from a list, one integer or a comma-separated string
    ('1,2,4'); a ValueError naming `where` (the key or flag) otherwise."""
    items = value.split(",") if isinstance(value, str) else [value] if isinstance(value, int) else value
    try:
        shots = sorted({int(item) for item in items if str(item).strip()})
        valid = bool(shots) and shots[0] >= 1 and not any(isinstance(item, (bool, float)) for item in items)
    except (TypeError, ValueError):
        valid = False
    if not valid:
        raise ValueError(f"{where}: expected integers >= 1 such as 1,2,4,8,16, got {value!r}")
    return tuple(shots)


@dataclass
class TaskInputs:
    """What a runner gets: the spec, the test split's embeddings (and the training split's for probes)."""

    spec: TaskSpec
    test: Embeddings
    train: Embeddings | None
    mean_per_class: bool
    device: torch.device | str


@dataclass(frozen=True)
class Task:
    """One row of the registry."""

    name: str
    help: str  # one line for `cyclip eval --help`
    run: Callable[[TaskInputs], dict[str, Any]]
    needs: tuple[str, ...]  # Embeddings fields the task reads (from both splits when it has a training split)
    dataset: str = CLASSIFICATION
    train_split: bool = False  # also reads the training split (probes)
    options: tuple[str, ...] = ()  # TaskSpec fields this task takes beyond the common ones
    required: dict[str, str] = field(default_factory=dict)  # option -> what to give, for options it cannot do without


def _tensor(embeddings: Embeddings, name: str) -> torch.Tensor:
    """A field that `run_task` has checked is present (a task's `needs`)."""
    return getattr(embeddings, name)


def _class_logits(test: Embeddings) -> torch.Tensor:
    return _tensor(test, "image_embeddings").double() @ _tensor(test, "class_embeddings").double().T


def _zeroshot(inputs: TaskInputs) -> dict[str, Any]:
    logits, labels = _class_logits(inputs.test), _tensor(inputs.test, "labels")
    return {
        **topk_accuracy(logits, labels),
        "mean_per_class_recall": mean_per_class_recall(logits, labels),
        "num_images": len(labels),
        "num_classes": logits.shape[1],
    }


def _probe_arguments(inputs: TaskInputs) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    train = inputs.train if inputs.train is not None else inputs.test
    return (
        _tensor(train, "image_embeddings"),
        _tensor(train, "labels"),
        _tensor(inputs.test, "image_embeddings"),
        _tensor(inputs.test, "labels"),
    )


def _linear_probe(inputs: TaskInputs) -> dict[str, Any]:
    result = linear_probe(
        *_probe_arguments(inputs), mean_per_class=inputs.mean_per_class, seed=inputs.spec.seed, device=inputs.device
    )
    keys = ("score", "accuracy", "top5_accuracy", "mean_per_class_accuracy", "C")
    return {key: result[key] for key in keys if key in result}


def _few_shot(inputs: TaskInputs) -> dict[str, Any]:
    seeds = [inputs.spec.seed + offset for offset in FEW_SHOT_SEEDS]
    names = (inputs.train or inputs.test).class_names
    result = few_shot_probe(
        *_probe_arguments(inputs),
        shots=inputs.spec.shots,
        seeds=seeds,
        class_names=names,
        mean_per_class=inputs.mean_per_class,
        device=inputs.device,
    )
    metrics: dict[str, Any] = {
        str(k): {"mean": value["mean"], "std": value["std"]} for k, value in result["shots"].items()
    }
    if result.get("skipped"):
        metrics["skipped"] = {str(k): why for k, why in result["skipped"].items()}
    return metrics


def _retrieval(inputs: TaskInputs) -> dict[str, Any]:
    test = inputs.test
    return retrieval_recall(
        _tensor(test, "image_embeddings"), _tensor(test, "text_embeddings"), _tensor(test, "image_of_text")
    )


def _consistency(inputs: TaskInputs) -> dict[str, Any]:
    test = inputs.test
    return consistency_report(
        _tensor(test, "image_embeddings"), _tensor(test, "text_embeddings"), test.class_embeddings, test.labels
    )


def _geometry(inputs: TaskInputs) -> dict[str, Any]:
    test = inputs.test
    images = _tensor(test, "image_embeddings")
    metrics = class_geometry(images, _tensor(test, "labels"), _tensor(test, "class_embeddings"))
    if test.text_embeddings is not None and test.image_of_text is None:
        pairs = paired_geometry(images, test.text_embeddings)
        metrics |= {f"pairs_{key}": value for key, value in pairs.items()}
    return metrics


def _granularity(inputs: TaskInputs) -> dict[str, Any]:
    test = inputs.test
    superclass_of, _ = read_superclasses(str(inputs.spec.superclasses), list(test.class_names or []))
    return fine_coarse_accuracy(_class_logits(test), _tensor(test, "labels"), superclass_of)


_PROBE_OPTIONS = ("train_data", "train_embeddings", "mean_per_class", "seed")
_CLASSES = ("labels", "class_embeddings")

TASKS: dict[str, Task] = {
    task.name: task
    for task in (
        Task("zeroshot", "zero-shot top-1/3/5/10 accuracy (prompt-ensembled class embeddings)", _zeroshot, _CLASSES),
        Task(
            "linear-probe",
            "logistic regression on frozen image features, L2 strength chosen on a validation split",
            _linear_probe,
            ("labels",),
            train_split=True,
            options=_PROBE_OPTIONS,
        ),
        Task(
            "few-shot",
            "linear probes from k examples per class (k = 1, 2, 4, 8, 16 unless --shots), mean and std over seeds",
            _few_shot,
            ("labels",),
            train_split=True,
            options=(*_PROBE_OPTIONS, "shots"),
        ),
        Task(
            "retrieval",
            "image-to-text and text-to-image Recall@1/5/10 and their mean",
            _retrieval,
            ("text_embeddings", "image_of_text"),
            dataset=RETRIEVAL,
        ),
        Task(
            "consistency",
            "in-modal / cross-modal gaps, regularizers, neighbour agreement@k, consistency@k",
            _consistency,
            ("text_embeddings",),
        ),
        Task(
            "geometry",
            "alignment and uniformity of images against their class embeddings (and of image-caption pairs)",
            _geometry,
            _CLASSES,
        ),
        Task(
            "granularity",
            "fine (within the true superclass) vs coarse (superclass of the best class) zero-shot accuracy",
            _granularity,
            (*_CLASSES, "class_names"),
            options=("superclasses",),
            required={"superclasses": "a JSON file mapping each class to its superclass"},
        ),
    )
}


def embeddings_for(spec: TaskSpec, encoder: Encoder | None, split: str | None = None) -> tuple[Embeddings, bool]:
    """The embeddings a task reads, from its .npz file or from the encoder; and the mean-per-class flag."""
    task = TASKS[spec.task]
    split = split or spec.split
    from_file = spec.train_embeddings if split == "train" and task.train_split else None
    if split != "train" and spec.embeddings:
        from_file = spec.embeddings
    if from_file:
        return load_embeddings(from_file), bool(spec.mean_per_class)
    if encoder is None:
        raise ValueError(f"task {spec.task}: give a checkpoint, or embeddings files for every split it needs")
    if task.dataset == RETRIEVAL:
        return encoder.retrieval(str(spec.data), spec.image_root, split), False
    if split == "train" and spec.train_data:
        return encoder.labelled(spec.train_data, spec.root, split)
    return encoder.labelled(str(spec.data), spec.root, split)


def run_task(spec: TaskSpec, encoder: Encoder | None = None) -> dict[str, Any]:
    """The metrics of one task (fractions, not percentages)."""
    task = TASKS[spec.task]
    for option, what in task.required.items():
        if not getattr(spec, option):
            raise ValueError(f"task {task.name}: give {option}, {what}")
    test, mean_per_class = embeddings_for(spec, encoder)
    train = embeddings_for(spec, encoder, split="train")[0] if task.train_split else None
    for embeddings in (train, test):
        if embeddings is not None:
            _need(spec, embeddings, *task.needs)
    if spec.mean_per_class is not None:
        mean_per_class = spec.mean_per_class
    device = encoder.device if encoder is not None else "cpu"
    return task.run(TaskInputs(spec, test, train, mean_per_class, device))


def run_suite(
    specs: Sequence[TaskSpec], encoder: Encoder | None, checkpoint: str | Path, model: str | None
) -> dict[str, Any]:
    """Every task into `{"checkpoint", "model", "tasks": {label: {"task", "data", "metrics"}}}`; a failing task
    records its error and the rest go on."""
    results: dict[str, dict[str, Any]] = {}
    for spec in specs:
        entry: dict[str, Any] = {"task": spec.task, "data": spec.data or spec.embeddings}
        try:
            entry["metrics"] = run_task(spec, encoder)
        except (ValueError, FileNotFoundError, OSError) as error:
            log.warning("%s failed: %s", spec.label, error)
            entry["error"] = str(error)
        results[spec.label] = entry
    return {"checkpoint": str(checkpoint), "model": model, "tasks": results}


def _need(spec: TaskSpec, embeddings: Embeddings, *names: str) -> None:
    missing = [name for name in names if getattr(embeddings, name) is None]
    if missing:
        raise ValueError(
            f"task {spec.task} needs {', '.join(missing)}, which {spec.embeddings or spec.data} does not provide"
            + (" (a labelled folder needs a 'caption' column in labels.csv)" if "text_embeddings" in missing else "")
        )
