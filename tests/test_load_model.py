"""`load_model` reads every format `--pretrained` takes and gives back exactly the original model."""

import copy
import json

import numpy as np
import pytest
import safetensors.torch
import torch
from open_clip.model import convert_weights_to_fp16
from PIL import Image

import cyclip
from cyclip.checkpoints import save_checkpoint
from cyclip.cli import main
from cyclip.export import export_open_clip
from cyclip.models import create_model, load_model, weights_fingerprint

BUNDLED = ["cyclip-rn-tiny", "cyclip-vit-tiny"]
CAPTIONS = ["a photo of a cat", "a red car", "two dogs"]
FORMATS = [
    "cyclip checkpoint",
    "exported folder",
    "exported folder + --model",
    "exported safetensors",
    "open_clip checkpoint + --model",
    "state dict + --model",
    "safetensors + --model",
    "OpenAI state dict + --model",
]


def _image(seed: int) -> Image.Image:
    return Image.fromarray(np.random.default_rng(seed).integers(0, 256, (41, 53, 3), dtype=np.uint8))


@torch.no_grad()
def _embed(model, images, texts):
    model.eval()
    return model.encode_image(images), model.encode_text(texts)


@pytest.fixture(scope="module", params=BUNDLED)
def original(request, tmp_path_factory):
    """A perturbed model whose floating weights are fp16-exact (so OpenAI's fp16 layout loses nothing), its
    inputs, embeddings, a cyclip checkpoint of it and its export."""
    name = request.param
    root = tmp_path_factory.mktemp(name)
    torch.manual_seed(3)
    model, _, preprocess, tokenizer = create_model(name)
    generator = torch.Generator().manual_seed(4)
    with torch.no_grad():
        for parameter in model.parameters():
            parameter.add_(0.05 * torch.randn(parameter.shape, generator=generator))
            parameter.copy_(parameter.half().float())
    images = torch.stack([preprocess(_image(seed)) for seed in range(3)])
    texts = tokenizer(CAPTIONS)
    checkpoint = root / "run" / "latest.pt"
    save_checkpoint({"model": model.state_dict(), "model_name": name, "step": 1, "epoch": 1}, checkpoint)
    folder = export_open_clip(checkpoint, root / "export")
    return name, model, images, texts, _embed(model, images, texts), checkpoint, folder


def _source(original, layout, tmp_path):
    """(path, --model) of the original model written in `layout`."""
    name, model, *_, checkpoint, folder = original
    state_dict = model.state_dict()
    if layout == "cyclip checkpoint":
        return checkpoint, None
    if layout == "exported folder":
        return folder, None
    if layout == "exported folder + --model":
        return folder, name
    if layout == "exported safetensors":  # records the architecture in its metadata
        return folder / "open_clip_model.safetensors", None
    path = tmp_path / ("weights.safetensors" if layout.startswith("safetensors") else "weights.pt")
    if layout.startswith("open_clip checkpoint"):
        torch.save({"epoch": 5, "name": "run", "state_dict": {f"module.{k}": v for k, v in state_dict.items()}}, path)
    elif layout.startswith("state dict"):
        torch.save(state_dict, path)
    elif layout.startswith("safetensors"):
        safetensors.torch.save_file({k: v.contiguous() for k, v in state_dict.items()}, path)
    else:  # OpenAI's layout: fp16 matmul weights plus three int entries
        half = copy.deepcopy(model)
        convert_weights_to_fp16(half)
        openai = half.state_dict()
        assert openai["text_projection"].dtype == torch.float16
        openai.update(input_resolution=224, context_length=model.context_length, vocab_size=model.vocab_size)
        torch.save(openai, path)
    return path, name


@pytest.mark.parametrize("layout", FORMATS)
def test_every_format_loads_the_original_model_exactly(original, layout, tmp_path):
    name, model, images, texts, expected, *_ = original
    path, model_name = _source(original, layout, tmp_path)
    torch.manual_seed(99)  # a different initialisation, which the load must overwrite
    loaded = load_model(path, model_name)
    assert not loaded.model.training
    actual = _embed(loaded.model, images, texts)
    assert max((a - e).abs().max().item() for a, e in zip(actual, expected, strict=True)) == 0.0
    assert loaded.fingerprint == weights_fingerprint(model)  # one identity whatever the file format
    assert loaded.name == (f"local-dir:{path}" if layout == "exported folder" else name)
    assert loaded.source == str(path)
    assert torch.equal(loaded.tokenizer(CAPTIONS), texts)
    assert torch.equal(loaded.preprocess(_image(7)), create_model(name)[2](_image(7)))


def test_load_checkpoint_takes_exported_folders(original):
    *_, images, texts, expected, _, folder = original
    model, preprocess, tokenizer = cyclip.load_checkpoint(folder)
    assert not model.training
    actual = _embed(model, images, texts)
    assert all(torch.equal(a, e) for a, e in zip(actual, expected, strict=True))


def test_fingerprint_tells_weights_apart(original):
    name, model, *_ = original
    other = copy.deepcopy(model)
    with torch.no_grad():
        other.logit_scale.add_(1e-3)
    assert weights_fingerprint(other) != weights_fingerprint(model)
    assert weights_fingerprint(copy.deepcopy(model)) == weights_fingerprint(model)


def test_files_without_architecture_and_conflicts_are_one_line_errors(original, tmp_path):
    name, model, *_, checkpoint, _ = original
    plain = tmp_path / "plain.pt"
    torch.save(model.state_dict(), plain)
    with pytest.raises(ValueError, match=r"plain.pt: the file does not record its architecture; pass it with --model"):
        load_model(plain)
    other = next(n for n in BUNDLED if n != name)
    with pytest.raises(ValueError, match=rf"latest.pt: holds a '{name}' model, not '{other}'; drop --model"):
        load_model(checkpoint, other)
    with pytest.raises(FileNotFoundError, match=r"missing.pt: model not found; pass a cyclip checkpoint"):
        load_model(tmp_path / "missing.pt")


def _labelled_folder(root, classes):
    root.mkdir()
    (root / "classes.json").write_text(json.dumps({"classes": classes, "templates": ["a photo of a {}."]}))
    rows = ["image,label"]
    for index in range(8):
        _image(20 + index).save(root / f"{index}.png")
        rows.append(f"{index}.png,{index % len(classes)}")
    (root / "labels.csv").write_text("\n".join(rows) + "\n")
    return root


@pytest.mark.parametrize("layout", ["exported folder", "state dict + --model", "OpenAI state dict + --model"])
def test_eval_and_suite_take_any_model(original, layout, tmp_path, capsys):
    name, _, _, _, _, checkpoint, _ = original
    data = _labelled_folder(tmp_path / "data", ["cat", "dog", "red car"])
    path, model_name = _source(original, layout, tmp_path)
    common = ["--data", str(data), "--workers", "0", "--device", "cpu"]

    def metrics(source, model, output):
        args = ["eval", "zeroshot", "--checkpoint", str(source), *common, "--output", str(output)]
        assert main(args + (["--model", model] if model else [])) == 0
        return json.loads(output.read_text())["metrics"]

    assert metrics(path, model_name, tmp_path / "any.json") == metrics(checkpoint, None, tmp_path / "ours.json")

    suite = tmp_path / "suite.yaml"
    suite.write_text(f"checkpoint: {path}\n" + (f"model: {model_name}\n" if model_name else "") + "tasks:\n")
    suite.write_text(suite.read_text() + f"  - {{task: zeroshot, data: {data}}}\n")
    assert (
        main(["eval", "suite", "--config", str(suite), "--output", str(tmp_path / "eval.json"), "--workers", "0"]) == 0
    )
    results = json.loads((tmp_path / "eval.json").read_text())
    assert (
        results["tasks"][f"zeroshot/{data.name}"]["metrics"]
        == json.loads((tmp_path / "ours.json").read_text())["metrics"]
    )
    capsys.readouterr()
