"""The speed options and what measures them: kept data-loader workers, --precision auto, the fused
optimizer and --compile (against eager)."""

from __future__ import annotations

import copy
import io

import numpy as np
import pytest
import torch
import webdataset as wds
from PIL import Image
from torch.utils.data import DistributedSampler

from cyclip.config import TrainConfig
from cyclip.data import ImageCaptionDataset, write_digits_demo
from cyclip.data.loading import PairBatches
from cyclip.data.seeding import SeededSamples
from cyclip.data.shards import ShardBatches
from cyclip.losses import cyclip_loss
from cyclip.models import create_model
from cyclip.runtime import resolve_precision
from cyclip.train import build_optimizer
from tests.helpers.stand_ins import CharTokenizer, to_tensor


@pytest.fixture(scope="module")
def digits(tmp_path_factory):
    """The demo's digits data with a 97-row training CSV: 6 batches of 16."""
    data = write_digits_demo(tmp_path_factory.mktemp("digits"), seed=0)
    small = data.train_csv.with_name("small.csv")
    small.write_text("\n".join(data.train_csv.read_text().splitlines()[:98]) + "\n")
    return data, small


def test_csv_loader_keeps_its_workers_and_draws_each_epoch_under_its_own_seeds(digits):
    _, small = digits
    config = TrainConfig(train_data=str(small), batch_size=16, workers=2, seed=5)
    batches = PairBatches(str(small), to_tensor, CharTokenizer(), config, torch.device("cpu"), train=True)
    pairs = ImageCaptionDataset(
        small,
        to_tensor,
        CharTokenizer(),
        image_key="filepath",
        caption_key="title",
        separator=",",
        on_bad_sample="skip",
    )
    reference = SeededSamples(pairs, seed=5)
    loaders = set()
    for epoch in (0, 1):
        loader = batches.epoch(epoch)
        loaders.add(id(loader))
        got = list(loader)
        # The documented order: the distributed sampler's permutation of (seed, epoch), cut into full batches.
        sampler = DistributedSampler(reference, num_replicas=1, rank=0, shuffle=True, seed=5, drop_last=True)
        sampler.set_epoch(epoch)
        order = list(sampler)
        assert len(got) == len(order) // 16 == 6
        for number, batch in enumerate(got):
            rows = [reference[(epoch, index)] for index in order[16 * number : 16 * (number + 1)]]
            assert torch.equal(batch.images, torch.stack([row[0] for row in rows]))
            assert torch.equal(batch.texts, torch.stack([row[1] for row in rows]))
            assert batch.skipped.tolist() == [0] * 16
    assert len(loaders) == 1 and loader.persistent_workers and loader.prefetch_factor == 2


def _write_shards(folder, shards: int = 4, per_shard: int = 12) -> str:
    """PNG + caption samples whose pixel value is their number, so batches can be told apart."""
    for shard in range(shards):
        with wds.TarWriter(str(folder / f"{shard:05d}.tar")) as sink:
            for index in range(per_shard):
                buffer = io.BytesIO()
                Image.fromarray(np.full((4, 4, 3), shard * per_shard + index, dtype=np.uint8)).save(buffer, "PNG")
                sink.write({"__key__": f"{shard}-{index}", "png": buffer.getvalue(), "txt": f"caption {index}"})
    return str(folder / f"{{00000..{shards - 1:05d}}}.tar")


def test_shard_loader_keeps_its_workers_and_gives_each_epoch_the_batches_of_a_fresh_loader(tmp_path):
    pattern = _write_shards(tmp_path)
    options = dict(
        batch_size=4, num_samples=48, seed=3, rank=0, world_size=1, workers=2, resampled=False, on_bad_sample="skip"
    )
    kept = ShardBatches(pattern, to_tensor, CharTokenizer(), epoch=0, **options)
    epochs = []
    for epoch in (0, 1, 2):
        kept.set_epoch(epoch)
        got = list(kept)
        fresh = list(ShardBatches(pattern, to_tensor, CharTokenizer(), epoch=epoch, **options))
        assert len(got) == len(fresh) == 12
        for ours, theirs in zip(got, fresh, strict=True):
            assert torch.equal(ours.images, theirs.images) and torch.equal(ours.texts, theirs.texts)
            assert torch.equal(ours.skipped, theirs.skipped)
        epochs.append(torch.cat([batch.images[:, 0, 0, 0] for batch in got]))
    assert not torch.equal(epochs[0], epochs[1]) and not torch.equal(epochs[1], epochs[2])
    assert kept._loader is not None and kept._loader.persistent_workers


def test_persistent_workers_leave_the_global_random_state_alone(digits):
    _, small = digits
    config = TrainConfig(train_data=str(small), batch_size=16, workers=1)
    batches = PairBatches(str(small), to_tensor, CharTokenizer(), config, torch.device("cpu"), train=True)
    state = torch.get_rng_state()
    next(iter(batches.epoch(0)))
    assert torch.equal(torch.get_rng_state(), state)  # a resumed run and a continuous one see the same stream


def test_precision_auto_is_fp32_on_cpu_and_explicit_choices_stay():
    assert resolve_precision("auto", torch.device("cpu")) == "fp32"
    assert resolve_precision("bf16", torch.device("cpu")) == "bf16"
    assert TrainConfig().precision == "auto"


def test_adamw_uses_the_fused_kernel_on_cpu():
    model, *_ = create_model("cyclip-rn-tiny")
    optimizer = build_optimizer(model, TrainConfig())
    assert all(group["fused"] for group in optimizer.param_groups)


@pytest.mark.slow
def test_compiled_model_gives_the_eager_loss_and_gradients():
    torch.manual_seed(0)
    eager, *_ = create_model("cyclip-rn-tiny")
    compiled = copy.deepcopy(eager)
    compiled.compile()
    generator = torch.Generator().manual_seed(1)
    images = torch.randn(8, 3, 64, 64, generator=generator)
    tokens = torch.randint(1, 49407, (8, 32), generator=generator)
    losses = []
    for model in (eager, compiled):
        image_features, text_features, _ = model(images, tokens)
        output = cyclip_loss(image_features, text_features, model.logit_scale, 0.25, 0.25)
        output.total.backward()
        losses.append(torch.stack(list(output)).detach())
    torch.testing.assert_close(losses[1], losses[0], rtol=1e-4, atol=1e-5)
    assert list(compiled.state_dict()) == list(eager.state_dict())  # checkpoints keep their keys
    for (name, reference), (_, parameter) in zip(eager.named_parameters(), compiled.named_parameters(), strict=True):
        torch.testing.assert_close(parameter.grad, reference.grad, rtol=1e-3, atol=1e-5, msg=name)
