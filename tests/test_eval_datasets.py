"""Evaluation dataset readers, on tiny copies written here in each dataset's exact on-disk layout.

Every image carries its identity in its pixels (a colour chosen by the test), so each check pairs the
pixels that come out with the label and class name the test wrote for them: labels, names and the
image-to-label pairing are all compared with values fixed here, never with the readers' own output.
"""

from __future__ import annotations

import io
import json
import os
import pickle
import struct
from pathlib import Path

import numpy as np
import pytest
import scipy.io
import torch
from open_clip.zero_shot_metadata import IMAGENET_CLASSNAMES, OPENAI_IMAGENET_TEMPLATES
from PIL import Image
from torch.utils.data import DataLoader

from cyclip.errors import BadSampleError, DataError
from cyclip.evaluation.datasets import (
    CLASSIFICATION_DATASETS,
    ClassificationSet,
    open_classification,
    open_retrieval,
)
from cyclip.evaluation.datasets.names import imagenet_wnids

SIDE = 8

# ---------------------------------------------------------------- helpers (module level: picklable)


def to_tensor(image: Image.Image) -> torch.Tensor:
    """[3, H, W] uint8, no resizing: tests compare exact pixel values."""
    return torch.from_numpy(np.array(image, dtype=np.uint8)).permute(2, 0, 1)


def write_image(path: Path, colour: tuple[int, int, int], image_format: str = "PNG") -> None:
    """A solid 8x8 image; PNG content whatever the name says (PIL reads by content), so pixels are exact."""
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", (SIDE, SIDE), colour).save(path, format=image_format)


def colour_of(tensor: torch.Tensor) -> tuple[int, ...]:
    assert tensor.shape == (3, SIDE, SIDE) and bool((tensor == tensor[:, :1, :1]).all()), "not a solid image"
    return tuple(tensor[:, 0, 0].tolist())


def pairs(data: ClassificationSet) -> list[tuple[tuple[int, ...], int]]:
    """Sorted (colour, label) of every sample."""
    return sorted((colour_of(image), label) for image, label in (data.dataset[i] for i in range(len(data.dataset))))


def error_line(call) -> str:
    with pytest.raises(DataError) as caught:
        call()
    message = str(caught.value)
    assert "\n" not in message and "download" not in message.lower()
    return message


# ---------------------------------------------------------------- CIFAR (pickled batches)

CIFAR10_NAMES = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]


def cifar_rows(images: np.ndarray) -> np.ndarray:
    """CIFAR's row format, written plane by plane: 1024 red values row-major, then green, then blue."""
    rows = np.zeros((len(images), 3072), dtype=np.uint8)
    for n, image in enumerate(images):
        for channel in range(3):
            for y in range(32):
                for x in range(32):
                    rows[n, channel * 1024 + y * 32 + x] = image[y, x, channel]
    return rows


class Python2Pickler(pickle._Pickler):
    """Writes bytes as Python 2 `str` (BINSTRING) and names numpy.core, as the original CIFAR files do: read back
    with encoding='latin1' their keys are str ('data'), with encoding='bytes' they are bytes (b'data')."""

    dispatch = pickle._Pickler.dispatch.copy()

    def save_python2_str(self, value: bytes) -> None:
        size = len(value)
        short = size < 256
        self.write(
            (pickle.SHORT_BINSTRING + bytes([size]) if short else pickle.BINSTRING + struct.pack("<i", size)) + value
        )
        self.memoize(value)

    dispatch[bytes] = save_python2_str


def python2_pickle(content: dict) -> bytes:
    buffer = io.BytesIO()
    Python2Pickler(buffer, protocol=2).dump(content)
    return buffer.getvalue().replace(b"cnumpy._core.multiarray\n", b"cnumpy.core.multiarray\n")


def write_cifar10(root: Path, rng: np.random.Generator, test_labels: list[int]) -> dict[str, tuple]:
    """The real layout and key names, pickled the way the original Python 2 files are."""
    folder = root / "cifar-10-batches-py"
    folder.mkdir(parents=True)
    written = {"train": ([], []), "test": ([], [])}
    batches = [(f"data_batch_{n}", "train", [n % 10, (n + 3) % 10]) for n in range(1, 6)]
    for file, split, labels in batches + [("test_batch", "test", test_labels)]:
        images = rng.integers(0, 256, (len(labels), 32, 32, 3), dtype=np.uint8)
        entry = {b"batch_label": file.encode(), b"labels": labels, b"data": cifar_rows(images), b"filenames": []}
        (folder / file).write_bytes(python2_pickle(entry))
        written[split][0].extend(images)
        written[split][1].extend(labels)
    meta = {b"num_cases_per_batch": 10000, b"label_names": [name.encode() for name in CIFAR10_NAMES], b"num_vis": 3072}
    (folder / "batches.meta").write_bytes(python2_pickle(meta))
    return written


def test_cifar10_reads_pixels_labels_and_names(tmp_path):
    written = write_cifar10(tmp_path, np.random.default_rng(0), [9, 0, 4])
    for split in ("train", "test"):
        data = open_classification("cifar10", tmp_path, split, to_tensor)
        images, labels = written[split]
        assert len(data.dataset) == len(labels) == (10 if split == "train" else 3)
        for index in range(len(labels)):
            image, label = data.dataset[index]
            assert label == labels[index]
            assert np.array_equal(image.permute(1, 2, 0).numpy(), images[index])
        assert data.classes == CIFAR10_NAMES
        assert data.mean_per_class is False
    assert len(data.templates) == 18 and data.templates[0] == "a photo of a {}."
    assert data.templates[-1] == "a photo of the big {}." and all(t.count("{}") == 1 for t in data.templates)


def test_cifar10_agrees_with_torchvision(tmp_path, monkeypatch):
    import torchvision.datasets.cifar as cifar_module

    write_cifar10(tmp_path, np.random.default_rng(5), [1, 2, 3, 4])
    _skip_md5(monkeypatch, cifar_module)
    for train in (True, False):
        reference = cifar_module.CIFAR10(str(tmp_path), train=train, download=False)
        data = open_classification("cifar10", tmp_path, "train" if train else "test", to_tensor)
        assert len(data.dataset) == len(reference) and data.classes == reference.classes
        for index in range(len(reference)):
            image, label = data.dataset[index]
            assert label == reference[index][1]
            assert torch.equal(image, to_tensor(reference[index][0]))


def test_cifar100_str_keys_protocol5_and_underscored_names(tmp_path):
    folder = tmp_path / "cifar-100-python"
    folder.mkdir()
    names = ["apple", "aquarium_fish", "baby"] + [f"class{k}" for k in range(3, 100)]
    rng = np.random.default_rng(1)
    images = {split: rng.integers(0, 256, (3, 32, 32, 3), dtype=np.uint8) for split in ("train", "test")}
    labels = {"train": [1, 99, 0], "test": [2, 1, 50]}
    for split in ("train", "test"):
        entry = {"data": cifar_rows(images[split]), "fine_labels": labels[split], "coarse_labels": [0, 0, 0]}
        (folder / split).write_bytes(pickle.dumps(entry, protocol=5))
    (folder / "meta").write_bytes(pickle.dumps({"fine_label_names": names, "coarse_label_names": ["x"]}))
    data = open_classification("cifar100", tmp_path, "test", to_tensor)
    assert [data.dataset[i][1] for i in range(3)] == [2, 1, 50]
    assert np.array_equal(data.dataset[1][0].permute(1, 2, 0).numpy(), images["test"][1])
    assert data.classes[:3] == ["apple", "aquarium fish", "baby"] and len(data.classes) == 100
    batch_images, batch_labels = next(iter(DataLoader(data.dataset, batch_size=3, num_workers=1)))
    assert batch_labels.tolist() == [2, 1, 50] and batch_images.shape == (3, 3, 32, 32)


def test_cifar_label_out_of_range_and_missing_layout(tmp_path):
    write_cifar10(tmp_path, np.random.default_rng(2), [3, 10])
    message = error_line(lambda: open_classification("cifar10", tmp_path, "test", to_tensor))
    assert "test_batch: row 1 has label 10, out of range for the 10 classes in batches.meta" in message
    empty = tmp_path / "empty"
    empty.mkdir()
    message = error_line(lambda: open_classification("cifar10", empty, "test", to_tensor))
    assert message.startswith(f"cifar10: {empty} has no cifar-10-batches-py/batches.meta (looked for ")
    assert "point --root at the folder that holds cifar-10-batches-py" in message
    inner = tmp_path / "cifar-10-batches-py"
    message = error_line(lambda: open_classification("cifar10", inner, "train", to_tensor))
    assert f"point --root at {tmp_path} (the folder that holds cifar-10-batches-py)" in message


class _RunsCode:
    def __reduce__(self):
        return (eval, ("__import__('os').getpid()",))


def test_cifar_pickle_cannot_run_code(tmp_path):
    folder = tmp_path / "cifar-10-batches-py"
    folder.mkdir()
    (folder / "batches.meta").write_bytes(pickle.dumps({"label_names": _RunsCode()}))
    message = error_line(lambda: open_classification("cifar10", tmp_path, "test", to_tensor))
    assert "refusing to load builtins.eval" in message and "batches.meta" in message


# ---------------------------------------------------------------- ImageNet family


def test_imagenet_wnid_list_is_the_ilsvrc2012_list():
    wnids = imagenet_wnids()
    assert len(wnids) == 1000 == len(set(wnids)) and list(wnids) == sorted(wnids)
    assert (wnids[0], IMAGENET_CLASSNAMES[0]) == ("n01440764", "tench")
    assert (wnids[999], IMAGENET_CLASSNAMES[999]) == ("n15075141", "toilet paper")
    # Known ILSVRC2012 indices: 65 sea snake, 398 abacus, 906 Windsor tie.
    assert wnids[65] == "n01751748" and wnids[398] == "n02666196" and wnids[906] == "n04591157"


def test_imagenet_val_class_folders_and_train(tmp_path):
    expected = {"n01440764": 0, "n01443537": 1, "n15075141": 999}
    for split_folder, shade in (("val", 10), ("train", 20)):
        for wnid, index in expected.items():
            for copy in range(2):
                write_image(tmp_path / split_folder / wnid / f"{wnid}_{copy}.JPEG", (index % 256, copy, shade))
    (tmp_path / "val" / ".cache").mkdir()  # hidden folders are not classes
    data = open_classification("imagenet", tmp_path, "test", to_tensor)
    assert pairs(data) == sorted(((i % 256, c, 10), i) for i in expected.values() for c in range(2))
    assert data.classes == list(IMAGENET_CLASSNAMES) and data.classes[999] == "toilet paper"
    assert len(data.templates) == 80
    assert [t.format("dog") for t in data.templates] == [f("dog") for f in OPENAI_IMAGENET_TEMPLATES]
    train = open_classification("imagenet", tmp_path, "train", to_tensor)
    assert pairs(train) == sorted(((i % 256, c, 20), i) for i in expected.values() for c in range(2))


def test_imagenet_flat_val_with_kaggle_solution_file(tmp_path):
    val = tmp_path / "ILSVRC" / "Data" / "CLS-LOC" / "val"
    write_image(val / "ILSVRC2012_val_00000001.JPEG", (1, 0, 0))
    write_image(val / "ILSVRC2012_val_00000002.JPEG", (2, 0, 0))
    (tmp_path / "LOC_val_solution.csv").write_text(
        "ImageId,PredictionString\n"
        "ILSVRC2012_val_00000001,n01751748 10 20 30 40 n01751748 1 2 3 4 \n"
        "ILSVRC2012_val_00000002,n15075141 0 0 5 5 \n"
    )
    data = open_classification("imagenet", tmp_path, "test", to_tensor)
    assert pairs(data) == [((1, 0, 0), 65), ((2, 0, 0), 999)]
    assert data.classes[65] == "sea snake"


def test_imagenet_flat_val_with_val_labels_txt_and_labels_csv(tmp_path):
    val = tmp_path / "val"
    for number in range(1, 4):
        write_image(val / f"ILSVRC2012_val_{number:08d}.JPEG", (number, 5, 5))
    labels = tmp_path / "val_labels.txt"
    labels.write_text(
        "ILSVRC2012_val_00000001.JPEG 65\nILSVRC2012_val_00000002.JPEG,0\n\nILSVRC2012_val_00000003.JPEG n04591157\n"
    )
    data = open_classification("imagenet", tmp_path, "test", to_tensor)
    assert pairs(data) == [((1, 5, 5), 65), ((2, 5, 5), 0), ((3, 5, 5), 906)]
    labels.unlink()
    (val / "labels.csv").write_text(
        "image,label\nILSVRC2012_val_00000002.JPEG,n15075141\nILSVRC2012_val_00000003.JPEG,7\n"
    )
    data = open_classification("imagenet", tmp_path, "test", to_tensor)
    assert pairs(data) == [((2, 5, 5), 999), ((3, 5, 5), 7)]


def test_imagenet_flat_val_errors(tmp_path):
    write_image(tmp_path / "val" / "a.JPEG", (0, 0, 0))
    message = error_line(lambda: open_classification("imagenet", tmp_path, "test", to_tensor))
    assert "holds no wnid class folders and no labels file was found" in message and "val_labels.txt" in message
    (tmp_path / "val_labels.txt").write_text("a.JPEG 3\nb.JPEG 1000\n")
    message = error_line(lambda: open_classification("imagenet", tmp_path, "test", to_tensor))
    assert message.endswith(
        "val_labels.txt: line 2: label 1000 is out of range for the 1000 ImageNet classes (valid: 0..999)"
    )
    (tmp_path / "val_labels.txt").write_text("image,label\na.JPEG,3\n")
    message = error_line(lambda: open_classification("imagenet", tmp_path, "test", to_tensor))
    assert "line 1: label 'label' is neither a class index (0..999) nor an ILSVRC2012 wnid" in message
    (tmp_path / "val_labels.txt").write_text("a.JPEG 3\nmissing.JPEG 4\n")
    message = error_line(lambda: open_classification("imagenet", tmp_path, "test", to_tensor))
    assert f"line 2: image not found: {tmp_path / 'val' / 'missing.JPEG'} (1 of 2 images missing" in message
    (tmp_path / "labels.csv").write_text("image,label\na.JPEG,3\n")
    message = error_line(lambda: open_classification("imagenet", tmp_path, "test", to_tensor))
    assert "several labels files" in message
    message = error_line(lambda: open_classification("imagenet", tmp_path / "val", "test", to_tensor))
    assert "has no val/ folder" in message


def test_imagenet_wnid_folder_errors(tmp_path):
    write_image(tmp_path / "val" / "n01440764" / "x.JPEG", (0, 0, 0))
    write_image(tmp_path / "val" / "dogs" / "x.JPEG", (0, 0, 0))
    message = error_line(lambda: open_classification("imagenet", tmp_path, "test", to_tensor))
    assert f"{tmp_path / 'val' / 'dogs'} is not a class folder: its name must be an ILSVRC2012 wnid" in message
    (tmp_path / "val" / "dogs" / "x.JPEG").unlink()
    (tmp_path / "val" / "dogs").rmdir()
    (tmp_path / "val" / "n01443537").mkdir()
    message = error_line(lambda: open_classification("imagenet", tmp_path, "test", to_tensor))
    assert "Found no valid file for the classes n01443537" in message


def test_imagenetv2_numeric_folders_are_imagenet_indices(tmp_path):
    root = tmp_path / "imagenetv2-matched-frequency-format-val"
    for index in (2, 10, 999):  # sorted as text these would be 10 < 2 < 999
        write_image(root / str(index) / "a.jpeg", (index % 256, index // 256, 1))
    data = open_classification("imagenetv2", root, "test", to_tensor)
    assert pairs(data) == sorted([((2, 0, 1), 2), ((10, 0, 1), 10), ((999 % 256, 3, 1), 999)])
    assert data.classes == list(IMAGENET_CLASSNAMES)
    message = error_line(lambda: open_classification("imagenetv2", tmp_path, "test", to_tensor))
    assert f"{root} is not a class folder" in message and f"point --root at {root}?" in message
    (root / "007").mkdir()
    message = error_line(lambda: open_classification("imagenetv2", root, "test", to_tensor))
    assert f"{root / '007'} is not a class folder: its name must be a class index 0..999" in message


@pytest.mark.parametrize(
    ("name", "folders"),
    [
        ("imagenet-a", {"n01534433": "junco", "n01498041": "stingray", "n01531178": "goldfinch"}),
        ("imagenet-r", {"n02007558": "flamingo", "n01443537": "goldfish", "n01833805": "hummingbird"}),
    ],
)
def test_imagenet_a_and_r_use_the_subset_in_imagenet_order(tmp_path, name, folders):
    for shade, wnid in enumerate(folders):
        write_image(tmp_path / wnid / "0.jpg", (shade, 0, 0))
        write_image(tmp_path / wnid / "1.jpg", (shade, 1, 0))
    (tmp_path / "README.txt").write_text("not a class")
    data = open_classification(name, tmp_path, "test", to_tensor)
    in_order = sorted(folders)  # wnid order is ImageNet index order
    assert data.classes == [folders[wnid] for wnid in in_order]
    expected = [((shade, copy, 0), in_order.index(wnid)) for shade, wnid in enumerate(folders) for copy in range(2)]
    assert pairs(data) == sorted(expected)
    assert data.name == name and len(data.templates) == 80


def test_imagenet_a_missing_layout_message(tmp_path):
    (tmp_path / "imagenet-a").mkdir()
    root = tmp_path / "imagenet-a"
    message = error_line(lambda: open_classification("imagenet-a", root, "test", to_tensor))
    assert message == (
        f"imagenet-a: {root} has no wnid class folders (expected e.g. {root}/n01498041/*.jpg); "
        "point --root at the extracted imagenet-a folder"
    )
    with pytest.raises(ValueError, match="imagenet-a has a test split only"):
        open_classification("imagenet-a", root, "train", to_tensor)


def test_imagenet_sketch_nested_folder_hint(tmp_path):
    write_image(tmp_path / "sketch" / "n01440764" / "a.JPEG", (4, 4, 4))
    message = error_line(lambda: open_classification("imagenet-sketch", tmp_path, "test", to_tensor))
    assert f"point --root at {tmp_path / 'sketch'}?" in message
    data = open_classification("imagenet-sketch", tmp_path / "sketch", "test", to_tensor)
    assert pairs(data) == [((4, 4, 4), 0)] and len(data.classes) == 1000


# ---------------------------------------------------------------- torchvision probe datasets


def test_dtd_train_is_train_plus_val(tmp_path):
    base = tmp_path / "dtd" / "dtd"
    files = {
        "train1": ["banded/banded_0001.jpg", "blotchy/blotchy_0001.jpg"],
        "val1": ["blotchy/blotchy_0003.jpg", "banded/banded_0002.jpg"],
        "test1": ["blotchy/blotchy_0002.jpg", "banded/banded_0003.jpg"],
    }
    colours = {}
    for listed in files.values():
        for name in listed:
            colours[name] = (len(colours), 9, 9)
            write_image(base / "images" / name, colours[name])
    (base / "labels").mkdir()
    for split, listed in files.items():
        (base / "labels" / f"{split}.txt").write_text("".join(f"{name}\n" for name in listed))
    label = {"banded": 0, "blotchy": 1}
    train = open_classification("dtd", tmp_path, "train", to_tensor)
    assert pairs(train) == sorted((colours[n], label[n.split("/")[0]]) for n in files["train1"] + files["val1"])
    test = open_classification("dtd", tmp_path, "test", to_tensor)
    assert pairs(test) == sorted((colours[n], label[n.split("/")[0]]) for n in files["test1"])
    assert test.classes == ["banded", "blotchy"] and test.mean_per_class is False
    assert test.templates == ["a photo of a {}."]


def test_dtd_broken_image_error_names_the_file(tmp_path):
    base = tmp_path / "dtd" / "dtd"
    (base / "images" / "banded").mkdir(parents=True)
    (base / "images" / "banded" / "banded_0001.jpg").write_bytes(b"not an image")
    (base / "labels").mkdir()
    (base / "labels" / "test1.txt").write_text("banded/banded_0001.jpg\n")
    data = open_classification("dtd", tmp_path, "test", to_tensor)
    with pytest.raises(BadSampleError, match="banded_0001.jpg"):
        data.dataset[0]


def test_oxford_pets_trainval_and_names(tmp_path):
    base = tmp_path / "oxford-iiit-pet"
    rows = {"trainval": [("Abyssinian_1", 1), ("american_bulldog_10", 2)], "test": [("american_bulldog_11", 2)]}
    rows["test"].append(("Abyssinian_2", 1))
    for split, listed in rows.items():
        (base / "annotations").mkdir(parents=True, exist_ok=True)
        (base / "annotations" / f"{split}.txt").write_text("".join(f"{i} {c} 1 1\n" for i, c in listed))
        for image_id, class_id in listed:
            write_image(base / "images" / f"{image_id}.jpg", (class_id, int(image_id.rsplit("_", 1)[1]), 0))
    data = open_classification("oxford-pets", tmp_path, "test", to_tensor)
    assert pairs(data) == [((1, 2, 0), 0), ((2, 11, 0), 1)]
    assert data.classes == ["Abyssinian", "American Bulldog"] and data.mean_per_class is True
    train = open_classification("oxford-pets", tmp_path, "train", to_tensor)
    assert pairs(train) == [((1, 1, 0), 0), ((2, 10, 0), 1)]


def test_food101_and_fgvc_aircraft(tmp_path):
    food = tmp_path / "food-101"
    meta = {"apple_pie": ["apple_pie/101"], "baby_back_ribs": ["baby_back_ribs/202", "baby_back_ribs/203"]}
    (food / "meta").mkdir(parents=True)
    (food / "meta" / "test.json").write_text(json.dumps(meta))
    for names in meta.values():
        for name in names:
            write_image(food / "images" / f"{name}.jpg", (int(name[-3:]) % 256, 0, 0))
    data = open_classification("food101", tmp_path, "test", to_tensor)
    assert pairs(data) == [((101, 0, 0), 0), ((202, 0, 0), 1), ((203, 0, 0), 1)]
    assert data.classes == ["apple pie", "baby back ribs"] and data.mean_per_class is False

    aircraft = tmp_path / "fgvc-aircraft-2013b" / "data"
    aircraft.mkdir(parents=True)
    (aircraft / "variants.txt").write_text("707-320\nA300B4\nDC-3\n")
    (aircraft / "images_variant_trainval.txt").write_text("1000001 DC-3\n1000002 707-320\n")
    (aircraft / "images_variant_test.txt").write_text("1000003 A300B4\n")
    for number in (1, 2, 3):
        write_image(aircraft / "images" / f"100000{number}.jpg", (number, 0, 0))
    train = open_classification("fgvc-aircraft", tmp_path, "train", to_tensor)
    assert pairs(train) == [((1, 0, 0), 2), ((2, 0, 0), 0)]
    assert train.classes == ["707-320", "A300B4", "DC-3"] and train.mean_per_class is True
    assert pairs(open_classification("fgvc-aircraft", tmp_path, "test", to_tensor)) == [((3, 0, 0), 1)]


def test_gtsrb_train_folders_and_test_csv(tmp_path):
    base = tmp_path / "gtsrb"
    for class_id in range(43):
        write_image(
            base / "GTSRB" / "Training" / f"{class_id:05d}" / f"00000_0000{class_id % 2}.ppm", (class_id, 1, 1), "PPM"
        )
    test_rows = [("00000.ppm", 14), ("00001.ppm", 0)]
    for number, (file, class_id) in enumerate(test_rows):
        write_image(base / "GTSRB" / "Final_Test" / "Images" / file, (class_id, 2, number), "PPM")
    header = "Filename;Width;Height;Roi.X1;Roi.Y1;Roi.X2;Roi.Y2;ClassId\n"
    (base / "GT-final_test.csv").write_text(header + "".join(f"{f};8;8;0;0;7;7;{c}\n" for f, c in test_rows))
    train = open_classification("gtsrb", tmp_path, "train", to_tensor)
    assert pairs(train) == [((k, 1, 1), k) for k in range(43)]
    test = open_classification("gtsrb", tmp_path, "test", to_tensor)
    assert pairs(test) == [((0, 2, 1), 0), ((14, 2, 0), 14)]
    assert test.classes[14] == "stop" and test.classes[0] == "speed limit (20km/h)" and len(test.classes) == 43
    (base / "GTSRB" / "Training" / "00042" / "00000_00000.ppm").unlink()
    (base / "GTSRB" / "Training" / "00042").rmdir()
    message = error_line(lambda: open_classification("gtsrb", tmp_path, "train", to_tensor))
    assert "must hold exactly the class folders 00000..00042 (found 42; missing: 00042)" in message


def test_rendered_sst2_and_caltech101_split(tmp_path):
    sst2 = tmp_path / "rendered-sst2"
    for shade, folder in enumerate(("train", "valid", "test")):
        for label in ("negative", "positive"):
            write_image(sst2 / folder / label / "0.png", (shade, len(label), 0))
    train = open_classification("rendered-sst2", tmp_path, "train", to_tensor)
    assert pairs(train) == [((0, 8, 0), 0), ((0, 8, 0), 1), ((1, 8, 0), 0), ((1, 8, 0), 1)]
    assert train.classes == ["negative", "positive"]
    assert pairs(open_classification("rendered-sst2", tmp_path, "test", to_tensor)) == [((2, 8, 0), 0), ((2, 8, 0), 1)]

    categories = tmp_path / "caltech101" / "101_ObjectCategories"
    for shade, category in enumerate(["BACKGROUND_Google", "Faces_easy", "accordion"]):
        for number in range(1, 33):
            write_image(categories / category / f"image_{number:04d}.jpg", (shade, number, 0))
    train = open_classification("caltech101", tmp_path, "train", to_tensor)
    assert pairs(train) == sorted(((shade, n, 0), shade - 1) for shade in (1, 2) for n in range(1, 31))
    test = open_classification("caltech101", tmp_path, "test", to_tensor)
    assert pairs(test) == sorted(((shade, n, 0), shade - 1) for shade in (1, 2) for n in (31, 32))
    assert test.classes == ["Faces easy", "accordion"] and test.mean_per_class is True


def test_stanford_cars_mat_annotations(tmp_path):
    base = tmp_path / "stanford_cars"
    (base / "devkit").mkdir(parents=True)
    names = np.array(["AM General Hummer SUV 2000", "Acura RL Sedan 2012"], dtype=object)
    scipy.io.savemat(base / "devkit" / "cars_meta.mat", {"class_names": names})
    annotations = np.array([(2, "00001.jpg"), (1, "00002.jpg")], dtype=[("class", "O"), ("fname", "O")])
    scipy.io.savemat(base / "cars_test_annos_withlabels.mat", {"annotations": annotations})
    write_image(base / "cars_test" / "00001.jpg", (1, 0, 0))
    write_image(base / "cars_test" / "00002.jpg", (2, 0, 0))
    data = open_classification("stanford-cars", tmp_path, "test", to_tensor)
    assert pairs(data) == [((1, 0, 0), 1), ((2, 0, 0), 0)]
    assert data.classes == ["AM General Hummer SUV 2000", "Acura RL Sedan 2012"]
    message = error_line(lambda: open_classification("stanford-cars", tmp_path, "train", to_tensor))
    assert "has no stanford_cars/devkit/cars_train_annos.mat" in message


def _skip_md5(monkeypatch, module) -> None:
    """The real files' MD5 sums cannot be matched by test copies; torchvision's existence check stays."""
    monkeypatch.setattr(module, "check_integrity", lambda path, md5=None: os.path.isfile(path))


def test_flowers102_mat_files(tmp_path, monkeypatch):
    import torchvision.datasets.flowers102 as flowers_module

    base = tmp_path / "flowers-102"
    labels = [1, 102, 1, 2, 2, 5]  # 1-based, image_00001 .. image_00006
    for number, label in enumerate(labels, start=1):
        write_image(base / "jpg" / f"image_{number:05d}.jpg", (number, label, 0))
    scipy.io.savemat(base / "imagelabels.mat", {"labels": np.array([labels], dtype=np.uint8)})
    ids = {"trnid": np.array([[1, 4]]), "valid": np.array([[2, 6]]), "tstid": np.array([[3, 5]])}
    scipy.io.savemat(base / "setid.mat", {key: value.astype(np.uint16) for key, value in ids.items()})
    message = error_line(lambda: open_classification("flowers102", tmp_path, "test", to_tensor))
    assert "checksum differs from the published one" in message
    _skip_md5(monkeypatch, flowers_module)
    train = open_classification("flowers102", tmp_path, "train", to_tensor)
    assert pairs(train) == [((1, 1, 0), 0), ((2, 102, 0), 101), ((4, 2, 0), 1), ((6, 5, 0), 4)]
    test = open_classification("flowers102", tmp_path, "test", to_tensor)
    assert pairs(test) == [((3, 1, 0), 0), ((5, 2, 0), 1)]
    assert test.classes[0] == "pink primrose" and len(test.classes) == 102 and test.mean_per_class is True


def test_svhn_digit_ten_is_zero(tmp_path, monkeypatch):
    import torchvision.datasets.svhn as svhn_module

    rng = np.random.default_rng(3)
    images = rng.integers(0, 256, (3, 32, 32, 3), dtype=np.uint8)
    digits = [10, 3, 9]  # SVHN writes the digit 0 as 10
    x = np.zeros((32, 32, 3, 3), dtype=np.uint8)
    for n in range(3):
        x[:, :, :, n] = images[n]
    scipy.io.savemat(tmp_path / "test_32x32.mat", {"X": x, "y": np.array(digits, dtype=np.uint8)[:, None]})
    _skip_md5(monkeypatch, svhn_module)
    data = open_classification("svhn", tmp_path, "test", to_tensor)
    assert [data.dataset[n][1] for n in range(3)] == [0, 3, 9]
    assert all(np.array_equal(data.dataset[n][0].permute(1, 2, 0).numpy(), images[n]) for n in range(3))
    assert data.classes == [str(d) for d in range(10)]
    message = error_line(lambda: open_classification("svhn", tmp_path, "train", to_tensor))
    assert f"svhn: {tmp_path} has no train_32x32.mat" in message


def test_stl10_binary_column_major_planes(tmp_path, monkeypatch):
    import torchvision.datasets.stl10 as stl10_module

    folder = tmp_path / "stl10_binary"
    folder.mkdir()
    rng = np.random.default_rng(4)
    images = rng.integers(0, 256, (2, 96, 96, 3), dtype=np.uint8)
    # The STL-10 binaries store each colour plane column after column (Fortran order).
    raw = b"".join(images[n][:, :, c].flatten(order="F").tobytes() for n in range(2) for c in range(3))
    (folder / "test_X.bin").write_bytes(raw)
    (folder / "test_y.bin").write_bytes(bytes([1, 10]))
    (folder / "class_names.txt").write_text("airplane\nbird\ncar\ncat\ndeer\ndog\nhorse\nmonkey\nship\ntruck\n")
    data = open_classification("stl10", tmp_path, "test", to_tensor)
    assert [data.dataset[n][1] for n in range(2)] == [0, 9]
    assert all(np.array_equal(data.dataset[n][0].permute(1, 2, 0).numpy(), images[n]) for n in range(2))
    assert data.classes[7] == "monkey" and len(data.classes) == 10
    batch = next(iter(DataLoader(data.dataset, batch_size=2, num_workers=1)))
    assert batch[1].tolist() == [0, 9] and np.array_equal(batch[0][1].permute(1, 2, 0).numpy(), images[1])
    for stub in ("train_X.bin", "train_y.bin", "unlabeled_X.bin"):  # torchvision demands them for any split
        (folder / stub).write_bytes(b"")
    _skip_md5(monkeypatch, stl10_module)
    reference = stl10_module.STL10(str(tmp_path), split="test", download=False)
    assert [reference[n][1] for n in range(2)] == [0, 9] and reference.classes == data.classes
    assert all(torch.equal(data.dataset[n][0], to_tensor(reference[n][0])) for n in range(2))
    (folder / "test_y.bin").write_bytes(bytes([1, 11]))
    message = error_line(lambda: open_classification("stl10", tmp_path, "test", to_tensor))
    assert "test_y.bin: byte 1 holds label 11, out of range for 10 classes (valid: 1..10" in message


# ---------------------------------------------------------------- folders of one's own


def test_labelled_folder_and_its_out_of_range_label(tmp_path):
    folder = tmp_path / "my-set"
    write_image(folder / "a.png", (1, 1, 1))
    write_image(folder / "b.png", (2, 2, 2))
    (folder / "classes.json").write_text(json.dumps({"classes": ["cat", "dog"], "templates": ["art of a {}."]}))
    (folder / "labels.csv").write_text("image,label\na.png,1\nb.png,cat\n")
    data = open_classification(str(folder), None, "test", to_tensor)
    assert pairs(data) == [((1, 1, 1), 1), ((2, 2, 2), 0)]
    assert (data.name, data.classes, data.templates, data.mean_per_class) == (
        "my-set",
        ["cat", "dog"],
        ["art of a {}."],
        False,
    )
    (folder / "labels.csv").write_text("image,label\na.png,1\nb.png,2\n")
    message = error_line(lambda: open_classification(str(folder), None, "test", to_tensor))
    assert message == f"{folder / 'labels.csv'}: line 3: label 2 is out of range for 2 classes (valid: 0..1)"


def test_classes_json_templates_take_clip_benchmarks_placeholder(tmp_path):
    folder = tmp_path / "my-set"
    write_image(folder / "a.png", (1, 1, 1))
    templates = ["a photo of a {c}.", "{c}, or a {} with {{braces}}", "art of a {}."]
    (folder / "classes.json").write_text(json.dumps({"classes": ["cat", "dog"], "templates": templates}))
    (folder / "labels.csv").write_text("image,label\na.png,cat\n")
    data = open_classification(str(folder), None, "test", to_tensor)
    assert [t.format("dog") for t in data.templates] == [
        "a photo of a dog.",
        "dog, or a dog with {braces}",
        "art of a dog.",
    ]
    (folder / "classes.json").write_text(json.dumps({"classes": ["cat"], "templates": ["a photo of a {name}."]}))
    message = error_line(lambda: open_classification(str(folder), None, "test", to_tensor))
    assert "classes.json: template 'a photo of a {name}.' needs the class name as '{}'" in message


def test_image_folder_tree(tmp_path):
    write_image(tmp_path / "tabby_cat" / "1.jpg", (1, 0, 0))
    write_image(tmp_path / "golden_retriever" / "1.png", (2, 0, 0))
    write_image(tmp_path / "golden_retriever" / "2.png", (3, 0, 0))
    write_image(tmp_path / ".ipynb_checkpoints" / "x.png", (4, 0, 0))
    data = open_classification(str(tmp_path), None, "train", to_tensor)
    assert data.classes == ["golden retriever", "tabby cat"] and data.templates == ["a photo of a {}."]
    assert pairs(data) == [((1, 0, 0), 1), ((2, 0, 0), 0), ((3, 0, 0), 0)]
    (tmp_path / "golden_retriever" / "2.png").write_bytes(b"\x89PNG broken")
    with pytest.raises(BadSampleError, match="2.png"):
        [data.dataset[i] for i in range(len(data.dataset))]


def test_bad_arguments_and_paths(tmp_path):
    with pytest.raises(ValueError, match="unknown dataset 'mnist'"):
        open_classification("mnist", tmp_path, "test", to_tensor)
    with pytest.raises(ValueError, match="split must be 'train' or 'test'"):
        open_classification("cifar10", tmp_path, "val", to_tensor)
    with pytest.raises(ValueError, match="names a dataset"):
        open_classification("cifar10", None, "test", to_tensor)
    message = error_line(lambda: open_classification(str(tmp_path / "nope"), None, "test", to_tensor))
    assert message.startswith(f"{tmp_path / 'nope'}: not found; pass a labelled folder")
    message = error_line(lambda: open_classification("dtd", tmp_path / "nope", "test", to_tensor))
    assert message.startswith(f"dtd: {tmp_path / 'nope'} not found; point --root at the local copy of dtd")
    assert not (tmp_path / "nope").exists()
    message = error_line(lambda: open_classification("caltech101", tmp_path, "test", to_tensor))
    assert "has no caltech101/101_ObjectCategories" in message
    assert not (tmp_path / "caltech101").exists()  # torchvision's class would have created it
    assert len(CLASSIFICATION_DATASETS) == len(set(CLASSIFICATION_DATASETS)) == 18


# ---------------------------------------------------------------- retrieval


def test_karpathy_json_splits_and_captions(tmp_path):
    entries = [
        {
            "filepath": "val2014",
            "filename": "a.jpg",
            "split": "test",
            "sentences": [{"raw": "a cat."}, {"raw": "cat!"}],
        },
        {"filepath": "train2014", "filename": "b.jpg", "split": "train", "sentences": [{"raw": "a dog."}]},
        {"filepath": "val2014", "filename": "c.jpg", "split": "restval", "sentences": [{"raw": "a cow."}]},
        {"filepath": "val2014", "filename": "d.jpg", "split": "test", "sentences": [{"raw": "a hen."}]},
        {"filepath": "val2014", "filename": "e.jpg", "split": "val", "sentences": [{"raw": "a fox."}]},
    ]
    images = tmp_path / "coco"
    for shade, entry in enumerate(entries):
        write_image(images / entry["filepath"] / entry["filename"], (shade, 0, 0))
    path = tmp_path / "dataset_coco.json"
    path.write_text(json.dumps({"dataset": "coco", "images": entries}))
    test = open_retrieval(path, images, "test", to_tensor)
    assert test.name == "coco" and test.captions == ["a cat.", "cat!", "a hen."]
    assert test.image_of_caption.dtype == torch.long and test.image_of_caption.tolist() == [0, 0, 1]
    assert [(colour_of(image), index) for image, index in (test.images[i] for i in range(2))] == [
        ((0, 0, 0), 0),
        ((3, 0, 0), 1),
    ]
    train = open_retrieval(path, images, "train", to_tensor)
    assert train.captions == ["a dog.", "a cow."] and train.image_of_caption.tolist() == [0, 1]
    assert [colour_of(train.images[i][0]) for i in range(2)] == [(1, 0, 0), (2, 0, 0)]
    message = error_line(lambda: open_retrieval(path, None, "test", to_tensor))
    assert f"image not found: {tmp_path / 'val2014' / 'a.jpg'} (2 of 2 test images unusable)" in message


def test_karpathy_flickr_without_filepath_and_bad_caption(tmp_path):
    entries = [{"filename": "1.jpg", "split": "test", "sentences": [{"raw": "two men"}, {"raw": " "}]}]
    write_image(tmp_path / "flickr30k-images" / "1.jpg", (7, 7, 7))
    path = tmp_path / "dataset_flickr30k.json"
    path.write_text(json.dumps({"images": entries}))
    message = error_line(lambda: open_retrieval(path, tmp_path / "flickr30k-images", "test", to_tensor))
    assert message == f"{path}: images[0] (1.jpg): sentences[1]: empty caption"
    entries[0]["sentences"].pop()
    path.write_text(json.dumps({"images": entries}))
    data = open_retrieval(path, tmp_path / "flickr30k-images", "test", to_tensor)
    assert data.name == "dataset_flickr30k" and data.captions == ["two men"]
    message = error_line(lambda: open_retrieval(path, tmp_path / "flickr30k-images", "val", to_tensor))
    assert message == f"{path}: no images in the val split (val); the file has 1 test"


def test_retrieval_csv_groups_captions_by_image(tmp_path):
    write_image(tmp_path / "images" / "x.png", (1, 0, 0))
    write_image(tmp_path / "images" / "y.png", (2, 0, 0))
    path = tmp_path / "pairs.tsv"
    path.write_text("caption\tpath\nan x\timages/x.png\na y\timages/y.png\nx again\t./images/x.png\n")
    data = open_retrieval(path, None, "test", to_tensor, image_key="path", caption_key="caption", separator="\t")
    assert data.captions == ["an x", "a y", "x again"] and data.image_of_caption.tolist() == [0, 1, 0]
    assert len(data.images) == 2 and [colour_of(data.images[i][0]) for i in range(2)] == [(1, 0, 0), (2, 0, 0)]
    assert data.images[1][1] == 1
    csv_path = tmp_path / "pairs.csv"
    csv_path.write_text("filepath,title\nimages/x.png,fine\nimages/z.png,gone\n")
    message = error_line(lambda: open_retrieval(csv_path, None, "test", to_tensor))
    assert message == f"{csv_path}: line 3: image not found: images/z.png (looked for {tmp_path / 'images' / 'z.png'})"
    other_root = tmp_path / "elsewhere"
    write_image(other_root / "images" / "x.png", (5, 0, 0))
    write_image(other_root / "images" / "z.png", (6, 0, 0))
    data = open_retrieval(csv_path, other_root, "test", to_tensor)
    assert [colour_of(data.images[i][0]) for i in range(2)] == [(5, 0, 0), (6, 0, 0)]
    with pytest.raises(ValueError, match="a CSV/TSV file is one split"):
        open_retrieval(csv_path, None, "train", to_tensor)
