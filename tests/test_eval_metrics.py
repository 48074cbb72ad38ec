"""Retrieval, consistency, zero-shot top-k, geometry, fine/coarse zero-shot and the embeddings file, against
direct loops, scikit-learn and hand-built examples with known answers."""

import itertools
import json
import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from sklearn.metrics import top_k_accuracy_score

from cyclip.errors import DataError
from cyclip.evaluation.consistency import (
    consistency_at_k,
    consistency_gaps,
    consistency_report,
    neighbour_agreement,
    regularizer_values,
)
from cyclip.evaluation.embeddings_file import Embeddings, load_embeddings, save_embeddings
from cyclip.evaluation.geometry import alignment, class_geometry, cross_uniformity, paired_geometry, uniformity
from cyclip.evaluation.granularity import fine_coarse_accuracy, read_superclasses
from cyclip.evaluation.retrieval import retrieval_recall
from cyclip.evaluation.zeroshot import topk_accuracy
from tests.helpers.reference import direct_objective


def unit_rows(rows: int, dim: int, seed: int, dtype=torch.float64) -> torch.Tensor:
    return F.normalize(torch.randn(rows, dim, generator=torch.Generator().manual_seed(seed), dtype=dtype), dim=1)


# --- retrieval ---------------------------------------------------------------------------------------------


def test_retrieval_recall_equals_a_double_loop():
    images, texts = unit_rows(17, 8, 0), unit_rows(40, 8, 1)  # continuous random values: no ties
    image_of_text = torch.cat(
        [torch.arange(17), torch.randint(0, 17, (23,), generator=torch.Generator().manual_seed(2))]
    )
    ks = (1, 3, 5, 10)
    ours = retrieval_recall(images, texts, image_of_text, ks=ks, chunk=3)  # chunks that do not divide N

    i, t, owner = images.numpy(), texts.numpy(), image_of_text.tolist()
    expected = {}
    for k in ks:
        hits = 0
        for a in range(len(i)):
            ranked = sorted(range(len(t)), key=lambda b: -float(i[a] @ t[b]))
            hits += any(owner[b] == a for b in ranked[:k])
        expected[f"image_to_text_R@{k}"] = hits / len(i)
        hits = 0
        for b in range(len(t)):
            ranked = sorted(range(len(i)), key=lambda a: -float(i[a] @ t[b]))
            hits += owner[b] in ranked[:k]
        expected[f"text_to_image_R@{k}"] = hits / len(t)
    expected["mean_recall"] = sum(expected.values()) / 8
    assert ours == pytest.approx(expected, abs=1e-12)
    assert 0 < ours["image_to_text_R@1"] < ours["image_to_text_R@10"] < 1


def test_retrieval_recall_on_a_hand_built_example():
    # Images are the axes; scores s(i, t) = <I_i, T_t>:
    #        T0(img 0)  T1(img 1)  T2(img 1)  T3(img 2)
    #   I0     .6         0          .8         0      own caption T0 ranked 2nd
    #   I1     .8         .6         0          0      best own caption T1 ranked 2nd
    #   I2     0          .8         .6         1      own caption T3 ranked 1st
    # Per caption the owner ranks 2nd (T0), 2nd (T1), 3rd (T2), 1st (T3).
    images = torch.eye(3)
    texts = torch.tensor([[0.6, 0.8, 0.0], [0.0, 0.6, 0.8], [0.8, 0.0, 0.6], [0.0, 0.0, 1.0]])
    result = retrieval_recall(images, texts, torch.tensor([0, 1, 1, 2]), ks=(1, 2, 3))
    assert result == pytest.approx(
        {
            "image_to_text_R@1": 1 / 3,
            "image_to_text_R@2": 1.0,
            "image_to_text_R@3": 1.0,
            "text_to_image_R@1": 1 / 4,
            "text_to_image_R@2": 3 / 4,
            "text_to_image_R@3": 1.0,
            "mean_recall": 13 / 18,
        },
        abs=1e-12,
    )


def test_retrieval_recall_refuses_uncaptioned_images_and_bad_indices():
    images, texts = unit_rows(4, 3, 0), unit_rows(4, 3, 1)
    with pytest.raises(ValueError, match="1 images have no caption"):
        retrieval_recall(images, texts, torch.tensor([0, 1, 2, 2]))
    with pytest.raises(ValueError, match="outside 0..3"):
        retrieval_recall(images, texts, torch.tensor([0, 1, 2, 4]))
    with pytest.raises(ValueError, match="shape \\(4,\\)"):
        retrieval_recall(images, texts, torch.tensor([0, 1, 2]))


# --- consistency -------------------------------------------------------------------------------------------


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


def nearest_others(x: np.ndarray, j: int, k: int) -> set[int]:
    others = [m for m in range(len(x)) if m != j]
    return set(sorted(others, key=lambda m: -float(x[j] @ x[m]))[:k])


def test_neighbour_agreement_equals_a_double_loop():
    images = unit_rows(21, 5, 3)
    texts = F.normalize(images + 0.4 * unit_rows(21, 5, 4), dim=1)
    ks = (1, 3, 7)
    ours = neighbour_agreement(images, texts, ks, chunk=4)
    i, t = images.numpy(), texts.numpy()
    for k in ks:
        expected = np.mean([len(nearest_others(i, j, k) & nearest_others(t, j, k)) / k for j in range(21)])
        assert ours[f"neighbour_agreement@{k}"] == pytest.approx(expected, abs=1e-12)
    assert 0 < ours["neighbour_agreement@1"] < 1


def test_consistency_at_k_equals_a_loop():
    images, classes = unit_rows(30, 6, 5), unit_rows(12, 6, 6)
    texts = F.normalize(images + 0.8 * unit_rows(30, 6, 7), dim=1)
    ours = consistency_at_k(images, texts, classes, ks=(1, 3, 5, 10, 20), chunk=7)
    assert set(ours) == {"consistency@1", "consistency@3", "consistency@5", "consistency@10"}  # 20 > 12 classes
    i, t, c = images.numpy(), texts.numpy(), classes.numpy()
    for k in (1, 3, 5, 10):
        hits = 0
        for j in range(30):
            caption_class = max(range(12), key=lambda m: float(t[j] @ c[m]))
            image_top = sorted(range(12), key=lambda m: -float(i[j] @ c[m]))[:k]
            hits += caption_class in image_top
        assert ours[f"consistency@{k}"] == pytest.approx(hits / 30, abs=1e-12)
    assert ours["consistency@1"] < 1


def test_regularizer_values_equal_the_direct_n_by_n_formula():
    images, texts = unit_rows(19, 7, 8, torch.float32), unit_rows(19, 7, 9, torch.float32)
    _, inmodal, crossmodal = direct_objective(images, texts, 0.0)
    ours = regularizer_values(images, texts)
    assert ours["inmodal_regularizer"] == pytest.approx(inmodal.item(), rel=1e-12)
    assert ours["crossmodal_regularizer"] == pytest.approx(crossmodal.item(), rel=1e-12)


def test_identical_spaces_are_perfectly_consistent():
    images, classes = unit_rows(25, 6, 10), unit_rows(8, 6, 11)
    labels = (images @ classes.T).argmax(dim=1)
    report = consistency_report(images, images.clone(), classes, labels)
    assert report["inmodal_gap"] == report["crossmodal_gap"] == 0.0
    assert report["inmodal_regularizer"] == report["crossmodal_regularizer"] == 0.0
    for key in ("neighbour_agreement@1", "neighbour_agreement@5", "neighbour_agreement@10"):
        assert report[key] == 1.0
    for key in ("consistency@1", "consistency@3", "consistency@5", "image_zeroshot_top1", "caption_zeroshot_top1"):
        assert report[key] == 1.0


def test_consistency_report_zeroshot_accuracies_equal_argmax_counts():
    images, classes = unit_rows(40, 6, 12), unit_rows(5, 6, 13)
    texts = F.normalize(images + 0.7 * unit_rows(40, 6, 14), dim=1)
    labels = torch.randint(0, 5, (40,), generator=torch.Generator().manual_seed(15))
    report = consistency_report(images, texts, classes, labels, neighbour_ks=(1, 2))
    i, t, c, y = images.numpy(), texts.numpy(), classes.numpy(), labels.numpy()
    assert report["image_zeroshot_top1"] == pytest.approx(np.mean((i @ c.T).argmax(1) == y), abs=1e-12)
    assert report["caption_zeroshot_top1"] == pytest.approx(np.mean((t @ c.T).argmax(1) == y), abs=1e-12)
    assert report["consistency@1"] == pytest.approx(np.mean((i @ c.T).argmax(1) == (t @ c.T).argmax(1)), abs=1e-12)
    assert "neighbour_agreement@2" in report and "consistency@10" not in report  # 10 > 5 classes


# --- zero-shot ---------------------------------------------------------------------------------------------


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


# --- geometry ----------------------------------------------------------------------------------------------


def test_uniformity_equals_pdist_reference():
    x = unit_rows(33, 4, 16)
    expected = torch.log(torch.exp(-2 * torch.pdist(x) ** 2).mean()).item()
    assert uniformity(x, chunk=5) == pytest.approx(expected, rel=1e-12)
    expected_t3 = torch.log(torch.exp(-3 * torch.pdist(x) ** 2).mean()).item()
    assert uniformity(x, t=3.0, chunk=100) == pytest.approx(expected_t3, rel=1e-12)


def test_uniformity_does_not_underflow():
    x = unit_rows(50, 3, 17) * 40  # far-apart points: every exp(-2 d^2) underflows float64
    d = torch.pdist(x.double()) ** 2
    expected = (torch.logsumexp(-2 * d, dim=0) - math.log(len(d))).item()
    assert math.isfinite(uniformity(x, chunk=7))
    assert uniformity(x, chunk=7) == pytest.approx(expected, rel=1e-10)


def test_alignment_equals_a_loop():
    x, y = unit_rows(12, 5, 18), unit_rows(12, 5, 19)
    for alpha in (1.0, 2.0):
        expected = np.mean([np.linalg.norm(x[i].numpy() - y[i].numpy()) ** alpha for i in range(12)])
        assert alignment(x, y, alpha) == pytest.approx(expected, rel=1e-12)


def test_cross_uniformity_equals_double_loops():
    x, y = unit_rows(14, 4, 20), unit_rows(14, 4, 21)
    a, b = x.numpy(), y.numpy()
    pairs = list(itertools.product(range(14), repeat=2))
    lower = [math.exp(-2 * np.sum((a[i] - b[j]) ** 2)) for i, j in pairs if j < i]
    off = [math.exp(-2 * np.sum((a[i] - b[j]) ** 2)) for i, j in pairs if j != i]
    assert cross_uniformity(x, y, pairs="lower", chunk=3) == pytest.approx(math.log(np.mean(lower)), rel=1e-12)
    assert cross_uniformity(x, y, chunk=3) == pytest.approx(math.log(np.mean(off)), rel=1e-12)


def test_class_geometry_matches_the_released_analysis_formula():
    images, classes = unit_rows(26, 5, 22), unit_rows(6, 5, 23)
    labels = torch.randint(0, 6, (26,), generator=torch.Generator().manual_seed(24))
    matched = classes[labels]
    # The paper's analysis: cdist between images and their class texts, pairs strictly below the diagonal.
    distances = torch.cdist(images, matched)
    below = torch.ones(26, 26).tril(diagonal=-1) == 1
    expected_uniformity = torch.masked_select(distances, below).square().mul(-2).exp().mean().log().item()
    expected_alignment = (images - matched).square().sum(1).mean().item()
    result = class_geometry(images, labels, classes, pairs="lower")
    assert result["alignment"] == pytest.approx(expected_alignment, rel=1e-12)
    assert result["uniformity"] == pytest.approx(expected_uniformity, rel=1e-12)
    assert result["image_uniformity"] == pytest.approx(torch.exp(-2 * torch.pdist(images) ** 2).mean().log().item())
    with pytest.raises(ValueError, match="0..5"):
        class_geometry(images, labels + 1, classes)


def test_paired_geometry_of_identical_spaces():
    x = unit_rows(10, 4, 25)
    result = paired_geometry(x, x.clone())
    assert result["alignment"] == 0.0
    assert result["image_uniformity"] == pytest.approx(result["text_uniformity"], rel=1e-12)
    # With y = x, pairs i != j are the ordered pairs of uniformity: the two means coincide.
    assert result["uniformity"] == pytest.approx(result["image_uniformity"], rel=1e-12)


# --- fine vs coarse ----------------------------------------------------------------------------------------


def test_fine_and_coarse_accuracy_by_hand():
    # Classes 0, 1 form superclass 0; classes 2, 3 superclass 1.
    logits = torch.tensor(
        [
            [0.1, 0.5, 0.9, 0.2],  # label 0: within {0, 1} class 1 wins (fine miss); group max .5 < .9 (coarse miss)
            [0.3, 0.1, 0.2, 0.4],  # label 3: within {2, 3} class 3 wins; groups .3 < .4: both hit
            [0.2, 0.6, 0.1, 0.7],  # label 1: within {0, 1} class 1 wins; groups .6 < .7: coarse miss
        ]
    )
    result = fine_coarse_accuracy(logits, torch.tensor([0, 3, 1]), [0, 0, 1, 1], ks=(1, 2))
    assert result == pytest.approx(
        {"fine_top1": 2 / 3, "fine_top2": 1.0, "coarse_top1": 1 / 3, "coarse_top2": 1.0}, abs=1e-12
    )


def test_coarse_top1_is_the_superclass_of_the_best_class():
    generator = torch.Generator().manual_seed(26)
    logits = torch.randn(300, 20, generator=generator)
    labels = torch.randint(0, 20, (300,), generator=generator)
    superclass_of = torch.randint(0, 4, (20,), generator=generator)
    result = fine_coarse_accuracy(logits, labels, superclass_of, ks=(1,))
    expected = (superclass_of[logits.argmax(1)] == superclass_of[labels]).double().mean().item()
    assert result["coarse_top1"] == pytest.approx(expected, abs=1e-12)
    fine = np.mean(
        [
            max((c for c in range(20) if superclass_of[c] == superclass_of[labels[i]]), key=lambda c: logits[i, c])
            == labels[i]
            for i in range(300)
        ]
    )
    assert result["fine_top1"] == pytest.approx(fine, abs=1e-12)


def test_read_superclasses(tmp_path):
    path = tmp_path / "groups.json"
    path.write_text(json.dumps({"cat": "animal", "car": "vehicle", "dog": "animal", "tree": "plant"}))
    superclass_of, names = read_superclasses(path, ["car", "cat", "dog"])
    assert superclass_of.tolist() == [0, 1, 1] and names == ["vehicle", "animal"]  # extra entries are ignored
    with pytest.raises(DataError, match=r"groups.json: 2 of 4 classes have no superclass: \['bus', 'ship'\]"):
        read_superclasses(path, ["car", "bus", "cat", "ship"])
    path.write_text('{"cat": "animal",\n "dog": }')
    with pytest.raises(DataError, match="groups.json: not valid JSON at line 2 column"):
        read_superclasses(path, ["cat"])
    path.write_text('["cat", "animal"]')
    with pytest.raises(DataError, match="expected a JSON object"):
        read_superclasses(path, ["cat"])


# --- embeddings file ---------------------------------------------------------------------------------------


def full_arrays():
    images = unit_rows(6, 4, 27, torch.float32)
    return {
        "image_embeddings": images,
        "text_embeddings": unit_rows(9, 4, 28, torch.float32),
        "image_of_text": torch.tensor([0, 0, 1, 2, 3, 4, 5, 5, 5]),
        "captions": ["a cat", "ein Kätzchen", "猫", "a dog", "", "x", "y", "z", "w"],
        "labels": torch.tensor([0, 1, 2, 0, 1, 2]),
        "class_names": ["cat", "café", "dog"],
        "class_embeddings": unit_rows(3, 4, 29, torch.float32),
    }


def test_embeddings_file_round_trip(tmp_path):
    arrays = full_arrays()
    path = save_embeddings(tmp_path / "set.npz", **arrays)
    assert path == tmp_path / "set.npz" and sorted(p.name for p in tmp_path.iterdir()) == ["set.npz"]
    with np.load(path, allow_pickle=False) as archive:  # plain arrays, no pickle needed
        assert archive["captions"].dtype.kind == "U"
    loaded = load_embeddings(path)
    assert isinstance(loaded, Embeddings)
    for name in ("image_embeddings", "text_embeddings", "class_embeddings", "labels", "image_of_text"):
        assert torch.equal(getattr(loaded, name), arrays[name]), name
    assert loaded.captions == arrays["captions"] and loaded.class_names == arrays["class_names"]
    # an analysis straight from the file
    assert retrieval_recall(loaded.image_embeddings, loaded.text_embeddings, loaded.image_of_text) == (
        retrieval_recall(arrays["image_embeddings"], arrays["text_embeddings"], arrays["image_of_text"])
    )


def test_embeddings_file_optional_arrays_are_none_and_overwrite_is_atomic(tmp_path):
    path = tmp_path / "e.npz"
    save_embeddings(path, **full_arrays())
    images = np.eye(3, dtype=np.float32)
    save_embeddings(path, image_embeddings=images, text_embeddings=images[::-1].copy())
    loaded = load_embeddings(path)
    assert torch.equal(loaded.image_embeddings, torch.eye(3))
    assert loaded.labels is None and loaded.captions is None and loaded.image_of_text is None
    assert [p.name for p in tmp_path.iterdir()] == ["e.npz"]


def test_save_refuses_inconsistent_arrays(tmp_path):
    arrays = full_arrays()
    with pytest.raises(ValueError, match="array 'labels' has shape \\(5,\\), expected \\(6,\\)"):
        save_embeddings(tmp_path / "bad.npz", **(arrays | {"labels": arrays["labels"][:5]}))
    with pytest.raises(ValueError, match="unknown arrays \\['logits'\\]"):
        save_embeddings(tmp_path / "bad.npz", **arrays, logits=torch.zeros(6, 3))
    with pytest.raises(ValueError, match="'labels' holds values outside 0..2"):
        save_embeddings(tmp_path / "bad.npz", **(arrays | {"labels": torch.tensor([0, 1, 2, 3, 0, 0])}))
    assert not list(tmp_path.iterdir())


def test_load_names_the_file_and_the_array(tmp_path):
    path = tmp_path / "hand.npz"
    np.savez(path, image_embeddings=np.zeros((4, 3), np.float32), text_embeddings=np.zeros((4, 2), np.float32))
    with pytest.raises(DataError, match=r"hand.npz: array 'text_embeddings' has shape \(4, 2\), expected \(4, 3\)"):
        load_embeddings(path)
    np.savez(path, image_embeddings=np.zeros((2, 3), np.float32), captions=np.array(["a", None], dtype=object))
    with pytest.raises(DataError, match="hand.npz: holds an array that needs pickle"):
        load_embeddings(path)
    np.savez(path, text_embeddings=np.zeros((2, 3), np.float32))
    with pytest.raises(DataError, match="missing array 'image_embeddings'"):
        load_embeddings(path)
    (tmp_path / "junk.npz").write_bytes(b"not a zip")
    with pytest.raises(DataError, match="junk.npz: not a .npz archive"):
        load_embeddings(tmp_path / "junk.npz")
    with pytest.raises(DataError, match="not found"):
        load_embeddings(tmp_path / "absent.npz")
