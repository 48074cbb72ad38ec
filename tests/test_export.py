"""Export to open_clip's `local-dir:` folder, checked through open_clip's own loader, and import back."""

import json
import math
import os
import shutil

import numpy as np
import open_clip
import pytest
import safetensors.torch
import torch
from open_clip.constants import IMAGENET_MEAN, IMAGENET_STD, OPENAI_DATASET_MEAN, OPENAI_DATASET_STD
from PIL import Image

from cyclip.checkpoints import save_checkpoint
from cyclip.cli import main
from cyclip.config import TrainConfig
from cyclip.export import _safetensors_ready, export_open_clip
from cyclip.models import BUNDLED_CONFIG_DIR, create_model
from cyclip.runtime import rng_state
from cyclip.train import build_optimizer, cosine_with_warmup

BUNDLED = ["cyclip-rn-tiny", "cyclip-vit-tiny"]
CAPTIONS = ["a photo of the digit three", "a handwritten seven", "zero"]
LOGIT_SCALE = 2.345  # not open_clip's initial ln(1/0.07) = 2.659...
# For tests of the folder mechanics, which do not depend on the architecture.
ONE_ARCHITECTURE = pytest.mark.parametrize("exported", ["cyclip-vit-tiny"], indirect=True)
EXPORT_FILES = {"README.md", "open_clip_config.json", "open_clip_model.safetensors"}


def _perturb(model: torch.nn.Module, seed: int) -> None:
    """Move the weights off any initialisation a fresh build could reproduce."""
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        model.logit_scale.fill_(LOGIT_SCALE)
        for name in ("ln_final.weight", "text_projection", "token_embedding.weight"):
            parameter = model.get_parameter(name)
            parameter.add_(0.1 * torch.randn(parameter.shape, generator=generator))
        first = next(model.visual.parameters())
        first.add_(0.1 * torch.randn(first.shape, generator=generator))


def _training_checkpoint(model: torch.nn.Module, name: str, path) -> None:
    """The payload `Trainer._save` writes, with a real optimizer and scheduler state after one step."""
    config = TrainConfig(model=name)
    optimizer = build_optimizer(model, config)
    scheduler = cosine_with_warmup(optimizer, warmup=2, total=10)
    model.logit_scale.grad = torch.ones_like(model.logit_scale)
    optimizer.step()
    scheduler.step()
    optimizer.zero_grad(set_to_none=True)
    with torch.no_grad():
        model.logit_scale.fill_(LOGIT_SCALE)  # the step moved it; keep the known value
    payload = {
        "model": model.state_dict(),
        "model_name": name,
        "optimizer": optimizer.state_dict(),
        "scheduler": scheduler.state_dict(),
        "scaler": torch.amp.GradScaler("cpu", enabled=False).state_dict(),
        "step": 1,
        "epoch": 1,
        "skipped_samples": 0,
        "rng": rng_state(),
        "config": config.to_dict(),
    }
    save_checkpoint(payload, path)


def _image(seed: int = 0, size=(50, 37)) -> Image.Image:
    pixels = np.random.default_rng(seed).integers(0, 256, (size[1], size[0], 3), dtype=np.uint8)
    return Image.fromarray(pixels)


@torch.no_grad()
def _embed(model, images, texts):
    model.eval()
    return model.encode_image(images), model.encode_text(texts)


def _max_difference(a, b) -> float:
    return max((x - y).abs().max().item() for x, y in zip(a, b, strict=True))


@pytest.fixture(scope="module", params=BUNDLED)
def exported(request, tmp_path_factory):
    """(name, perturbed model, its preprocess_val and tokenizer, inputs, embeddings, checkpoint, export folder)."""
    name = request.param
    root = tmp_path_factory.mktemp(name)
    torch.manual_seed(0)
    model, _, preprocess_val, tokenizer = create_model(name)
    _perturb(model, seed=1)
    checkpoint = root / "run" / "epoch_1.pt"
    _training_checkpoint(model, name, checkpoint)
    folder = export_open_clip(checkpoint, root / "export")
    images = torch.stack([preprocess_val(_image(seed)) for seed in range(3)])
    texts = tokenizer(CAPTIONS)
    return name, model, preprocess_val, tokenizer, images, texts, _embed(model, images, texts), checkpoint, folder


def test_folder_holds_config_weights_and_readme(exported):
    name, model, *_, checkpoint, folder = exported
    assert {p.name for p in folder.iterdir()} == EXPORT_FILES
    assert {p.name for p in folder.parent.iterdir()} == {"run", "export"}  # no staging folder left behind

    config = json.loads((folder / "open_clip_config.json").read_text())
    assert config["model_cfg"] == json.loads((BUNDLED_CONFIG_DIR / f"{name}.json").read_text())
    size = config["model_cfg"]["vision_cfg"]["image_size"]
    assert config["preprocess_cfg"] == {
        "size": [size, size] if name == "cyclip-vit-tiny" else size,  # open_clip's ViT keeps (h, w), its ResNet an int
        "mode": "RGB",
        "mean": list(OPENAI_DATASET_MEAN),
        "std": list(OPENAI_DATASET_STD),
        "interpolation": "bicubic",
        "resize_mode": "shortest",
        "fill_color": 0,
    }

    weights = safetensors.torch.load_file(folder / "open_clip_model.safetensors")
    expected = model.state_dict()
    assert weights.keys() == expected.keys()
    assert all(torch.equal(weights[k], expected[k]) for k in expected)
    assert weights["logit_scale"].item() == pytest.approx(LOGIT_SCALE, abs=1e-6)
    readme = (folder / "README.md").read_text()
    assert 'create_model_and_transforms("local-dir:path/to/export")' in readme and checkpoint.name in readme


@pytest.fixture(scope="module")
def open_clip_loaded(exported):
    """The exported folder as open_clip's own loader builds it: (model, preprocess_val, tokenizer)."""
    folder = exported[-1]
    model, _, preprocess_val = open_clip.create_model_and_transforms(f"local-dir:{folder}")
    return model, preprocess_val, open_clip.get_tokenizer(f"local-dir:{folder}")


def test_open_clip_loads_the_same_model(exported, open_clip_loaded):
    _, _, _, _, images, texts, features, _, _ = exported
    loaded, _, tokenizer = open_clip_loaded
    assert torch.equal(tokenizer(CAPTIONS), texts)
    assert _max_difference(_embed(loaded, images, texts), features) <= 1e-6
    # The perturbed values (no initialisation produces them) prove the weights came from the folder.
    assert loaded.logit_scale.item() == pytest.approx(LOGIT_SCALE, abs=1e-6)


def test_a_sigmoid_head_is_exported_with_its_bias(tmp_path):
    """A model trained with --loss siglip carries a learned logit_bias: the folder records it, open_clip rebuilds
    the head from the folder, and the weights load into it."""
    model, _, _, _ = create_model("cyclip-vit-tiny", sigmoid_head=True)
    _perturb(model, seed=3)
    with torch.no_grad():
        model.logit_bias.fill_(-7.25)  # not SigLIP's initial -10
    _training_checkpoint(model, "cyclip-vit-tiny", tmp_path / "siglip.pt")
    folder = export_open_clip(tmp_path / "siglip.pt", tmp_path / "export")
    assert json.loads((folder / "open_clip_config.json").read_text())["model_cfg"]["init_logit_bias"] == -7.25
    loaded, _, _ = open_clip.create_model_and_transforms(f"local-dir:{folder}")
    assert loaded.logit_bias.item() == -7.25 and loaded.logit_scale.item() == pytest.approx(LOGIT_SCALE, abs=1e-6)
    assert torch.equal(loaded.state_dict()["text_projection"], model.state_dict()["text_projection"])


def test_open_clip_preprocessing_is_ours(exported, open_clip_loaded):
    _, _, preprocess_val, *_, folder = exported
    _, open_clip_val, _ = open_clip_loaded
    _, _, ours_from_folder, _ = create_model(f"local-dir:{folder}")
    for seed, size in [(3, (50, 37)), (4, (20, 90)), (5, (64, 64))]:
        image = _image(seed, size)
        expected = preprocess_val(image)
        assert torch.equal(open_clip_val(image), expected)
        assert torch.equal(ours_from_folder(image), expected)


@pytest.mark.parametrize("source", ["pretrained folder", "pretrained safetensors", "local-dir name"])
def test_round_trip_into_create_model(exported, source):
    name, _, preprocess_val, _, images, texts, features, _, folder = exported
    torch.manual_seed(5)  # a different initialisation, overwritten by the load
    if source == "pretrained folder":
        loaded, _, loaded_val, tokenizer = create_model(name, pretrained=folder)
    elif source == "pretrained safetensors":
        loaded, _, loaded_val, tokenizer = create_model(name, pretrained=folder / "open_clip_model.safetensors")
    else:
        loaded, _, loaded_val, tokenizer = create_model(f"local-dir:{folder}")
    assert _max_difference(_embed(loaded, images, texts), features) == 0.0
    assert torch.equal(tokenizer(CAPTIONS), texts)
    image = _image(7)
    assert torch.equal(loaded_val(image), preprocess_val(image))


def test_pretrained_folder_brings_its_preprocessing(exported, tmp_path):
    name, *_, folder = exported
    copy = shutil.copytree(folder, tmp_path / "imagenet-normalised")
    config = json.loads((copy / "open_clip_config.json").read_text())
    config["preprocess_cfg"].update(mean=list(IMAGENET_MEAN), std=list(IMAGENET_STD))
    config["preprocess_cfg"].update(interpolation="bilinear", resize_mode="squash")
    (copy / "open_clip_config.json").write_text(json.dumps(config))

    _, _, preprocess_val, _ = create_model(name, pretrained=copy)
    _, _, reference = open_clip.create_model_and_transforms(
        name,
        image_mean=IMAGENET_MEAN,
        image_std=IMAGENET_STD,
        image_interpolation="bilinear",
        image_resize_mode="squash",
    )
    _, _, default = open_clip.create_model_and_transforms(name)
    image = _image(8, (61, 23))
    assert torch.equal(preprocess_val(image), reference(image))
    assert not torch.allclose(preprocess_val(image), default(image))


def test_other_architecture_is_refused_with_keys_and_shapes(exported, tmp_path):
    name, model, *_, folder = exported
    other = next(n for n in BUNDLED if n != name)
    other_state = create_model(other)[0].state_dict()
    ours = model.state_dict()
    conv = "visual.conv1.weight"
    expected_shapes = f"{conv} {list(ours[conv].shape)} vs model {list(other_state[conv].shape)}"

    for pretrained in (folder, folder / "open_clip_model.safetensors"):
        with pytest.raises(ValueError) as error:
            create_model(other, pretrained=pretrained)
        message = str(error.value)
        assert expected_shapes in message and f"trained as {name!r}" in message and "\n" not in message

    # A folder whose config says one architecture and whose weights are another's.
    mixed = shutil.copytree(folder, tmp_path / "mixed")
    config = {"model_cfg": json.loads((BUNDLED_CONFIG_DIR / f"{other}.json").read_text()), "preprocess_cfg": {}}
    (mixed / "open_clip_config.json").write_text(json.dumps(config))
    with pytest.raises(ValueError) as error:
        create_model(f"local-dir:{mixed}")
    assert expected_shapes in str(error.value) and str(mixed / "open_clip_model.safetensors") in str(error.value)


def test_same_shapes_other_activation_is_refused(exported, tmp_path):
    """QuickGELU changes no shape: the folder's config is what tells the two apart."""
    name, _, _, _, images, texts, features, _, folder = exported
    quick = shutil.copytree(folder, tmp_path / "quick")
    config = json.loads((quick / "open_clip_config.json").read_text())
    config["model_cfg"]["quick_gelu"] = True
    (quick / "open_clip_config.json").write_text(json.dumps(config))

    with pytest.raises(ValueError, match=r"quick_gelu: folder True vs model False.*'local-dir:"):
        create_model(name, pretrained=quick)
    # Loaded as its own architecture it is the model open_clip builds from the folder.
    ours, *_ = create_model(f"local-dir:{quick}")
    reference, _, _ = open_clip.create_model_and_transforms(f"local-dir:{quick}")
    quick_features = _embed(ours, images, texts)
    assert _max_difference(quick_features, _embed(reference, images, texts)) == 0.0
    assert _max_difference(quick_features, features) > 1e-4


@ONE_ARCHITECTURE
def test_existing_output_is_refused_unless_overwrite(exported, tmp_path):
    name, model, *_, checkpoint, folder = exported
    target = shutil.copytree(folder, tmp_path / "export")
    (target / "open_clip_model.safetensors").write_bytes(b"stale")

    with pytest.raises(ValueError, match="not empty; pass --overwrite"):
        export_open_clip(checkpoint, target)
    assert (target / "open_clip_model.safetensors").read_bytes() == b"stale"

    assert export_open_clip(checkpoint, target, overwrite=True) == target
    assert {p.name for p in tmp_path.iterdir()} == {"export"}
    assert {p.name for p in target.iterdir()} == EXPORT_FILES
    weights = safetensors.torch.load_file(target / "open_clip_model.safetensors")
    assert torch.equal(weights["text_projection"], model.text_projection.detach())

    empty = tmp_path / "empty"
    empty.mkdir()
    assert {p.name for p in export_open_clip(checkpoint, empty).iterdir()} == EXPORT_FILES


@ONE_ARCHITECTURE
def test_overwrite_never_deletes_other_folders(exported, tmp_path):
    *_, checkpoint, _ = exported
    notes = tmp_path / "notes"
    notes.mkdir()
    (notes / "keep.txt").write_text("mine")
    with pytest.raises(ValueError, match="does not hold a previous export"):
        export_open_clip(checkpoint, notes, overwrite=True)
    assert (notes / "keep.txt").read_text() == "mine"

    run = tmp_path / "run"
    shutil.copytree(checkpoint.parent, run)
    (run / "open_clip_config.json").write_text("{}")
    with pytest.raises(ValueError, match="lies inside it"):
        export_open_clip(run / checkpoint.name, run, overwrite=True)
    assert (run / checkpoint.name).is_file()

    (tmp_path / "file").write_text("x")
    with pytest.raises(ValueError, match="not a folder"):
        export_open_clip(checkpoint, tmp_path / "file")


@ONE_ARCHITECTURE
def test_crash_mid_export_leaves_no_complete_looking_folder(exported, tmp_path, monkeypatch):
    *_, checkpoint, folder = exported

    def disk_full(tensors, filename, metadata=None):
        with open(filename, "wb") as f:
            f.write(b"partial")
        raise OSError("No space left on device")

    monkeypatch.setattr(safetensors.torch, "save_file", disk_full)
    with pytest.raises(OSError, match="No space left"):
        export_open_clip(checkpoint, tmp_path / "new")
    assert os.listdir(tmp_path) == []

    previous = shutil.copytree(folder, tmp_path / "previous")
    with pytest.raises(OSError, match="No space left"):
        export_open_clip(checkpoint, previous, overwrite=True)
    assert os.listdir(tmp_path) == ["previous"]
    for file in EXPORT_FILES:
        assert (previous / file).read_bytes() == (folder / file).read_bytes()


@ONE_ARCHITECTURE
def test_non_training_checkpoint_is_refused(exported, tmp_path):
    _, model, *_ = exported
    path = tmp_path / "plain.pt"
    torch.save(model.state_dict(), path)
    with pytest.raises(ValueError, match="not a cyclip training checkpoint"):
        export_open_clip(path, tmp_path / "out")
    with pytest.raises(FileNotFoundError, match="missing.pt"):
        export_open_clip(tmp_path / "missing.pt", tmp_path / "out")
    assert not (tmp_path / "out").exists()


def test_tied_and_view_tensors_are_saved_separately(tmp_path):
    base = torch.arange(24.0).reshape(4, 6)
    state_dict = {
        "tied_a": base,
        "tied_b": base,  # the same storage under two names, as tied weights give
        "row_view": base[1],  # a view into a larger buffer
        "transposed": base.t(),  # not contiguous
        "scalar": torch.tensor(math.pi),
        "empty": torch.zeros(0),
    }
    path = tmp_path / "w.safetensors"
    safetensors.torch.save_file(_safetensors_ready(state_dict), path)
    loaded = safetensors.torch.load_file(path)
    assert loaded.keys() == state_dict.keys()
    assert all(torch.equal(loaded[k], state_dict[k]) for k in state_dict)
    assert _safetensors_ready(state_dict)["tied_a"].data_ptr() == base.data_ptr()  # the first owner is not copied


@ONE_ARCHITECTURE
def test_cli_export_prints_how_to_load(exported, tmp_path, capsys):
    *_, checkpoint, _ = exported
    target = tmp_path / "cli"
    assert main(["export", "--checkpoint", str(checkpoint), "--output", str(target)]) == 0
    assert f'create_model_and_transforms("local-dir:{target}")' in capsys.readouterr().out
    assert {p.name for p in target.iterdir()} == EXPORT_FILES

    assert main(["export", "--checkpoint", str(checkpoint), "--output", str(target)]) == 2
    error = capsys.readouterr().err
    assert error.startswith(f"cyclip: error: {target}: folder exists and is not empty") and error.count("\n") == 1
    assert main(["export", "--checkpoint", str(checkpoint), "--output", str(target), "--overwrite"]) == 0


def test_exported_files_get_the_mode_of_any_file_the_user_creates(exported, tmp_path):
    """The weights, config and README are as readable as the checkpoint beside them (the umask's mode), not
    the 0600 of a temporary file."""
    *_, checkpoint, folder = exported
    (tmp_path / "plain.txt").write_text("x")
    (tmp_path / "plain").mkdir()
    file_mode, folder_mode = ((tmp_path / name).stat().st_mode & 0o777 for name in ("plain.txt", "plain"))
    assert {path.name: path.stat().st_mode & 0o777 for path in folder.iterdir()} == dict.fromkeys(
        EXPORT_FILES, file_mode
    )
    assert folder.stat().st_mode & 0o777 == folder_mode
    assert checkpoint.stat().st_mode & 0o777 == file_mode
