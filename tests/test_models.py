"""Model construction and weight loading, checked against open_clip's own builders and the original models."""

import copy
import json
import logging
import random
from pathlib import Path

import open_clip
import pytest
import safetensors.torch
import torch
from open_clip.model import build_model_from_openai_state_dict, convert_weights_to_fp16

from cyclip.checkpoints import save_checkpoint
from cyclip.models import BUNDLED_CONFIG_DIR, available_models, create_model, load_checkpoint, model_config

BUNDLED = ["cyclip-vit-tiny", "cyclip-rn-tiny"]
CAPTIONS = ["a photo of the digit three", "a handwritten seven"]


def _inputs(model, tokenizer):
    size = model.visual.image_size
    height, width = (size, size) if isinstance(size, int) else size
    images = torch.randn(2, 3, height, width, generator=torch.Generator().manual_seed(0))
    return images, tokenizer(CAPTIONS)


@torch.no_grad()
def _embed(model, images, texts):
    model.eval()
    return model.encode_image(images), model.encode_text(texts)


def _build(name, seed, **kwargs):
    torch.manual_seed(seed)
    return create_model(name, **kwargs)


@pytest.fixture(scope="module", params=BUNDLED)
def original(request):
    """A freshly built bundled model, its fixed inputs and its embeddings of them."""
    model, _, _, tokenizer = _build(request.param, seed=0)
    images, texts = _inputs(model, tokenizer)
    return request.param, model, images, texts, _embed(model, images, texts)


def test_bundled_models_are_registered_with_open_clip():
    for name in BUNDLED:
        assert name in available_models()
        assert open_clip.get_model_config(name) is not None


def test_seeds_give_different_models(original):
    """The round trips below load into a seed-1 model: make sure that starts out different."""
    name, _, images, texts, (image_features, text_features) = original
    other, *_ = _build(name, seed=1)
    other_image, other_text = _embed(other, images, texts)
    assert not torch.allclose(other_image, image_features) and not torch.allclose(other_text, text_features)


def test_bundled_models_embed(original):
    name, model, images, texts, (image_features, text_features) = original
    embed_dim = open_clip.get_model_config(name)["embed_dim"]
    assert texts.shape == (2, open_clip.get_model_config(name)["text_cfg"]["context_length"])
    assert image_features.shape == (2, embed_dim) and text_features.shape == (2, embed_dim)
    assert torch.isfinite(image_features).all() and torch.isfinite(text_features).all()


def test_transforms_produce_model_sized_images():
    from PIL import Image

    model, preprocess_train, preprocess_val, _ = _build("cyclip-rn-tiny", seed=0)
    image = Image.new("RGB", (100, 80), color=(200, 30, 90))
    size = model.visual.image_size
    assert preprocess_val(image).shape == (3, size, size)
    assert preprocess_train(image).shape == (3, size, size)


def test_unknown_name_suggests_close_matches():
    with pytest.raises(ValueError, match="did you mean 'cyclip-vit-tiny'"):
        create_model("cyclip-vit-tinny")


def test_hub_names_are_refused():
    with pytest.raises(ValueError, match="never downloads"):
        create_model("hf-hub:laion/CLIP-ViT-B-32-laion2B-s34B-b79K")


@pytest.mark.parametrize("pretrained", ["does-not-exist.pt", "openai"])
def test_missing_pretrained_path_says_never_downloads(tmp_path, monkeypatch, pretrained):
    monkeypatch.chdir(tmp_path)  # "openai" is an open_clip download tag: it must be treated as a missing file
    with pytest.raises(FileNotFoundError, match="never downloads weights"):
        create_model("ViT-B-32", pretrained=pretrained)


def _write(state_dict, path, layout, name):
    if layout == "open_clip checkpoint":
        torch.save({"epoch": 3, "name": "run", "state_dict": {"module." + k: v for k, v in state_dict.items()}}, path)
    elif layout == "state dict":
        torch.save(state_dict, path)
    elif layout == "safetensors":
        safetensors.torch.save_file({k: v.contiguous() for k, v in state_dict.items()}, path)
    else:  # cyclip training checkpoint
        save_checkpoint({"model": state_dict, "model_name": name, "step": 1, "epoch": 0, "config": {}}, path)


@pytest.mark.parametrize("layout", ["open_clip checkpoint", "state dict", "safetensors", "cyclip checkpoint"])
def test_pretrained_round_trip(tmp_path, original, layout):
    name, model, images, texts, (image_features, text_features) = original
    path = tmp_path / ("weights.safetensors" if layout == "safetensors" else "weights.pt")
    _write(model.state_dict(), path, layout, name)

    loaded, *_ = _build(name, seed=1, pretrained=path)
    loaded_image, loaded_text = _embed(loaded, images, texts)
    assert torch.equal(loaded_image, image_features)
    assert torch.equal(loaded_text, text_features)


def _openai_state_dict(model):
    """The state dict as OpenAI ships it: fp16 matmul weights plus three int entries (see clip/model.py)."""
    half = copy.deepcopy(model)
    convert_weights_to_fp16(half)
    state_dict = half.state_dict()
    state_dict.update(
        input_resolution=model.visual.image_size, context_length=model.context_length, vocab_size=model.vocab_size
    )
    return state_dict


def test_openai_layout_state_dict_loads(tmp_path, original):
    name, model, images, texts, _ = original
    state_dict = _openai_state_dict(model)
    assert "transformer.resblocks.0.attn.in_proj_weight" in state_dict and "text_projection" in state_dict
    assert state_dict["text_projection"].dtype == torch.float16
    path = tmp_path / "openai.pt"
    torch.save(state_dict, path)

    # Reference: open_clip's builder for OpenAI state dicts (it infers the architecture from the keys).
    reference = build_model_from_openai_state_dict(dict(state_dict), quick_gelu=False, cast_dtype=None).float()
    loaded, *_ = _build(name, seed=1, pretrained=path)
    expected, actual = _embed(reference, images, texts), _embed(loaded, images, texts)
    torch.testing.assert_close(actual[0], expected[0], rtol=0, atol=0)
    torch.testing.assert_close(actual[1], expected[1], rtol=0, atol=0)


@pytest.fixture(scope="module")
def vit_and_rn_state_dicts():
    vit, *_ = _build("cyclip-vit-tiny", seed=0)
    rn, *_ = _build("cyclip-rn-tiny", seed=0)
    return vit, rn.state_dict()


@pytest.mark.parametrize("layout", ["open_clip checkpoint", "state dict", "safetensors", "cyclip checkpoint", "openai"])
def test_wrong_architecture_is_refused_with_keys_and_shapes(tmp_path, vit_and_rn_state_dicts, layout):
    vit, rn = vit_and_rn_state_dicts
    path = tmp_path / ("vit.safetensors" if layout == "safetensors" else "vit.pt")
    if layout == "openai":
        torch.save(_openai_state_dict(vit), path)
    else:
        _write(vit.state_dict(), path, layout, "cyclip-vit-tiny")

    with pytest.raises(ValueError) as error:
        create_model("cyclip-rn-tiny", pretrained=path)
    message = str(error.value)
    vit_state = vit.state_dict()
    conv = "visual.conv1.weight"
    assert f"{conv} {list(vit_state[conv].shape)} vs model {list(rn[conv].shape)}" in message
    unexpected = [k for k in vit_state if k not in rn]
    assert f"{len(unexpected)} unexpected: {unexpected[0]} {list(vit_state[unexpected[0]].shape)}" in message
    # BatchNorm's step counters are not weights (torch fills them in): they are not reported missing.
    missing = [k for k in rn if k not in vit_state and not k.endswith(".num_batches_tracked")]
    assert f"{len(missing)} missing: {missing[0]} {list(rn[missing[0]].shape)}" in message
    assert message.startswith(f"{path}: weights do not fit model 'cyclip-rn-tiny'") and "\n" not in message
    hint = "trained as 'cyclip-vit-tiny'" if layout == "cyclip checkpoint" else "pass the matching model"
    assert message.endswith(hint)


@pytest.mark.parametrize("key", ["text_projection", "positional_embedding"])
def test_shape_mismatch_is_reported(tmp_path, original, key):
    name, model, *_ = original
    state_dict = dict(model.state_dict())
    rows, columns = state_dict[key].shape
    state_dict[key] = torch.zeros(rows, columns // 2)
    path = tmp_path / "bad.pt"
    torch.save(state_dict, path)
    with pytest.raises(ValueError) as error:
        create_model(name, pretrained=path)
    assert f"{key} {[rows, columns // 2]} vs model {[rows, columns]}" in str(error.value)
    assert repr(name) in str(error.value) and str(path) in str(error.value)


def test_load_checkpoint_restores_training_payload(tmp_path, original):
    name, model, images, texts, (image_features, text_features) = original
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3)
    payload = {
        "model": model.state_dict(),
        "model_name": name,
        "optimizer": optimizer.state_dict(),
        "scaler": {},
        "step": 10,
        "epoch": 2,
        "rng": {"torch": torch.get_rng_state(), "python": random.getstate()},
        "config": {"model": name, "lr": 1e-3, "batch_size": 64},
    }
    path = tmp_path / "run" / "epoch_2.pt"
    save_checkpoint(payload, path)

    loaded, preprocess, tokenizer = load_checkpoint(path)
    assert not loaded.training
    assert torch.equal(tokenizer(CAPTIONS), texts)
    assert callable(preprocess)
    with torch.no_grad():
        assert torch.equal(loaded.encode_image(images), image_features)
        assert torch.equal(loaded.encode_text(texts), text_features)


def test_load_checkpoint_asks_for_the_architecture_of_plain_state_dicts(tmp_path, original):
    _, model, *_ = original
    path = tmp_path / "plain.pt"
    torch.save(model.state_dict(), path)
    with pytest.raises(ValueError, match="does not record its architecture; pass it with --model NAME"):
        load_checkpoint(path)


def test_model_config_is_the_full_architecture(tmp_path):
    bundled = json.loads((BUNDLED_CONFIG_DIR / "cyclip-rn-tiny.json").read_text())
    assert model_config("cyclip-rn-tiny") == bundled
    reference = json.loads((Path(open_clip.__file__).parent / "model_configs" / "ViT-B-32.json").read_text())
    assert model_config("ViT-B/32") == reference
    (tmp_path / "open_clip_config.json").write_text(json.dumps({"model_cfg": bundled, "preprocess_cfg": {}}))
    assert model_config(f"local-dir:{tmp_path}") == bundled


def test_model_folder_problems_are_one_line_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="model folder not found"):
        create_model(f"local-dir:{tmp_path / 'nope'}")
    folder = tmp_path / "folder"
    folder.mkdir()
    with pytest.raises(FileNotFoundError, match="open_clip_config.json: not found"):
        create_model(f"local-dir:{folder}")
    with pytest.raises(FileNotFoundError, match="no weights file in the folder"):
        create_model("cyclip-vit-tiny", pretrained=folder)
    (folder / "open_clip_config.json").write_text("{not json")
    with pytest.raises(ValueError, match="open_clip_config.json: not valid JSON"):
        create_model(f"local-dir:{folder}")
    (folder / "open_clip_config.json").write_text('{"preprocess_cfg": {}}')
    with pytest.raises(ValueError, match="has no 'model_cfg' object"):
        create_model(f"local-dir:{folder}")


def test_config_only_folder_is_an_architecture(tmp_path, caplog):
    """A folder with a config and no weights defines a new architecture to train from scratch."""
    config = json.loads((BUNDLED_CONFIG_DIR / "cyclip-vit-tiny.json").read_text())
    (tmp_path / "open_clip_config.json").write_text(json.dumps({"model_cfg": config}))
    with caplog.at_level(logging.WARNING, logger="cyclip.models"):
        model, *_ = create_model(f"local-dir:{tmp_path}")
    assert "no weights file in the folder" in caplog.text
    reference, _, _ = open_clip.create_model_and_transforms("cyclip-vit-tiny")
    assert {k: v.shape for k, v in model.state_dict().items()} == {
        k: v.shape for k, v in reference.state_dict().items()
    }


@pytest.mark.parametrize("content", [b"", b"not a safetensors file at all", b'\x10\x00\x00\x00\x00\x00\x00\x00{"a": 1'])
def test_damaged_safetensors_is_a_clear_error(tmp_path, content):
    path = tmp_path / "damaged.safetensors"
    path.write_bytes(content)
    with pytest.raises(ValueError, match="not a readable .safetensors file") as error:
        create_model("cyclip-vit-tiny", pretrained=path)
    assert str(error.value).startswith(str(path)) and "\n" not in str(error.value)
