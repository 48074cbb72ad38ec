"""The Python API (ZeroShotClassifier, embed_images, embed_texts), image discovery and prompt parsing, checked
against float64 formulas on open_clip's own model outputs; and the README's Python example, run as written."""

import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import open_clip
import pytest
import torch
from PIL import Image

import cyclip
from cyclip.checkpoints import save_checkpoint
from cyclip.errors import DataError
from cyclip.inference import embed_image_files, find_images
from cyclip.models import create_model
from cyclip.prompts import normalise_template, parse_labels, read_classes, read_templates

README = Path(__file__).parent.parent / "README.md"
CLASSES = ["cat", "dog", "red car"]
TEMPLATES = ["a photo of a {}.", "a drawing of a {}."]


def _image(seed: int, size=(53, 41)) -> Image.Image:
    return Image.fromarray(np.random.default_rng(seed).integers(0, 256, (size[1], size[0], 3), dtype=np.uint8))


@pytest.fixture(scope="module")
def tiny():
    """A random-weight tiny model with an open_clip tokenizer and transform built independently of cyclip's."""
    torch.manual_seed(0)
    model, _, preprocess, tokenizer = create_model("cyclip-vit-tiny")
    with torch.no_grad():
        model.logit_scale.fill_(3.0)
    _, _, reference_preprocess = open_clip.create_model_and_transforms("cyclip-vit-tiny")
    return model.eval(), preprocess, tokenizer, reference_preprocess


@torch.no_grad()
def _reference_probabilities(model, tokenizer, preprocess, images, classes, templates):
    """softmax(exp(s) · <I, C_c>) in float64, C_c the normalised mean of normalised prompt embeddings."""
    pixels = torch.stack([preprocess(image) for image in images])
    image = model.encode_image(pixels).double()
    image = image / image.norm(dim=1, keepdim=True)
    rows = []
    for name in classes:
        prompts = model.encode_text(tokenizer([template.format(name) for template in templates])).double()
        mean = (prompts / prompts.norm(dim=1, keepdim=True)).mean(dim=0)
        rows.append(mean / mean.norm())
    logits = model.logit_scale.double().exp() * image @ torch.stack(rows).T
    return logits.softmax(dim=1), image


def test_classifier_probabilities_and_top_k_match_the_formula(tiny):
    model, _, tokenizer, reference_preprocess = tiny
    images = [_image(seed) for seed in range(4)]
    expected, _ = _reference_probabilities(model, tokenizer, reference_preprocess, images, CLASSES, TEMPLATES)
    classifier = cyclip.ZeroShotClassifier(model, tokenizer, CLASSES, TEMPLATES)
    probabilities = classifier.probabilities(images)
    torch.testing.assert_close(probabilities.double(), expected, rtol=0, atol=1e-6)

    predictions = classifier.predict(images, k=2)
    for row, expected_row in zip(predictions, expected, strict=True):
        order = expected_row.argsort(descending=True)[:2].tolist()
        assert [label for label, _ in row] == [CLASSES[i] for i in order]
        assert [p for _, p in row] == pytest.approx(expected_row[order].tolist(), abs=1e-6)
    assert len(classifier.predict(images[0], k=10)[0]) == len(CLASSES)  # k beyond the classes: all of them


def test_clip_benchmark_placeholder_gives_the_same_classifier(tiny):
    model, _, tokenizer, _ = tiny
    ours = cyclip.ZeroShotClassifier(model, tokenizer, CLASSES, TEMPLATES)
    theirs = cyclip.ZeroShotClassifier(model, tokenizer, CLASSES, [t.replace("{}", "{c}") for t in TEMPLATES])
    assert theirs.templates == TEMPLATES
    assert torch.equal(ours.class_embeddings, theirs.class_embeddings)


def test_images_as_pil_files_or_tensors_embed_alike(tiny, tmp_path):
    model, preprocess, _, reference_preprocess = tiny
    images = [_image(seed) for seed in range(3)]
    paths = []
    for index, image in enumerate(images):
        image.save(tmp_path / f"{index}.png")
        paths.append(tmp_path / f"{index}.png")
    with torch.no_grad():
        expected = model.encode_image(torch.stack([reference_preprocess(image) for image in images]), normalize=True)
    assert torch.equal(cyclip.embed_images(model, images), expected)
    torch.testing.assert_close(cyclip.embed_images(model, images, batch_size=2), expected, rtol=0, atol=1e-6)
    assert torch.equal(cyclip.embed_images(model, [str(p) for p in paths]), expected)
    assert torch.equal(cyclip.embed_images(model, torch.stack([preprocess(i) for i in images])), expected)
    # One image alone is another batch shape, so float sums may round differently.
    torch.testing.assert_close(cyclip.embed_images(model, preprocess(images[0])), expected[:1], rtol=0, atol=1e-6)
    torch.testing.assert_close(cyclip.embed_images(model, images[1]), expected[1:2], rtol=0, atol=1e-6)


def test_embed_texts_is_the_normalised_text_tower(tiny):
    model, _, tokenizer, _ = tiny
    texts = ["a red car", "a cat", "two dogs"]
    with torch.no_grad():
        raw = model.encode_text(open_clip.get_tokenizer("cyclip-vit-tiny")(texts)).double()
    expected = raw / raw.norm(dim=1, keepdim=True)
    torch.testing.assert_close(cyclip.embed_texts(model, tokenizer, texts, batch_size=2).double(), expected)
    torch.testing.assert_close(cyclip.embed_texts(model, tokenizer, "a cat").double(), expected[1:2])


def test_image_files_skip_and_list_unreadable_ones(tiny, tmp_path):
    model, preprocess, _, _ = tiny
    good = []
    for index in range(5):
        _image(index).save(tmp_path / f"{index}.png")
        good.append(tmp_path / f"{index}.png")
    (tmp_path / "broken.jpg").write_bytes(b"not an image")
    (tmp_path / "empty.png").write_bytes(b"")
    paths = [good[0], tmp_path / "broken.jpg", *good[1:3], tmp_path / "empty.png", *good[3:]]
    embedded = embed_image_files(model, preprocess, paths, batch_size=2, workers=0)
    assert embedded.paths == good
    assert [path for path, _ in embedded.skipped] == [tmp_path / "broken.jpg", tmp_path / "empty.png"]
    assert "not an image file" in embedded.skipped[0][1] and "empty file" in embedded.skipped[1][1]
    torch.testing.assert_close(embedded.embeddings, cyclip.embed_images(model, good), rtol=0, atol=1e-6)


def test_find_images_takes_files_folders_and_globs(tmp_path, monkeypatch):
    (tmp_path / "a" / "deep").mkdir(parents=True)
    for name in ["a/2.png", "a/1.JPG", "a/deep/3.webp", "a/notes.txt", "b.png"]:
        (tmp_path / name).write_bytes(b"x")
    monkeypatch.chdir(tmp_path)
    found = find_images(["b.png", "a", "*.png"])
    assert found == [Path("b.png"), Path("a/1.JPG"), Path("a/2.png"), Path("a/deep/3.webp")]
    assert find_images(["a/**/*.webp"]) == [Path("a/deep/3.webp")]
    (tmp_path / "none").mkdir()
    with pytest.raises(DataError, match="none: no image files in this folder or below"):
        find_images(["none"])
    with pytest.raises(DataError, match=r"\*.gif: no file matches"):
        find_images(["*.gif"])
    with pytest.raises(DataError, match="missing.jpg: no such image file or folder"):
        find_images(["missing.jpg"])


@pytest.mark.parametrize(
    ("template", "expected"),
    [
        ("a photo of a {}.", "a photo of a {}."),
        ("a photo of a {c}.", "a photo of a {}."),
        ("{c}, a {c}", "{0}, a {0}"),
        ("a {{braced}} {}", "a {{braced}} {}"),
    ],
)
def test_templates_are_written_with_one_placeholder_style(template, expected):
    assert normalise_template(template, "--templates") == expected
    assert normalise_template(template, "x").format("cat") == template.format("cat", c="cat")


@pytest.mark.parametrize("template", ["no placeholder", "a {name}", "a {0:>5}", "a {", "a {!r}"])
def test_bad_templates_are_refused(template):
    with pytest.raises(DataError, match=r"--templates: template"):
        normalise_template(template, "--templates")


def test_templates_and_classes_from_files(tmp_path):
    (tmp_path / "t.txt").write_text("a photo of a {c}.\n\na sketch of a {}.\n")
    (tmp_path / "t.json").write_text('{"templates": ["art of a {c}"]}')
    assert read_templates([str(tmp_path / "t.txt"), str(tmp_path / "t.json"), "inline {}"]) == [
        "a photo of a {}.",
        "a sketch of a {}.",
        "art of a {}",
        "inline {}",
    ]
    (tmp_path / "classes.json").write_text('{"classes": ["cat", "dog"], "templates": ["a {c}"]}')
    assert read_classes(tmp_path / "classes.json") == (["cat", "dog"], ["a {}"])
    (tmp_path / "list.json").write_text('["cat", "dog"]')
    assert read_classes(tmp_path / "list.json") == (["cat", "dog"], None)
    (tmp_path / "dup.json").write_text('{"classes": ["cat", "cat"]}')
    with pytest.raises(DataError, match="dup.json: duplicate labels 'cat'"):
        read_classes(tmp_path / "dup.json")


def test_labels_are_parsed_and_checked():
    assert parse_labels(" cat, dog ,red car") == ["cat", "dog", "red car"]
    for text, message in [("", "no labels given"), ("cat,,dog", "empty label"), ("a,b,a", "duplicate labels 'a'")]:
        with pytest.raises(DataError, match=f"--labels: {message}"):
            parse_labels(text)


def test_import_cyclip_does_not_import_open_clip():
    code = "import sys, cyclip; print('open_clip' in sys.modules, 'torchvision' in sys.modules)"
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, env=os.environ)
    assert result.stdout.split() == ["False", "False"]
    assert {"ZeroShotClassifier", "embed_images", "embed_texts", "load_checkpoint", "load_model"} <= set(dir(cyclip))


def _readme_python_example() -> str:
    section = README.read_text().split("### From Python\n", 1)[1]
    return re.search(r"```python\n(.*?)```", section, re.DOTALL).group(1)


def test_readme_example_runs_as_written(tiny, tmp_path, monkeypatch):
    model, _, tokenizer, reference_preprocess = tiny
    save_checkpoint({"model": model.state_dict(), "model_name": "cyclip-vit-tiny"}, tmp_path / "runs/cyclip/latest.pt")
    _image(1).save(tmp_path / "cat.jpg", quality=95)
    _image(2, (80, 60)).save(tmp_path / "car.jpg", quality=95)
    monkeypatch.chdir(tmp_path)
    namespace: dict = {}
    exec(compile(_readme_python_example(), "README.md", "exec"), namespace)

    images = [Image.open("cat.jpg"), Image.open("car.jpg")]
    expected, image_features = _reference_probabilities(
        model, tokenizer, reference_preprocess, images, ["cat", "dog", "red car"], ["a photo of a {}."]
    )
    torch.testing.assert_close(namespace["probabilities"].double(), expected, rtol=0, atol=1e-6)
    assert [[label for label, _ in row] for row in namespace["predictions"]] == [
        [["cat", "dog", "red car"][i] for i in row.argsort(descending=True)[:2].tolist()] for row in expected
    ]
    torch.testing.assert_close(namespace["image_features"].double(), image_features, rtol=0, atol=1e-6)
    with torch.no_grad():
        texts = model.encode_text(tokenizer(["a red car", "a cat"])).double()
    texts = texts / texts.norm(dim=1, keepdim=True)
    torch.testing.assert_close(namespace["similarity"].double(), image_features @ texts.T, rtol=0, atol=1e-6)
