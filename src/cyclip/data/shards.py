"""Image-caption pairs from WebDataset shards (the tar files img2dataset writes for CC3M, CC12M, LAION).

A `ShardBatches` is the batches of one epoch on one rank; `set_epoch` moves it on to the next, keeping
its data-loader workers. Collectives hang when ranks run different step counts, so in training every
rank yields exactly `batches_per_epoch` full batches, reading its shards again when they run out. Bad
samples follow the CSV policy (`cyclip.data.captions`): skipped and counted in the batch's `skipped`
tensor, or fatal with on_bad_sample="error". Every random choice (shard order, sample shuffle,
resampling, augmentation) is seeded from (seed, epoch, rank, worker, sample), so a run and its resume
see the same batches.

Resuming part-way through an epoch: the DataLoader returns the workers' batches round-robin, so after b
batches worker w has made b // W + (w < b % W) of them. Which raw samples went into them depends on which
ones failed to decode, so each training batch carries its worker's position (raw samples taken from the
shuffle buffer so far) to the main process (`ShardBatches.positions`). A resumed worker reads its shards and
refills its shuffle buffer in the same seeded order up to that position without decoding anything, then
goes on; the worker that was next in the round-robin starts the DataLoader's rotation.
"""

from __future__ import annotations

import io
import logging
import multiprocessing
import os
import random
import re
from collections import Counter
from collections.abc import Callable, Iterable, Iterator
from typing import NamedTuple

import torch
import webdataset as wds
from braceexpand import UnbalancedBracesError, braceexpand
from PIL import Image
from torch.utils.data import DataLoader, IterableDataset, get_worker_info

from cyclip.config import BAD_SAMPLE_POLICIES
from cyclip.data.batch import PairBatch
from cyclip.data.captions import SKIP_HINT, caption_problem, kept_hint, skip_hint
from cyclip.data.images import DEFAULT_MAX_IMAGE_PIXELS, check_max_pixels, decode_rgb
from cyclip.data.seeding import sample_seed, seeded_randomness
from cyclip.errors import BadSampleError, BadSampleWarnings, DataError
from cyclip.files import read_json

log = logging.getLogger("cyclip.data")

IMAGE_EXTENSIONS = ("jpg", "jpeg", "png", "webp", "bmp", "tif", "tiff")  # first one present is the image
CAPTION_EXTENSION = "txt"
SHARD_EXTENSIONS = (".tar", ".tar.gz", ".tgz")
SHUFFLE_BUFFER = 2000  # still-encoded samples per worker (OpenCLIP keeps 5000; ours stays under ~100 MB)
SHUFFLE_INITIAL = 500
TAR_END_BYTES = 1024  # a complete tar ends with two zero blocks
_NAMED_SHORTFALLS: set[str] = set()  # shards whose wrong count this process has named: once per run, not per epoch
_SCHEME = re.compile(r"^[A-Za-z][A-Za-z0-9+.-]+:")  # http:, s3:, pipe:, ... (one letter is a Windows drive)


def expand_urls(urls: str) -> list[str]:
    """Shard URLs from brace patterns ("data/{00000..00127}.tar"), several joined by "::" as in OpenCLIP.

    Local shards must exist: a missing one is one DataError naming the first and counting the rest, so
    a typo in the range fails now rather than as a worker error hours into training.
    """
    if not isinstance(urls, str) or not urls.strip():
        raise DataError(f"no shards given ({urls!r}); pass shard paths such as 'data/{{00000..00127}}.tar'")
    expanded: list[str] = []
    for pattern in urls.split("::"):
        pattern = pattern.strip()
        if not pattern:
            raise DataError(f"{urls}: empty pattern between '::' separators; remove the extra '::'")
        try:
            expanded.extend(_expand_user(url) for url in braceexpand(pattern))
        except UnbalancedBracesError:
            raise DataError(f"{pattern}: unbalanced braces; write shard ranges as {{00000..00127}}") from None
    local = [path for path in map(_local_path, expanded) if path is not None]
    missing = [path for path in local if not os.path.isfile(path)]
    if missing:
        what = "is a folder, not a shard" if os.path.isdir(missing[0]) else "shard not found"
        raise DataError(
            f"{missing[0]}: {what} ({len(missing)} of the {len(expanded)} shards of {urls!r} are missing); "
            "check the folder and the brace range"
        )
    return expanded


def count_samples(shards: list[str]) -> int | None:
    """Samples in `shards` from img2dataset's "<shard>_stats.json" ("successes") or a "sizes.json" in the
    shards' folder ({"00000.tar": n, ...}, as OpenCLIP reads it); None when some shard has neither."""
    claims = claimed_counts(shards)
    return None if claims is None else sum(claims[url].samples for url in shards)


class Claim(NamedTuple):
    """The sample count a file states for one shard, and that file (for messages)."""

    samples: int
    source: str


def claimed_counts(shards: list[str]) -> dict[str, Claim] | None:
    """Each shard's count as `count_samples` reads it; None when some shard has none."""
    claims: dict[str, Claim] = {}
    folder_sizes: dict[str, dict | None] = {}
    for url in shards:
        path = _local_path(url)
        if path is None:
            return None
        stats = _stats_path(path)
        size = _stats_successes(stats)
        source = stats
        if size is None:
            folder = os.path.dirname(os.path.abspath(path))
            source = os.path.join(folder, "sizes.json")
            if folder not in folder_sizes:
                folder_sizes[folder] = _read_sizes_json(source)
            sizes = folder_sizes[folder]
            size = None if sizes is None else sizes.get(os.path.basename(path))
            if size is not None and (not isinstance(size, int) or isinstance(size, bool) or size < 0):
                raise DataError(
                    f"{source}: entry {os.path.basename(path)!r} is {size!r}, not a sample count; "
                    "fix or delete the file"
                )
        if size is None:
            return None
        claims[url] = Claim(size, source)
    return claims


class Shortfall(NamedTuple):
    """Passed from a worker to the main process: a shard read in full held fewer samples than claimed."""

    url: str
    claimed: Claim
    held: int


class ShardBatches:
    """The batches of one epoch on one rank, in the CSV loader's form.

    Each batch is a `PairBatch`, with augmented views when `augment` is given; `skipped[i]` counts the bad
    samples that sample i stood in for, so `skipped.sum()` over the epoch counts the bad samples met (a
    corrupt or truncated shard counts 1 and stops that shard).

    Training (finite=False): exactly `batches_per_epoch` full batches on every rank (minus `skip`, the
    batches of this epoch already trained on, which are not decoded again; `streams` is `positions` as it
    was after them). Without `resampled`
    the shards are shuffled by (seed, epoch), shard i of that order goes to rank i % world_size and then
    to data-loader workers the same way; a worker whose shards run out reads them again. With `resampled`
    every rank and worker draws shards with replacement from its own seeded stream (multi-node, as
    OpenCLIP's --dataset-resampled). Samples are shuffled in a seeded buffer; a sample's augmentation is
    drawn under `sample_seed(seed, epoch, url + "/" + key)` (with "#n" appended on its n-th re-read in
    the epoch). Validation (finite=True): this rank's shards once, in order, the last batch possibly smaller.

    Images above `max_image_pixels` are bad samples, refused from their header. When the epoch's size comes
    from the shards' count files, a shard read in full that holds fewer samples than its file claims is
    named in a warning, and the shortfall of the epoch is summed up when it ends (the batch count stays).
    """

    def __init__(
        self,
        urls: str,
        transform: Callable,
        tokenizer: Callable,
        *,
        batch_size: int,
        num_samples: int | None,
        seed: int,
        epoch: int,
        rank: int,
        world_size: int,
        workers: int,
        resampled: bool,
        on_bad_sample: str,
        augment: Callable | None = None,
        pin_memory: bool = False,
        prefetch_factor: int = 2,
        finite: bool = False,
        max_image_pixels: int = DEFAULT_MAX_IMAGE_PIXELS,
        skip: int = 0,
        streams: list[int] | None = None,
    ) -> None:
        _check_arguments(batch_size, num_samples, rank, world_size, workers, on_bad_sample)
        check_max_pixels(max_image_pixels)
        if finite and resampled:
            raise ValueError("finite=True reads each sample once; it cannot be combined with resampled=True")
        if streams is not None and len(streams) != max(1, workers):
            raise ValueError(f"{len(streams)} stream positions for {max(1, workers)} data-loader workers")
        self.urls = urls
        self.transform = transform
        self.tokenizer = tokenizer
        self.augment = augment
        self.batch_size = batch_size
        self.seed, self.rank, self.world_size = seed, rank, world_size
        # Shared with the data-loader workers, which outlive an epoch: they read it when an epoch starts.
        self._epoch = multiprocessing.RawValue("q", epoch)
        self._loader: DataLoader | None = None
        self.resampled, self.finite, self.on_bad_sample, self.pin_memory = resampled, finite, on_bad_sample, pin_memory
        self.prefetch_factor = prefetch_factor
        self.max_image_pixels = max_image_pixels
        self.shards = expand_urls(urls)
        self.claims: dict[str, Claim] = {}  # only when the count comes from the files, to check them against
        if num_samples is None:
            self.claims = claimed_counts(self.shards) or {}
            num_samples = sum(self.claims[url].samples for url in self.shards) if self.claims else None
            if num_samples is None and not finite:
                raise DataError(
                    f"{urls}: cannot count the samples (no <shard>_stats.json from img2dataset and no sizes.json "
                    "next to the shards); pass --train-num-samples N"
                )
        self.num_samples = num_samples
        # Training steps per epoch; in finite mode only informative (0 when the count is unknown).
        self.batches_per_epoch = 0 if num_samples is None else num_samples // (batch_size * world_size)
        if not finite and self.batches_per_epoch == 0:
            raise ValueError(
                f"{urls}: {num_samples} samples are fewer than one step needs (batch-size {batch_size} x "
                f"{world_size} processes); lower --batch-size"
            )
        if not resampled:
            self._check_shard_count(len(self.shards), workers)
        self.rank_shards = _rank_shards(self.shards, seed, epoch, rank, world_size, resampled, finite)
        # Validation may use fewer shards than workers: the extra workers would have nothing to read.
        self.workers = min(workers, len(self.rank_shards)) if finite and not resampled else workers
        if not 0 <= skip <= self.batches_per_epoch:
            raise ValueError(f"cannot skip {skip} of the {self.batches_per_epoch} batches of an epoch")
        self.skip = skip
        # Per worker: raw samples taken from its shuffle buffer up to its last batch yielded here.
        self.positions = list(streams) if streams is not None else [0] * max(1, self.workers)

    @property
    def epoch(self) -> int:
        return self._epoch.value

    def set_epoch(self, epoch: int) -> None:
        """Make the next iteration the batches of `epoch`, with the same (persistent) data-loader workers."""
        self._epoch.value = epoch
        self.rank_shards = _rank_shards(
            self.shards, self.seed, epoch, self.rank, self.world_size, self.resampled, self.finite
        )
        self.skip = 0
        self.positions = [0] * max(1, self.workers)

    def _check_shard_count(self, shards: int, workers: int) -> None:
        needed = self.world_size if self.finite else self.world_size * max(1, workers)
        if shards >= needed:
            return
        if self.finite:
            raise DataError(
                f"{self.urls}: {shards} shards cannot be split over {self.world_size} processes; write the "
                f"validation data into at least {self.world_size} shards or evaluate it in one process"
            )
        fixes = [f"write the data into at least {needed} shards", "use --dataset-resampled"]
        if shards >= self.world_size:
            fixes.insert(0, f"lower --workers to {shards // self.world_size}")
        raise DataError(
            f"{self.urls}: {shards} shards cannot be split over {self.world_size} processes x {max(1, workers)} "
            f"data-loader workers (each needs one); {', '.join(fixes[:-1])} or {fixes[-1]}"
        )

    def __iter__(self) -> Iterator[PairBatch]:
        # Training keeps its workers for the whole run (starting them cost a second or more per epoch);
        # validation, and the rest of an epoch a resumed run starts part-way through, let them go.
        persistent = self.workers > 0 and not self.finite and self.skip == 0
        loader = self._loader if persistent else None
        if loader is None:
            loader = DataLoader(
                _ShardStream(self),
                batch_size=None,  # the workers batch
                num_workers=self.workers,
                pin_memory=self.pin_memory and not self.finite,
                persistent_workers=persistent,
                prefetch_factor=self.prefetch_factor if self.workers > 0 else None,
                # The loader draws its worker base seed from this, not from (and not advancing) the global RNG.
                generator=torch.Generator().manual_seed(sample_seed(self.seed, self.epoch, f"loader/{self.rank}")),
            )
            if persistent:
                self._loader = loader
        if self.finite:
            yield from self._rebatch(loader)
            return
        count = 0
        shortfalls: list[Shortfall] = []
        try:
            for item in loader:
                if isinstance(item, Shortfall):
                    self._name_shortfall(item)
                    shortfalls.append(item)
                    continue
                self.positions[item.worker] = item.position
                count += 1
                yield item.batch
        finally:  # also when the consumer stops at its last step and drops this generator
            if shortfalls:
                self._sum_up_shortfalls(shortfalls)
        if count != self.batches_per_epoch - self.skip:  # the workers' quotas add up to it; anything else is a bug
            raise RuntimeError(
                f"rank {self.rank} yielded {count} batches instead of {self.batches_per_epoch - self.skip}"
            )

    def _rebatch(self, loader: Iterable) -> Iterator[PairBatch]:
        """Batches of exactly batch_size across workers (each worker ends with a short one), the last
        possibly smaller; bad samples met after a worker's last good one are added to a neighbour."""
        chunks: list[PairBatch] = []
        rows, orphans = 0, 0
        for item in loader:
            if isinstance(item, Shortfall):
                self._name_shortfall(item)
                continue
            if isinstance(item, int):  # a worker's trailing bad-sample count
                orphans += item
                continue
            if orphans:
                item.skipped[0] += orphans
                orphans = 0
            chunks.append(item)
            rows += len(item)
            while rows > self.batch_size:  # keep >= 1 row back: a trailing count may still arrive
                batch, chunks = _split_rows(chunks, self.batch_size)
                rows -= self.batch_size
                yield self._pinned(batch)
        if rows:
            batch, _ = _split_rows(chunks, rows)
            batch.skipped[-1] += orphans
            yield self._pinned(batch)
        elif orphans:
            raise DataError(
                f"{self.urls}: none of the samples in the {len(self.rank_shards)} shards of rank {self.rank} is "
                f"usable ({orphans} bad)"
            )

    def _name_shortfall(self, shortfall: Shortfall) -> None:
        """One warning line per shard and run: the shard, what its count file claims, what it holds."""
        if shortfall.url in _NAMED_SHORTFALLS:
            return
        _NAMED_SHORTFALLS.add(shortfall.url)
        effect = (
            f"validation reads the {shortfall.held} it holds"
            if self.finite
            else "each epoch reads shards again to make up the difference"
        )
        log.warning(
            "%s: holds %d samples but %s claims %d; %s (correct the count, or pass --train-num-samples)",
            shortfall.url,
            shortfall.held,
            shortfall.claimed.source,
            shortfall.claimed.samples,
            effect,
        )

    def _sum_up_shortfalls(self, shortfalls: list[Shortfall]) -> None:
        """At the end of a training epoch: how many samples the short shards really held."""
        claimed = sum(item.claimed.samples for item in shortfalls)
        held = sum(item.held for item in shortfalls)
        where = f"rank {self.rank}, " if self.world_size > 1 else ""
        log.warning(
            "%sepoch %d: %d shard%s read in full held %d samples where the count files claim %d, so %d of the "
            "epoch's %d samples were re-reads",
            where,
            self.epoch + 1,
            len(shortfalls),
            "s" if len(shortfalls) > 1 else "",
            held,
            claimed,
            claimed - held,
            self.num_samples,
        )

    def _pinned(self, batch: PairBatch) -> PairBatch:
        if self.pin_memory and torch.cuda.is_available():
            return batch.pin_memory()
        return batch


class _StreamBatch(NamedTuple):
    """A training batch with the worker that made it and that worker's position (raw samples taken)."""

    batch: PairBatch
    worker: int
    position: int


class _ShardStream(IterableDataset):
    """What each data-loader worker (or the main process, with workers=0) runs: its shards to batches."""

    def __init__(self, batches: ShardBatches) -> None:
        super().__init__()
        self.all_shards = batches.shards
        self.world_size = batches.world_size
        self.shared_epoch = batches._epoch  # the epoch and this rank's shards are read when an epoch starts
        self.transform = batches.transform
        self.tokenizer = batches.tokenizer
        self.augment = batches.augment
        self.batch_size = batches.batch_size
        self.seed = batches.seed
        self.rank = batches.rank
        self.resampled = batches.resampled
        self.finite = batches.finite
        self.on_bad_sample = batches.on_bad_sample
        self.max_image_pixels = batches.max_image_pixels
        self.claims = {url: batches.claims[url] for url in batches.rank_shards if url in batches.claims}
        self.quota = None if batches.finite else batches.batches_per_epoch  # batches of this rank, all workers
        self.skip = batches.skip
        self.streams = list(batches.positions)

    def __iter__(self) -> Iterator[PairBatch | int | _StreamBatch]:
        self.epoch = self.shared_epoch.value  # a persistent worker's copy learns the new epoch here
        self.shards = _rank_shards(
            self.all_shards, self.seed, self.epoch, self.rank, self.world_size, self.resampled, self.finite
        )
        info = get_worker_info()
        loader_worker, workers = (info.id, info.num_workers) if info is not None else (0, 1)
        # The DataLoader asks its worker 0 first; that must be the worker whose batch is next in the epoch.
        worker = (loader_worker + self.skip) % workers
        return _Worker(self, worker, workers).batches()


class _Worker:
    """One worker's reading of its shards: raw samples -> seeded shuffle -> decode and check -> batches."""

    def __init__(self, stream: _ShardStream, worker: int, workers: int) -> None:
        self.stream = stream
        self.worker = worker
        self.name = f"rank {stream.rank}, data-loader worker {worker}"
        self.pool = stream.shards if stream.resampled else stream.shards[worker::workers]
        self.quota = None if stream.quota is None else _share(stream.quota, worker, workers)
        self.done = _share(stream.skip, worker, workers)  # batches made before a resume
        self.replay = stream.streams[worker]  # raw samples taken for them
        self.visits: Counter[str] = Counter()  # reads of each shard so far this epoch
        self.warnings = BadSampleWarnings(log)

    def batches(self) -> Iterator[PairBatch | int | _StreamBatch]:
        """Full batches up to the quota (training, with their positions) or until the shards end (finite:
        then the short last batch, or the trailing bad-sample count as a plain int when no good sample
        follows it)."""
        stream = self.stream
        if self.quota == self.done or not self.pool:
            return
        shuffle_rng = random.Random(sample_seed(stream.seed, stream.epoch, f"samples/{stream.rank}/{self.worker}"))
        rows: list[tuple[torch.Tensor, ...]] = []
        skipped: list[int] = []
        pending, produced, good, tried, taken = 0, self.done, self.done, set(), 0
        for shards in self._rounds():
            samples: Iterator[dict] = (sample for url in shards for sample in self._read_shard(url))
            if not stream.finite:
                samples = wds.shuffle(SHUFFLE_BUFFER, SHUFFLE_INITIAL, rng=shuffle_rng)(samples)
            for sample in samples:
                if "__shortfall__" in sample:
                    yield sample["__shortfall__"]
                    continue
                taken += 1
                if taken <= self.replay:  # went into a batch before the resume: read again, not decoded
                    continue
                row = self._prepare(sample)
                if row is None:
                    pending += 1
                    continue
                good += 1
                rows.append(row)
                skipped.append(pending)
                pending = 0
                if len(rows) == stream.batch_size:
                    batch = _collate(rows, skipped)
                    yield batch if stream.finite else _StreamBatch(batch, self.worker, taken)
                    rows, skipped = [], []
                    produced += 1
                    if produced == self.quota:
                        return
            tried.update(shards)
            if self.quota is not None and not good and len(tried) == len(set(self.pool)):
                raise DataError(
                    f"{self.name}: none of the samples in its {len(set(self.pool))} shards ({_first(self.pool)}) is "
                    f"usable ({pending} bad); check or remove these shards"
                )
        if rows:
            skipped[-1] += pending
            yield _collate(rows, skipped)
        elif pending:
            yield pending

    def _rounds(self) -> Iterator[list[str]]:
        """Lists of shards to read in turn: this worker's shards once (finite) or forever, or
        len(pool) draws with replacement at a time from this rank's and worker's own seeded stream."""
        stream = self.stream
        if stream.finite:
            yield list(self.pool)
            return
        if not stream.resampled:
            while True:
                yield list(self.pool)
        draws = wds.ResampledShards(
            self.pool,
            nshards=len(self.pool),
            seed=sample_seed(stream.seed, stream.epoch, f"resampled/{stream.rank}/{self.worker}"),
            worker_seed=_no_worker_seed,  # rank and worker are in the seed already
            deterministic=True,
        )
        while True:
            yield [shard["url"] for shard in draws]

    def _read_shard(self, url: str) -> Iterator[dict]:
        """Raw samples of one shard, then, if the tar is corrupt or truncated, one marker for it; or, after its
        first complete read, a marker carrying the Shortfall when it holds fewer samples than claimed."""
        visit = self.visits[url]
        self.visits[url] += 1
        errors: list[Exception] = []

        def stop_shard(error: Exception) -> bool:  # webdataset's handler protocol: False = stop this shard
            errors.append(error)
            return False

        last = None  # held back one step, so that in error mode the tar's problem is reported first
        held = 0
        for sample in wds.tarfile_samples([{"url": url}], handler=stop_shard):
            sample["__visit__"] = visit
            held += 1
            if last is not None:
                yield last
            last = sample
        problem = _tar_read_problem(errors[0]) if errors else _truncation(url)
        if problem:
            # The last sample may be a fragment cut by the damage: it is then counted as a bad sample too.
            where = f"{url}: {problem}" + (f" near sample {last['__key__']}" if last is not None else "")
            if self.stream.on_bad_sample == "error":
                raise BadSampleError(f"{where} {SKIP_HINT}")
        if last is not None:
            yield last
        if problem:
            yield {"__shard_error__": f"{where}; the rest of this shard is skipped", "__visit__": visit}
        elif visit == 0 and url in self.stream.claims and held < self.stream.claims[url].samples:
            yield {"__shortfall__": Shortfall(url, self.stream.claims[url], held), "__visit__": visit}

    def _prepare(self, sample: dict) -> tuple[torch.Tensor, ...] | None:
        """The tensors of one sample, or None when it is unusable (warned about on its shard's first read)."""
        first_read = sample["__visit__"] == 0
        if "__shard_error__" in sample:
            self._warn(sample["__shard_error__"], first_read)
            return None
        url, key = sample["__url__"], sample["__key__"]
        try:
            image, caption = _decode_sample(sample, self.stream.max_image_pixels)
        except BadSampleError as error:
            if self.stream.on_bad_sample == "error":
                raise type(error)(f"{url}: sample {key}: {error} {skip_hint(error)}") from None
            self._warn(f"{url}: sample {key}: {error}; skipped{kept_hint(error)}", first_read)
            return None
        stream = self.stream
        name = f"{url}/{key}" + (f"#{sample['__visit__']}" if sample["__visit__"] else "")
        with seeded_randomness(sample_seed(stream.seed, stream.epoch, name)):
            row = (stream.transform(image), stream.tokenizer([caption])[0])
            if stream.augment is not None:
                augmented_image, augmented_caption = stream.augment(image, caption)
                row += (stream.transform(augmented_image), stream.tokenizer([augmented_caption])[0])
        return row

    def _warn(self, message: str, first_read: bool) -> None:
        """The first few problems of this worker only: a broken shard must not flood the log."""
        if not first_read:
            return
        self.warnings.warn(f"{message} ({self.name})")


def _rank_shards(
    shards: list[str], seed: int, epoch: int, rank: int, world_size: int, resampled: bool, finite: bool
) -> list[str]:
    """The shards a rank reads in `epoch`: all of them as a pool to draw from (resampled), in file order
    (finite), or every world_size-th of the (seed, epoch) shuffle."""
    if resampled:
        return list(shards)
    order = list(shards)
    if not finite:
        random.Random(sample_seed(seed, epoch, "shards")).shuffle(order)
    return order[rank::world_size]


def _decode_sample(sample: dict, max_pixels: int) -> tuple[Image.Image, str]:
    """(RGB image, caption) of a raw sample; BadSampleError says what is wrong with it."""
    extension = next((extension for extension in IMAGE_EXTENSIONS if extension in sample), None)
    files = ", ".join(sorted(name for name in sample if not name.startswith("__"))) or "none"
    if extension is None:
        raise BadSampleError(f"no image file ({'/'.join(IMAGE_EXTENSIONS)}; files: {files})")
    if CAPTION_EXTENSION not in sample:
        raise BadSampleError(f"no caption file (.{CAPTION_EXTENSION}; files: {files})")
    try:
        caption = sample[CAPTION_EXTENSION].decode("utf-8")
    except UnicodeDecodeError:
        raise BadSampleError("caption is not valid UTF-8") from None
    problem = caption_problem(caption)
    if problem:
        raise BadSampleError(problem[1])
    data = sample[extension]
    if not data:
        raise BadSampleError(f"empty image file (0 bytes, .{extension})")
    try:
        return decode_rgb(io.BytesIO(data), max_pixels), caption
    except BadSampleError as error:
        raise type(error)(f"the .{extension} file: {error}") from None


def _share(total: int, worker: int, workers: int) -> int:
    """Worker `worker`'s part of `total` batches handed out round-robin from worker 0."""
    return total // workers + (worker < total % workers)


def _collate(rows: list[tuple[torch.Tensor, ...]], skipped: list[int]) -> PairBatch:
    return PairBatch.collate([(*row, count) for row, count in zip(rows, skipped, strict=True)])


def _split_rows(chunks: list[PairBatch], count: int) -> tuple[PairBatch, list[PairBatch]]:
    """The first `count` rows of the concatenated chunks, and the chunks that hold the rest."""
    merged = PairBatch.cat(chunks)
    rest = merged[count:]
    return merged[:count], ([rest] if len(rest) else [])


def _check_arguments(
    batch_size: int, num_samples: int | None, rank: int, world_size: int, workers: int, on_bad_sample: str
) -> None:
    if on_bad_sample not in BAD_SAMPLE_POLICIES:
        raise ValueError(f"on_bad_sample must be 'skip' or 'error', got {on_bad_sample!r}")
    if batch_size < 1:
        raise ValueError(f"batch_size must be at least 1, got {batch_size}")
    if num_samples is not None and num_samples < 1:
        raise ValueError(f"--train-num-samples must be at least 1, got {num_samples}")
    if world_size < 1 or not 0 <= rank < world_size:
        raise ValueError(f"rank {rank} is not in 0..world_size-1 (world_size {world_size})")
    if workers < 0:
        raise ValueError(f"workers must be 0 or more, got {workers}")


def _local_path(url: str) -> str | None:
    """The file path of a local shard URL (plain path or file:), None for remote ones (http:, s3:, pipe:...)."""
    if url.startswith("file:"):
        return re.sub(r"^file:(//)?", "", url)
    return None if _SCHEME.match(url) else url


def _expand_user(url: str) -> str:
    return os.path.expanduser(url) if url.startswith("~") else url


def _stats_path(path: str) -> str:
    """img2dataset's "<shard>_stats.json" beside a shard."""
    stem = next((path[: -len(ext)] for ext in SHARD_EXTENSIONS if path.endswith(ext)), os.path.splitext(path)[0])
    return f"{stem}_stats.json"


def _stats_successes(stats: str) -> int | None:
    """The "successes" count of a shard's stats file, if there is one."""
    if not os.path.isfile(stats):
        return None
    content = read_json(stats, fix="fix or delete the file")
    successes = content.get("successes") if isinstance(content, dict) else None
    if not isinstance(successes, int) or isinstance(successes, bool) or successes < 0:
        raise DataError(f"{stats}: no sample count in 'successes' (got {successes!r}); fix or delete the file")
    return successes


def _read_sizes_json(path: str) -> dict | None:
    if not os.path.isfile(path):
        return None
    sizes = read_json(path, fix="fix or delete the file")
    if not isinstance(sizes, dict):
        raise DataError(f'{path}: expected {{"00000.tar": count, ...}}, got a {type(sizes).__name__}; fix the file')
    return sizes


def _truncation(url: str) -> str | None:
    """Why a local .tar that read without error is still incomplete, or None.

    Python's tarfile stops silently at a header cut short, so a shard truncated at a member boundary
    would lose its tail unnoticed; a complete tar always ends with two zero blocks.
    """
    path = _local_path(url)
    if path is None or not path.endswith(".tar"):
        return None
    try:
        with open(path, "rb") as file:
            size = file.seek(0, os.SEEK_END)
            file.seek(max(0, size - TAR_END_BYTES))
            tail = file.read()
    except OSError as error:
        return f"cannot read the shard ({error.strerror or error})"
    if size < TAR_END_BYTES or tail.count(0) != len(tail):
        return "incomplete tar file (it lacks the end-of-archive blocks: truncated copy?)"
    return None


def _tar_read_problem(error: Exception) -> str:
    """'cannot read the tar (ReadError: unexpected end of data)': webdataset appends the stream to the message."""
    message = str(error.args[0]).split(" @ ")[0] if error.args else ""
    return f"cannot read the tar ({type(error).__name__}{': ' + message if message else ''})"


def _first(shards: list[str]) -> str:
    unique = list(dict.fromkeys(shards))
    return unique[0] + (f", ... {len(unique) - 1} more" if len(unique) > 1 else "")


def _no_worker_seed() -> int:
    return 0
