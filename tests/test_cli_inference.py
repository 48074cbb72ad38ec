"""`cyclip predict` output against the zero-shot formula, and every new command's answer to bad input."""

import csv
import json

import numpy as np
import pytest
import torch
from PIL import Image

from cyclip.checkpoints import save_checkpoint
from cyclip.cli import main
from cyclip.models import create_model
from tests.test_inference import _reference_probabilities

CLASSES = ["cat", "dog", "red car", "tree"]


def _image(seed: int) -> Image.Image:
    colour = np.random.default_rng(seed).integers(0, 256, 3).astype(np.uint8)
    pixels = np.zeros((30, 40, 3), dtype=np.uint8) + colour
    pixels[: (seed * 5) % 30] = 255 - colour
    return Image.fromarray(pixels)


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    """A folder of images (and one broken file), a checkpoint, its plain state dict, and an index of another model."""
    root = tmp_path_factory.mktemp("cli")
    (root / "photos").mkdir()
    for index in range(6):
        _image(index).save(root / "photos" / f"{index}.png")
    (root / "photos" / "broken.png").write_bytes(b"\x89PNG not really")
    (root / "empty").mkdir()
    (root / "empty" / "notes.txt").write_text("no images here")
    torch.manual_seed(0)
    model, *_ = create_model("cyclip-rn-tiny")
    with torch.no_grad():
        model.logit_scale.fill_(2.5)
    save_checkpoint({"model": model.state_dict(), "model_name": "cyclip-rn-tiny"}, root / "model.pt")
    torch.save(model.state_dict(), root / "plain.pt")
    torch.manual_seed(1)
    other, *_ = create_model("cyclip-rn-tiny")
    save_checkpoint({"model": other.state_dict(), "model_name": "cyclip-rn-tiny"}, root / "other.pt")
    index = ["index", str(root / "photos"), "--checkpoint", str(root / "other.pt"), "--output", str(root / "other.npz")]
    assert main([*index, "--workers", "0"]) == 0
    (root / "dup.json").write_text(json.dumps({"classes": ["cat", "cat"]}))
    (root / "none.json").write_text(json.dumps({"classes": []}))
    return root, model.eval()


def _predict(root, *extra):
    return ["predict", str(root / "photos"), "--checkpoint", str(root / "model.pt"), "--workers", "0", *extra]


def test_predict_prints_and_writes_the_top_k(setup, capsys, caplog):
    root, model = setup
    capsys.readouterr()
    labels = ",".join(CLASSES)
    for output in ("preds.csv", "preds.json"):
        command = _predict(root, "--labels", labels, "--templates", "a photo of a {c}.", "--top-k", "2")
        assert main([*command, "--output", str(root / output), "--batch-size", "4"]) == 0
    captured = capsys.readouterr()
    paths = [root / "photos" / f"{index}.png" for index in range(6)]
    images = [Image.open(path) for path in paths]
    from cyclip.models import load_model

    loaded = load_model(root / "model.pt")
    expected, _ = _reference_probabilities(
        model, loaded.tokenizer, loaded.preprocess, images, CLASSES, ["a photo of a {}."]
    )
    top = expected.argsort(dim=1, descending=True)[:, :2]

    table = captured.out.splitlines()[:7]
    assert table[0].split() == ["image", "top-1", "p", "top-2", "p"]
    for line, path, order, row in zip(table[1:], paths, top.tolist(), expected, strict=True):
        assert line.startswith(str(path))
        cells = line[len(str(path)) :].split()
        assert [cells[0], float(cells[1])] == [CLASSES[order[0]], pytest.approx(row[order[0]].item(), abs=1e-4)]
    skipped = [m for m in caplog.messages if m.startswith(f"skipped {root / 'photos' / 'broken.png'}: ")]
    assert len(skipped) == 2 and caplog.messages.count("skipped 1 of 7 images (unreadable)") == 2

    with open(root / "preds.csv", newline="") as file:
        rows = list(csv.DictReader(file))
    assert len(rows) == 12 and rows[0].keys() == {"image", "rank", "label", "probability"}
    for row in rows:
        image, rank = paths.index(root / "photos" / row["image"].split("/")[-1]), int(row["rank"]) - 1
        assert row["label"] == CLASSES[top[image, rank]]
        assert float(row["probability"]) == pytest.approx(expected[image, top[image, rank]].item(), abs=1e-6)

    record = json.loads((root / "preds.json").read_text())
    assert record["classes"] == CLASSES and record["templates"] == ["a photo of a {}."]
    assert record["model"] == "cyclip-rn-tiny" and [p["image"] for p in record["predictions"]] == list(map(str, paths))
    assert record["skipped"][0]["image"] == str(root / "photos" / "broken.png")
    first = record["predictions"][0]["top_k"]
    assert [entry["label"] for entry in first] == [CLASSES[i] for i in top[0].tolist()]


def test_many_unreadable_images_are_listed_up_to_ten(setup, tmp_path, caplog):
    root, _ = setup
    _image(0).save(tmp_path / "good.png")
    for index in range(13):
        (tmp_path / f"bad{index:02d}.png").write_bytes(b"")
    command = ["predict", str(tmp_path), "--checkpoint", str(root / "model.pt"), "--labels", "a,b", "--workers", "0"]
    assert main(command) == 0
    err = caplog.messages
    assert [line for line in err if line.startswith("skipped /")] == [
        f"skipped {tmp_path / f'bad{index:02d}.png'}: empty file (0 bytes)" for index in range(10)
    ]
    assert "... and 3 more unreadable images" in err and err[-1] == "skipped 13 of 14 images (unreadable)"


BAD_INPUT = [
    (
        "predict: missing checkpoint",
        ["predict", "{photos}", "--checkpoint", "{root}/missing.pt", "--labels", "a,b"],
        "{root}/missing.pt: model not found",
    ),
    (
        "predict: weights without --model",
        ["predict", "{photos}", "--checkpoint", "{root}/plain.pt", "--labels", "a"],
        "{root}/plain.pt: the file does not record its architecture; pass it with --model NAME",
    ),
    (
        "predict: empty label list",
        ["predict", "{photos}", "--checkpoint", "{model}", "--labels", ""],
        "--labels: no labels given",
    ),
    (
        "predict: duplicate labels",
        ["predict", "{photos}", "--checkpoint", "{model}", "--labels", "cat,dog,cat"],
        "--labels: duplicate labels 'cat'",
    ),
    (
        "predict: duplicate classes",
        ["predict", "{photos}", "--checkpoint", "{model}", "--classes", "{root}/dup.json"],
        "{root}/dup.json: duplicate labels 'cat'",
    ),
    (
        "predict: empty classes",
        ["predict", "{photos}", "--checkpoint", "{model}", "--classes", "{root}/none.json"],
        "{root}/none.json: no labels given",
    ),
    (
        "predict: folder without images",
        ["predict", "{root}/empty", "--checkpoint", "{model}", "--labels", "a,b"],
        "{root}/empty: no image files in this folder or below",
    ),
    (
        "predict: missing image",
        ["predict", "{root}/nope.jpg", "--checkpoint", "{model}", "--labels", "a,b"],
        "{root}/nope.jpg: no such image file or folder",
    ),
    (
        "predict: bad template",
        ["predict", "{photos}", "--checkpoint", "{model}", "--labels", "a", "--templates", "x"],
        "--templates: template 'x' needs the class name as '{{}}'",
    ),
    (
        "predict: bad output",
        ["predict", "{photos}", "--checkpoint", "{model}", "--labels", "a", "--output", "p.txt"],
        "--output p.txt: name a .csv or .json file",
    ),
    (
        "predict: only unreadable images",
        ["predict", "{photos}/broken.png", "--checkpoint", "{model}", "--labels", "a"],
        "none of the 1 images could be read (first: {photos}/broken.png: ",
    ),
    (
        "index: missing checkpoint",
        ["index", "{photos}", "--checkpoint", "{root}/missing.pt", "--output", "{tmp}/i.npz"],
        "{root}/missing.pt: model not found",
    ),
    (
        "index: folder without images",
        ["index", "{root}/empty", "--checkpoint", "{model}", "--output", "{tmp}/i.npz"],
        "{root}/empty: no image files in this folder or below",
    ),
    (
        "search: index of another model",
        ["search", "--index", "{root}/other.npz", "--checkpoint", "{model}", "a cat"],
        "{root}/other.npz: built by model cyclip-rn-tiny from {root}/other.pt",
    ),
    (
        "search: missing index",
        ["search", "--index", "{root}/missing.npz", "a cat"],
        "{root}/missing.npz: embeddings file not found",
    ),
    (
        "search: missing checkpoint",
        ["search", "--index", "{root}/other.npz", "--checkpoint", "{root}/gone.pt", "a"],
        "{root}/gone.pt: model not found",
    ),
    ("search: no query", ["search", "--index", "{root}/other.npz"], "no query: give a caption"),
    (
        "search: missing query image",
        ["search", "--index", "{root}/other.npz", "--image", "{root}/q.jpg"],
        "{root}/q.jpg: image file not found",
    ),
]


@pytest.mark.parametrize(("case", "command", "message"), BAD_INPUT, ids=[case for case, *_ in BAD_INPUT])
def test_bad_input_is_one_line_and_exit_code_2(setup, tmp_path, capsys, case, command, message):
    root, _ = setup
    names = {"root": root, "photos": root / "photos", "model": root / "model.pt", "tmp": tmp_path}
    capsys.readouterr()
    assert main([part.format(**names) for part in command] + (["--workers", "0"] if case[0] != "s" else [])) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"cyclip: error: {message.format(**names)}"), err
    assert err.count("\n") == 1 and "Traceback" not in err
    assert not (tmp_path / "i.npz").exists()
