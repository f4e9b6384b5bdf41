"""CudaBackend.compile_replay: a recorded step as CUDA graphs, on the fake
driver (whose stream capture records launches into a graph, as the real one
does), plus one check against a real GPU where there is one."""

import numpy as np
import pytest

from needle.errors import ArgumentError, ShapeError
from needle.protocol import ReplayScalar
from needle_cuda import CudaBackend, CudaError, _replay, _runtime
from needle_cuda._memory import size_class


@pytest.fixture
def be(fake_driver):
    return CudaBackend()


def kernels(graph):
    """The kernel names of a FakeGraph's nodes, in capture order."""
    return [n[1] for n in graph.nodes if n[0] == "kernel"]


def assert_clean(fake):
    """Capture ended, and every graph the driver made was destroyed."""
    assert fake.capturing is None
    made = {id(e.graph) for e in fake.instantiated}
    gone = {id(h) for kind, h in fake.destroyed if kind == "graph"}
    assert made <= gone


# -- one graph per static segment ----------------------------------------------------
def test_kernel_launches_are_captured_into_one_graph_and_run_replays_it(be, fake_driver):
    a, b, c, out, r = be.Array(40), be.Array(40), be.Array(40), be.Array(40), be.Array(4)
    program = [("ewise_add", (a, b, c)), ("ewise_mul", (c, a, out)), ("scalar_mul", (out, 2.0, out)),
               ("reduce_sum", (out, r, 10))]
    replay = be.compile_replay(program)
    assert replay is not None and be.replay_fallback_reason is None
    assert fake_driver.launches == [] and fake_driver.graph_launches == []  # compiling runs nothing
    (exec_,) = fake_driver.instantiated
    assert kernels(exec_.graph) == ["ewise_add_f32", "ewise_mul_f32", "scalar_mul_f32", "reduce_sum_warp_f32"]
    add = exec_.graph.nodes[0]
    assert [int(x) for x in add[4][:3]] == [a.ptr(), b.ptr(), c.ptr()]
    assert exec_.graph.nodes[2][4][1] == np.float32(2.0)
    assert fake_driver.capture_mode == fake_driver.CUstreamCaptureMode.CU_STREAM_CAPTURE_MODE_THREAD_LOCAL
    assert (replay.num_graphs, replay.num_direct_calls) == (1, 0)
    for _ in range(3):
        replay.run([])
    assert fake_driver.graph_launches == [exec_] * 3
    assert fake_driver.launches == []          # no kernel launch of run's own
    assert fake_driver.during_capture.count("cuMemAlloc") == 0


def set_scalars_values(launch):
    """The values a set_scalars launch writes, and where."""
    fn, _, _, args = launch
    assert fn == "set_scalars"
    first, count = int(args[2]), int(args[3])
    return int(args[0]), first, list(np.asarray(args[1]).view(np.float64)[:count])


def test_scalar_kernels_read_replay_scalars_on_the_device_inside_the_graph(be, fake_driver):
    p, g, step = be.Array(64, "float64"), be.Array(64, "float64"), be.Array(64, "float64")
    lr = ReplayScalar(0.1, 0)
    program = [("ewise_add", (g, g, g)), ("ewise_mul", (g, p, g)),     # "forward + backward"
               ("scalar_mul", (g, lr, step)),                            # the lr call
               ("ewise_sub", (p, step, p))]
    replay = be.compile_replay(program)
    assert (replay.num_graphs, replay.num_direct_calls, replay.device_scalar_slots) == (1, 0, (0,))
    (exec_,) = fake_driver.instantiated
    assert kernels(exec_.graph) == ["ewise_add_f64", "ewise_mul_f64", "scalar_mul_dev_f64", "ewise_sub_f64"]
    node = exec_.graph.nodes[2]
    vals, slot = int(node[4][1]), int(node[4][2])
    assert [int(node[4][0]), int(node[4][3])] == [g.ptr(), step.ptr()] and slot == 0
    for value in (0.5, 0.25):
        fake_driver.stream_order.clear()
        replay.run([value])
        # the value goes to the device first, by value in a kernel's arguments; then the graph
        assert fake_driver.stream_order == [("kernel", "set_scalars"), ("graph", exec_)]
        assert set_scalars_values(fake_driver.launches[-1]) == (vals, 0, [value])
    assert [l[0] for l in fake_driver.launches] == ["set_scalars"] * 2


def test_other_calls_with_replay_scalars_run_directly_between_graphs(be, fake_driver):
    a, out = be.Array(64), be.Array(64)
    v = ReplayScalar(2.0, 0)
    program = [("ewise_exp", (a, a)), ("scalar_setitem", (8, v, out, (2, 4), (8, 1), 0)),
               ("ewise_log", (out, out))]
    replay = be.compile_replay(program)
    assert (replay.num_graphs, replay.num_direct_calls, replay.device_scalar_slots) == (2, 1, ())
    first, second = fake_driver.instantiated
    assert kernels(first.graph) == ["ewise_exp_f32"] and kernels(second.graph) == ["ewise_log_f32"]
    for value in (3.0, -1.5):
        fake_driver.stream_order.clear()
        replay.run([value])
        assert fake_driver.stream_order == [("graph", first), ("kernel", "scalar_setitem_f32_i32"),
                                            ("graph", second)]
        assert fake_driver.launches[-1][3][0] == np.float32(value)


def test_a_subclass_overriding_a_scalar_kernel_keeps_its_own_method(fake_driver):
    class Custom(CudaBackend):
        def scalar_mul(self, a, val, out):
            self.scalar_add(a, val, out)
    be = Custom()
    a = be.Array(8)
    replay = be.compile_replay([("scalar_mul", (a, ReplayScalar(1.0, 0), a))])
    assert (replay.num_graphs, replay.num_direct_calls) == (0, 1)
    replay.run([4.0])
    assert fake_driver.launches[-1][0] == "scalar_add_f32" and fake_driver.launches[-1][3][1] == 4.0


def test_fill_reads_its_value_on_the_device(be, fake_driver):
    out = be.Array(16, "float64")
    replay = be.compile_replay([("fill", (out, ReplayScalar(0.0, 2)))])
    (exec_,) = fake_driver.instantiated
    ((_, fn, _, _, args),) = exec_.graph.nodes
    assert fn == "fill_dev_f64" and int(args[0]) == out.ptr() and int(args[2]) == 2
    replay.run([9.0, 9.0, 1.25])
    assert set_scalars_values(fake_driver.launches[-1])[1:] == (0, [0.0, 0.0, 1.25])


def test_many_scalars_go_in_blocks(be, fake_driver):
    a = be.Array(8)
    program = [("scalar_add", (a, ReplayScalar(0.0, i), a)) for i in range(40)]
    replay = be.compile_replay(program)
    assert replay.num_graphs == 1 and len(replay.device_scalar_slots) == 40
    replay.run([float(i) for i in range(40)])
    blocks = [set_scalars_values(l) for l in fake_driver.launches[-2:]]
    assert [b[1] for b in blocks] == [0, 32] and blocks[0][2] + blocks[1][2] == [float(i) for i in range(40)]


def test_a_dropout_seed_draws_anew_each_run(be, fake_driver):
    x, mask, y = be.Array(100), be.Array(100), be.Array(100)
    program = [("rand_uniform", (mask, ReplayScalar(5.0, 1))), ("scalar_ge", (mask, 0.5, mask)),
               ("ewise_mul", (x, mask, y))]
    replay = be.compile_replay(program)
    assert (replay.num_direct_calls, replay.num_graphs) == (0, 1)
    (exec_,) = fake_driver.instantiated
    assert kernels(exec_.graph)[0] == "rand_uniform_dev_f32"
    replay.run([1e-3, 17])
    replay.run([1e-3, 18.0])
    assert [set_scalars_values(l)[2][1] for l in fake_driver.launches] == [17.0, 18.0]
    # the seed is checked at every run, as the direct call checks it, before anything is queued
    for bad in (0.5, -1, 2.0**32):
        with pytest.raises(ArgumentError, match="seed"):
            replay.run([1e-3, bad])
    assert len(fake_driver.launches) == 2 and len(fake_driver.graph_launches) == 2


def test_replay_scalars_nested_in_lists_and_tuples_are_bound():
    s0, s1 = ReplayScalar(1.0, 0), ReplayScalar(2.0, 1)
    args = ([s0, 3.0], (s1, "x"), None)
    assert _replay.has_replay_scalar(args) and not _replay.has_replay_scalar(([1.0], (2,), None))
    assert _replay.bind(args, [10.0, 20.0]) == ([10.0, 3.0], (20.0, "x"), None)


# -- host data, scratch memory, buffers -------------------------------------------
def test_from_numpy_is_snapshotted_once_and_copied_inside_the_graph(be, fake_driver):
    host = np.arange(6, dtype=np.float32)
    buf, out = be.Array(6), be.Array(6)
    replay = be.compile_replay([("from_numpy", (host, buf)), ("ewise_add", (buf, buf, out))])
    (upload,) = fake_driver.host_copies          # at compile time, into a snapshot buffer
    assert upload[0] == "htod" and upload[1] != buf.ptr() and upload[2] == 24
    (exec_,) = fake_driver.instantiated
    memcpy, add = exec_.graph.nodes
    assert memcpy == ("memcpy", buf.ptr(), upload[1], 24) and add[1] == "ewise_add_f32"
    replay.run([])
    replay.run([])
    assert len(fake_driver.host_copies) == 1     # no host copy, no sync per run
    assert fake_driver.device_copies == []


def test_from_numpy_of_the_wrong_size_is_an_error(be, fake_driver):
    with pytest.raises(ShapeError, match="from_numpy: 5 elements for a buffer of 6"):
        be.compile_replay([("from_numpy", (np.zeros(5, np.float32), be.Array(6)))])


def test_scratch_buffers_are_reserved_before_capture_and_owned_by_the_replay(be, fake_driver):
    alloc = _runtime.runtime(0).allocator
    n = 1 << 22                                   # a whole-tensor sum: two passes via a scratch buffer
    a, out = be.Array(n), be.Array(1)
    replay = be.compile_replay([("reduce_max", (a, out, n))])
    assert "cuMemAlloc" not in fake_driver.during_capture
    (exec_,) = fake_driver.instantiated
    first, second = exec_.graph.nodes
    partial = int(first[4][1])
    assert int(second[4][0]) == partial and int(second[4][1]) == out.ptr()
    # the block is not in the shared cache: nothing else can be given it while the graph lives
    assert partial not in [p for ps in alloc._cache.values() for p in ps]
    others = [be.Array(int(first[4][2])) for _ in range(3)]
    assert partial not in [o.ptr() for o in others]
    cls = size_class(int(first[4][2]) * 4)
    assert replay.scratch_bytes == cls
    cached = alloc.cached_bytes
    replay.close()
    assert partial in alloc._cache[cls] and alloc.cached_bytes == cached + cls   # back in the shared cache
    assert replay.scratch_bytes == 0


def test_protocol_defaults_that_allocate_are_captured_too(be, fake_driver):
    # matmul_batched's default gathers an operand whose batch axes do not collapse
    # into a temporary buffer; ewise_strided's default gathers broadcast operands
    a, b, out = be.Array(2 * 3 * 4 * 5), be.Array(5 * 6), be.Array(2 * 3 * 4 * 6)
    x, bias, y = be.Array(4 * 8), be.Array(8), be.Array(4 * 8)
    program = [("matmul_batched", (a, b, out, (2, 3), 4, 5, 6, (5, 40, 10, 1), 0, (0, 0, 6, 1), 0)),
               ("ewise_strided", ("ewise_add", x, bias, y, (4, 8), (8, 1), 0, (0, 1), 0))]
    replay = be.compile_replay(program)
    assert replay is not None and replay.scratch_bytes > 0
    assert "cuMemAlloc" not in fake_driver.during_capture
    (exec_,) = fake_driver.instantiated
    names = kernels(exec_.graph)
    assert names[0].startswith("compact_f32") and names[1].startswith("matmul_strided_f32")
    assert names[-1] == "ewise_add_f32"


def test_the_replay_keeps_the_programs_buffers_alive(be, fake_driver):
    alloc = _runtime.runtime(0).allocator
    a, b = be.Array(256), be.Array(256)
    replay = be.compile_replay([("ewise_add", (a, b, b))])
    cached = alloc.cached_bytes
    del a, b
    assert alloc.cached_bytes == cached            # still held by the replay
    replay.close()
    assert alloc.cached_bytes == cached + 2 * 1024


def test_steps_without_device_work_make_no_graph(be, fake_driver):
    e = be.Array(0)
    replay = be.compile_replay([("ewise_add", (e, e, e)), ("fill", (e, 1.0))])
    assert replay.num_graphs == 0 and fake_driver.instantiated == []
    replay.run([])
    empty = be.compile_replay([])
    empty.run([])
    assert fake_driver.graph_launches == [] and fake_driver.launches == []


# -- lifetime -------------------------------------------------------------------------
def test_close_destroys_the_graphs_once_and_run_then_refuses(be, fake_driver):
    a = be.Array(16)
    replay = be.compile_replay([("ewise_exp", (a, a)), ("scalar_setitem", (16, ReplayScalar(1.0, 0), a, (16,), (1,), 0)),
                                ("ewise_log", (a, a))])
    execs = list(fake_driver.instantiated)
    with replay:
        replay.run([2.0])
    assert fake_driver.destroyed == [x for e in execs for x in (("exec", e), ("graph", e.graph))]
    replay.close()
    assert len(fake_driver.destroyed) == 4
    with pytest.raises(CudaError, match="REPLAY_CLOSED"):
        replay.run([2.0])


def test_garbage_collection_destroys_the_graph(be, fake_driver):
    a = be.Array(16)
    replay = be.compile_replay([("ewise_exp", (a, a))])
    (exec_,) = fake_driver.instantiated
    del replay
    assert fake_driver.destroyed == [("exec", exec_), ("graph", exec_.graph)]


def test_nothing_is_destroyed_at_interpreter_exit(be, fake_driver, monkeypatch):
    a = be.Array(16)
    replay = be.compile_replay([("ewise_exp", (a, a))])
    monkeypatch.setattr(_replay.sys, "is_finalizing", lambda: True)
    replay.__del__()
    assert fake_driver.destroyed == []
    monkeypatch.undo()
    replay.close()
    assert len(fake_driver.destroyed) == 2


def test_interpreter_exit_with_a_live_replay_is_quiet(tmp_path):
    import subprocess
    import sys
    from pathlib import Path
    here = Path(__file__).resolve().parent
    script = tmp_path / "exit.py"
    script.write_text(
        "import sys; sys.path.insert(0, %r)\n"
        "from conftest import FakeDriver\n"
        "from needle_cuda import _driver, _nvrtc, CudaBackend\n"
        "_nvrtc.compile_cached = lambda *a, **k: b'\\x7fELFfake'\n"
        "_nvrtc.supported_archs = lambda: [80]\n"
        "_driver.set_driver_for_testing(FakeDriver())\n"
        "be = CudaBackend(); a = be.Array(8)\n"
        "keep = be.compile_replay([('ewise_exp', (a, a))]); keep.run([])\n"
        "print('ok')\n" % str(here))
    pytest.importorskip("cuda.bindings.driver")
    r = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0 and r.stdout.strip() == "ok" and r.stderr == "", r.stderr


# -- falling back, and real bugs --------------------------------------------------------
@pytest.mark.parametrize("call,error", [
    ("cuStreamBeginCapture", "CUDA_ERROR_NOT_SUPPORTED"),
    ("cuLaunchKernel", "CUDA_ERROR_STREAM_CAPTURE_UNSUPPORTED"),
    ("cuStreamEndCapture", "CUDA_ERROR_STREAM_CAPTURE_INVALIDATED"),
    ("cuGraphInstantiate", "CUDA_ERROR_INVALID_VALUE"),
])
def test_a_capture_the_driver_refuses_gives_none(be, fake_driver, call, error):
    a, b = be.Array(16), be.Array(16)
    program = [("ewise_add", (a, b, b)), ("ewise_exp", (b, b))]
    fake_driver.fail[call] = error
    assert be.compile_replay(program) is None
    assert error in be.replay_fallback_reason
    assert_clean(fake_driver)
    del fake_driver.fail[call]
    be.ewise_add(a, b, b)                          # the stream works as before
    assert fake_driver.launches[-1][0] == "ewise_add_f32"
    assert be.compile_replay(program) is not None and be.replay_fallback_reason is None


def test_a_later_segment_failing_destroys_the_graphs_already_made(be, fake_driver):
    a = be.Array(16)
    real = fake_driver.cuGraphInstantiate
    seen = []

    def second_fails(graph, flags):
        seen.append(graph)
        if len(seen) == 2:
            return (fake_driver.CUresult.CUDA_ERROR_OUT_OF_MEMORY, None)
        return real(graph, flags)
    fake_driver.cuGraphInstantiate = second_fails
    program = [("ewise_exp", (a, a)), ("scalar_setitem", (16, ReplayScalar(2.0, 0), a, (16,), (1,), 0)),
               ("ewise_log", (a, a))]
    assert be.compile_replay(program) is None
    (first,) = fake_driver.instantiated
    assert ("exec", first) in fake_driver.destroyed and ("graph", first.graph) in fake_driver.destroyed
    assert ("graph", seen[1]) in fake_driver.destroyed
    assert_clean(fake_driver)


class _Quirky(CudaBackend):
    """Calls that behave differently under capture than in the dry run before it."""

    def __init__(self):
        super().__init__()
        self.calls = 0

    def grow(self, out):
        # asks for a bigger scratch buffer on every call: the capture's request
        # was never reserved by the dry run
        self.calls += 1
        tmp = self.Array(out.size * 1000 * self.calls)
        self.ewise_exp(out, out)
        del tmp

    def sync_inside(self, out):
        self.ewise_exp(out, out)
        self.calls += 1
        if self.calls > 1:
            self._rt().synchronize()               # forbidden while capturing

    def bug_under_capture(self, out):
        self.calls += 1
        if self.calls > 1:
            raise ShapeError("a bug that only shows under capture")
        self.ewise_exp(out, out)


def test_an_allocation_during_capture_is_caught_before_the_driver(fake_driver):
    be = _Quirky()
    out = be.Array(8)
    assert be.compile_replay([("ewise_log", (out, out)), ("grow", (out,))]) is None
    assert "scratch" in be.replay_fallback_reason
    assert "cuMemAlloc" not in fake_driver.during_capture
    assert_clean(fake_driver)
    assert _runtime.runtime(0).allocator._pool is None and not _runtime.runtime(0).allocator._owned


def test_a_call_the_driver_forbids_in_capture_gives_none(fake_driver):
    be = _Quirky()
    out = be.Array(8)
    assert be.compile_replay([("sync_inside", (out,))]) is None
    assert "CUDA_ERROR_STREAM_CAPTURE_UNSUPPORTED" in be.replay_fallback_reason
    assert_clean(fake_driver)


def test_an_error_of_the_calls_themselves_is_raised(be, fake_driver):
    with pytest.raises(ShapeError, match="'b' has 3 elements"):
        be.compile_replay([("ewise_add", (be.Array(4), be.Array(3), be.Array(4)))])
    with pytest.raises(ArgumentError, match="'no_such_kernel' is neither a method nor an op override"):
        be.compile_replay([("no_such_kernel", ())])
    with pytest.raises(ArgumentError, match="'_rt' is neither"):
        be.compile_replay([("_rt", ())])
    assert fake_driver.instantiated == [] and fake_driver.launches == []
    quirky = _Quirky()
    out = quirky.Array(8)
    with pytest.raises(ShapeError, match="only shows under capture"):
        quirky.compile_replay([("bug_under_capture", (out,))])
    assert_clean(fake_driver)


def test_host_reads_and_other_devices_fall_back(be, fake_driver):
    a = be.Array(8)
    assert be.compile_replay([("to_numpy", (a, (8,), (1,), 0))]) is None
    assert "to_numpy" in be.replay_fallback_reason
    other = be.Array(8)
    rt = other._runtime

    class Elsewhere:
        index, allocator = 1, rt.allocator
    other._runtime = Elsewhere()
    try:
        assert be.compile_replay([("ewise_add", (a, other, a))]) is None
        assert "cuda:1" in be.replay_fallback_reason
    finally:
        other._runtime = rt
    assert fake_driver.capturing is None and fake_driver.instantiated == []


def test_graphs_can_be_turned_off(be, fake_driver, monkeypatch):
    monkeypatch.setenv("NEEDLE_CUDA_GRAPHS", "0")
    a = be.Array(8)
    assert be.compile_replay([("ewise_exp", (a, a))]) is None
    assert be.replay_fallback_reason == "NEEDLE_CUDA_GRAPHS=0"


def test_a_failed_graph_launch_is_a_cuda_error(be, fake_driver):
    a = be.Array(8)
    replay = be.compile_replay([("ewise_exp", (a, a))])
    fake_driver.fail["cuGraphLaunch"] = "CUDA_ERROR_ILLEGAL_ADDRESS"
    with pytest.raises(CudaError, match="launching a CUDA graph on cuda:0 failed: CUDA_ERROR_ILLEGAL_ADDRESS"):
        replay.run([])


# -- on a real GPU ------------------------------------------------------------------
@pytest.mark.gpu
def test_gpu_graph_replay_equals_calling_the_kernels():
    be = CudaBackend()
    ok, reason = be.is_available()
    if not ok:
        pytest.skip(reason or "cuda unavailable")
    rng = np.random.default_rng(0)
    n = 1 << 22
    host = rng.standard_normal(n).astype(np.float32)

    def buffers():
        x, p = be.Array(n), be.Array(n)
        be.from_numpy(host, x)
        be.from_numpy(host, p)
        return x, p, be.Array(n), be.Array(n), be.Array(1)

    def program(x, p, mask, g, total):
        return [("rand_uniform", (mask, ReplayScalar(3.0, 1))), ("scalar_ge", (mask, 0.5, mask)),
                ("ewise_mul", (x, mask, g)), ("from_numpy", (np.full(n, 0.5, np.float32), mask)),
                ("ewise_mul", (g, mask, g)), ("reduce_sum", (g, total, n)),
                ("scalar_mul", (g, ReplayScalar(0.1, 0), g)), ("ewise_sub", (p, g, p))]

    graph_bufs, eager_bufs = buffers(), buffers()
    replay = be.compile_replay(program(*graph_bufs))
    assert replay is not None, be.replay_fallback_reason
    for scalars in ([0.1, 7], [0.05, 8], [0.2, 9]):
        replay.run(scalars)
        for name, args in program(*eager_bufs):
            getattr(be, name)(*_replay.bind(args, scalars))
    be.synchronize()
    for got, want in zip(graph_bufs, eager_bufs):
        np.testing.assert_array_equal(be.to_numpy(got, (got.size,), (1,), 0),
                                      be.to_numpy(want, (want.size,), (1,), 0))
    replay.close()


def test_an_op_override_listed_under_another_name_is_found(fake_driver):
    class Renamed(CudaBackend):
        def op_overrides(self):
            return {**super().op_overrides(), "exp_override": self.ewise_exp}
    be = Renamed()
    a = be.Array(8)
    be.compile_replay([("exp_override", (a, a))]).run([])
    assert kernels(fake_driver.instantiated[0].graph) == ["ewise_exp_f32"]


# -- with needle.jit ---------------------------------------------------------------------
@pytest.fixture
def cuda_device(fake_driver):
    from needle import discovery
    discovery.reset()
    import needle as ndl
    yield ndl.cuda()
    discovery.reset()


def test_a_jitted_training_step_replays_as_graphs(fake_driver, cuda_device):
    import needle as ndl
    import needle.nn as nn
    import needle.optim as optim
    np.random.seed(0)
    model = nn.Sequential(nn.Linear(8, 16, device=cuda_device), nn.ReLU(), nn.Dropout(0.5),
                          nn.Linear(16, 4, device=cuda_device))
    opt = optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    loss_fn = nn.SoftmaxLoss()

    def step(x, y):
        opt.reset_grad()
        loss = loss_fn(model(x), y)
        loss.backward()
        opt.step()
        return loss
    jitted = ndl.jit(step)
    x = ndl.Tensor(np.random.randn(5, 8).astype("float32"), device=cuda_device)
    y = ndl.Tensor(np.array([0, 1, 2, 3, 0], "float32"), device=cuda_device)
    jitted(x, y)                                   # eager
    jitted(x, y)                                   # captured, compiled
    assert jitted.native, cuda_device.require().replay_fallback_reason
    replay = next(iter(jitted._plans.values())).native
    assert fake_driver.capturing is None and replay.num_graphs >= 1
    # SGD's learning rate and dropout's seed are read on the device: the whole
    # step is one graph
    assert (replay.num_graphs, replay.num_direct_calls) == (1, 0) and replay.device_scalar_slots
    sent = []
    for _ in range(2):
        launches, graphs = len(fake_driver.launches), len(fake_driver.graph_launches)
        jitted(x, y)                               # replayed
        assert len(fake_driver.graph_launches) - graphs == 1
        new = fake_driver.launches[launches:]
        # outside the graph: needle.jit's copies of the two inputs in and of the loss
        # out, and the replay's scalars
        assert sorted(l[0] for l in new) == sorted(["compact_f32_i32"] * 3 + ["set_scalars"])
        sent.append(set_scalars_values(next(l for l in new if l[0] == "set_scalars"))[2])
    assert sent[0] != sent[1]                      # dropout draws a fresh seed per replay


def test_the_dry_run_before_capture_leaves_other_threads_work_alone(be, fake_driver):
    import threading
    rt = _runtime.runtime(0)
    a, b = be.Array(8), be.Array(8)
    host = np.ones(8, np.float32)
    with rt.dry_run() as log:
        be.ewise_exp(a, a)                                   # this thread: recorded, not launched
        with pytest.raises(Exception, match="host<->device copy"):
            be.from_numpy(host, a)
        other = threading.Thread(target=lambda: (be.ewise_log(b, b), be.from_numpy(host, b)))
        other.start()
        other.join()
    assert log == ["ewise_exp_f32"]
    assert [l[0] for l in fake_driver.launches] == ["ewise_log_f32"]
    assert fake_driver.host_copies == [("htod", b.ptr(), 32)]
    assert "launch" not in rt.__dict__                      # the runtime is itself again
