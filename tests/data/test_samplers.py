"""DistributedSampler and DataLoader(sampler=...)."""

import numpy as np
import pytest

import needle as ndl
from needle.data import DataLoader, DistributedSampler, NDArrayDataset
from needle.errors import DistributedConfigError


def ds(n):
    return NDArrayDataset(np.arange(n, dtype=np.float32)[:, None], np.arange(n))


@pytest.mark.parametrize("n,world", [(10, 2), (10, 3), (7, 4), (2, 5), (12, 4)])
@pytest.mark.parametrize("shuffle", [False, True])
def test_ranks_partition_the_padded_index_list(n, world, shuffle):
    parts = [list(DistributedSampler(ds(n), world, r, shuffle=shuffle, seed=3)) for r in range(world)]
    per = -(-n // world)
    assert all(len(p) == per for p in parts)
    together = sorted(i for p in parts for i in p)
    # every index at least once; the padding repeats the head of the (shuffled) list, nothing else
    assert set(together) == set(range(n))
    assert len(together) == per * world
    order = np.random.default_rng(3).permutation(n) if shuffle else np.arange(n)
    padded = np.resize(order, per * world)
    for r, p in enumerate(parts):
        assert p == padded[r::world].tolist()


def test_no_overlap_when_divisible_and_drop_last():
    parts = [set(DistributedSampler(ds(10), 3, r, drop_last=True)) for r in range(3)]
    assert all(len(p) == 3 for p in parts)
    assert not (parts[0] & parts[1] or parts[0] & parts[2] or parts[1] & parts[2])
    assert len(set().union(*parts)) == 9


def test_set_epoch_reshuffles_the_same_way_on_every_rank():
    samplers = [DistributedSampler(ds(20), 2, r, seed=7) for r in range(2)]
    first = [list(s) for s in samplers]
    for s in samplers:
        s.set_epoch(1)
    second = [list(s) for s in samplers]
    assert first != second
    assert sorted(first[0] + first[1]) == sorted(second[0] + second[1]) == list(range(20))
    assert list(samplers[0]) == second[0]  # deterministic per epoch


def test_sampler_does_not_touch_the_global_numpy_rng():
    np.random.seed(11)
    expected = np.random.rand()
    np.random.seed(11)
    list(DistributedSampler(ds(10), 2, 0, shuffle=True))
    assert np.random.rand() == expected


@pytest.mark.parametrize("kwargs,message", [
    ({"num_replicas": 0, "rank": 0}, "num_replicas must be an integer >= 1, got 0"),
    ({"num_replicas": 2, "rank": 2}, r"rank must be in \[0, num_replicas=2\), got 2"),
    ({"num_replicas": 2, "rank": -1}, "rank must be an integer >= 0, got -1"),
    ({"num_replicas": 2.5, "rank": 0}, "num_replicas must be an integer"),
    ({"num_replicas": 2, "rank": 0, "seed": -1}, "seed must be an integer >= 0"),
])
def test_bad_sampler_arguments(kwargs, message):
    with pytest.raises(DistributedConfigError, match=message):
        DistributedSampler(ds(4), **kwargs)
    assert issubclass(DistributedConfigError, ValueError)


def test_sampler_defaults_need_a_process_group():
    import needle.distributed as dist
    dist.destroy_process_group()
    with pytest.raises(DistributedConfigError, match="init_process_group"):
        DistributedSampler(ds(4))


def test_dataloader_with_sampler_batches_the_rank_share():
    s = DistributedSampler(ds(10), 2, 1, shuffle=True, seed=0)
    loader = DataLoader(ds(10), 2, sampler=s)
    assert len(loader) == 3
    got = [b[0].numpy().ravel().astype(int).tolist() for b in loader]
    assert sum(got, []) == list(s)
    s.set_epoch(1)
    assert sum([b[0].numpy().ravel().astype(int).tolist() for b in loader], []) == list(s)


def test_dataloader_sampler_and_shuffle_exclude_each_other():
    with pytest.raises(ValueError, match="sampler and shuffle=True exclude each other"):
        DataLoader(ds(4), 2, shuffle=True, sampler=DistributedSampler(ds(4), 1, 0))


def test_dataloader_without_sampler_keeps_the_course_rng_calls():
    """One np.random.permutation(len) per __iter__ with shuffle, none otherwise."""
    np.random.seed(4)
    loader = DataLoader(ds(10), 3, shuffle=True)
    order = np.concatenate([b[1].numpy() for b in loader]).astype(int)
    np.random.seed(4)
    assert order.tolist() == np.random.permutation(10).tolist()
    np.random.seed(4)
    list(DataLoader(ds(10), 3))
    assert np.random.rand() == np.random.RandomState(4).rand()
