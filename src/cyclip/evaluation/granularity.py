"""Fine- versus coarse-grained zero-shot accuracy over a grouping of classes into superclasses.

Given logits z [N, C] (e.g. image-class similarities), labels y [N] and s(c), the superclass of class c:

    fine_top{k}   = (1/N) sum_i [ y_i is among the k classes of highest z_i within the superclass s(y_i) ]
    coarse_top{k} = (1/N) sum_i [ s(y_i) is among the k superclasses of highest Z_i ],
                    Z_i(g) = max_{c: s(c) = g} z_i(c)

Fine asks "which member of the right group?", the group being given; coarse asks "which group?". At
k = 1 coarse is [s(argmax_c z_i) == s(y_i)]. These are the definitions of the CyCLIP paper's
fine/coarse analysis (its `utils/fine_coarse.py`). Ties are ordered by `torch.topk`.

The grouping is read from a JSON object {"class name": "superclass name", ...}; superclasses are
numbered in the order they first appear along the class list.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

import torch

from cyclip.errors import DataError
from cyclip.files import read_json

GRANULARITY_K = (1, 2, 3)


def fine_coarse_accuracy(
    logits: torch.Tensor,
    labels: torch.Tensor,
    superclass_of: Sequence[int] | torch.Tensor,
    ks: Sequence[int] = GRANULARITY_K,
) -> dict[str, float]:
    """fine_top{k} and coarse_top{k} (module docstring); k beyond the available classes counts all of them."""
    if not isinstance(logits, torch.Tensor) or logits.dim() != 2:
        raise ValueError(f"logits must be a (N, num_classes) tensor, got {getattr(logits, 'shape', logits)}")
    num_classes = logits.shape[1]
    superclass_of = torch.as_tensor(superclass_of, device=logits.device)
    if not superclass_of.is_floating_point():
        superclass_of = superclass_of.long()
    if superclass_of.shape != (num_classes,) or superclass_of.is_floating_point() or int(superclass_of.min()) < 0:
        raise ValueError(
            f"superclass_of must hold one non-negative integer per class ({num_classes}), "
            f"got {tuple(superclass_of.shape)} {superclass_of.dtype}"
        )
    if not isinstance(labels, torch.Tensor) or labels.shape != (logits.shape[0],) or labels.is_floating_point():
        raise ValueError(f"labels must be an integer tensor of shape ({logits.shape[0]},)")
    labels = labels.to(logits.device)
    if int(labels.min()) < 0 or int(labels.max()) >= num_classes:
        raise ValueError(f"labels must lie in 0..{num_classes - 1}")
    if not ks or min(ks) < 1:
        raise ValueError(f"ks must be positive integers, got {list(ks)}")
    logits = logits.double()

    true_group = superclass_of[labels]
    within = (superclass_of[None, :] == true_group[:, None]).logical_not_()
    fine_ranked = logits.masked_fill(within, float("-inf")).topk(min(max(ks), num_classes), dim=1).indices
    fine_hits = fine_ranked == labels[:, None]

    num_groups = int(superclass_of.max()) + 1
    group_scores = torch.full((logits.shape[0], num_groups), float("-inf"), dtype=logits.dtype, device=logits.device)
    group_scores.scatter_reduce_(1, superclass_of.expand_as(logits), logits, reduce="amax")
    coarse_ranked = group_scores.topk(min(max(ks), num_groups), dim=1).indices
    coarse_hits = coarse_ranked == true_group[:, None]

    results = {f"fine_top{k}": fine_hits[:, :k].any(dim=1).double().mean().item() for k in ks}
    results |= {f"coarse_top{k}": coarse_hits[:, :k].any(dim=1).double().mean().item() for k in ks}
    return results


def read_superclasses(path: str | os.PathLike, classes: Sequence[str]) -> tuple[torch.Tensor, list[str]]:
    """(superclass_of [C] LongTensor, superclass names) from a {"class": "superclass"} JSON file."""
    path = Path(path)
    grouping = read_json(path, "superclass file")
    if not isinstance(grouping, dict):
        raise DataError(f'{path}: expected a JSON object {{"class name": "superclass name", ...}}')
    bad = [name for name, group in grouping.items() if not isinstance(group, str) or not group]
    if bad:
        raise DataError(f"{path}: the superclass of {bad[:5]} must be a non-empty string")
    missing = [name for name in classes if name not in grouping]
    if missing:
        raise DataError(
            f"{path}: {len(missing)} of {len(classes)} classes have no superclass: {missing[:10]}"
            f"{' ...' if len(missing) > 10 else ''} — add them to the file"
        )
    names: dict[str, int] = {}
    superclass_of = [names.setdefault(grouping[name], len(names)) for name in classes]
    return torch.tensor(superclass_of, dtype=torch.long), list(names)
