"""Search ranking against a float64 brute force, the index file, and `cyclip index` / `cyclip search` end to end."""

import json

import numpy as np
import pytest
import torch
from PIL import Image

import cyclip.search as search_module
from cyclip.checkpoints import save_checkpoint
from cyclip.cli import main
from cyclip.errors import DataError
from cyclip.evaluation.embeddings_file import save_embeddings
from cyclip.models import create_model, load_model
from cyclip.search import load_index, top_k


def _unit_rows(rows: int, dim: int, seed: int) -> torch.Tensor:
    x = torch.randn(rows, dim, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)
    return (x / x.norm(dim=1, keepdim=True)).float()


@pytest.mark.parametrize("block_scores", [2**24, 1000])  # one block, and many blocks of 2 query rows
def test_top_k_is_the_brute_force_ranking(monkeypatch, block_scores):
    monkeypatch.setattr(search_module, "MAX_BLOCK_SCORES", block_scores)
    gallery, queries = _unit_rows(500, 32, 0), _unit_rows(7, 32, 1)
    scores, indices = top_k(queries, gallery, 10)
    exact = queries.double() @ gallery.double().T
    expected = exact.argsort(dim=1, descending=True)[:, :10]
    assert torch.equal(indices, expected)
    torch.testing.assert_close(scores.double(), exact.gather(1, expected), rtol=0, atol=1e-6)
    assert top_k(queries, gallery[:4], 10)[1].shape == (7, 4)  # k beyond the gallery: all of it, ranked


def _image(seed: int) -> Image.Image:
    """Two-coloured images: far apart for a random-weight model, unlike noise images, so rankings have no ties."""
    colour = np.random.default_rng(seed).integers(0, 256, 3).astype(np.uint8)
    pixels = np.zeros((37, 45, 3), dtype=np.uint8) + colour
    pixels[:, : (seed * 4) % 45] = 255 - colour
    return Image.fromarray(pixels)


@pytest.fixture(scope="module")
def collection(tmp_path_factory):
    """A folder of 12 images (one unreadable), two checkpoints of different weights and an index of the first."""
    root = tmp_path_factory.mktemp("search")
    (root / "photos" / "sub").mkdir(parents=True)
    for index in range(12):
        _image(index).save(root / "photos" / ("sub" if index % 3 == 0 else "") / f"{index:02d}.png")
    (root / "photos" / "broken.jpg").write_bytes(b"\xff\xd8 truncated")
    checkpoints = []
    for seed in (0, 1):
        torch.manual_seed(seed)
        model, *_ = create_model("cyclip-rn-tiny")
        checkpoints.append(root / f"model{seed}.pt")
        save_checkpoint({"model": model.state_dict(), "model_name": "cyclip-rn-tiny"}, checkpoints[-1])
    index = root / "photos.npz"
    command = ["index", str(root / "photos"), "--checkpoint", str(checkpoints[0]), "--output", str(index)]
    assert main([*command, "--workers", "0", "--batch-size", "5", "--device", "cpu"]) == 0
    return root, checkpoints, index


def test_index_holds_paths_embeddings_and_the_model(collection):
    root, checkpoints, index_path = collection
    index = load_index(index_path)
    images = sorted((root / "photos").rglob("*.png"))
    assert index.paths == [str(path.resolve()) for path in images]  # the broken file is skipped
    loaded = load_model(checkpoints[0])
    assert (index.model_name, index.model_source) == ("cyclip-rn-tiny", str(checkpoints[0].resolve()))
    assert index.model_fingerprint == loaded.fingerprint
    with torch.no_grad():
        expected = loaded.model.encode_image(torch.stack([loaded.preprocess(Image.open(p)) for p in images]))
    expected = expected.double() / expected.double().norm(dim=1, keepdim=True)
    torch.testing.assert_close(index.embeddings.double(), expected, rtol=0, atol=1e-6)


def test_text_and_image_search_rank_the_index(collection, capsys):
    root, checkpoints, index_path = collection
    capsys.readouterr()
    query_image = root / "photos" / "05.png"
    assert main(["search", "--index", str(index_path), "a red car", "--image", str(query_image), "--top-k", "3"]) == 0
    out = capsys.readouterr().out.splitlines()
    index = load_index(index_path)
    loaded = load_model(checkpoints[0])
    with torch.no_grad():
        text = loaded.model.encode_text(loaded.tokenizer(["a red car"])).double()
        image = loaded.model.encode_image(loaded.preprocess(Image.open(query_image))[None]).double()
    queries = torch.cat([text / text.norm(), image / image.norm()])
    exact = queries @ index.embeddings.double().T
    assert out[0] == "'a red car':" and out[4] == f"{query_image}:"
    for block, row in ((out[1:4], exact[0]), (out[5:8], exact[1])):
        expected = row.argsort(descending=True)[:3].tolist()
        assert [line.split()[2] for line in block] == [index.paths[i] for i in expected]
        assert [float(line.split()[1]) for line in block] == pytest.approx(row[expected].tolist(), abs=1e-4)
    assert out[5].split()[2] == str(query_image.resolve())  # an indexed image finds itself first


def test_another_model_is_refused(collection, capsys):
    root, checkpoints, index_path = collection
    capsys.readouterr()
    assert main(["search", "--index", str(index_path), "--checkpoint", str(checkpoints[1]), "a cat"]) == 2
    error = capsys.readouterr().err
    assert error.startswith(f"cyclip: error: {index_path}: built by model cyclip-rn-tiny from ")
    assert str(checkpoints[1]) in error and error.count("\n") == 1


def test_the_index_is_not_overwritten_silently(collection, capsys):
    root, checkpoints, index_path = collection
    before = index_path.read_bytes()
    command = ["index", str(root / "photos" / "sub"), "--checkpoint", str(checkpoints[1]), "--output", str(index_path)]
    assert main([*command, "--workers", "0"]) == 2
    assert "exists; pass --overwrite" in capsys.readouterr().err and index_path.read_bytes() == before
    copy = root / "copy.npz"
    copy.write_bytes(before)
    command[-1] = str(copy)
    assert main([*command, "--workers", "0", "--overwrite"]) == 0
    assert len(load_index(copy).paths) == 4


def test_other_embeddings_files_are_not_indexes(tmp_path):
    save_embeddings(tmp_path / "emb.npz", image_embeddings=_unit_rows(3, 8, 0))
    with pytest.raises(DataError, match="emb.npz: not a search index .*build one with `cyclip index"):
        load_index(tmp_path / "emb.npz")
    (tmp_path / "x.json").write_text(json.dumps({}))
    with pytest.raises(DataError, match="not a .npz archive"):
        load_index(tmp_path / "x.json")


def test_a_moved_index_model_is_one_line(collection, tmp_path, capsys):
    root, checkpoints, _ = collection
    moved = tmp_path / "moved.pt"
    moved.write_bytes(checkpoints[0].read_bytes())
    index = tmp_path / "index.npz"
    command = ["index", str(root / "photos" / "sub"), "--checkpoint", str(moved), "--output", str(index)]
    assert main([*command, "--workers", "0"]) == 0
    moved.unlink()
    capsys.readouterr()
    assert main(["search", "--index", str(index), "a cat"]) == 2
    assert capsys.readouterr().err == (
        f"cyclip: error: {index}: its model {moved} is not there any more; pass the same model with --checkpoint\n"
    )
    assert main(["search", "--index", str(index), "--checkpoint", str(checkpoints[0]), "a cat"]) == 0
