"""Linear probes against scikit-learn's LogisticRegression on the digits data (a random linear embedding of it)."""

import numpy as np
import pytest
import torch
from sklearn.datasets import load_digits
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import balanced_accuracy_score, log_loss
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

from cyclip.evaluation.linear_probe import (
    DEFAULT_C_GRID,
    few_shot_probe,
    fit_logistic,
    linear_probe,
    sample_few_shot,
    stratified_split,
)


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    """Tiny problems: a second intra-op thread only contends for the shared cores (runs 1x to 10x slower)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def digits():
    """L2-normalised 32-d random projections of the 64 pixels, like frozen embeddings; a fixed train/test cut."""
    pixels, labels = load_digits(return_X_y=True)
    features = pixels @ np.random.default_rng(0).standard_normal((64, 32))
    features /= np.linalg.norm(features, axis=1, keepdims=True)
    order = np.random.default_rng(1).permutation(len(labels))
    train, test = order[:1200], order[1200:]
    return features[train], labels[train], features[test], labels[test]


def objective(weight, bias, x, y, c):
    """scikit-learn's objective, written directly: summed log-loss + ||W||^2 / (2C); binary: logits [0, z]."""
    logits = x @ weight.T + bias
    if logits.shape[1] == 1:
        logits = np.hstack([np.zeros_like(logits), logits])
    logits -= logits.max(axis=1, keepdims=True)
    log_probs = logits - np.log(np.exp(logits).sum(axis=1, keepdims=True))
    return -log_probs[np.arange(len(y)), y].sum() + (weight**2).sum() / (2 * c)


@pytest.mark.parametrize("c", [0.1, 10.0])
def test_fit_matches_scikit_learn_weights_and_probabilities(digits, c):
    x, y, test_x, _ = digits
    # Newton's method reaches the optimum to float64 precision; scikit-learn's L-BFGS stops ~1e-6 short of it.
    reference = LogisticRegression(C=c, tol=1e-12, max_iter=100_000, solver="newton-cholesky").fit(x, y)
    model = fit_logistic(torch.tensor(x), torch.tensor(y), c, dtype=torch.float64, tol=1e-10, max_iter=10_000)
    scale = np.abs(reference.coef_).max()
    np.testing.assert_allclose(model.weight.numpy(), reference.coef_, atol=2e-5 * scale)
    np.testing.assert_allclose(model.bias.numpy(), reference.intercept_, atol=2e-5 * scale)
    np.testing.assert_allclose(
        model.predict_proba(torch.tensor(test_x)).numpy(), reference.predict_proba(test_x), atol=1e-6
    )
    # Both minimise the same function: ours reaches at least scikit-learn's value.
    ours = objective(model.weight.numpy(), model.bias.numpy(), x, y, c)
    assert ours <= objective(reference.coef_, reference.intercept_, x, y, c) + 1e-9


def test_binary_probe_is_binomial_like_scikit_learn(digits):
    x, y, test_x, _ = digits
    binary = (y >= 5).astype(int) * 7 + 1  # labels 1 and 8: the original values come back from predict
    reference = LogisticRegression(C=3.0, tol=1e-12, max_iter=100_000).fit(x, binary)
    model = fit_logistic(torch.tensor(x), torch.tensor(binary), 3.0, dtype=torch.float64, tol=1e-10)
    assert model.weight.shape == reference.coef_.shape == (1, 32)
    np.testing.assert_allclose(model.weight.numpy(), reference.coef_, atol=1e-5 * np.abs(reference.coef_).max())
    np.testing.assert_allclose(model.bias.numpy(), reference.intercept_, atol=1e-5)
    np.testing.assert_allclose(
        model.predict_proba(torch.tensor(test_x)).numpy(), reference.predict_proba(test_x), atol=1e-6
    )
    target = (binary == 8).astype(int)
    ours = objective(model.weight.numpy(), model.bias.numpy(), x, target, 3.0)
    assert ours <= objective(reference.coef_, reference.intercept_, x, target, 3.0) + 1e-9
    assert (model.predict(torch.tensor(test_x)).numpy() == reference.predict(test_x)).mean() > 0.995


def test_float32_probe_accuracy_within_a_point_of_scikit_learn(digits):
    x, y, test_x, test_y = digits
    reference = LogisticRegression(C=10.0, tol=1e-8, max_iter=10_000).fit(x, y)
    result = linear_probe(
        torch.tensor(x).float(), torch.tensor(y), torch.tensor(test_x).float(), torch.tensor(test_y), c_grid=[10.0]
    )
    assert result["C"] == 10.0 and result["converged"]
    assert result["accuracy"] == pytest.approx(reference.score(test_x, test_y), abs=0.01)
    assert result["score"] == result["accuracy"] and result["metric"] == "accuracy"
    assert result["num_classes"] == 10 and result["num_train"] == 1200 and result["num_test"] == 597


def test_standardized_probe_equals_scikit_learn_pipeline(digits):
    x, y, test_x, test_y = digits
    reference = make_pipeline(StandardScaler(), LogisticRegression(C=0.5, tol=1e-12, max_iter=100_000)).fit(x, y)
    model = fit_logistic(torch.tensor(x), torch.tensor(y), 0.5, standardize=True, dtype=torch.float64, tol=1e-10)
    np.testing.assert_allclose(
        model.predict_proba(torch.tensor(test_x)).numpy(), reference.predict_proba(test_x), atol=1e-6
    )


def test_mean_per_class_score_is_balanced_accuracy(digits):
    x, y, test_x, test_y = digits
    keep = (test_y != 3) | (np.arange(len(test_y)) % 4 == 0)  # an unbalanced test split
    test_x, test_y = test_x[keep], test_y[keep]
    model = fit_logistic(torch.tensor(x), torch.tensor(y), 1.0, dtype=torch.float64, tol=1e-10)
    predicted = model.predict(torch.tensor(test_x)).numpy()
    result = linear_probe(
        torch.tensor(x), torch.tensor(y), torch.tensor(test_x), torch.tensor(test_y),
        c_grid=[1.0], mean_per_class=True, dtype=torch.float64, tol=1e-10,
    )  # fmt: skip
    assert result["metric"] == "mean_per_class_accuracy"
    assert result["score"] == pytest.approx(balanced_accuracy_score(test_y, predicted), abs=1e-12)
    assert result["accuracy"] == pytest.approx((predicted == test_y).mean(), abs=1e-12)
    assert result["score"] != pytest.approx(result["accuracy"], abs=1e-6)


def test_stratified_split_is_seeded_disjoint_and_per_class():
    labels = torch.tensor([0] * 10 + [1] * 5 + [2] * 1 + [3] * 3)
    fit, held_out = stratified_split(labels, 0.2, seed=3)
    assert sorted(torch.cat([fit, held_out]).tolist()) == list(range(len(labels)))
    # round(0.2 n_c), never the last example of a class: 10 -> 2, 5 -> 1, 1 -> 0, 3 -> 1
    assert torch.bincount(labels[held_out], minlength=4).tolist() == [2, 1, 0, 1]
    again, _ = stratified_split(labels, 0.2, seed=3)
    assert torch.equal(fit, again)
    draws = {tuple(stratified_split(labels, 0.2, seed=s)[1].tolist()) for s in range(20)}
    assert len(draws) > 5


def test_c_selection_picks_the_best_validation_score_of_a_scikit_learn_loop(digits):
    x, y, test_x, test_y = digits
    grid = [1e-2, 1e-1, 1.0, 10.0, 100.0]
    result = linear_probe(
        torch.tensor(x).float(), torch.tensor(y), torch.tensor(test_x).float(), torch.tensor(test_y),
        c_grid=grid, val_fraction=0.25, seed=5,
    )  # fmt: skip
    fit, held_out = (rows.numpy() for rows in stratified_split(torch.tensor(y), 0.25, seed=5))
    reference = {
        c: LogisticRegression(C=c, tol=1e-8, max_iter=10_000).fit(x[fit], y[fit]).score(x[held_out], y[held_out])
        for c in grid
    }
    one_row = 1.0 / len(held_out)
    assert [entry["C"] for entry in result["validation"]] == grid
    for entry in result["validation"]:
        assert entry["score"] == pytest.approx(reference[entry["C"]], abs=one_row + 1e-12)
    assert result["C"] in grid
    assert reference[result["C"]] >= max(reference.values()) - one_row
    refit = LogisticRegression(C=result["C"], tol=1e-8, max_iter=10_000).fit(x, y)
    assert result["accuracy"] == pytest.approx(refit.score(test_x, test_y), abs=0.01)


def test_default_search_refines_around_the_best_decade(digits):
    x, y, test_x, test_y = digits
    result = linear_probe(torch.tensor(x).float(), torch.tensor(y), torch.tensor(test_x).float(), torch.tensor(test_y))
    tried = {entry["C"]: entry["score"] for entry in result["validation"]}
    assert set(DEFAULT_C_GRID) <= set(tried) and len(tried) == len(DEFAULT_C_GRID) + 2 * 4
    loss = {entry["C"]: entry["log_loss"] for entry in result["validation"]}
    best = max(tried.values())
    tied = [c for c, score in tried.items() if score == best]
    assert tried[result["C"]] == best and loss[result["C"]] == min(loss[c] for c in tied)
    decade = max(DEFAULT_C_GRID, key=lambda c: (tried[c], -loss[c], -c))
    assert decade / 10 < result["C"] < decade * 10
    assert result["accuracy"] > 0.85


def test_few_shot_samples_are_per_class_nested_and_seeded():
    labels = torch.tensor([2, 0, 1, 0, 2, 1, 0, 1, 2, 0, 1, 2, 2, 0, 1] * 2)
    four = sample_few_shot(labels, 4, seed=0)
    assert labels[four].tolist() == [0] * 4 + [1] * 4 + [2] * 4
    two = sample_few_shot(labels, 2, seed=0)
    assert set(two.tolist()) == set(four.view(3, 4)[:, :2].flatten().tolist())
    assert torch.equal(four, sample_few_shot(labels, 4, seed=0))
    assert len({tuple(sample_few_shot(labels, 4, seed=s).tolist()) for s in range(10)}) > 1
    with pytest.raises(ValueError, match="lower the shots"):
        sample_few_shot(labels[:9], 4, seed=0)


def test_few_shot_probe_with_fixed_c_matches_scikit_learn_per_seed(digits):
    x, y, test_x, test_y = digits
    result = few_shot_probe(
        torch.tensor(x), torch.tensor(y), torch.tensor(test_x), torch.tensor(test_y),
        shots=(1, 4), seeds=(0, 1, 2), fixed_c=10.0, dtype=torch.float64, tol=1e-10,
    )  # fmt: skip
    assert set(result["shots"]) == {1, 4}
    for k in (1, 4):
        expected = []
        for seed in (0, 1, 2):
            rows = sample_few_shot(torch.tensor(y), k, seed).numpy()
            reference = LogisticRegression(C=10.0, tol=1e-12, max_iter=100_000).fit(x[rows], y[rows])
            expected.append(reference.score(test_x, test_y))
        entry = result["shots"][k]
        assert entry["C"] == [10.0] * 3
        np.testing.assert_allclose(entry["scores"], expected, atol=2.0 / len(test_y))
        assert entry["mean"] == pytest.approx(np.mean(entry["scores"]), abs=1e-12)
        assert entry["std"] == pytest.approx(np.std(entry["scores"]), abs=1e-12)


def test_few_shot_cross_validation_picks_the_best_c_of_a_scikit_learn_loop(digits):
    x, y, test_x, test_y = digits
    grid, shots, folds = [1e-2, 1.0, 100.0], 4, 2
    result = few_shot_probe(
        torch.tensor(x).float(), torch.tensor(y), torch.tensor(test_x).float(), torch.tensor(test_y),
        shots=(1, shots), seeds=(7,), c_grid=grid, cv_folds=folds, default_c=0.3,
    )  # fmt: skip
    assert result["shots"][1]["C"] == [0.3]  # one shot: no cross-validation possible
    rows = sample_few_shot(torch.tensor(y), shots, 7).numpy()
    fold_of = np.arange(len(rows)) % shots % folds  # the j-th shot of every class goes to fold j mod folds
    reference = {}
    for c in grid:
        scores = []
        for fold in range(folds):
            fit, held_out = rows[fold_of != fold], rows[fold_of == fold]
            model = LogisticRegression(C=c, tol=1e-10, max_iter=100_000).fit(x[fit], y[fit])
            scores.append(model.score(x[held_out], y[held_out]))
        reference[c] = np.mean(scores)
    (chosen,) = result["shots"][shots]["C"]
    assert reference[chosen] >= max(reference.values()) - 1.0 / (len(rows) // folds)


def test_tied_validation_scores_go_to_the_lowest_log_loss_not_a_degenerate_tiny_c():
    """Tight, imbalanced clusters (like trained CLIP features): every C from 1e-6 up classifies the validation
    split perfectly, but at tiny C the weights vanish and the refitted bias predicts the majority class."""
    generator = np.random.default_rng(0)
    centres = generator.standard_normal((5, 16))
    counts = [120, 60, 40, 30, 20]
    y = np.repeat(np.arange(5), counts)
    x = centres[y] + 0.01 * generator.standard_normal((len(y), 16))
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    test_y = np.repeat(np.arange(5), 20)
    test_x = centres[test_y] + 0.01 * generator.standard_normal((100, 16))
    test_x /= np.linalg.norm(test_x, axis=1, keepdims=True)
    grid = [1e-6, 1e-2, 1.0, 100.0]
    result = linear_probe(
        torch.tensor(x).float(), torch.tensor(y), torch.tensor(test_x).float(), torch.tensor(test_y), c_grid=grid
    )
    fit, held_out = (rows.numpy() for rows in stratified_split(torch.tensor(y), 0.2, seed=0))
    reference = {}
    for c in grid:
        model = LogisticRegression(C=c, tol=1e-10, max_iter=10_000).fit(x[fit], y[fit])
        reference[c] = (model.score(x[held_out], y[held_out]), log_loss(y[held_out], model.predict_proba(x[held_out])))
    for entry in result["validation"]:
        assert entry["log_loss"] == pytest.approx(reference[entry["C"]][1], rel=1e-3, abs=1e-4)
    assert result["C"] == max(grid, key=lambda c: (reference[c][0], -reference[c][1]))
    assert result["accuracy"] == 1.0
