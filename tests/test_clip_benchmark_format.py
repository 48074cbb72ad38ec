"""`--format clip_benchmark`: clip_benchmark's result layout, its metric definitions recomputed here in float64
(top-k, scikit-learn's balanced accuracy, its retrieval recall) from the model's own embeddings."""

import json
import math

import numpy as np
import pytest
import torch
from PIL import Image
from sklearn.metrics import balanced_accuracy_score

from cyclip.checkpoints import save_checkpoint
from cyclip.cli import main
from cyclip.evaluation.clip_benchmark_format import clip_benchmark_record
from cyclip.evaluation.linear_probe import LogisticModel, _top5_accuracy
from cyclip.models import create_model, load_model

CLASSES = ["cat", "dog", "red car", "tree", "boat", "bird"]
TEMPLATES = ["a photo of a {}.", "a drawing of a {}."]
LAYOUT_KEYS = {"dataset", "model", "pretrained", "task", "metrics", "language"}


def _image(seed: int) -> Image.Image:
    colour = np.random.default_rng(seed).integers(0, 256, 3).astype(np.uint8)
    pixels = np.zeros((30, 40, 3), dtype=np.uint8) + colour
    pixels[:, : (seed * 3) % 40] = 255 - colour
    return Image.fromarray(pixels)


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    root = tmp_path_factory.mktemp("clip_benchmark")
    torch.manual_seed(0)
    model, *_ = create_model("cyclip-vit-tiny")
    checkpoint = root / "model.pt"
    save_checkpoint({"model": model.state_dict(), "model_name": "cyclip-vit-tiny"}, checkpoint)
    data = root / "data"
    data.mkdir()
    rows = ["image,label,caption"]
    for index in range(30):
        _image(index).save(data / f"{index}.png")
        rows.append(f"{index}.png,{index % len(CLASSES)},a picture number {index} of a {CLASSES[index % 6]}")
    (data / "labels.csv").write_text("\n".join(rows) + "\n")
    (data / "classes.json").write_text(json.dumps({"classes": CLASSES, "templates": TEMPLATES}))
    pairs = root / "pairs.csv"
    captions = [f"data/{index}.png,caption {index} of a {CLASSES[index % 6]}" for index in range(30)]
    captions += [f"data/{index}.png,another view of thing {index}" for index in range(0, 30, 2)]
    pairs.write_text("filepath,title\n" + "\n".join(captions) + "\n")
    return root, checkpoint, data, pairs, load_model(checkpoint)


@torch.no_grad()
def _unit(x: torch.Tensor) -> torch.Tensor:
    x = x.double()
    return x / x.norm(dim=1, keepdim=True)


def _run(args, output):
    assert main([*args, "--format", "clip_benchmark", "--output", str(output), "--workers", "0"]) == 0
    record = json.loads(output.read_text())
    assert set(record) == LAYOUT_KEYS and record["language"] == "en"
    return record


def test_zeroshot_layout_and_numbers(setup, tmp_path, capsys):
    root, checkpoint, data, _, loaded = setup
    record = _run(["eval", "zeroshot", "--checkpoint", str(checkpoint), "--data", str(data)], tmp_path / "zs.json")
    assert record["dataset"] == str(data) and record["task"] == "zeroshot_classification"
    assert (record["model"], record["pretrained"]) == ("cyclip-vit-tiny", str(checkpoint))

    model, tokenizer = loaded.model, loaded.tokenizer
    labels = torch.tensor([index % len(CLASSES) for index in range(30)])
    with torch.no_grad():
        images = _unit(model.encode_image(torch.stack([loaded.preprocess(_image(i)) for i in range(30)])))
        classes = []
        for name in CLASSES:
            prompts = _unit(model.encode_text(tokenizer([t.format(name) for t in TEMPLATES]))).mean(dim=0)
            classes.append(prompts / prompts.norm())
    logits = images @ torch.stack(classes).T
    top5 = logits.topk(5, dim=1).indices
    expected = {
        "acc1": (logits.argmax(dim=1) == labels).double().mean().item(),
        "acc5": (top5 == labels[:, None]).any(dim=1).double().mean().item(),
        "mean_per_class_recall": balanced_accuracy_score(labels.numpy(), logits.argmax(dim=1).numpy()),
    }
    assert record["metrics"] == pytest.approx(expected, abs=1e-12)
    assert len(set(logits.argmax(dim=1).tolist())) > 1  # not a degenerate single-class prediction


def test_retrieval_layout_and_numbers(setup, tmp_path):
    root, checkpoint, _, pairs, loaded = setup
    args = ["eval", "retrieval", "--checkpoint", str(checkpoint), "--data", str(pairs)]
    record = _run(args, tmp_path / "ret.json")
    assert record["task"] == "zeroshot_retrieval"

    # clip_benchmark's definition: scores = texts @ images.T; a query scores 1 when a positive is in its top k.
    lines = pairs.read_text().splitlines()[1:]
    image_of_text = torch.tensor([int(line.split(".png")[0].removeprefix("data/")) for line in lines])
    with torch.no_grad():
        images = _unit(loaded.model.encode_image(torch.stack([loaded.preprocess(_image(i)) for i in range(30)])))
        texts = _unit(loaded.model.encode_text(loaded.tokenizer([line.split(",", 1)[1] for line in lines])))
    scores = texts @ images.T
    positive = torch.zeros_like(scores, dtype=torch.bool)
    positive[torch.arange(len(lines)), image_of_text] = True
    expected = {}
    for k in (1, 5, 10):
        hits_per_text = positive.gather(1, scores.topk(k, dim=1).indices).any(dim=1)
        hits_per_image = positive.T.gather(1, scores.T.topk(k, dim=1).indices).any(dim=1)
        expected[f"image_retrieval_recall@{k}"] = hits_per_text.double().mean().item()
        expected[f"text_retrieval_recall@{k}"] = hits_per_image.double().mean().item()
    assert record["metrics"] == pytest.approx(expected, abs=1e-12)


def test_linear_probe_layout(setup, tmp_path):
    root, checkpoint, data, _, _ = setup
    args = ["eval", "linear-probe", "--checkpoint", str(checkpoint), "--data", str(data), "--train-data", str(data)]
    assert main([*args, "--output", str(tmp_path / "ours.json"), "--workers", "0"]) == 0
    ours = json.loads((tmp_path / "ours.json").read_text())["metrics"]
    record = _run(args, tmp_path / "lp.json")
    assert record["task"] == "linear_probe"
    assert record["metrics"] == {
        "lp_acc1": ours["accuracy"],
        "lp_acc5": ours["top5_accuracy"],
        "lp_mean_per_class_recall": ours["mean_per_class_accuracy"],
    }


def test_probe_top5_is_the_top5_of_the_probe_logits():
    generator = torch.Generator().manual_seed(0)
    weight, bias = torch.randn(7, 4, generator=generator), torch.randn(7, generator=generator)
    classes = torch.tensor([3, 5, 8, 9, 11, 12, 20])  # original labels, not 0..K-1
    model = LogisticModel(weight=weight, bias=bias, classes=classes, iterations=1)
    x = torch.randn(50, 4, generator=generator)
    y = classes[torch.randint(0, 7, (50,), generator=generator)]
    logits = x.double() @ weight.double().T + bias.double()
    expected = np.mean([y[i].item() in classes[logits[i].argsort(descending=True)[:5]].tolist() for i in range(50)])
    assert _top5_accuracy(model, x, y)["top5_accuracy"] == pytest.approx(expected, abs=1e-12)
    assert _top5_accuracy(LogisticModel(weight[:4], bias[:4], classes[:4], 1), x, y) == {}


def test_fewer_than_five_classes_give_nan_acc5_as_clip_benchmark_does():
    metrics = {"top1": 0.5, "top3": 1.0, "mean_per_class_recall": 0.4, "num_images": 4, "num_classes": 3}
    record = clip_benchmark_record("zeroshot", metrics, "d", "m", "p")
    assert record["metrics"]["acc1"] == 0.5 and math.isnan(record["metrics"]["acc5"])


def test_format_needs_an_output_and_a_clip_benchmark_task(setup, capsys):
    _, checkpoint, data, _, _ = setup
    assert (
        main(["eval", "zeroshot", "--checkpoint", str(checkpoint), "--data", str(data), "--format", "clip_benchmark"])
        == 2
    )
    assert capsys.readouterr().err == (
        "cyclip: error: --format clip_benchmark: give --output FILE, the JSON file to write in that layout\n"
    )
    with pytest.raises(ValueError, match="clip_benchmark has no task 'consistency'"):
        clip_benchmark_record("consistency", {}, "d", "m", "p")
