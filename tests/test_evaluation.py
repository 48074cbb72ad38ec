"""Evaluation metrics against independent computations: a direct double loop and scikit-learn."""

import itertools

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from sklearn.metrics import top_k_accuracy_score

from cyclip.evaluation.consistency import consistency_gaps
from cyclip.evaluation.zeroshot import topk_accuracy


def test_consistency_gaps_equal_a_double_loop():
    generator = torch.Generator().manual_seed(0)
    images = F.normalize(torch.randn(23, 6, generator=generator), dim=1)
    texts = F.normalize(images + 0.3 * torch.randn(23, 6, generator=generator), dim=1)
    i, t = images.double().numpy(), texts.double().numpy()
    pairs = [(j, k) for j, k in itertools.product(range(23), repeat=2) if j != k]
    inmodal = np.mean([abs(i[j] @ i[k] - t[j] @ t[k]) for j, k in pairs])
    crossmodal = np.mean([abs(i[j] @ t[k] - i[k] @ t[j]) for j, k in pairs])
    gaps = consistency_gaps(images, texts, block=5)  # blocks that do not divide N
    assert gaps["inmodal_gap"] == pytest.approx(inmodal, rel=1e-12)
    assert gaps["crossmodal_gap"] == pytest.approx(crossmodal, rel=1e-12)


def test_identical_spaces_have_zero_gaps():
    images = F.normalize(torch.randn(10, 4, generator=torch.Generator().manual_seed(1)), dim=1)
    assert consistency_gaps(images, images) == {"inmodal_gap": 0.0, "crossmodal_gap": 0.0}


def test_consistency_gaps_refuse_mismatched_inputs():
    with pytest.raises(ValueError, match="N >= 2"):
        consistency_gaps(torch.zeros(3, 4), torch.zeros(4, 4))


def test_topk_accuracy_equals_scikit_learn():
    generator = torch.Generator().manual_seed(2)
    logits = torch.randn(200, 12, generator=generator)
    labels = torch.randint(0, 12, (200,), generator=generator)
    ours = topk_accuracy(logits, labels)
    assert set(ours) == {"top1", "top3", "top5", "top10"}
    for k in (1, 3, 5, 10):
        expected = top_k_accuracy_score(labels.numpy(), logits.numpy(), k=k, labels=np.arange(12))
        assert ours[f"top{k}"] == pytest.approx(expected, abs=1e-12)
    assert set(topk_accuracy(logits[:, :4], labels.clamp(max=3))) == {"top1", "top3"}  # k above the classes
