"""needle.distributed with two real ranks (``needle launch -n 2``, i.e. MPICH's
mpiexec from the ``[mpi]`` extra) and in a world of one.

Every multi-process run has a timeout from pytest (subprocess), so a hang
fails the test instead of stalling the suite."""

import json
import os
import subprocess
import sys
import time

import numpy as np
import pytest

import needle as ndl
import needle.distributed as dist
from needle.errors import DistributedConfigError, DistributedError

HERE = os.path.dirname(os.path.abspath(__file__))
NEEDLE = [sys.executable, "-m", "needle.cli"]


def _has_mpi():
    try:
        import mpi4py  # noqa: F401
        from needle.distributed.launch import find_mpiexec
        find_mpiexec()
    except Exception:  # noqa: BLE001
        return False
    return True


needs_mpi = pytest.mark.skipif(not _has_mpi(), reason="mpi4py + mpiexec not installed (pip install 'needle-dl[mpi]')")


def launch(*args, timeout=60, env=None):
    """``needle launch -n 2 ...`` -> CompletedProcess; a hang fails after ``timeout``."""
    full_env = dict(os.environ, **(env or {}))
    full_env.pop("NEEDLE_DIST_TIMEOUT", None)
    return subprocess.run(NEEDLE + ["launch", "-n", "2", *args], capture_output=True, text=True,
                          timeout=timeout, env=full_env)


# ---------------------------------------------------------------------- #
# two ranks: DDP, collectives (one launch, checked by several tests)
# ---------------------------------------------------------------------- #
@pytest.fixture(scope="module")
def ddp_results(tmp_path_factory):
    out = tmp_path_factory.mktemp("ddp")
    proc = launch(os.path.join(HERE, "ddp_worker.py"), str(out), timeout=120)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return [json.loads((out / f"rank{r}.json").read_text()) for r in range(2)]


@needs_mpi
def test_two_ranks_run_on_mpi(ddp_results):
    assert [(r["rank"], r["world"], r["backend"]) for r in ddp_results] == [(0, 2, "mpi"), (1, 2, "mpi")]


@needs_mpi
@pytest.mark.parametrize("case,tol", [("mlp64", 1e-6), ("mlp32", 1e-5), ("cnn64", 1e-6), ("cnn32", 1e-5)])
def test_ddp_gradients_equal_full_batch_gradients(ddp_results, case, tol):
    for r in ddp_results:
        assert r[case]["max_grad_diff"] <= tol, (case, r["rank"], r[case])
        assert r[case]["grad_dtype"] == ("float64" if case.endswith("64") else "float32")


@needs_mpi
@pytest.mark.parametrize("case", ["syncbn_mlp64", "syncbn_cnn64", "syncbn_mlp64_large_mean"])
def test_sync_batchnorm_gives_the_full_batch_gradients_and_statistics(ddp_results, case):
    for r in ddp_results:
        # relative: inputs around 1e4 make the first layer's gradients large
        assert r[case]["max_grad_rel_diff"] <= 1e-7, r[case]
        assert r[case]["running_var_diff"] <= 1e-9, r[case]
        assert r[case]["running_mean_diff"] <= 1e-9 and r[case]["running_mean_moved"] > 1e-3, r[case]


@needs_mpi
@pytest.mark.parametrize("case", ["syncbn_wrong_channels", "syncbn_3d"])
def test_sync_batchnorm_rejects_other_shapes_on_every_rank(ddp_results, case):
    for r in ddp_results:
        assert r[case].startswith("SyncBatchNorm(3): expected (batch, 3) or NCHW input"), r[case]


@needs_mpi
@pytest.mark.parametrize("case", ["mlp64", "cnn64"])
def test_rank0_initial_parameters_reach_every_rank(ddp_results, case):
    r0, r1 = ddp_results
    assert r0[case]["params_equal_rank0_init"] and r1[case]["params_equal_rank0_init"]
    assert not r0[case]["init_changed"] and r1[case]["init_changed"]  # rank 1 really started elsewhere


@needs_mpi
def test_small_buckets_make_several_allreduces(ddp_results):
    assert ddp_results[0]["cnn64"]["buckets"] == [1, 1, 1, 1, 2]  # reverse order, bias then weight...
    assert ddp_results[0]["mlp64"]["buckets"] == [6]


@needs_mpi
def test_no_sync_accumulates_then_reduces_the_sum(ddp_results):
    for r in ddp_results:
        assert r["no_sync"]["max_diff_vs_2x_full"] <= 1e-12
        assert r["no_sync"]["local_differs_across_ranks"]  # no communication inside no_sync


@needs_mpi
def test_collectives_values(ddp_results):
    for r in ddp_results:
        assert r["sum"] == [0.0, 3.0, 6.0]
        assert r["avg"] == [0.0, 1.5, 3.0]
        assert r["max_ndarray"] == [1.0, 0.0, 5.0]
        assert r["broadcast_src1"] == [[8.0, 8.0], [8.0, 8.0]]


@needs_mpi
def test_mismatched_shapes_raise_on_every_rank(ddp_results):
    for r in ddp_results:
        assert "rank 0: all_reduce(op=sum) (3,) float64" in r["mismatch"]
        assert "rank 1: all_reduce(op=sum) (4,) float64" in r["mismatch"]


def test_mismatched_op_call_source_or_dtype_raise_on_every_rank(ddp_results):
    """MPI itself reduces these without an error: the check must catch them."""
    for r in ddp_results:
        assert "rank 0: all_reduce(op=sum)" in r["mismatch_op"] and "rank 1: all_reduce(op=max)" in r["mismatch_op"]
        assert "rank 0: all_reduce(op=sum)" in r["mismatch_call"] and "rank 1: broadcast(src=0)" in r["mismatch_call"]
        assert "rank 0: broadcast(src=0)" in r["mismatch_src"] and "rank 1: broadcast(src=1)" in r["mismatch_src"]
        assert "(3,) float32" in r["mismatch_dtype"] and "(3,) float64" in r["mismatch_dtype"]
        assert r["after_mismatch"] == [3.0, 3.0]


@needs_mpi
def test_batchnorm_buffers_follow_rank0_each_forward(ddp_results):
    assert ddp_results[0]["bn_buffers_differ_after_local_update"]
    assert ddp_results[0]["bn_buffers_equal_after_broadcast"]


@needs_mpi
def test_forward_in_eval_mode_of_the_wrapped_module_communicates_nothing(ddp_results):
    """Regression: DDP looked at its own .training; needle train's rank 0 evaluating
    alone then waited for a broadcast no other rank made."""
    assert [r["eval_forward_collectives"] for r in ddp_results] == [0, 0]


# ---------------------------------------------------------------------- #
# two ranks: failures end the job with a message, never a hang
# ---------------------------------------------------------------------- #
@needs_mpi
def test_exception_on_rank1_ends_both_ranks_with_its_message():
    start = time.monotonic()
    proc = launch(os.path.join(HERE, "fail_worker.py"), "raise", timeout=40)
    assert proc.returncode != 0
    assert "rank one's own message: bad batch 17" in proc.stderr
    assert "uncaught exception on rank 1 of 2" in proc.stderr
    assert "finished" not in proc.stdout
    assert time.monotonic() - start < 40


@needs_mpi
def test_collective_timeout_names_the_rank_that_did_not_arrive():
    proc = launch(os.path.join(HERE, "fail_worker.py"), "absent", "1.5", timeout=40)
    assert proc.returncode != 0
    assert "DistributedTimeoutError" in proc.stderr
    assert "timed out after 1.5 s on rank 0 of 2" in proc.stderr
    assert "did not arrive: rank 1" in proc.stderr


@needs_mpi
def test_nonzero_exit_on_one_rank_ends_the_job():
    proc = launch(os.path.join(HERE, "fail_worker.py"), "exit", timeout=40)
    assert proc.returncode != 0
    assert "rank 1 of 2 exited with status 3" in proc.stderr


# ---------------------------------------------------------------------- #
# one process
# ---------------------------------------------------------------------- #
@pytest.fixture
def single():
    dist.destroy_process_group()
    saved = {k: os.environ.pop(k) for k in list(os.environ) if k in dist._LAUNCHER_ENV}
    dist.init_process_group()
    yield
    dist.destroy_process_group()
    os.environ.update(saved)


@pytest.mark.parametrize("call,args", [("all_reduce", (ndl.Tensor([1.0]),)), ("broadcast", (ndl.Tensor([1.0]),)),
                                       ("all_gather", (ndl.Tensor([1.0]),)), ("barrier", ()),
                                       ("get_rank", ()), ("get_world_size", ())])
def test_collective_before_init_is_a_typed_error(call, args):
    dist.destroy_process_group()
    with pytest.raises(DistributedError, match=f"{call}: the process group is not initialised"):
        getattr(dist, call)(*args)


def test_world_of_one_without_a_launcher(single):
    assert (dist.get_rank(), dist.get_world_size(), dist.get_backend()) == (0, 1, "single")
    t = ndl.Tensor([1.0, 2.0])
    assert dist.all_reduce(t, "avg") is t and t.numpy().tolist() == [1.0, 2.0]
    assert dist.broadcast(t) is t
    [g] = dist.all_gather(t)
    assert g is not t and g.numpy().tolist() == [1.0, 2.0]
    dist.barrier()


def test_bad_arguments(single):
    with pytest.raises(DistributedError, match="unknown op 'mean'"):
        dist.all_reduce(ndl.Tensor([1.0]), op="mean")
    with pytest.raises(DistributedError, match=r"src must be a rank in \[0, 1\), got 1"):
        dist.broadcast(ndl.Tensor([1.0]), src=1)
    with pytest.raises(TypeError, match="expected a needle Tensor or NDArray, got list"):
        dist.all_reduce([1.0])
    with pytest.raises(DistributedError, match="already initialised"):
        dist.init_process_group()


def test_bad_backend_and_timeout():
    dist.destroy_process_group()
    with pytest.raises(DistributedError, match="unknown backend 'gloo'"):
        dist.init_process_group("gloo")
    with pytest.raises(DistributedError, match="timeout must be positive"):
        dist.init_process_group(timeout=0)


def test_nccl_backend_without_a_gpu_is_a_typed_error():
    pytest.importorskip("mpi4py")
    dist.destroy_process_group()
    if ndl.cuda().enabled():
        pytest.skip("a GPU is present")
    with pytest.raises(ndl.errors.BackendUnavailableError, match="backend='nccl'"):
        dist.init_process_group("nccl")
    dist.destroy_process_group()


def test_ddp_in_a_world_of_one_keeps_gradients(single):
    np.random.seed(0)
    model = ndl.nn.Linear(3, 2, dtype="float64")
    ddp = dist.DistributedDataParallel(model)
    X = ndl.Tensor(np.arange(6.0).reshape(2, 3), dtype="float64")
    ddp(X).sum().backward()
    ref = ndl.nn.Linear(3, 2, dtype="float64")
    ref.weight.data, ref.bias.data = model.weight.data, model.bias.data
    ref(X).sum().backward()
    np.testing.assert_allclose(model.weight.grad.numpy(), ref.weight.grad.numpy(), rtol=0, atol=1e-12)
    assert ndl.nn.parallel.DistributedDataParallel is dist.DistributedDataParallel
    assert ddp.state_dict().keys() == model.state_dict().keys()


def test_ddp_reports_parameters_without_gradient(single):
    class TwoHeads(ndl.nn.Module):
        def __init__(self):
            super().__init__()
            self.a, self.b = ndl.nn.Linear(2, 1), ndl.nn.Linear(3, 5)

        def forward(self, x):
            return self.a(x)

    ddp = dist.DistributedDataParallel(TwoHeads())
    ddp(ndl.Tensor([[1.0, 2.0]])).sum().backward()
    with pytest.raises(DistributedError, match=r"no gradient for 2 of 4 parameters \(shapes \[\(3, 5\), \(1, 5\)\]\)"):
        ddp(ndl.Tensor([[1.0, 2.0]]))


class _Flat(ndl.nn.Module):
    """Bare float64 parameters of the given sizes (registration order); the
    forward is the sum of squares, so each gradient is 2 * the parameter."""

    def __init__(self, sizes):
        super().__init__()
        rng = np.random.default_rng(0)
        self.ps = [ndl.nn.Parameter(rng.standard_normal(n), dtype="float64") for n in sizes]

    def forward(self):
        total = None
        for p in self.ps:
            term = (p * p).sum()
            total = term if total is None else total + term
        return total


_MB64 = 1024 * 1024 // 8   # float64 elements in one MB


def test_ddp_bucket_caps_are_exact_byte_limits(single):
    """Buckets take parameters in reverse order; the first holds at most 1 MB and
    the others bucket_cap_mb, a parameter that exactly fills a bucket stays in it."""
    half = _MB64 // 2
    launch_order = [half, half,              # exactly the first bucket's 1 MB
                    1, 2 * _MB64 - 1,        # exactly 2 MB
                    half, _MB64, _MB64]      # 1.5 MB, then 2.5 MB would not fit
    ddp = dist.DistributedDataParallel(_Flat(launch_order[::-1]), bucket_cap_mb=2)
    assert ddp.bucket_sizes == [2, 2, 2, 1]
    assert [b.numel * 8 for b in ddp._reducer.buckets] == [_MB64 * 8, 2 * _MB64 * 8, 3 * half * 8, _MB64 * 8]


def test_ddp_default_bucket_cap_is_25_mb(single):
    launch_order = [_MB64, 25 * _MB64, 1]    # the 1 MB first bucket, one exactly 25 MB bucket, a last one
    ddp = dist.DistributedDataParallel(_Flat(launch_order[::-1]))
    assert ddp.bucket_sizes == [1, 1, 1]


def test_ddp_world_of_one_over_several_steps_and_buckets(single, monkeypatch):
    import time
    ticks = iter(range(1000))
    monkeypatch.setattr(time, "perf_counter", lambda: float(next(ticks)))
    model = _Flat([3, 5, 2, 4])
    ddp = dist.DistributedDataParallel(model, bucket_cap_mb=0.00002)   # 20 bytes: one parameter a bucket
    assert ddp.bucket_sizes == [1, 1, 1, 1]
    assert ddp._reducer.stats == {"wait_s": 0.0, "steps": 0}
    for step in (1, 2):
        ddp().backward()
        for p in model.ps:
            np.testing.assert_array_equal(p.grad.numpy(), 2 * p.numpy())
            assert not p.grad.requires_grad
        assert ddp._reducer.stats == {"wait_s": float(step), "steps": step}   # one fake second per step


def test_ddp_skips_frozen_parameters(single):
    model = ndl.nn.Linear(3, 2, dtype="float64")
    model.bias.requires_grad = False
    ddp = dist.DistributedDataParallel(model)
    assert ddp.bucket_sizes == [1]
    X = ndl.Tensor(np.ones((2, 3)), dtype="float64")
    for _ in range(2):   # a second forward checks that the first backward reduced every bucket
        ddp(X).sum().backward()
    np.testing.assert_allclose(model.weight.grad.numpy(), np.full((3, 2), 2.0))


def test_ddp_arguments_training_mode_and_strict_loading(single):
    with pytest.raises(ValueError, match="bucket_cap_mb must be positive, got 0"):
        dist.DistributedDataParallel(ndl.nn.Linear(2, 2), bucket_cap_mb=0)
    model = ndl.nn.Linear(2, 2)
    assert dist.DistributedDataParallel(model).training is True
    model.eval()
    ddp = dist.DistributedDataParallel(model)
    assert ddp.training is False
    with pytest.raises(ndl.errors.StateDictError):
        ddp.load_state_dict({})   # strict by default: every key must be given
    ddp.load_state_dict({}, strict=False)


class _FakeGroup:
    """A two-rank group in one process whose other rank holds the same values:
    allreduce(sum) doubles the buffer, broadcast from rank 0 leaves it; it logs
    every collective."""

    backend, rank, size = "fake", 0, 2

    def __init__(self):
        self.log = []

    def iallreduce(self, buf, op, what="all_reduce"):
        assert op == "sum"
        buf *= 2
        self.log.append(("iallreduce", what, buf.dtype.str, buf.size))
        return object()

    def ibroadcast(self, buf, src, what="broadcast"):
        self.log.append(("ibroadcast", buf.dtype.str, buf.size))
        return object()

    def test(self, handle):
        assert handle is not None
        self.log.append(("test",))
        return True

    def wait(self, handle):
        assert handle is not None

    def close(self):
        pass


@pytest.fixture
def fake2(monkeypatch):
    dist.destroy_process_group()
    group = _FakeGroup()
    monkeypatch.setattr(dist, "_group", group)
    return group


def test_ddp_reduces_buckets_in_order_in_the_parameters_dtype(fake2):
    np.random.seed(0)
    model = ndl.nn.Sequential(ndl.nn.Linear(4, 3, dtype="float32"), ndl.nn.Linear(3, 2, dtype="float32"))
    X = ndl.Tensor(np.random.default_rng(0).standard_normal((5, 4)), dtype="float32")
    model(X).sum().backward()
    want = [p.grad.numpy().copy() for p in model.parameters()]
    ddp = dist.DistributedDataParallel(model, bucket_cap_mb=0.00002)   # 20 bytes: one parameter a bucket
    fake2.log.clear()
    ddp(X).sum().backward()
    reduces = [e for e in fake2.log if e[0] == "iallreduce"]
    assert reduces == [("iallreduce", f"DDP gradient bucket {i}", "<f4", n) for i, n in enumerate([2, 6, 3, 12])]
    assert ("test",) in fake2.log        # progress driven on the buckets in flight
    for p, g in zip(model.parameters(), want):   # the sum of two equal ranks, divided by 2
        np.testing.assert_array_equal(p.grad.numpy(), g)
        assert p.grad.dtype == "float32"


def test_ddp_broadcasts_by_sorted_dtype_and_only_buffers_at_forward(fake2):
    class Mixed(ndl.nn.Module):
        def __init__(self):
            super().__init__()
            self.a = ndl.nn.Linear(4, 3, dtype="float64")
            self.bn = ndl.nn.BatchNorm1d(3, dtype="float64")
            self.c = ndl.nn.Parameter(np.zeros(2), dtype="float32")

        def forward(self, x):
            return self.bn(self.a(x))

    ddp = dist.DistributedDataParallel(Mixed())
    assert fake2.log == [("ibroadcast", "<f4", 2), ("ibroadcast", "<f8", 12 + 3 + 3 + 3 + 3 + 3)]
    fake2.log.clear()
    ddp(ndl.Tensor(np.ones((2, 4)), dtype="float64"))
    assert fake2.log == [("ibroadcast", "<f8", 6)]   # the running statistics, not the parameters


def test_sync_batchnorm_in_a_world_of_one_is_batchnorm_even_for_a_large_mean(single):
    """A world of one takes BatchNorm1d's centred variance (E[x^2] - E[x]^2 would lose
    about 1e-4 here)."""
    x = ndl.Tensor(1e6 + np.random.default_rng(0).standard_normal((6, 3)), dtype="float64")
    bn = ndl.nn.parallel.SyncBatchNorm(3, dtype="float64")
    ref = ndl.nn.BatchNorm1d(3, dtype="float64")
    np.testing.assert_allclose(bn(x).numpy(), ref(x).numpy(), rtol=0, atol=1e-9)


def test_ddp_needs_init():
    dist.destroy_process_group()
    with pytest.raises(DistributedError, match="init_process_group"):
        dist.DistributedDataParallel(ndl.nn.Linear(2, 2))


# ---------------------------------------------------------------------- #
# needle launch: the mpiexec command line
# ---------------------------------------------------------------------- #
def test_launch_flags_per_mpi_flavour(monkeypatch):
    from needle.distributed.launch import mpiexec_command
    cmd = mpiexec_command(2, ["train.py", "--x"], mpiexec=("/bin/mpiexec", "mpich"))
    assert cmd[:3] == ["/bin/mpiexec", "-n", "2"] and "--oversubscribe" not in cmd
    assert cmd[-5:] == [sys.executable, "-m", "needle.distributed.run", "train.py", "--x"]
    assert mpiexec_command(4, ["s.py"], "hosts", ("/bin/mpiexec", "mpich"))[3:5] == ["-f", "hosts"]
    monkeypatch.setattr(os, "geteuid", lambda: 0)
    cmd = mpiexec_command(4, ["s.py"], "hosts", ("/x/mpirun", "openmpi"))
    assert {"--oversubscribe", "--allow-run-as-root"} <= set(cmd) and cmd[cmd.index("--hostfile") + 1] == "hosts"


@pytest.mark.parametrize("argv,message", [(["-n", "0", "x.py"], "-n must be at least 1"),
                                          (["-n", "2"], "give a script"),
                                          (["-n", "2", "/nonexistent/x.py"], "no script /nonexistent/x.py"),
                                          (["-n", "2", "--hostfile", "/nonexistent/h", "x.py"], "does not exist")])
def test_launch_bad_arguments(argv, message, capsys):
    from needle.distributed.launch import launch_command
    assert launch_command(argv) == 2
    assert message in capsys.readouterr().err


# ---------------------------------------------------------------------- #
# SyncBatchNorm in one process is batch norm
# ---------------------------------------------------------------------- #
@pytest.mark.parametrize("shape,plain", [((5, 3), "BatchNorm1d"), ((2, 3, 4, 4), "BatchNorm2d")])
def test_sync_batchnorm_in_a_world_of_one_is_batchnorm(single, shape, plain):
    x = np.random.default_rng(0).standard_normal(shape)
    ref = getattr(ndl.nn, plain)(3, dtype="float64")
    ref.weight.data = ndl.Tensor([0.5, 2.0, -1.0], dtype="float64")
    model = ndl.nn.parallel.convert_sync_batchnorm(ndl.nn.Sequential(ref))
    bn = model.modules[0]
    assert isinstance(bn, ndl.nn.parallel.SyncBatchNorm) and bn.weight is ref.weight
    want_ref = getattr(ndl.nn, plain)(3, dtype="float64")
    want_ref.weight.data = ndl.Tensor([0.5, 2.0, -1.0], dtype="float64")
    xt = ndl.Tensor(x, dtype="float64")
    np.testing.assert_allclose(model(xt).numpy(), want_ref(xt).numpy(), atol=1e-12)
    np.testing.assert_allclose(bn.running_var.numpy(), want_ref.running_var.numpy(), atol=1e-12)


def test_convert_sync_batchnorm_reaches_lists_tuples_and_dicts():
    # batch norms held in a Module's list, tuple or dict attributes are
    # converted too, sharing their parameters and buffers
    from needle.nn.parallel import SyncBatchNorm, convert_sync_batchnorm

    class Holder(ndl.nn.Module):
        def __init__(self):
            super().__init__()
            self.layers = [ndl.nn.BatchNorm1d(3), ndl.nn.Linear(3, 3)]
            self.named = {"bn": ndl.nn.BatchNorm2d(2), "other": 1}
            self.pair = (ndl.nn.BatchNorm1d(4), "x")

    h = Holder()
    weights = (h.layers[0].weight, h.named["bn"].weight, h.pair[0].weight)
    out = convert_sync_batchnorm(h)
    assert out is h
    assert type(h.layers[0]) is SyncBatchNorm and type(h.layers[1]) is ndl.nn.Linear
    assert type(h.named["bn"]) is SyncBatchNorm and h.named["other"] == 1
    assert type(h.pair[0]) is SyncBatchNorm and h.pair[1] == "x"
    assert (h.layers[0].weight, h.named["bn"].weight, h.pair[0].weight) == weights
