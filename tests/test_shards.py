"""WebDataset shard input: brace expansion, sample counts, rank/worker splits, bad samples, seeding.

The shards are written here with webdataset's TarWriter from scikit-learn's digits; every caption holds
its sample's id, so each batch row can be checked against the image that was written for it.
"""

import io
import json
import logging
import os
import random
import tarfile
from collections import Counter

import numpy as np
import pytest
import torch
import webdataset as wds
from PIL import Image, ImageOps
from sklearn.datasets import load_digits

from cyclip.data.batch import PairBatch
from cyclip.data.seeding import sample_seed
from cyclip.data.shards import ShardBatches, count_samples, expand_urls
from cyclip.errors import BadSampleError, DataError, ImageTooLargeError
from tests.helpers.bad_files import HUGE_SIDE, decoded_sizes, exif_jpeg_bytes, huge_png_bytes, quadrant_pixels, upright

SHARD_SIZES = (7, 5, 6, 4, 8, 5)  # shards 0, 2, 4 hold JPEGs, shards 1, 3, 5 PNGs
CORRUPT_JPG = (2, 3)  # (shard, index in shard): image bytes that are no JPEG
NO_CAPTION = (3, 1)
TRUNCATED_SHARD, TRUNCATED_AT = 5, 3  # the tar is cut inside the image of its sample 3
TOKENS = 48
# The corrupt JPEG, the sample without caption, the truncated tar, and the fragment of the sample it cuts
# (its .json, written before its .png, was read whole).
BAD_SAMPLES = 4

DIGITS = load_digits()
# 16x16 uint8 versions of the first digits: JPEG keeps them close, PNG exact.
PIXELS = np.kron(DIGITS.images[: sum(SHARD_SIZES)], np.ones((2, 2))).astype(np.uint8) * 15


def sample_id(shard: int, index: int) -> int:
    return sum(SHARD_SIZES[:shard]) + index


def sample_key(shard: int, index: int) -> str:
    return f"{shard:05d}{index:04d}"


def encode_captions(captions: list[str]) -> torch.Tensor:
    """A stand-in tokenizer that keeps the caption readable: its UTF-8 bytes, zero-padded."""
    rows = [list(caption.encode("utf-8").ljust(TOKENS, b"\0")[:TOKENS]) for caption in captions]
    return torch.tensor(rows, dtype=torch.long)


def decode_tokens(tokens: torch.Tensor) -> str:
    return bytes(tokens.tolist()).rstrip(b"\0").decode("utf-8")


def to_tensor(image: Image.Image) -> torch.Tensor:
    return torch.from_numpy(np.asarray(image, dtype=np.float32).copy()).permute(2, 0, 1)


def encoded(pixels: np.ndarray, image_format: str) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, format=image_format, **({"quality": 95} if image_format == "JPEG" else {}))
    return buffer.getvalue()


def write_shards(folder) -> list[str]:
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for shard, size in enumerate(SHARD_SIZES):
        path = str(folder / f"{shard:05d}.tar")
        extension, image_format = ("jpg", "JPEG") if shard % 2 == 0 else ("png", "PNG")
        with wds.TarWriter(path) as writer:
            for index in range(size):
                number = sample_id(shard, index)
                sample = {"__key__": sample_key(shard, index), "json": {"id": number}}
                sample[extension] = encoded(PIXELS[number], image_format)
                if (shard, index) == CORRUPT_JPG:
                    sample[extension] = b"\xff\xd8\xff\xe0 this is not a JPEG"
                if (shard, index) != NO_CAPTION:
                    sample["txt"] = f"{number} digit {DIGITS.target[number]}"
                writer.write(sample)
        paths.append(path)
    cut_tar(paths[TRUNCATED_SHARD], f"{sample_key(TRUNCATED_SHARD, TRUNCATED_AT)}.png", inside_data=True)
    return paths


def cut_tar(path: str, member: str, inside_data: bool) -> None:
    """Truncate the tar in the middle of `member`'s data, or just before its header."""
    with tarfile.open(path) as archive:
        info = archive.getmember(member)
    end = info.offset_data + info.size // 2 if inside_data else info.offset
    with open(path, "rb") as file:
        data = file.read()[:end]
    with open(path, "wb") as file:
        file.write(data)


GOOD_IDS = {
    sample_id(shard, index)
    for shard, size in enumerate(SHARD_SIZES)
    for index in range(size)
    if (shard, index) not in (CORRUPT_JPG, NO_CAPTION) and not (shard == TRUNCATED_SHARD and index >= TRUNCATED_AT)
}
BAD_PER_SHARD = Counter([CORRUPT_JPG[0], NO_CAPTION[0], TRUNCATED_SHARD, TRUNCATED_SHARD])


def shard_of(number: int) -> int:
    return int(np.searchsorted(np.cumsum(SHARD_SIZES), number, side="right"))


@pytest.fixture(scope="module")
def shards(tmp_path_factory) -> list[str]:
    return write_shards(tmp_path_factory.mktemp("shards"))


def pattern(paths: list[str]) -> str:
    return os.path.join(os.path.dirname(paths[0]), f"{{00000..{len(paths) - 1:05d}}}.tar")


def make(urls: str, **options) -> ShardBatches:
    settings = dict(
        batch_size=4, num_samples=None, seed=7, epoch=0, rank=0, world_size=1, workers=0, resampled=False,
        on_bad_sample="skip",
    )  # fmt: skip
    settings.update(options)
    return ShardBatches(urls, to_tensor, encode_captions, **settings)


def tensors_of(batch: PairBatch) -> list[torch.Tensor]:
    """Every tensor of a batch; no augmented views here unless asked for."""
    views = [batch.augmented_images, batch.augmented_texts] if batch.has_augmented_views else []
    return [batch.images, batch.texts, batch.skipped, *views]


def rows_of(batches) -> tuple[list[int], list[torch.Tensor], int, list[int]]:
    """(sample ids in order, image tensors, total skipped, batch sizes) of an epoch."""
    ids, images, skipped, sizes = [], [], 0, []
    for batch in batches:
        images_batch, tokens, batch_skipped = batch.images, batch.texts, batch.skipped
        assert images_batch.shape[1:] == (3, 16, 16) and tokens.shape[1] == TOKENS
        assert batch_skipped.dtype == torch.long and len(batch_skipped) == len(images_batch) == len(tokens)
        ids += [int(decode_tokens(row).split()[0]) for row in tokens]
        images += list(images_batch)
        skipped += int(batch_skipped.sum())
        sizes.append(len(images_batch))
    return ids, images, skipped, sizes


def check_images_match_captions(ids: list[int], images: list[torch.Tensor]) -> None:
    """Each row's image is the one written with the row's caption: exact for PNG, nearest for JPEG."""
    references = torch.from_numpy(PIXELS.astype(np.float32))
    for number, image in zip(ids, images, strict=True):
        assert torch.equal(image[0], image[1]) and torch.equal(image[0], image[2])  # gray decoded to RGB
        if shard_of(number) % 2:
            assert torch.equal(image[0], references[number])
        else:
            distances = (references - image[0]).abs().mean(dim=(1, 2))
            assert int(distances.argmin()) == number and float(distances[number]) < 4


# --- shard lists and counts ----------------------------------------------------------------------------------


def test_expand_urls_expands_braces_and_joins_patterns(tmp_path):
    names = [f"{i:05d}.tar" for i in range(4)] + ["extra-a.tar", "extra-b.tar"]
    for name in names:
        (tmp_path / name).write_bytes(b"")
    urls = f"{tmp_path}/{{00000..00003}}.tar::{tmp_path}/extra-{{a,b}}.tar"
    assert expand_urls(urls) == [f"{tmp_path}/{name}" for name in names]
    assert expand_urls("https://host/data/{00..02}.tar") == [f"https://host/data/{i:02d}.tar" for i in range(3)]
    with pytest.raises(DataError, match=r"00004\.tar: shard not found \(6 of the 10 shards .* missing\)"):
        expand_urls(f"{tmp_path}/{{00000..00009}}.tar")
    with pytest.raises(DataError, match="unbalanced braces"):
        expand_urls(f"{tmp_path}/{{00000..00003.tar")
    with pytest.raises(DataError, match="no shards given"):
        expand_urls("  ")


def test_count_samples_reads_stats_json_or_sizes_json(tmp_path):
    stats_folder, sizes_folder, bare_folder = (tmp_path / name for name in ("stats", "sizes", "bare"))
    for folder in (stats_folder, sizes_folder, bare_folder):
        folder.mkdir()
        for i in range(3):
            (folder / f"{i:05d}.tar").write_bytes(b"")
    for i, successes in enumerate((9, 11, 4)):
        (stats_folder / f"{i:05d}_stats.json").write_text(json.dumps({"count": 20, "successes": successes}))
    (sizes_folder / "sizes.json").write_text(json.dumps({"00000.tar": 5, "00001.tar": 6, "00002.tar": 7}))
    assert count_samples(expand_urls(f"{stats_folder}/{{00000..00002}}.tar")) == 9 + 11 + 4
    assert count_samples(expand_urls(f"{sizes_folder}/{{00000..00002}}.tar")) == 5 + 6 + 7
    assert count_samples(expand_urls(f"{stats_folder}/00001.tar::{sizes_folder}/00002.tar")) == 11 + 7
    assert count_samples(expand_urls(f"{bare_folder}/{{00000..00002}}.tar")) is None
    assert count_samples(expand_urls(f"{stats_folder}/00000.tar::{bare_folder}/00000.tar")) is None
    assert count_samples(["https://host/00000.tar"]) is None
    (bare_folder / "00000_stats.json").write_text("{not json")
    with pytest.raises(DataError, match=r"00000_stats\.json: not valid JSON"):
        count_samples([str(bare_folder / "00000.tar")])


def test_a_count_is_required_for_training(shards):
    with pytest.raises(DataError, match="--train-num-samples"):
        make(pattern(shards))
    validation = make(pattern(shards), finite=True)  # validation needs no count
    assert validation.num_samples is None and validation.batches_per_epoch == 0


# --- finite (validation) mode: every good sample once ---------------------------------------------------------


def test_finite_mode_yields_every_good_sample_once_with_its_own_caption(shards):
    ids, images, skipped, sizes = rows_of(make(pattern(shards), batch_size=4, finite=True))
    assert sorted(ids) == sorted(GOOD_IDS)  # each good sample exactly once
    check_images_match_captions(ids, images)
    assert skipped == BAD_SAMPLES
    assert sizes == [4] * (len(GOOD_IDS) // 4) + [len(GOOD_IDS) % 4]


def test_finite_mode_with_two_workers_sees_the_same_samples(shards):
    ids, images, skipped, sizes = rows_of(make(pattern(shards), batch_size=5, finite=True, workers=2))
    assert sorted(ids) == sorted(GOOD_IDS)
    check_images_match_captions(ids, images)
    assert skipped == BAD_SAMPLES
    assert sizes == [5] * (len(GOOD_IDS) // 5) + [len(GOOD_IDS) % 5]


def test_a_tar_cut_at_a_member_boundary_is_counted(tmp_path, shards):
    path = str(tmp_path / "00000.tar")
    with open(shards[1], "rb") as source, open(path, "wb") as target:  # shard 1: five good PNG samples
        target.write(source.read())
    cut_tar(path, f"{sample_key(1, 2)}.json", inside_data=False)  # tarfile alone would end quietly here
    ids, _, skipped, _ = rows_of(make(path, batch_size=2, finite=True))
    assert sorted(ids) == [sample_id(1, 0), sample_id(1, 1)]
    assert skipped == 1


# --- training mode: equal batch counts on every rank ----------------------------------------------------------


def test_two_ranks_get_equal_full_batches_from_disjoint_shards(shards):
    ranks = [make(pattern(shards), num_samples=40, rank=rank, world_size=2) for rank in (0, 1)]
    assert [batches.batches_per_epoch for batches in ranks] == [40 // (4 * 2)] * 2
    seen_shards = []
    for batches in ranks:
        ids, images, skipped, sizes = rows_of(batches)
        assert sizes == [4] * 5  # 40 samples / (batch 4 x 2 ranks), every batch full
        check_images_match_captions(ids, images)
        own = {shard_of(number) for number in ids}
        assert len(own) == 3
        # 20 rows from ~15 good samples: the rank read all its shards, then some again.
        assert set(ids) == {number for number in GOOD_IDS if shard_of(number) in own}
        bad_in_own = sum(BAD_PER_SHARD[shard] for shard in own)
        assert bad_in_own <= skipped <= 2 * bad_in_own
        seen_shards.append(own)
    assert seen_shards[0].isdisjoint(seen_shards[1]) and seen_shards[0] | seen_shards[1] == set(range(6))


def test_rereading_counts_bad_samples_again_but_warns_once(shards, caplog):
    batches = make(pattern(shards), num_samples=96)  # 96 rows from 31 good samples: 3 full reads and a bit
    with caplog.at_level(logging.WARNING, logger="cyclip.data"):
        ids, _, skipped, sizes = rows_of(batches)
    assert sizes == [4] * 24 and Counter(ids).most_common()[-1][1] >= 3
    assert 3 * BAD_SAMPLES <= skipped <= 4 * BAD_SAMPLES
    warnings = [record.getMessage() for record in caplog.records]
    assert len(warnings) == BAD_SAMPLES  # one per problem, on the first read only
    assert sum(f"{shards[TRUNCATED_SHARD]}: cannot read the tar" in message for message in warnings) == 1


def test_training_with_two_workers_is_deterministic(shards):
    batches = make(pattern(shards), num_samples=48, batch_size=3, workers=2)
    assert batches.batches_per_epoch == 16
    first, second = list(batches), list(batches)
    assert len(first) == 16 and all(len(batch.skipped) == 3 for batch in first)
    for one, other in zip(first, second, strict=True):
        for tensor, same in zip(tensors_of(one), tensors_of(other), strict=True):
            assert torch.equal(tensor, same)
    ids, images, _, _ = rows_of(first)
    # 24 rows per worker, more than the good samples of either worker's three shards: all are seen.
    assert set(ids) == GOOD_IDS and len(ids) == 48
    check_images_match_captions(ids, images)


def test_same_seed_same_batches_other_epoch_other_order(shards):
    python_state, torch_state = random.getstate(), torch.get_rng_state()
    runs = {
        name: list(make(pattern(shards), num_samples=24, epoch=epoch, seed=seed))
        for name, epoch, seed in (("a", 0, 7), ("b", 0, 7), ("next epoch", 1, 7), ("other seed", 0, 8))
    }
    for one, other in zip(runs["a"], runs["b"], strict=True):
        assert all(torch.equal(tensor, same) for tensor, same in zip(tensors_of(one), tensors_of(other), strict=True))
    order = {name: rows_of(batches)[0] for name, batches in runs.items()}
    assert len(order["a"]) == 24
    assert order["next epoch"] != order["a"] and order["other seed"] != order["a"]
    # The global random streams (training's dropout, the CSV sampler) are left where they were.
    assert random.getstate() == python_state and torch.equal(torch.get_rng_state(), torch_state)


def test_resampled_ranks_draw_their_own_deterministic_streams(shards):
    def run(rank):
        batches = make(pattern(shards), num_samples=48, rank=rank, world_size=2, workers=0, resampled=True)
        return rows_of(batches)

    rank0, rank0_again, rank1 = run(0), run(0), run(1)
    assert rank0[3] == rank1[3] == [4] * 6
    assert rank0[0] == rank0_again[0] and rank0[0] != rank1[0]
    assert set(rank0[0]) <= GOOD_IDS and set(rank1[0]) <= GOOD_IDS
    check_images_match_captions(rank0[0], rank0[1])


def test_too_few_shards_for_processes_and_workers_is_refused(shards):
    with pytest.raises(DataError, match=r"6 shards cannot be split over 2 processes x 4 .*lower --workers to 3"):
        make(pattern(shards), num_samples=40, world_size=2, workers=4)
    resampled = make(pattern(shards), num_samples=40, world_size=2, workers=4, resampled=True)
    assert resampled.batches_per_epoch == 5


def test_training_on_shards_without_a_usable_sample_stops(tmp_path):
    path = str(tmp_path / "00000.tar")
    with wds.TarWriter(path) as writer:
        for index in range(3):
            writer.write({"__key__": f"k{index}", "jpg": b"garbage", "txt": "a caption"})
    with pytest.raises(DataError, match=r"none of the samples in its 1 shards .*00000\.tar.* \(3 bad\)"):
        list(make(path, num_samples=8))


# --- bad samples in error mode --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("shard", "message"),
    [
        (CORRUPT_JPG[0], f"sample {sample_key(*CORRUPT_JPG)}: the .jpg file: cannot decode image"),
        (NO_CAPTION[0], f"sample {sample_key(*NO_CAPTION)}: no caption file"),
        (TRUNCATED_SHARD, f"cannot read the tar .*near sample {sample_key(TRUNCATED_SHARD, TRUNCATED_AT)}"),
    ],
    ids=["corrupt-image", "no-caption", "truncated-tar"],
)
def test_error_mode_names_the_shard_and_the_sample(shards, shard, message):
    url = shards[shard]
    with pytest.raises(BadSampleError, match=rf"{url}: {message}.*\(or run with --on-bad-sample skip\)"):
        list(make(url, finite=True, on_bad_sample="error"))


# --- EXIF orientation, huge images, wrong sample counts -------------------------------------------------------


def test_exif_rotated_and_huge_images_in_a_shard(tmp_path, monkeypatch, caplog):
    """An EXIF-rotated JPEG comes out upright; a 144 MP PNG is skipped and counted, never decoded."""
    photo = exif_jpeg_bytes(6)  # stored 48 wide x 32 high: upright 32 wide x 48 high
    plain = encoded(quadrant_pixels(width=32, height=48), "PNG")
    path = str(tmp_path / "00000.tar")
    with wds.TarWriter(path) as writer:
        writer.write({"__key__": "photo", "jpg": photo, "txt": "0 photo"})
        writer.write({"__key__": "huge", "png": huge_png_bytes(), "txt": "1 huge"})
        writer.write({"__key__": "plain", "png": plain, "txt": "2 plain"})
    with decoded_sizes(monkeypatch) as sizes, caplog.at_level(logging.WARNING, logger="cyclip.data"):
        [batch] = list(make(path, batch_size=2, finite=True))
    images, tokens, skipped = batch.images, batch.texts, batch.skipped
    ids = [int(decode_tokens(row).split()[0]) for row in tokens]
    assert sorted(ids) == [0, 2] and int(skipped.sum()) == 1
    assert (HUGE_SIDE, HUGE_SIDE) not in sizes and (48, 32) in sizes
    photo_row = images[ids.index(0)]
    assert torch.equal(photo_row, torch.from_numpy(upright(photo, 6).astype(np.float32)).permute(2, 0, 1))
    [warning] = [record.getMessage() for record in caplog.records]
    assert f"{path}: sample huge: the .png file: image too large to decode ({HUGE_SIDE}x{HUGE_SIDE}" in warning
    assert "skipped (raise the limit with --max-image-pixels to keep such images)" in warning

    with pytest.raises(ImageTooLargeError, match=rf"{path}: sample huge: .* or run with --on-bad-sample skip\)$"):
        list(make(path, batch_size=2, finite=True, on_bad_sample="error"))
    with pytest.raises(ValueError, match="--max-image-pixels must be a positive number"):
        make(path, batch_size=2, finite=True, max_image_pixels=0)


def write_counted_shards(folder, held: list[int], claimed: list[int]) -> list[str]:
    """Shards of `held[i]` good PNG samples whose img2dataset stats files claim `claimed[i]`."""
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for shard, (holds, claims) in enumerate(zip(held, claimed, strict=True)):
        path = str(folder / f"{shard:05d}.tar")
        with wds.TarWriter(path) as writer:
            for index in range(holds):
                number = sample_id(shard, index)
                writer.write(
                    {"__key__": sample_key(shard, index), "png": encoded(PIXELS[number], "PNG"), "txt": f"{number}"}
                )
        (folder / f"{shard:05d}_stats.json").write_text(json.dumps({"successes": claims}))
        paths.append(path)
    return paths


def test_shard_holding_fewer_samples_than_claimed_is_named_once_and_summed_up(tmp_path, caplog):
    paths = write_counted_shards(tmp_path / "train", held=[4, 4], claimed=[16, 4])
    urls = pattern(paths)
    holders = []  # the rank that reads the short shard, per epoch (shards are dealt out in a seeded order)
    with caplog.at_level(logging.WARNING, logger="cyclip.data"):
        for epoch in (0, 1):
            per_rank = []
            for rank in (0, 1):
                batches = make(urls, batch_size=2, epoch=epoch, rank=rank, world_size=2)
                assert batches.num_samples == 20 and batches.batches_per_epoch == 5
                if paths[0] in batches.rank_shards:
                    holders.append(rank)
                # As the trainer does: take exactly the epoch's batches, then drop the iterator.
                iterator = iter(batches)
                taken = [next(iterator) for _ in range(batches.batches_per_epoch)]
                del iterator
                per_rank.append(rows_of(taken))
            assert [sizes for _, _, _, sizes in per_rank] == [[2] * 5, [2] * 5]  # same step count on every rank
    messages = [record.getMessage() for record in caplog.records]
    named = [message for message in messages if message.startswith(paths[0])]
    assert named == [
        f"{paths[0]}: holds 4 samples but {tmp_path / 'train' / '00000_stats.json'} claims 16; each epoch reads "
        "shards again to make up the difference (correct the count, or pass --train-num-samples)"
    ]
    summaries = [message for message in messages if "read in full" in message]
    assert summaries == [  # one per epoch, from the rank that holds the short shard
        f"rank {holder}, epoch {epoch}: 1 shard read in full held 4 samples where the count files claim 16, so 12 "
        "of the epoch's 20 samples were re-reads"
        for epoch, holder in enumerate(holders, start=1)
    ]
    assert not any(paths[1] in message for message in messages)  # its count is right


def test_validation_shard_with_a_wrong_count_reads_what_it_holds(tmp_path, caplog):
    [path] = write_counted_shards(tmp_path / "val", held=[3], claimed=[10])
    with caplog.at_level(logging.WARNING, logger="cyclip.data"):
        ids, _, skipped, sizes = rows_of(make(path, batch_size=2, finite=True, workers=1))
    assert sorted(ids) == [0, 1, 2] and skipped == 0 and sizes == [2, 1]
    assert [record.getMessage() for record in caplog.records] == [
        f"{path}: holds 3 samples but {tmp_path / 'val' / '00000_stats.json'} claims 10; validation reads the 3 it "
        "holds (correct the count, or pass --train-num-samples)"
    ]


# --- the augmentation hook ------------------------------------------------------------------------------------


def mirror_and_draw(image: Image.Image, caption: str) -> tuple[Image.Image, str]:
    """Mirrors the image and appends the first number of the seeded Python stream to the caption."""
    return ImageOps.mirror(image), f"{caption.split()[0]} {random.random()!r}"


def test_augment_hook_output_and_its_per_sample_seed(shards):
    batches = make(pattern(shards), batch_size=4, finite=True, augment=mirror_and_draw, seed=3, epoch=2)
    count = 0
    for batch in batches:
        images, tokens, skipped = batch.images, batch.texts, batch.skipped
        augmented_images, augmented_tokens = batch.augmented_images, batch.augmented_texts
        assert augmented_images.shape == images.shape and augmented_tokens.shape == tokens.shape
        assert skipped.shape == (len(images),)
        assert torch.equal(augmented_images, images.flip(-1))
        for row, augmented_row in zip(tokens, augmented_tokens, strict=True):
            number = int(decode_tokens(row).split()[0])
            augmented_number, drawn = decode_tokens(augmented_row).split()
            shard = shard_of(number)
            key = sample_key(shard, number - sample_id(shard, 0))
            expected = random.Random(sample_seed(3, 2, f"{shards[shard]}/{key}")).random()
            assert int(augmented_number) == number and float(drawn) == expected
            count += 1
    assert count == len(GOOD_IDS)


# --- resuming part-way through an epoch ----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("workers", "resampled", "world_size"),
    [(0, False, 1), (2, False, 1), (2, True, 1), (1, False, 2)],
    ids=["main-process", "two-workers", "two-workers-resampled", "two-ranks"],
)
def test_a_resumed_epoch_sees_exactly_the_remaining_samples(shards, workers, resampled, world_size):
    """Stopped after b batches and continued from the stream positions it reported, an epoch yields exactly
    the samples an uninterrupted one yields after them, in order (ids from the captions, pixels, bad-sample
    counts). The bad samples in the shards make a worker's raw position differ from batches x batch size."""
    urls = pattern(shards)
    for rank in range(world_size):
        options = dict(
            num_samples=48, batch_size=3, epoch=1, rank=rank, world_size=world_size, workers=workers,
            resampled=resampled,
        )  # fmt: skip
        whole = rows_of(make(urls, **options))
        total = len(whole[3])
        for done in (1, 3, total - 1):
            first = make(urls, **options)
            batches = iter(first)
            head = [next(batches) for _ in range(done)]
            positions = list(first.positions)
            batches.close()
            rest = make(urls, skip=done, streams=positions, **options)
            ids, images, skipped, sizes = rows_of([*head, *rest])
            assert ids == whole[0] and sizes == whole[3], (rank, done)
            assert skipped == whole[2]
            assert all(torch.equal(a, b) for a, b in zip(images, whole[1], strict=True))
