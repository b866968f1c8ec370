# ruff: noqa: NPY002  (these tests exercise numpy's global generator on purpose)
import random

import numpy as np
import torch
from engine_toys import ToyDataset, collate

from structvision.engine.data import StreamBatchSampler, build_train_loader, sample_seed


def _sampler(**overrides):
    kwargs = dict(
        dataset_size=5,
        batch_size=2,
        world_size=1,
        rank=0,
        seed=7,
        start_micro_step=0,
        num_micro_steps=5,
    )
    return StreamBatchSampler(**{**kwargs, **overrides})


def _indices(sampler):
    return [[index for index, _ in batch] for batch in sampler]


def test_stream_is_concatenated_epoch_permutations():
    expected = torch.cat(
        [torch.randperm(5, generator=torch.Generator().manual_seed(7 + e)) for e in range(2)]
    ).tolist()
    flat = [index for batch in _indices(_sampler()) for index in batch]
    assert flat == expected  # 5 batches of 2 = two epochs, batches straddle the boundary


def test_ranks_take_disjoint_parts_of_the_global_batch():
    single = _indices(_sampler(batch_size=4, num_micro_steps=6))
    rank0 = _indices(_sampler(world_size=2, rank=0, num_micro_steps=6))
    rank1 = _indices(_sampler(world_size=2, rank=1, num_micro_steps=6))
    for whole, part0, part1 in zip(single, rank0, rank1, strict=True):
        assert part0 + part1 == whole


def test_resumed_sampler_continues_the_stream():
    full = list(_sampler(num_micro_steps=9))
    resumed = list(_sampler(start_micro_step=4, num_micro_steps=5))
    assert resumed == full[4:]


def test_sample_seeds_differ_per_position_and_seed():
    seeds = {sample_seed(seed=s, position=p) for s in range(3) for p in range(1000)}
    assert len(seeds) == 3000
    assert all(0 <= s < 2**63 for s in seeds)


def _batches(num_workers):
    loader = build_train_loader(
        dataset=ToyDataset(size=10),
        collate_fn=collate,
        batch_size=3,
        world_size=1,
        rank=0,
        seed=1,
        start_micro_step=0,
        num_micro_steps=6,
        num_workers=num_workers,
    )
    return list(loader)


def test_augmentation_does_not_depend_on_workers_and_leaves_global_rng_alone():
    torch.manual_seed(123)
    random.seed(123)
    np.random.seed(123)
    serial = _batches(0)
    after = (torch.rand(3), random.random(), np.random.rand())
    torch.manual_seed(123)
    random.seed(123)
    np.random.seed(123)
    expected_after = (torch.rand(3), random.random(), np.random.rand())
    assert torch.equal(after[0], expected_after[0]) and after[1:] == expected_after[1:]

    parallel = _batches(2)
    for (images_a, targets_a), (images_b, targets_b) in zip(serial, parallel, strict=True):
        assert all(torch.equal(a, b) for a, b in zip(images_a, images_b, strict=True))
        assert [int(t["image_id"]) for t in targets_a] == [int(t["image_id"]) for t in targets_b]
    # the same image at two stream positions gets two different augmentations
    first = {int(t["image_id"]): img for img, t in zip(serial[0][0], serial[0][1], strict=True)}
    for images, targets in serial[3:]:  # positions 9.. are in the second epoch
        for image, target in zip(images, targets, strict=True):
            if int(target["image_id"]) in first:
                assert not torch.equal(image, first[int(target["image_id"])])
