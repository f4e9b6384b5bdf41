"""DataLoader's PyTorch-style options: num_workers (worker processes), drop_last,
collate_fn, pin_memory -- batches equal to the in-process loader's, per-worker
seeds, errors, and no worker left behind after an error, an abandoned epoch,
Ctrl-C or a killed main process."""

import os
import signal
import subprocess
import sys
import textwrap
import time

import numpy as np
import pytest

import needle as ndl
from needle.data import DataLoader, DataLoaderWorkerError, Dataset, NDArrayDataset, get_worker_info


def _alive(pid: int) -> bool:
    """True while ``pid`` runs (a zombie waiting to be reaped counts as gone)."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except FileNotFoundError:
        return False


def _wait_gone(pids, limit=20.0):
    end = time.monotonic() + limit
    while time.monotonic() < end and any(_alive(p) for p in pids):
        time.sleep(0.05)
    return [p for p in pids if _alive(p)]


def _arrays(batches):
    return [tuple(t.numpy() for t in b) for b in batches]


class Squares(Dataset):
    """Per-sample dataset (no index arrays): the loader calls __getitem__ once per sample."""

    def __init__(self, n, fail_at=None, exit_at=None):
        super().__init__()
        self.n, self.fail_at, self.exit_at = n, fail_at, exit_at

    def __len__(self):
        return self.n

    def __getitem__(self, i):
        if i == self.fail_at:
            raise ValueError(f"sample {i} is broken")
        if i == self.exit_at:
            os._exit(3)
        return np.full((2, 2), i * i, dtype=np.float32), i % 5


class Noise(Dataset):
    """A random 'transform' and the id of the worker that fetched the sample."""

    def __len__(self):
        return 16

    def __getitem__(self, i):
        info = get_worker_info()
        return np.array([np.random.rand()]), -1 if info is None else info.id


@pytest.mark.parametrize("dataset", [Squares(23), NDArrayDataset(np.random.randn(23, 3), np.arange(23) % 4)])
@pytest.mark.parametrize("shuffle", [False, True])
def test_workers_give_the_same_batches_in_order(dataset, shuffle):
    np.random.seed(0)
    ref = _arrays(DataLoader(dataset, batch_size=4, shuffle=shuffle))
    np.random.seed(0)
    loader = DataLoader(dataset, batch_size=4, shuffle=shuffle, num_workers=2)
    got = _arrays(loader)
    assert len(got) == len(ref) == 6
    for a, b in zip(got, ref):
        for x, y in zip(a, b):
            np.testing.assert_array_equal(x, y)
    assert loader._pool is None  # stopped at the end of the epoch


def test_integer_labels_stay_float32_with_workers():
    x, y = next(iter(DataLoader(Squares(8), batch_size=8, num_workers=1)))
    assert x.dtype == "float32" and y.dtype == "float32"
    np.testing.assert_array_equal(y.numpy(), np.arange(8) % 5)


def test_drop_last():
    loader = DataLoader(Squares(10), batch_size=4, drop_last=True)
    sizes = [b[0].shape[0] for b in loader]
    assert sizes == [4, 4] and len(loader) == 2
    assert [b[0].shape[0] for b in DataLoader(Squares(10), batch_size=4, drop_last=True, num_workers=2)] == [4, 4]
    assert [b[0].shape[0] for b in DataLoader(Squares(8), batch_size=4, drop_last=True)] == [4, 4]


@pytest.mark.parametrize("workers", [0, 2])
def test_collate_fn_result_is_wrapped(workers):
    def collate(samples):
        xs, ys = zip(*samples)
        return {"x": np.stack(xs).sum(axis=(1, 2)), "y": list(ys), "n": len(samples)}

    batches = list(DataLoader(Squares(6), batch_size=4, collate_fn=collate, num_workers=workers, pin_memory=True))
    assert [b["n"] for b in batches] == [4, 2]
    assert isinstance(batches[0]["x"], ndl.Tensor) and batches[0]["x"].dtype == "float32"
    np.testing.assert_array_equal(batches[0]["x"].numpy(), [0, 4, 16, 36])
    assert batches[1]["y"] == [4, 0]


def test_each_worker_gets_its_own_seed_and_it_repeats():
    def run():
        np.random.seed(7)
        return _arrays(DataLoader(Noise(), batch_size=2, num_workers=2))

    first, second = run(), run()
    for a, b in zip(first, second):
        np.testing.assert_array_equal(a[0], b[0])
    # round robin: batch b from worker b % 2, each worker's stream its own
    assert [int(b[1][0]) for b in first] == [0, 1] * 4
    values = np.concatenate([b[0] for b in first]).ravel()
    assert len(set(values.tolist())) == len(values)
    np.random.seed(7)
    loader = DataLoader(Noise(), batch_size=2, num_workers=2)
    epoch1, epoch2 = _arrays(loader), _arrays(loader)
    assert not np.array_equal(epoch1[0][0], epoch2[0][0])


def test_worker_init_fn_runs_in_each_worker():
    def init(worker_id):
        np.random.seed(1000 + worker_id)

    np.random.seed(0)
    batches = _arrays(DataLoader(Noise(), batch_size=2, num_workers=2, worker_init_fn=init))
    np.testing.assert_array_equal(batches[0][0].ravel(), np.random.RandomState(1000).rand(2).astype(np.float32))
    np.testing.assert_array_equal(batches[1][0].ravel(), np.random.RandomState(1001).rand(2).astype(np.float32))


def _bad_init(worker_id):
    raise KeyError(f"no shard for worker {worker_id}")


def test_failing_worker_init_fn_is_reported():
    with pytest.raises(KeyError, match=r"raised KeyError in worker_init_fn(.|\n)*no shard for worker"):
        list(DataLoader(Squares(8), batch_size=2, num_workers=2, worker_init_fn=_bad_init))


def test_error_in_a_worker_is_reraised_with_its_traceback_and_workers_stop():
    loader = DataLoader(Squares(20, fail_at=9), batch_size=4, num_workers=2)
    it = iter(loader)
    pids = loader._pool.pids
    next(it), next(it)
    with pytest.raises(ValueError, match=r"DataLoader worker 0 \(pid \d+\) raised ValueError on batch 2") as info:
        next(it)
    assert "sample 9 is broken" in str(info.value) and "Traceback" in str(info.value)
    assert _wait_gone(pids) == []
    with pytest.raises(StopIteration):  # the epoch ended with the error; iter() starts the next one
        next(it)
    assert len(list(DataLoader(Squares(20), batch_size=4, num_workers=2))) == 5


def test_a_worker_that_dies_is_reported():
    loader = DataLoader(Squares(12, exit_at=5), batch_size=2, num_workers=2)
    with pytest.raises(DataLoaderWorkerError, match=r"worker 0 \(pid \d+\) exited with code 3") as info:
        list(loader)
    assert isinstance(info.value, RuntimeError)


def test_abandoned_epoch_stops_its_workers():
    loader = DataLoader(Squares(40), batch_size=2, num_workers=2)
    next(iter(loader))
    old = loader._pool.pids
    next(iter(loader))  # a new epoch replaces the old workers
    assert _wait_gone(old) == []
    new = loader._pool.pids
    del loader
    assert _wait_gone(new) == []


def test_spawn_context_works_with_a_picklable_dataset():
    ds = NDArrayDataset(np.arange(10, dtype=np.float32).reshape(10, 1))
    got = np.concatenate([b[0].numpy() for b in DataLoader(ds, batch_size=3, num_workers=2,
                                                            multiprocessing_context="spawn")])
    np.testing.assert_array_equal(got.ravel(), np.arange(10))


def test_bad_options_are_refused():
    with pytest.raises(ValueError, match="num_workers must be an integer >= 0, got -1"):
        DataLoader(Squares(3), num_workers=-1)
    with pytest.raises(ValueError, match="prefetch_factor"):
        DataLoader(Squares(3), prefetch_factor=0)
    with pytest.raises(TypeError, match="collate_fn must be callable"):
        DataLoader(Squares(3), collate_fn=3)


_SCRIPT = textwrap.dedent("""
    import signal, sys, time
    # a terminal's Ctrl-C raises KeyboardInterrupt; a process started from a background
    # job (`cmd &` in a script, as scripts/mutation.sh runs) inherits SIGINT ignored
    # and Python then installs no handler, so the test would see no interrupt at all
    signal.signal(signal.SIGINT, signal.default_int_handler)
    import numpy as np
    from needle.data import DataLoader, Dataset

    class Slow(Dataset):
        def __len__(self):
            return 10000
        def __getitem__(self, i):
            time.sleep(0.01)
            return np.zeros(3, np.float32), 0

    loader = DataLoader(Slow(), batch_size=4, num_workers=2)
    it = iter(loader)
    next(it)
    print(*loader._pool.pids, flush=True)
    while True:  # not `for _ in it`: that calls iter() again, which starts a new epoch (and new workers)
        next(it)
""")


@pytest.mark.parametrize("how", ["sigint-group", "sigint-main", "sigkill-main"])
def test_no_orphan_workers_after_ctrl_c_or_kill(how):
    proc = subprocess.Popen([sys.executable, "-c", _SCRIPT], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True, start_new_session=True)
    try:
        pids = [int(p) for p in proc.stdout.readline().split()]
        assert len(pids) == 2 and all(_alive(p) for p in pids)
        if how == "sigint-group":  # what a terminal's Ctrl-C does
            os.killpg(proc.pid, signal.SIGINT)
        elif how == "sigint-main":
            os.kill(proc.pid, signal.SIGINT)
        else:
            os.kill(proc.pid, signal.SIGKILL)
        _, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
    if how == "sigkill-main":
        assert proc.returncode == -signal.SIGKILL
    else:
        assert "KeyboardInterrupt" in err and proc.returncode != 0
        # only the main process reports it: workers ignore SIGINT (a dying worker prints "Process <name>:")
        assert "DataLoader-worker" not in err, err
    left = _wait_gone(pids)
    for pid in left:  # do not leave them running when the check fails
        os.kill(pid, signal.SIGKILL)
    assert left == [], "worker processes outlived the main process"


_OPENMP_AFTER_FORK = textwrap.dedent("""
    import numpy as np
    import needle as ndl
    from needle.data import DataLoader, Dataset

    a = ndl.Tensor(np.random.randn(1024, 1024).astype(np.float32), device=ndl.cpu())
    (a @ a).numpy()  # the parent runs OpenMP parallel regions before forking

    class OnCpu(Dataset):  # a transform that uses the cpu backend inside the worker
        def __len__(self):
            return 8
        def __getitem__(self, i):
            t = ndl.Tensor(np.full((256, 256), i, np.float32), device=ndl.cpu())
            return (t @ t).numpy()[:1, 0]

    print(np.concatenate([b[0].numpy() for b in DataLoader(OnCpu(), batch_size=2, num_workers=2)]).ravel())
""")


def test_cpu_backend_kernels_run_in_forked_workers():
    if not ndl.cpu().enabled():
        pytest.skip("the cpu backend is not built here")
    proc = subprocess.Popen([sys.executable, "-c", _OPENMP_AFTER_FORK], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, start_new_session=True)
    try:  # before the fix this hung (libgomp's pool does not survive fork): the timeout reports it
        out, err = proc.communicate(timeout=120)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)  # the main process and its stuck workers
        proc.communicate()
        pytest.fail("a DataLoader worker hung in a cpu-backend kernel after fork")
    assert proc.returncode == 0, err
    expected = [256.0 * i * i for i in range(8)]
    assert [float(v) for v in out.strip(" []\n").split()] == expected
