"""Linear probes on frozen features: multinomial logistic regression fitted by full-batch L-BFGS in torch.

Objective (the one of scikit-learn's `LogisticRegression(C=C)`, so a value of C means the same in both):

    min_{W,b}  sum_i -log softmax(W x_i + b)_{y_i}  +  ||W||_F^2 / (2C)          (bias not penalised)

With two classes the model is binomial, one weight row w and one bias (logits [0, w.x + b]), again as in
scikit-learn. It is minimised as written (a sum over rows) by full-batch `torch.optim.LBFGS` (strong-Wolfe
line search, history 10) from zero, the gradient written in closed form and accumulated over row chunks,
so memory is O(chunk x classes) beyond the features; it runs on `device` (a GPU when given "cuda") in
float32 or float64 (`dtype`). It stops when the largest gradient entry of the objective divided by N is
below `tol`, or after `max_iter` iterations. The bias starts centred and every step is a
combination of gradients whose bias part sums to zero, so the bias stays centred, as scikit-learn's.

Features are used as given: CLIP embeddings are L2-normalised rows already on one scale, and C then
keeps the meaning it has on those features in scikit-learn. `standardize=True` instead centres and
scales each column with the mean and (population) standard deviation of the rows being fitted.

Choice of C (the CLIP paper's protocol): a validation split, stratified and seeded, holds out
round(val_fraction x n_c) examples of each class c (at most n_c - 1). With an explicit `c_grid` every
value is fitted on the rest and the best validation score wins (ties: the lower validation log-loss,
then the smaller C). Without one, a parametric binary search in log10(C): the decades 1e-6 .. 1e6, then
`refine_steps` rounds that try the best value times 10^(+-h) with h = 1/2, 1/4, ... decades and keep the
best. The probe is then refitted on the whole training split with the chosen C and scored on the test split:

    accuracy                = mean_i [pred_i == y_i]
    mean_per_class_accuracy = mean over classes c present in the test split of accuracy on class c

(test rows whose class never occurs in the training split count as errors).

Few-shot probes draw k examples per class from the training split for each seed (nested: the k-shot
set of a seed contains its smaller-shot sets). With k examples per class there is no room for a
separate validation split; C is chosen from `c_grid` (default: the decades 1e-6 .. 1e6) by stratified
cross-validation over the shots themselves: min(k, cv_folds) folds (leave-one-shot-out when
k <= cv_folds), the j-th example of each class in fold j mod folds, score averaged over the folds.
With one shot cross-validation is impossible and `default_c` is used (`fixed_c`, when given, is used
for every k). Results per k: mean and population std (ddof 0) over seeds.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch

DEFAULT_C_GRID = tuple(10.0**e for e in range(-6, 7))
DEFAULT_SHOTS = (1, 2, 4, 8, 16)  # examples per class of the few-shot probes; `cyclip eval few-shot --shots`
FEW_SHOT_SEEDS = (0, 1, 2)  # one k-shot draw per seed; `cyclip eval few-shot --seed S` uses S, S + 1, S + 2
_CHUNK_ELEMENTS = 1 << 24

log = logging.getLogger("cyclip.evaluation")


@dataclass
class LogisticModel:
    """A fitted probe: `weight` [K, d] ([1, d] for two classes), `bias` [K] ([1]), the original class labels."""

    weight: torch.Tensor
    bias: torch.Tensor
    classes: torch.Tensor
    iterations: int
    mean: torch.Tensor | None = None
    scale: torch.Tensor | None = None

    def decision_function(self, x: torch.Tensor) -> torch.Tensor:
        """Logits [N, K] (two classes: [N, 1], the log-odds of the second class)."""
        x = x.to(self.weight.device, self.weight.dtype)
        if self.mean is not None and self.scale is not None:
            x = (x - self.mean) / self.scale
        return x @ self.weight.T + self.bias

    def predict_proba(self, x: torch.Tensor) -> torch.Tensor:
        """Class probabilities [N, number of classes], columns in the order of `classes`."""
        return _full_logits(self.decision_function(x)).softmax(dim=1)

    def predict(self, x: torch.Tensor) -> torch.Tensor:
        """Predicted original class labels [N]."""
        return self.classes[_full_logits(self.decision_function(x)).argmax(dim=1)]


def _full_logits(logits: torch.Tensor) -> torch.Tensor:
    """The binomial model's single log-odds column z becomes the two logits [0, z]."""
    if logits.shape[1] == 1:
        return torch.cat([torch.zeros_like(logits), logits], dim=1)
    return logits


def _check_features(name: str, x: torch.Tensor, y: torch.Tensor) -> None:
    if not isinstance(x, torch.Tensor) or x.dim() != 2 or not x.is_floating_point():
        raise ValueError(f"{name}_x must be a floating-point (N, d) tensor, got {getattr(x, 'shape', type(x))}")
    if not isinstance(y, torch.Tensor) or y.dim() != 1 or y.is_floating_point() or y.shape[0] != x.shape[0]:
        raise ValueError(
            f"{name}_y must be an integer tensor of shape ({x.shape[0]},) matching {name}_x, "
            f"got {getattr(y, 'dtype', type(y))} {tuple(getattr(y, 'shape', ()))}"
        )
    if x.shape[0] == 0:
        raise ValueError(f"{name}_x has no rows")


def _fit_indexed(
    x: torch.Tensor,
    target: torch.Tensor,
    num_classes: int,
    c: float,
    max_iter: int,
    tol: float,
    init: tuple[torch.Tensor, torch.Tensor] | None,
) -> tuple[torch.Tensor, torch.Tensor, int]:
    """Minimise the objective on features `x` (already on device/dtype) with labels 0..K-1 in `target`."""
    if c <= 0 or not math.isfinite(c):
        raise ValueError(f"C must be a positive finite number, got {c}")
    rows, dim = x.shape
    outputs = 1 if num_classes == 2 else num_classes
    if init is None:
        weight = torch.zeros(outputs, dim, dtype=x.dtype, device=x.device)
        bias = torch.zeros(outputs, dtype=x.dtype, device=x.device)
    else:
        weight, bias = init[0].clone(), init[1].clone()
    weight.requires_grad_(True)
    bias.requires_grad_(True)
    chunk = max(1, _CHUNK_ELEMENTS // max(num_classes, dim))
    penalty = 1.0 / c

    def closure() -> torch.Tensor:
        with torch.no_grad():
            loss = torch.zeros((), dtype=x.dtype, device=x.device)
            grad_weight = torch.zeros_like(weight)
            grad_bias = torch.zeros_like(bias)
            for start in range(0, rows, chunk):
                features, labels = x[start : start + chunk], target[start : start + chunk, None]
                log_probs = _full_logits(features @ weight.T + bias).log_softmax(dim=1)
                loss -= log_probs.gather(1, labels).sum()
                residual = log_probs.exp_()
                residual.scatter_add_(1, labels, torch.full_like(labels, -1, dtype=residual.dtype))
                residual = residual[:, 1:] if outputs == 1 else residual  # d/dz of the binomial loss
                grad_weight.addmm_(residual.T, features)
                grad_bias += residual.sum(dim=0)
            loss += 0.5 * penalty * weight.pow(2).sum()
            weight.grad = grad_weight.add_(weight, alpha=penalty)
            bias.grad = grad_bias
        return loss

    # The summed objective, not the mean: torch's L-BFGS skips curvature pairs with y.s < 1e-10 (an
    # absolute test), which a 1/N-scaled objective hits long before convergence. `tol` bounds the
    # largest gradient entry of the mean objective, as scikit-learn's does.
    optimizer = torch.optim.LBFGS(
        [weight, bias],
        lr=1.0,
        max_iter=max_iter,
        max_eval=2 * max_iter,
        tolerance_grad=tol * rows,
        tolerance_change=torch.finfo(x.dtype).eps,
        history_size=10,
        line_search_fn="strong_wolfe",
    )
    optimizer.step(closure)
    iterations = int(optimizer.state[weight].get("n_iter", 0))
    return weight.detach(), bias.detach(), iterations


def _standardizer(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    mean = x.mean(dim=0)
    scale = x.std(dim=0, correction=0)
    return mean, torch.where(scale > 0, scale, torch.ones_like(scale))


def fit_logistic(
    x: torch.Tensor,
    y: torch.Tensor,
    c: float,
    *,
    standardize: bool = False,
    device: torch.device | str = "cpu",
    dtype: torch.dtype = torch.float32,
    max_iter: int = 1000,
    tol: float = 1e-6,
    init: LogisticModel | None = None,
) -> LogisticModel:
    """Fit the L2-regularised (multinomial, or binomial for two classes) logistic regression at one C."""
    _check_features("train", x, y)
    classes, target = torch.unique(y, return_inverse=True)
    if len(classes) < 2:
        raise ValueError(f"a probe needs at least two classes in the training labels, got {classes.tolist()}")
    x = x.to(device, dtype)
    target = target.to(device)
    mean = scale = None
    if standardize:
        mean, scale = _standardizer(x)
        x = (x - mean) / scale
    start = None
    if init is not None and init.weight.shape == (1 if len(classes) == 2 else len(classes), x.shape[1]):
        start = (init.weight.to(device, dtype), init.bias.to(device, dtype))
    weight, bias, iterations = _fit_indexed(x, target, len(classes), float(c), max_iter, tol, start)
    return LogisticModel(weight, bias, classes.to(device), iterations, mean, scale)


def _scores(predicted: torch.Tensor, truth: torch.Tensor) -> dict[str, float]:
    """Accuracy and the mean over the classes present in `truth` of the per-class accuracy."""
    truth = truth.to(predicted.device)
    correct = (predicted == truth).double()
    classes, index = torch.unique(truth, return_inverse=True)
    per_class = torch.zeros(len(classes), dtype=torch.float64, device=truth.device).index_add_(0, index, correct)
    per_class /= torch.bincount(index, minlength=len(classes)).double()
    return {"accuracy": correct.mean().item(), "mean_per_class_accuracy": per_class.mean().item()}


def _top5_accuracy(model: LogisticModel, x: torch.Tensor, y: torch.Tensor) -> dict[str, float]:
    """{"top5_accuracy": fraction of rows whose label is among the 5 classes of highest logit}; empty with
    fewer than 5 classes, where it would always be 1."""
    if len(model.classes) < 5:
        return {}
    top = model.classes[_full_logits(model.decision_function(x)).topk(5, dim=1).indices]
    return {"top5_accuracy": (top == y.to(top.device)[:, None]).any(dim=1).double().mean().item()}


def _fit_options(
    standardize: bool, device: torch.device | str, dtype: torch.dtype, max_iter: int, tol: float
) -> dict[str, Any]:
    """The keyword arguments of `fit_logistic` that every fit of one probe shares."""
    return {"standardize": standardize, "device": device, "dtype": dtype, "max_iter": max_iter, "tol": tol}


def _score_name(mean_per_class: bool) -> str:
    """The key of the probe's score: accuracy, or mean per-class accuracy for datasets reported that way."""
    return "mean_per_class_accuracy" if mean_per_class else "accuracy"


def stratified_split(labels: torch.Tensor, fraction: float, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(fit rows, held-out rows): round(fraction x n_c) random rows of each class c held out, at most n_c - 1."""
    if not 0.0 < fraction < 1.0:
        raise ValueError(f"val_fraction must be in (0, 1), got {fraction}")
    rank, counts, index = _rank_within_class(labels.cpu(), seed)
    held_out = torch.floor(fraction * counts.double() + 0.5).long().clamp(max=counts - 1)
    is_held_out = rank < held_out[index]
    return (~is_held_out).nonzero().squeeze(1), is_held_out.nonzero().squeeze(1)


def _rank_within_class(labels: torch.Tensor, seed: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """A seeded random order of each class's rows: (rank of each row in its class, class sizes, class index)."""
    _, index, counts = torch.unique(labels, return_inverse=True, return_counts=True)
    order = torch.randperm(len(labels), generator=torch.Generator().manual_seed(seed))
    order = order[torch.sort(index[order], stable=True).indices]  # grouped by class, random within a class
    starts = torch.cumsum(counts, 0) - counts
    rank = torch.empty_like(order)
    rank[order] = torch.arange(len(labels)) - starts[index[order]]
    return rank, counts, index


def _select_c(
    fit_x: torch.Tensor,
    fit_y: torch.Tensor,
    folds: list[tuple[torch.Tensor, torch.Tensor]],
    c_grid: Sequence[float] | None,
    refine_steps: int,
    metric: str,
    fit_options: dict[str, Any],
) -> tuple[float, list[dict[str, float]]]:
    """The C with the best validation score averaged over `folds` (pairs of fit rows, held-out rows).

    Ties in score (common: several C classify a small validation split perfectly) go to the lower
    validation log-loss, so a plateau does not pick a degenerate, almost-zero-weight fit at its edge.
    """
    parts = [(fit_x[fit_rows], fit_y[fit_rows], fit_x[val_rows], fit_y[val_rows]) for fit_rows, val_rows in folds]
    solutions: list[LogisticModel | None] = [None] * len(folds)
    tried: dict[float, tuple[float, float]] = {}

    def evaluate(c: float) -> tuple[float, float, float]:
        if c not in tried:
            scores, losses = [], []
            for fold, (x, y, val_x, val_y) in enumerate(parts):
                solution = fit_logistic(x, y, c, init=solutions[fold], **fit_options)
                solutions[fold] = solution  # the next C starts from here (warm start)
                scores.append(_scores(solution.predict(val_x), val_y)[metric])
                losses.append(_log_loss(solution, val_x, val_y))
            tried[c] = (sum(scores) / len(scores), sum(losses) / len(losses))
        score, loss = tried[c]
        return score, -loss, -c

    grid = sorted(float(c) for c in (DEFAULT_C_GRID if c_grid is None else c_grid))
    if not grid or grid[0] <= 0:
        raise ValueError(f"c_grid must hold positive values, got {list(c_grid or [])}")
    best = max(grid, key=evaluate)
    if c_grid is None:
        step = 1.0
        for _ in range(refine_steps):
            step /= 2
            best = max([best * 10.0**-step, best, best * 10.0**step], key=evaluate)
    return best, [{"C": c, "score": tried[c][0], "log_loss": tried[c][1]} for c in sorted(tried)]


def _log_loss(model: LogisticModel, x: torch.Tensor, y: torch.Tensor) -> float:
    """Mean cross-entropy of held-out rows (`classes` is sorted); a class the fit never saw counts as 1e-12."""
    probabilities = model.predict_proba(x).double()
    classes, y = model.classes.to(probabilities.device), y.to(probabilities.device)
    column = torch.searchsorted(classes, y).clamp(max=len(classes) - 1)
    picked = probabilities[torch.arange(len(y), device=y.device), column]
    picked = torch.where(classes[column] == y, picked, torch.zeros_like(picked))
    return -picked.clamp(min=1e-12).log().mean().item()


def linear_probe(
    train_x: torch.Tensor,
    train_y: torch.Tensor,
    test_x: torch.Tensor,
    test_y: torch.Tensor,
    *,
    mean_per_class: bool = False,
    c_grid: Sequence[float] | None = None,
    val_fraction: float = 0.2,
    seed: int = 0,
    device: torch.device | str = "cpu",
    max_iter: int = 1000,
    dtype: torch.dtype = torch.float32,
    standardize: bool = False,
    refine_steps: int = 4,
    tol: float = 1e-6,
) -> dict:
    """Probe accuracy with C chosen on a stratified validation split of the training split (module docstring).

    A `c_grid` of one value skips the validation split and fits that C on the whole training split.

    Returns score (the metric `mean_per_class` picks), accuracy, top5_accuracy (with 5 classes or more),
    mean_per_class_accuracy, C, the
    validation score of every C tried, iterations/converged of the final fit, and the split sizes.
    """
    _check_features("train", train_x, train_y)
    _check_features("test", test_x, test_y)
    if train_x.shape[1] != test_x.shape[1]:
        raise ValueError(f"train_x has {train_x.shape[1]} features but test_x has {test_x.shape[1]}")
    metric = _score_name(mean_per_class)
    options = _fit_options(standardize, device, dtype, max_iter, tol)
    train_x, train_y = train_x.to(device, dtype), train_y.to(device)
    grid = None if c_grid is None else [float(c) for c in c_grid]
    validation: list[dict[str, float]] = []
    if grid is not None and len(grid) == 1:
        c = grid[0]
    else:
        fit_rows, val_rows = stratified_split(train_y, val_fraction, seed)
        if len(val_rows) == 0:
            raise ValueError(
                f"the validation split of {len(train_y)} training rows is empty (val_fraction={val_fraction}); "
                "give more training data, a larger val_fraction, or a single-value c_grid"
            )
        fold = [(fit_rows.to(device), val_rows.to(device))]
        c, validation = _select_c(train_x, train_y, fold, grid, refine_steps, metric, options)
    model = fit_logistic(train_x, train_y, c, **options)
    scores = _scores(model.predict(test_x), test_y)
    return {
        "score": scores[metric],
        "metric": metric,
        **scores,
        **_top5_accuracy(model, test_x, test_y),
        "C": c,
        "validation": validation,
        "iterations": model.iterations,
        "converged": model.iterations < max_iter,
        "num_classes": len(model.classes),
        "num_train": len(train_y),
        "num_test": len(test_y),
    }


def sample_few_shot(labels: torch.Tensor, shots: int, seed: int) -> torch.Tensor:
    """Row indices of `shots` random examples of each class, grouped by class in sorted label order.

    Within a group the j-th entry is the class's j-th draw, so one seed gives nested samples: the first
    k entries of every group of a larger sample are the k-shot sample.
    """
    if shots < 1:
        raise ValueError(f"shots must be >= 1, got {shots}")
    labels = labels.cpu()
    rank, counts, index = _rank_within_class(labels, seed)
    if int(counts.min()) < shots:
        classes = torch.unique(labels)[counts < shots]
        raise ValueError(
            f"{shots}-shot sampling needs {shots} training examples per class; classes {classes[:10].tolist()} "
            f"({len(classes)} in all) have fewer — lower the shots"
        )
    chosen = (rank < shots).nonzero().squeeze(1)
    order = torch.argsort(index[chosen] * shots + rank[chosen])
    return chosen[order]


def few_shot_probe(
    train_x: torch.Tensor,
    train_y: torch.Tensor,
    test_x: torch.Tensor,
    test_y: torch.Tensor,
    shots: Sequence[int] = DEFAULT_SHOTS,
    seeds: Sequence[int] = FEW_SHOT_SEEDS,
    *,
    class_names: Sequence[str] | None = None,
    mean_per_class: bool = False,
    c_grid: Sequence[float] | None = None,
    fixed_c: float | None = None,
    default_c: float = 1.0,
    cv_folds: int = 4,
    device: torch.device | str = "cpu",
    max_iter: int = 1000,
    dtype: torch.dtype = torch.float32,
    standardize: bool = False,
    tol: float = 1e-6,
) -> dict:
    """k-shot probes for each k in `shots`, repeated over `seeds`; C by cross-validation over the shots.

    A k larger than some class's number of training examples is skipped with a warning naming those classes
    (by `class_names[label]` when given); the smaller k's results are kept. Returns {"metric": ..., "shots":
    {k: {"mean", "std", "scores" (per seed), "C" (per seed)}}, "skipped": {k: why}}.
    """
    _check_features("train", train_x, train_y)
    _check_features("test", test_x, test_y)
    if cv_folds < 2:
        raise ValueError(f"cv_folds must be >= 2, got {cv_folds}")
    metric = _score_name(mean_per_class)
    options = _fit_options(standardize, device, dtype, max_iter, tol)
    grid = [float(c) for c in (DEFAULT_C_GRID if c_grid is None else c_grid)]
    train_x, train_y = train_x.to(device, dtype), train_y.to(device)
    feasible, skipped = _feasible_shots(train_y, shots, class_names)
    if not feasible:
        raise ValueError(f"few-shot: no k in {', '.join(map(str, shots))} can be drawn: {next(iter(skipped.values()))}")
    results = {}
    for k in feasible:
        scores, chosen = [], []
        for seed in seeds:
            rows = sample_few_shot(train_y, k, seed).to(train_x.device)
            x, y = train_x[rows], train_y[rows]
            if fixed_c is not None:
                c = float(fixed_c)
            elif k == 1:
                c = float(default_c)
            else:
                folds = min(k, cv_folds)
                fold_of = (torch.arange(len(rows)) % k % folds).to(train_x.device)
                splits = [
                    ((fold_of != f).nonzero().squeeze(1), (fold_of == f).nonzero().squeeze(1)) for f in range(folds)
                ]
                c, _ = _select_c(x, y, splits, grid, 0, metric, options)
            model = fit_logistic(x, y, c, **options)
            scores.append(_scores(model.predict(test_x), test_y)[metric])
            chosen.append(c)
        values = torch.tensor(scores, dtype=torch.float64)
        results[int(k)] = {
            "mean": values.mean().item(),
            "std": values.std(correction=0).item(),
            "scores": scores,
            "C": chosen,
        }
    return {"metric": metric, "shots": results, "skipped": skipped}


def _feasible_shots(
    labels: torch.Tensor, shots: Sequence[int], class_names: Sequence[str] | None
) -> tuple[list[int], dict[int, str]]:
    """The k of `shots` that every class of `labels` has enough examples for, and why each other k is skipped
    (also logged as a warning naming the classes that are short)."""
    classes, counts = torch.unique(labels.cpu(), return_counts=True)
    feasible, skipped = [], {}
    for k in shots:
        short = [(int(c), int(n)) for c, n in zip(classes, counts, strict=True) if n < k]
        if not short:
            feasible.append(int(k))
            continue
        named = [f"{class_names[c] if class_names else c!r} ({n})" for c, n in short[:5]]
        more = f" and {len(short) - 5} more" if len(short) > 5 else ""
        skipped[int(k)] = f"{len(short)} class(es) have fewer than {k} training examples: {', '.join(named)}{more}"
    if skipped and feasible:
        log.warning(
            "few-shot: k = %s skipped (results for k = %s kept): %s",
            ", ".join(map(str, skipped)),
            ", ".join(map(str, feasible)),
            skipped[min(skipped)],
        )
    return feasible, skipped
