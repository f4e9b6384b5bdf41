"""default_collate, WorkerInfo and needle train's download_dataset, checked
with real values (the download against the local HTTP server fixture)."""

from __future__ import annotations

import numpy as np

from needle.data import DataLoader, Dataset, get_worker_info
from needle.data.data_basic import default_collate
from needle.data.datasets import ptb_dataset
from needle.data.workers import WorkerInfo
from needle.models.train_tasks import data_present, download_dataset


def test_default_collate_stacks_each_field_on_a_new_axis():
    samples = [(np.array([1.0, 2.0]), 3), (np.array([4.0, 5.0]), 6), (np.array([7.0, 8.0]), 9)]
    x, y = default_collate(samples)
    np.testing.assert_array_equal(x, [[1, 2], [4, 5], [7, 8]])
    np.testing.assert_array_equal(y, [3, 6, 9])
    assert x.shape == (3, 2) and y.shape == (3,)
    (only,) = default_collate([np.zeros((2, 2)), np.ones((2, 2))])  # single arrays: a 1-tuple
    assert only.shape == (2, 2, 2) and only[1].sum() == 4


class _WhoAmI(Dataset):
    def __len__(self):
        return 4

    def __getitem__(self, i):
        info = get_worker_info()
        return (np.array([float(isinstance(info, WorkerInfo)), info.id, info.num_workers,
                          float(info.dataset is not None and len(info.dataset) == 4)]),)


def test_worker_info_inside_workers():
    assert get_worker_info() is None
    rows = np.concatenate([b[0].numpy() for b in DataLoader(_WhoAmI(), batch_size=1, num_workers=2)])
    np.testing.assert_array_equal(rows[:, 0], 1.0)
    np.testing.assert_array_equal(rows[:, 1], [0, 1, 0, 1])  # batch b goes to worker b % 2
    np.testing.assert_array_equal(rows[:, 2], 2)
    np.testing.assert_array_equal(rows[:, 3], 1.0)
    info = WorkerInfo(1, 3, 42, None)
    assert (info.id, info.num_workers, info.seed) == (1, 3, 42)


def test_download_dataset_ptb_into_the_cache(tmp_path, serve_folder, monkeypatch):
    served = tmp_path / "served"
    served.mkdir()
    for n in ("train", "valid", "test"):
        (served / f"ptb.{n}.txt").write_text(f"the {n} words\n")
    monkeypatch.setenv("NEEDLE_CACHE_DIR", str(tmp_path / "cache"))
    with serve_folder(served) as base:
        monkeypatch.setattr(ptb_dataset, "PTB_URLS", {f"{n}.txt": f"{base}/ptb.{n}.txt"
                                                      for n in ("train", "valid", "test")})
        assert not data_present("ptb", str(tmp_path / "cache" / "ptb"))
        folder = download_dataset("ptb")
    assert folder == str(tmp_path / "cache" / "ptb")
    assert data_present("ptb", folder)
    assert (tmp_path / "cache" / "ptb" / "train.txt").read_text() == "the train words\n"
