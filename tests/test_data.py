"""Data loading: image decoding, the caption CSV/TSV reader, labelled folders and the digits demo data.

Expected pixels, rows and line numbers are computed here from first principles (alpha blending, the
16-bit range, the bytes written by the test), never read back from the code under test.
"""

from __future__ import annotations

import logging
import math
import pickle

import numpy as np
import pytest
import torch
from PIL import Image

from cyclip.data import (
    DIGIT_NAMES,
    HELDOUT_TEMPLATES,
    TRAIN_TEMPLATES,
    ImageCaptionDataset,
    load_rgb_image,
    write_digits_demo,
)
from cyclip.data.batch import PairBatch
from cyclip.data.images import to_rgb
from cyclip.errors import BadSampleError, DataError
from cyclip.evaluation.datasets.labelled import LabelledImageDataset, read_labelled_folder
from tests.helpers.stand_ins import CharTokenizer, to_tensor

# ---------------------------------------------------------------- helpers (module level: picklable)


def colour(index: int) -> tuple[int, int, int]:
    """A distinct solid colour per row, so a loaded image says which row it came from."""
    return (index * 10 % 256, 255 - index * 10 % 256, 7)


def write_image(path, index: int, size: int = 4):
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", (size, size), colour(index)).save(path)
    return path


def write_csv(path, lines: list[str], separator: str = ",") -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("\n".join(separator.join(fields) for fields in (line.split("|") for line in lines)) + "\n")


def expected_image(index: int, size: int = 4) -> torch.Tensor:
    return torch.tensor(colour(index), dtype=torch.uint8)[:, None, None].expand(3, size, size)


CSV_FORMAT = dict(image_key="filepath", caption_key="title", separator=",", on_bad_sample="skip")


def dataset(path, **options) -> ImageCaptionDataset:
    return ImageCaptionDataset(path, transform=to_tensor, tokenizer=CharTokenizer(), **{**CSV_FORMAT, **options})


def caption_rows(tmp_path, count: int, missing=(), captions=None) -> list[str]:
    """CSV lines for `count` rows; images listed in `missing` are not written."""
    lines = ["filepath|title"]
    for index in range(count):
        if index not in missing:
            write_image(tmp_path / "images" / f"{index}.png", index)
        lines.append(f"images/{index}.png|{captions[index] if captions else f'caption {index}'}")
    return lines


def pixel(image: Image.Image) -> tuple[int, int, int]:
    return image.getpixel((0, 0))


def blend(foreground, alpha: int) -> tuple[float, ...]:
    """Porter-Duff 'over' onto white, in floats: the reference for composited pixels."""
    a = alpha / 255
    return tuple(a * f + (1 - a) * 255 for f in foreground)


# ---------------------------------------------------------------- image modes


def save(image: Image.Image, path, **options):
    image.save(path, **options)
    return path


def test_rgb_and_grayscale_modes(tmp_path):
    assert pixel(load_rgb_image(save(Image.new("RGB", (3, 2), (12, 34, 56)), tmp_path / "a.png"))) == (12, 34, 56)
    assert pixel(load_rgb_image(save(Image.new("L", (3, 2), 77), tmp_path / "l.png"))) == (77, 77, 77)
    one = Image.new("1", (2, 1), 0)
    one.putpixel((1, 0), 1)
    loaded = load_rgb_image(save(one, tmp_path / "one.png"))
    assert loaded.mode == "RGB"
    assert [loaded.getpixel((x, 0)) for x in range(2)] == [(0, 0, 0), (255, 255, 255)]


def test_palette_without_and_with_transparency(tmp_path):
    palette = [0, 0, 0, 200, 10, 20, 0, 0, 255, 30, 40, 50]  # index 1 = (200,10,20), 2 = (0,0,255), 3 = (30,40,50)
    image = Image.new("P", (4, 1))
    image.putpalette(palette)
    for x in range(4):
        image.putpixel((x, 0), x)
    plain = load_rgb_image(save(image, tmp_path / "p.png"))
    assert [plain.getpixel((x, 0)) for x in range(4)] == [tuple(palette[3 * i : 3 * i + 3]) for i in range(4)]

    # tRNS: index 0 fully transparent, index 2 half transparent, the others opaque.
    alphas = [0, 255, 128, 255]
    loaded = load_rgb_image(save(image, tmp_path / "pt.png", transparency=bytes(alphas)))
    for x in range(4):
        expected = blend(palette[3 * x : 3 * x + 3], alphas[x])
        assert loaded.getpixel((x, 0)) == pytest.approx(expected, abs=1)
    assert loaded.getpixel((0, 0)) == (255, 255, 255)  # transparent black shows the white background


def test_alpha_is_composited_on_white(tmp_path):
    rgba = load_rgb_image(save(Image.new("RGBA", (2, 2), (255, 0, 0, 128)), tmp_path / "rgba.png"))
    assert pixel(rgba) == pytest.approx((255, 128, 128), abs=1)
    assert pixel(rgba) == pytest.approx(blend((255, 0, 0), 128), abs=1)
    clear = load_rgb_image(save(Image.new("RGBA", (2, 2), (0, 0, 0, 0)), tmp_path / "clear.png"))
    assert pixel(clear) == (255, 255, 255)
    la = load_rgb_image(save(Image.new("LA", (2, 2), (0, 64)), tmp_path / "la.png"))
    assert pixel(la) == pytest.approx(blend((0, 0, 0), 64), abs=1)
    pa = Image.new("PA", (1, 1), (1, 128))
    pa.putpalette([0, 0, 0, 0, 200, 0])
    assert pixel(to_rgb(pa)) == pytest.approx(blend((0, 200, 0), 128), abs=1)


def test_16_bit_grayscale_is_scaled_not_clipped(tmp_path):
    values = np.array([[0, 257, 32768, 65535]], dtype=np.uint16)
    expected = [round(int(v) * 255 / 65535) for v in values[0]]  # 0, 1, 128, 255
    assert expected[2] == 128
    png = save(Image.fromarray(values), tmp_path / "16.png")
    assert Image.open(png).mode == "I;16"
    loaded = load_rgb_image(png)
    assert [loaded.getpixel((x, 0)) for x in range(4)] == [(v, v, v) for v in expected]

    big_endian = Image.new("I;16B", (1, 1), 65535)
    assert pixel(load_rgb_image(save(big_endian, tmp_path / "16b.tif"))) == (255, 255, 255)
    assert pixel(load_rgb_image(save(Image.new("I", (1, 1), 32768), tmp_path / "i32.tif"))) == (128, 128, 128)


def test_cmyk_and_float_modes(tmp_path):
    red = load_rgb_image(save(Image.new("CMYK", (1, 1), (0, 255, 255, 0)), tmp_path / "red.tif"))
    assert pixel(red) == (255, 0, 0)
    black = load_rgb_image(save(Image.new("CMYK", (1, 1), (0, 0, 0, 255)), tmp_path / "black.tif"))
    assert pixel(black) == (0, 0, 0)
    unit = load_rgb_image(save(Image.new("F", (1, 1), 0.5), tmp_path / "unit.tif"))
    assert pixel(unit) == (128, 128, 128)  # floats within [0, 1] are intensities
    wide = load_rgb_image(save(Image.new("F", (1, 1), 200.0), tmp_path / "wide.tif"))
    assert pixel(wide) == (200, 200, 200)  # otherwise the 0..255 scale


def test_broken_files_raise_bad_sample_error(tmp_path):
    (tmp_path / "empty.png").write_bytes(b"")
    (tmp_path / "text.png").write_text("this is not an image\n")
    noise = np.random.default_rng(0).integers(0, 256, (64, 64, 3), dtype=np.uint8)
    for fmt in ("png", "jpg"):
        whole = save(Image.fromarray(noise), tmp_path / f"whole.{fmt}")
        (tmp_path / f"cut.{fmt}").write_bytes(whole.read_bytes()[: whole.stat().st_size // 2])
    cases = {
        "missing.png": "not found",
        "empty.png": "empty",
        "text.png": "not an image",
        "cut.png": "truncated",
        "cut.jpg": "truncated",
    }
    for name, reason in cases.items():
        with pytest.raises(BadSampleError, match=reason) as error:
            load_rgb_image(tmp_path / name)
        assert name in str(error.value) and "\n" not in str(error.value)
    with pytest.raises(BadSampleError, match="folder"):
        load_rgb_image(tmp_path)


# ---------------------------------------------------------------- image-caption CSV/TSV


def test_rows_load_with_tokens_and_zero_skipped(tmp_path):
    write_csv(tmp_path / "train.csv", caption_rows(tmp_path, 3))
    data = dataset(tmp_path / "train.csv")
    assert len(data) == 3 and data.missing_files == 0 and data.bad_rows == []
    for index in range(3):
        image, tokens, skipped = data[index]
        assert torch.equal(image, expected_image(index))
        expected_tokens = [ord(c) for c in f"caption {index}"]
        assert tokens.tolist() == expected_tokens + [0] * (16 - len(expected_tokens))
        assert skipped == 0


def test_missing_images_are_counted_up_front_and_skipped(tmp_path, caplog):
    write_csv(tmp_path / "train.csv", caption_rows(tmp_path, 6, missing={1, 2, 5}))
    with caplog.at_level(logging.WARNING, logger="cyclip.data"):
        data = dataset(tmp_path / "train.csv")
    assert data.missing_files == 3 and len(data) == 6
    assert [line for line, _ in data.bad_rows] == [3, 4, 7]  # header is line 1, row i is line i + 2
    assert "images/1.png" in data.bad_rows[0][1]
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1
    assert "train.csv" in warnings[0] and "3 of 6 images not found" in warnings[0] and "line 3" in warnings[0]
    # row -> (row that comes back, bad rows passed over); the last row wraps around to row 0
    for index, (returned, skipped) in {0: (0, 0), 1: (3, 1), 2: (3, 1), 4: (4, 0), 5: (0, 1)}.items():
        image, _, got_skipped = data[index]
        assert torch.equal(image, expected_image(returned)) and got_skipped == skipped


def test_error_policy_names_the_line_of_a_missing_image(tmp_path):
    write_csv(tmp_path / "train.csv", caption_rows(tmp_path, 4, missing={2}))
    with pytest.raises(DataError, match=r"line 4.*images/2\.png.*--on-bad-sample skip") as error:
        dataset(tmp_path / "train.csv", on_bad_sample="error")
    assert "train.csv" in str(error.value)
    with pytest.raises(ValueError, match="on_bad_sample"):
        dataset(tmp_path / "train.csv", on_bad_sample="ignore")


def test_zero_byte_images_are_found_up_front(tmp_path, caplog):
    lines = caption_rows(tmp_path, 4)
    (tmp_path / "images" / "2.png").write_bytes(b"")
    write_csv(tmp_path / "train.csv", lines)
    with caplog.at_level(logging.WARNING, logger="cyclip.data"):
        data = dataset(tmp_path / "train.csv")
    assert (data.empty_files, data.missing_files) == (1, 0)
    assert data.bad_rows == [(4, "empty image file (0 bytes): images/2.png")]
    assert any("1 of 4 image files are empty" in r.getMessage() for r in caplog.records)
    image, _, skipped = data[2]
    assert torch.equal(image, expected_image(3)) and skipped == 1
    with pytest.raises(DataError, match=r"line 4: empty image file"):
        dataset(tmp_path / "train.csv", on_bad_sample="error")


def test_images_broken_at_load_time_are_skipped_and_warned_about_at_most_ten_times(tmp_path, caplog):
    lines = caption_rows(tmp_path, 13)
    for index in range(12):  # rows 0..11 exist but do not decode; row 12 is good
        (tmp_path / "images" / f"{index}.png").write_bytes(b"\x89PNG\r\n\x1a\n broken")
    write_csv(tmp_path / "train.csv", lines)
    data = dataset(tmp_path / "train.csv")
    assert data.missing_files == 0  # they exist: only decoding finds them
    with caplog.at_level(logging.WARNING, logger="cyclip.data"):
        image, _, skipped = data[0]
        assert torch.equal(image, expected_image(12)) and skipped == 1
        assert data[5][2] == 1  # already known bad: skipped without a second decode attempt
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 10
    assert "line 2" in warnings[0] and "0.png" in warnings[0]

    strict = dataset(tmp_path / "train.csv", on_bad_sample="error")
    with pytest.raises(BadSampleError, match=r"train\.csv.*line 5.*3\.png.*--on-bad-sample skip"):
        strict[3]


def test_bad_captions_are_counted_and_skipped(tmp_path, caplog):
    captions = ["fine", "   ", "also fine", "nul\x00here", "bad \ufffd decode", "last"]
    write_csv(tmp_path / "train.csv", caption_rows(tmp_path, 6, captions=captions))
    with caplog.at_level(logging.WARNING, logger="cyclip.data"):
        data = dataset(tmp_path / "train.csv")
    assert data.bad_captions == 3 and data.missing_files == 0
    assert [line for line, _ in data.bad_rows] == [3, 5, 6]
    assert any("3 of 6 captions" in r.getMessage() for r in caplog.records)
    image, _, skipped = data[3]
    assert torch.equal(image, expected_image(5)) and skipped == 1
    with pytest.raises(DataError, match="line 3.*empty caption"):
        dataset(tmp_path / "train.csv", on_bad_sample="error")


def test_every_row_bad_is_an_error(tmp_path):
    write_csv(tmp_path / "train.csv", caption_rows(tmp_path, 3, missing={0, 1, 2}))
    with pytest.raises(DataError, match=r"train\.csv.*none of the 3 rows"):
        dataset(tmp_path / "train.csv")


def test_relative_paths_follow_the_csv_folder_and_absolute_paths_work(tmp_path, monkeypatch):
    folder = tmp_path / "data"
    write_image(folder / "images" / "0.png", 0)
    elsewhere = write_image(tmp_path / "other" / "1.png", 1)
    write_csv(folder / "train.csv", ["filepath|title", "images/0.png|relative", f"{elsewhere}|absolute"])
    monkeypatch.chdir(tmp_path / "other")  # not the CSV's folder
    data = dataset(folder / "train.csv")
    assert data.missing_files == 0
    assert torch.equal(data[0][0], expected_image(0)) and torch.equal(data[1][0], expected_image(1))


def test_tsv_and_custom_columns(tmp_path):
    write_image(tmp_path / "a.png", 4)
    (tmp_path / "train.tsv").write_text("caption\timage\na dog, a cat\ta.png\n")
    data = dataset(tmp_path / "train.tsv", image_key="image", caption_key="caption", separator="\t")
    image, tokens, _ = data[0]
    assert torch.equal(image, expected_image(4))
    assert "".join(chr(c) for c in tokens.tolist() if c) == "a dog, a cat"


def test_quoted_multiline_caption_keeps_line_numbers_right(tmp_path):
    write_image(tmp_path / "a.png", 0)
    (tmp_path / "train.csv").write_text('filepath,title\nmissing.png,"two\nlines"\na.png,ok\n\nb.png,next\n')
    data = dataset(tmp_path / "train.csv")
    # the first row starts on line 2 and ends on line 3; line 5 is blank
    assert data.bad_rows == [(2, "image not found: missing.png"), (6, "image not found: b.png")]
    assert len(data) == 3 and data.caption(0) == "two\nlines"


def test_byte_order_mark_is_not_part_of_the_first_column(tmp_path):
    write_image(tmp_path / "a.png", 0)
    (tmp_path / "train.csv").write_bytes("\ufefffilepath,title\na.png,hello\n".encode())
    assert len(dataset(tmp_path / "train.csv")) == 1


def test_missing_column_message_lists_the_columns(tmp_path):
    write_csv(tmp_path / "train.csv", ["image|caption", "a.png|a cat"])
    with pytest.raises(DataError) as error:
        dataset(tmp_path / "train.csv")
    message = str(error.value)
    assert "train.csv" in message and "'filepath'" in message and "columns: image, caption" in message
    assert "--csv-img-key" in message and "\n" not in message


def test_wrong_separator_is_detected(tmp_path):
    write_csv(tmp_path / "train.tsv", ["filepath|title", "a.png|a cat, sitting"], separator="\t")
    with pytest.raises(DataError, match=r"train\.tsv.*tab-separated.*--csv-separator '\\t'"):
        dataset(tmp_path / "train.tsv")
    write_csv(tmp_path / "train.csv", ["filepath|title", "a.png|a cat"], separator=",")
    with pytest.raises(DataError, match=r"comma-separated.*--csv-separator ','"):
        dataset(tmp_path / "train.csv", separator="\t")


def test_non_utf8_byte_names_its_line(tmp_path):
    (tmp_path / "train.csv").write_bytes(b"filepath,title\na.png,caf\xc3\xa9\nb.png,caf\xff\n")
    with pytest.raises(DataError, match=r"train\.csv: line 3 .*0xff.*UTF-8"):
        dataset(tmp_path / "train.csv")


def test_structural_errors_name_the_file_and_line(tmp_path):
    path = tmp_path / "train.csv"
    with pytest.raises(DataError, match="file not found"):
        dataset(path)
    path.write_text("")
    with pytest.raises(DataError, match=r"train\.csv: empty file"):
        dataset(path)
    path.write_text("filepath,title\n")
    with pytest.raises(DataError, match="no data rows"):
        dataset(path)
    path.write_text("filepath,title\na.png,one\nb.png\n")
    with pytest.raises(DataError, match="line 3 has 1 fields but the header has 2"):
        dataset(path)
    path.write_text('filepath,title\na.png,one\nb.png,"never closed\n' + "x" * 200_000 + "\n")
    with pytest.raises(DataError, match="line 3: field larger than field limit"):  # where the quote opens
        dataset(path)


def test_data_loader_batches_and_pickling(tmp_path):
    write_csv(tmp_path / "train.csv", caption_rows(tmp_path, 8, missing={2}))
    data = dataset(tmp_path / "train.csv")
    images, tokens, skipped = next(iter(torch.utils.data.DataLoader(data, batch_size=4)))
    assert images.shape == (4, 3, 4, 4) and tokens.shape == (4, 16) and skipped.shape == (4,)
    assert skipped.tolist() == [0, 0, 1, 0]
    copy = pickle.loads(pickle.dumps(data))
    assert torch.equal(copy[2][0], expected_image(3)) and copy.missing_files == 1


def test_pair_batches_collate_rows_split_and_join_and_move_in_one_piece(tmp_path):
    write_csv(tmp_path / "train.csv", caption_rows(tmp_path, 6, missing={2}))
    data = dataset(tmp_path / "train.csv")
    loader = torch.utils.data.DataLoader(data, batch_size=6, num_workers=1, collate_fn=PairBatch.collate)
    batch = next(iter(loader))  # stacked in a worker process, into shared memory
    stand_in = [0, 1, 3, 3, 4, 5]  # row 2's image is missing: row 3 stands in
    assert torch.equal(batch.images, torch.stack([expected_image(row) for row in stand_in]))
    assert torch.equal(batch.texts, CharTokenizer()([f"caption {row}" for row in stand_in]))
    assert batch.skipped.dtype == torch.long and batch.skipped.tolist() == [0, 0, 1, 0, 0, 0]
    assert len(batch) == 6 and not batch.has_augmented_views and batch.augmented_images is None
    joined = PairBatch.cat([batch[:1], batch[1:4], batch[4:]])
    moved = joined.to(torch.device("cpu"))
    for name in ("images", "texts", "skipped"):
        assert torch.equal(getattr(moved, name), getattr(batch, name)), name
    with pytest.raises(ValueError, match="both augmented views"):
        PairBatch(batch.images, batch.texts, batch.skipped, augmented_images=batch.images)
    with pytest.raises(TypeError, match="sliced by rows"):
        batch[0]


def test_open_clip_tokenizer_gives_one_row_of_context_length(tmp_path):
    open_clip = pytest.importorskip("open_clip")
    tokenizer = open_clip.get_tokenizer("ViT-B-32")
    write_csv(tmp_path / "train.csv", caption_rows(tmp_path, 1))
    data = ImageCaptionDataset(tmp_path / "train.csv", transform=to_tensor, tokenizer=tokenizer, **CSV_FORMAT)
    tokens = pickle.loads(pickle.dumps(data))[0][1]
    assert tokens.shape == (77,) and torch.equal(tokens, tokenizer(["caption 0"])[0])


# ---------------------------------------------------------------- labelled folders


def labelled_folder(tmp_path, labels: list[str], classes_json: str | None = None):
    folder = tmp_path / "eval"
    for index in range(len(labels)):
        write_image(folder / "img" / f"{index}.png", index)
    lines = ["image,label"] + [f"img/{index}.png,{label}" for index, label in enumerate(labels)]
    (folder / "labels.csv").write_text("\n".join(lines) + "\n")
    if classes_json is None:
        classes_json = '{"classes": ["cat", "dog", "bird"], "templates": ["a photo of a {}.", "a {} drawn"]}'
    (folder / "classes.json").write_text(classes_json)
    return folder


def test_labelled_folder_with_index_and_name_labels(tmp_path):
    folder = labelled_folder(tmp_path, ["2", "cat", "1", "bird"])
    data = read_labelled_folder(folder)
    assert data.labels == [2, 0, 1, 2]
    assert data.classes == ["cat", "dog", "bird"] and data.templates == ["a photo of a {}.", "a {} drawn"]
    assert data.paths[1] == folder / "img" / "1.png"
    images = LabelledImageDataset(data, to_tensor)
    assert len(images) == 4
    image, label = images[3]
    assert torch.equal(image, expected_image(3)) and label == 2


def test_labelled_folder_errors(tmp_path):
    folder = labelled_folder(tmp_path, ["0", "3"])
    with pytest.raises(DataError, match=r"labels\.csv: line 3: label 3 is out of range for 3 classes"):
        read_labelled_folder(folder)
    folder = labelled_folder(tmp_path, ["cow"])
    with pytest.raises(DataError, match=r"line 2: label 'cow'.*3 class names"):
        read_labelled_folder(folder)
    (folder / "classes.json").unlink()
    with pytest.raises(DataError, match="no classes.json") as error:
        read_labelled_folder(folder)
    assert str(folder / "classes.json") in str(error.value)
    with pytest.raises(DataError, match="folder not found"):
        read_labelled_folder(tmp_path / "nowhere")


def test_classes_json_errors_and_default_template(tmp_path):
    assert read_labelled_folder(labelled_folder(tmp_path, ["0"], '{"classes": ["a"]}')).templates == [
        "a photo of a {}."
    ]
    bad = {
        '{"classes": ["a",]}': r"not valid JSON at line 1 column",
        '{"classes": []}': "non-empty list",
        '{"classes": "abc"}': "non-empty list",
        '["a", "b"]': "expected an object",
        '{"classes": ["a"], "templates": ["no placeholder"]}': "'no placeholder'",
        '{"classes": ["a", "a"]}': "unique",
    }
    for text, message in bad.items():
        with pytest.raises(DataError, match=message):
            read_labelled_folder(labelled_folder(tmp_path, ["0"], text))


def test_labelled_missing_image_and_labels_file(tmp_path):
    folder = labelled_folder(tmp_path, ["0", "1", "2"])
    (folder / "img" / "1.png").unlink()
    with pytest.raises(DataError, match=r"labels\.csv: line 3: image not found.*1\.png.*1 of 3"):
        read_labelled_folder(folder)
    (folder / "labels.csv").unlink()
    with pytest.raises(DataError, match="no labels.csv") as error:
        read_labelled_folder(folder)
    assert str(folder / "labels.csv") in str(error.value)


def test_labelled_dataset_is_strict_about_broken_images(tmp_path):
    folder = labelled_folder(tmp_path, ["0", "1"])
    data = read_labelled_folder(folder)
    (folder / "img" / "1.png").write_bytes(b"")
    with pytest.raises(BadSampleError, match=r"1\.png"):
        LabelledImageDataset(data, to_tensor)[1]


# ---------------------------------------------------------------- digits demo data


@pytest.fixture(scope="module")
def digits_demo(tmp_path_factory):
    from sklearn.datasets import load_digits

    return write_digits_demo(tmp_path_factory.mktemp("digits")), load_digits()


def read_rows(path) -> list[list[str]]:
    import csv

    with open(path, newline="", encoding="utf-8") as file:
        return list(csv.reader(file))


def image_index(filepath: str) -> int:
    return int(filepath.rsplit("/", 1)[1].removesuffix(".png"))


def test_digits_split_rows_and_captions(digits_demo):
    data, digits = digits_demo
    train, val = read_rows(data.train_csv), read_rows(data.val_csv)
    assert train[0] == ["filepath", "title"] and val[0] == ["filepath", "title"]
    train_images = {image_index(path) for path, _ in train[1:]}
    val_images = [image_index(path) for path, _ in val[1:]]
    assert len(val_images) == math.ceil(0.2 * 1797) and not train_images & set(val_images)
    assert len(train_images) + len(val_images) == 1797
    assert len(train) - 1 == 2 * len(train_images)
    # stratified: every class held out, in proportion to its size
    for digit in range(10):
        held = sum(digits.target[i] == digit for i in val_images)
        assert abs(held - 0.2 * np.sum(digits.target == digit)) <= 1
    # every caption names the right digit; held-out templates never reach training
    heldout_captions = {t.format(name) for t in HELDOUT_TEMPLATES for name in DIGIT_NAMES}
    for path, caption in train[1:]:
        name = DIGIT_NAMES[digits.target[image_index(path)]]
        assert caption in {t.format(name) for t in TRAIN_TEMPLATES} and caption not in heldout_captions
    for path, caption in val[1:]:
        assert caption in {t.format(DIGIT_NAMES[digits.target[image_index(path)]]) for t in HELDOUT_TEMPLATES}
    assert not set(TRAIN_TEMPLATES) & set(HELDOUT_TEMPLATES)


def test_digits_pixels_match_scikit_learn(digits_demo):
    data, digits = digits_demo
    expected = np.round(digits.images * 255 / 16)
    for index in range(0, 1797, 7):
        with Image.open(data.root / "images" / f"{index:04d}.png") as image:
            assert image.mode == "L" and image.size == (8, 8)
            assert np.array_equal(np.asarray(image), expected[index])


def test_digits_zeroshot_folder_and_caption_dataset_read_back(digits_demo):
    data, digits = digits_demo
    labelled = read_labelled_folder(data.zeroshot_dir)
    assert labelled.classes == DIGIT_NAMES and labelled.templates == HELDOUT_TEMPLATES
    val_images = [image_index(path) for path, _ in read_rows(data.val_csv)[1:]]
    assert [image_index(p.as_posix()) for p in labelled.paths] == val_images
    assert labelled.labels == [int(digits.target[i]) for i in val_images]
    pairs = dataset(data.train_csv)
    image, _, skipped = pairs[0]
    index = image_index(pairs.image_path(0).replace("\\", "/"))
    grey = np.round(digits.images[index] * 255 / 16)
    assert skipped == 0 and np.array_equal(image.numpy(), np.broadcast_to(grey, (3, 8, 8)))


def test_digits_demo_is_deterministic_and_rewrites_cleanly(digits_demo, tmp_path):
    data, _ = digits_demo
    names = ["train.csv", "val.csv", "zeroshot/labels.csv", "zeroshot/classes.json", "images/0042.png"]
    before = {name: (data.root / name).read_bytes() for name in names}
    again = write_digits_demo(tmp_path / "again")
    assert {name: (again.root / name).read_bytes() for name in names} == before
    write_digits_demo(data.root)  # same root: overwritten, not appended to
    assert {name: (data.root / name).read_bytes() for name in names} == before
    other = write_digits_demo(tmp_path / "seed1", seed=1, captions_per_image=3)
    assert other.train_csv.read_bytes() != before["train.csv"]
    assert len(read_rows(other.train_csv)) - 1 == 3 * (1797 - math.ceil(0.2 * 1797))
