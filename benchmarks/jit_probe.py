"""``needle.jit`` training steps: eager vs captured and replayed, in one process.

    python benchmarks/compare.py jit [--quick] [--device cpu]
    python -m benchmarks.jit_probe [--device cpu] [--repeat 11] [--only mlp,lstm,resnet9,transformer]

Rows (each: the median seconds per step, the ratios, and the capture's plan
-- kernel calls, arena bytes, native or Python replay):

- ``mlp``: a tiny MLP 784-100-10 (Linear, ReLU, Linear), batch 16, SGD (lr
  0.1, no momentum) with SoftmaxLoss: needle eager, needle jitted (the
  backend's native replay loop when it offers one), needle jitted with
  ``native=False`` (the Python replay loop), PyTorch eager (the same model,
  ``CrossEntropyLoss``).  Targets: jitted / PyTorch eager <= 0.5x; jitted /
  needle eager is printed beside it.
- ``lstm``: the LSTM LM step of ``compare.py models`` (its builder,
  :func:`benchmarks.models_probe.lstm_lm_step`): eager vs jitted, target
  jitted / eager <= 0.8x.  When the capture raises ``JitError`` (a layer
  whose device kernel the backend lacks) the row prints the reason.
- ``resnet9``, ``transformer``: the ResNet9 step and the Transformer layer
  forward + backward of ``compare.py models``, eager vs jitted
  (informational).

Every timed call ends with a host read of the step's loss (``.numpy()``,
PyTorch's ``.item()``), so asynchronous devices are waited for alike.  The
variants are timed in alternating blocks (needle's first, PyTorch's last)
and each ratio is of medians.  Each variant trains its own copy of the
model: an eager step gives the parameters new arrays, which a replay of
another function's capture refuses to read.  Gradients follow PyTorch's
rule (``KEEP_INTERIOR_GRADS = False``), as ``needle train`` does.
"""

from __future__ import annotations

import argparse
import inspect

import numpy as np

from benchmarks.benchmarks.timing import alternating_medians

ROWS = ("mlp", "lstm", "resnet9", "transformer")

# the tiny shapes of report(tiny=True): every row in well under a second (tests)
TINY = {
    "mlp": {"dims": (32, 16, 10), "batch": 4},
    "lstm": {"vocab": 50, "emb": 8, "hidden": 8, "layers": 1, "seq": 4, "batch": 2},
    "resnet9": {"batch": 2},
    "transformer": {"d_model": 8, "heads": 2, "hidden": 16, "seq": 4, "batch": 2},
}


def _torch():
    try:
        import torch
    except ImportError:
        return None
    return torch


# ---------------------------------------------------------------- timed functions
def _host_read(result):
    """The first Tensor of a step's result on the host: every timed call ends
    waiting for its device, as a training loop reading the loss does."""
    first = result[0] if isinstance(result, (tuple, list)) else result
    first.numpy()


def _eager(fn, args):
    def run():
        _host_read(fn(*args))
    return run


def _jitted(fn, args, native=True):
    """``(timed function, the JitFunction, JitError or None)``: warmed up to
    the replays (call 1 eager, call 2 captured), so every timed call is one."""
    import needle as ndl
    from needle.errors import JitError

    step = ndl.jit(fn, native=native)
    try:
        for _ in range(3):
            _host_read(step(*args))
    except JitError as exc:
        # the traceback's frames would keep the step's half-built Tensors
        # alive (the JitFunction keeps the error); a later capture walks
        # every live Tensor and trips over them
        exc.__traceback__ = None
        return None, step, exc
    if not step.stats["replays"]:
        return None, step, RuntimeError(f"no replay after 3 calls (stats {step.stats})")

    def run():
        _host_read(step(*args))
    return run, step, None


def _plan(step) -> str:
    plans = step.plan_info()
    if not plans:
        return "no plan"
    return "; ".join(f"{p['calls']} kernel calls, arena {_kib(p['arena_bytes'])} "
                     f"for {_kib(p['step_bytes'])} of intermediates, "
                     f"{'native' if p['native'] else 'Python'} replay" for p in plans)


def _kib(n) -> str:
    return f"{n / 1024:.1f} KiB" if n < 2**20 else f"{n / 2**20:.2f} MiB"


def _ms(seconds) -> str:
    return f"{seconds * 1e3:9.3f} ms"


def _reason(exc) -> str:
    return f"{type(exc).__name__}: {exc}"


# ---------------------------------------------------------------- (a) tiny MLP
def _needle_mlp(device, dims, batch):
    import needle as ndl
    from needle import nn

    rng = np.random.default_rng(0)
    x_np = rng.random((batch, dims[0]), dtype=np.float32)
    y_np = rng.integers(0, dims[-1], batch)

    def build():
        np.random.seed(0)  # the same initial weights for every variant
        model = nn.Sequential(nn.Linear(dims[0], dims[1], device=device), nn.ReLU(),
                              nn.Linear(dims[1], dims[2], device=device))
        opt = ndl.optim.SGD(model.parameters(), lr=0.1)
        loss_fn = nn.SoftmaxLoss()

        def step(x, y):
            opt.reset_grad()
            logits = model(x)
            loss = loss_fn(logits, y)
            loss.backward()
            opt.step()
            return loss, logits
        return step

    # data as the DataLoader gives it: no adjoint for the inputs (PyTorch's too)
    x = ndl.Tensor(x_np, device=device, requires_grad=False)
    y = ndl.Tensor(y_np.astype(np.float32), device=device, requires_grad=False)
    return build, (x, y), x_np, y_np


def _torch_mlp(torch, device, dims, x_np, y_np):
    from benchmarks.models_probe import _torch_device

    tdev = _torch_device(device)
    torch.manual_seed(0)
    tnn = torch.nn
    model = tnn.Sequential(tnn.Linear(dims[0], dims[1]), tnn.ReLU(), tnn.Linear(dims[1], dims[2])).to(tdev)
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    loss_fn = tnn.CrossEntropyLoss()
    tx = torch.tensor(x_np, device=tdev)
    ty = torch.tensor(y_np.astype(np.int64), device=tdev)

    def step():
        opt.zero_grad()
        loss = loss_fn(model(tx), ty)
        loss.backward()
        opt.step()
        loss.item()
    return step


def _on_threads(torch, n, step):
    """``step`` with PyTorch on ``n`` intra-op threads (set when a block
    starts: get_num_threads is cheap, set_num_threads is not)."""
    def run():
        if torch.get_num_threads() != n:
            torch.set_num_threads(n)
        step()
    return run


def mlp_row(device, repeat, block, dims=(784, 100, 10), batch=16) -> dict:
    build, args, x_np, y_np = _needle_mlp(device, dims, batch)
    eager = _eager(build(), args)
    native, j_native, err_native = _jitted(build(), args, native=True)
    python, j_python, err_python = _jitted(build(), args, native=False)
    torch = _torch()
    # PyTorch on its default threads (as needle's backend: every core) for
    # the target ratio, and on one thread beside it: tiny tensors gain
    # nothing from threads, and on a loaded 2-core machine they cost (see
    # overhead.py)
    t_default = t_single = None
    if torch is not None:
        threads = torch.get_num_threads()
        tstep = _torch_mlp(torch, device, dims, x_np, y_np)
        t_default = _on_threads(torch, threads, tstep)
        t_single = _on_threads(torch, 1, tstep) if threads > 1 else None
    try:
        t = alternating_medians([eager, native, python, t_default, t_single], repeat, block=block)
    finally:
        if torch is not None:
            torch.set_num_threads(threads)
    torch_times = {n: v for n, v in ((threads if torch else 0, t[3]), (1, t[4])) if v is not None}
    return {"eager": t[0], "jit": t[1], "jit_python": t[2], "torch_threads": torch_times, "torch": t[3],
            "plan": _plan(j_native) if err_native is None else None,
            "plan_python": _plan(j_python) if err_python is None else None,
            "native": j_native.native, "error": err_native or err_python}


def _print_mlp(r, dims, batch):
    print(f"mlp {'-'.join(map(str, dims))} SGD lr 0.1, batch {batch}:")
    print(f"  needle eager              {_ms(r['eager'])}")
    if r["jit"] is not None:
        note = "" if r["native"] else " (the backend offers no native loop)"
        print(f"  needle jit                {_ms(r['jit'])}   plan: {r['plan']}{note}")
    if r["jit_python"] is not None:
        print(f"  needle jit native=False   {_ms(r['jit_python'])}   plan: {r['plan_python']}")
    if r["error"] is not None:
        print(f"  needle jit: not captured -- {_reason(r['error'])}")
    for n, seconds in r["torch_threads"].items():
        label = f"pytorch eager, {n} thread{'s' if n > 1 else ''}"
        print(f"  {label:26s}{_ms(seconds)}")
    if r["jit"] is not None:
        line = f"  ratio jit / needle eager {r['jit'] / r['eager']:5.2f}x"
        if r["torch"] is not None:
            line += f"   jit / pytorch eager {r['jit'] / r['torch']:5.2f}x (target <= 0.5x)"
            if r["jit_python"] is not None:
                line += f"   native=False / pytorch eager {r['jit_python'] / r['torch']:5.2f}x"
            if 1 in r["torch_threads"] and len(r["torch_threads"]) > 1:
                line += f"   jit / pytorch eager on 1 thread {r['jit'] / r['torch_threads'][1]:5.2f}x"
        print(line, flush=True)


# ---------------------------------------------------------------- (b), (c) the models probe's steps
def _parts(build, **kwargs):
    """The model, optimizer, loss and inputs a ``models_probe`` builder made,
    read from its step's closure (so the shapes and hyper-parameters are the
    builder's own), and the same step as a jittable function of the inputs:
    the loss (or the output) returned instead of read on the host."""
    step, _ = build(build_only=True, **kwargs)
    names = inspect.getclosurevars(step).nonlocals
    if {"model", "opt", "loss_fn", "x", "y", "logits_of"} <= names.keys():
        model, opt, loss_fn, logits_of = names["model"], names["opt"], names["loss_fn"], names["logits_of"]

        def sgd_step(x, y):
            opt.reset_grad()
            loss = loss_fn(logits_of(model(x)), y)
            loss.backward()
            opt.step()
            return loss
        return sgd_step, (names["x"], names["y"])
    if {"layer", "x"} <= names.keys():
        layer = names["layer"]

        def forward_backward(x):
            out = layer(x)
            out.sum().backward()
            return out
        return forward_backward, (names["x"],)
    raise RuntimeError(f"{build.__name__}'s step closes over {sorted(names)}; jit_probe expected "
                       f"model/opt/loss_fn/x/y/logits_of or layer/x (update benchmarks/jit_probe.py)")


def model_row(build, device, repeat, **sizes) -> dict:
    eager_fn, args = _parts(build, device=device, **sizes)
    jit_fn, jit_args = _parts(build, device=device, **sizes)  # a second copy: see the module docstring
    timed, step, err = _jitted(jit_fn, jit_args)
    eager = _eager(eager_fn, args)
    t = alternating_medians([eager, timed], repeat)
    return {"eager": t[0], "jit": t[1], "plan": _plan(step) if err is None else None, "error": err}


def _print_model(name, r, target=None):
    line = f"{name:12s} needle eager {_ms(r['eager'])}"
    if r["error"] is not None:
        print(f"{line}   jit: not captured -- {_reason(r['error'])}", flush=True)
        return
    ratio = f"{r['jit'] / r['eager']:5.2f}x" + (f" (target <= {target}x)" if target else "")
    print(f"{line}   jit {_ms(r['jit'])}   ratio jit / eager {ratio}   plan: {r['plan']}", flush=True)


# ---------------------------------------------------------------- report
def report(quick=False, device=None, repeat=None, only=None, tiny=False) -> dict:
    """Print every row; returns ``{row: figures}``.

    ``quick``: fewer rounds; ``tiny``: every model at a toy size (the tests'
    smoke run: the rows print, the figures mean nothing)."""
    import needle as ndl
    from benchmarks import models_probe

    dev = ndl.device(device) if isinstance(device, str) else (device or ndl.default_device())
    repeat = repeat or (1 if tiny else 3 if quick else 11)
    # blocks of ~0.1 s for the microsecond MLP steps: one call per turn would
    # time mostly the clock and the scheduler on a shared machine
    block = 0.0 if tiny else 0.05 if quick else 0.1
    torch = _torch()
    print(f"\n== jit: needle.jit training steps on {dev} (medians of {repeat} alternating "
          f"{'blocks' if block else 'runs'}{'' if torch is not None else ', no PyTorch'}"
          f"{'; tiny sizes' if tiny else ''}) ==")
    saved = ndl.autograd.KEEP_INTERIOR_GRADS
    ndl.autograd.KEEP_INTERIOR_GRADS = False
    out = {}
    try:
        for name in only or ROWS:
            sizes = TINY[name] if tiny else {}
            if name == "mlp":
                mlp_sizes = {"dims": (784, 100, 10), "batch": 16, **sizes}
                out[name] = mlp_row(dev, repeat, block, **mlp_sizes)
                _print_mlp(out[name], **mlp_sizes)
                continue
            build = {"lstm": models_probe.lstm_lm_step, "resnet9": models_probe.resnet9_step,
                     "transformer": models_probe.transformer_block}[name]
            out[name] = model_row(build, dev, repeat, **sizes)
            _print_model(name, out[name], target=0.8 if name == "lstm" else None)
    finally:
        ndl.autograd.KEEP_INTERIOR_GRADS = saved
    return out


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default=None, help="needle device name (default device)")
    parser.add_argument("--repeat", type=int, default=None, help="alternating rounds (default 11)")
    parser.add_argument("--quick", action="store_true", help="fewer rounds")
    parser.add_argument("--only", default=",".join(ROWS))
    args = parser.parse_args(argv)
    report(quick=args.quick, device=args.device, repeat=args.repeat, only=args.only.split(","))


if __name__ == "__main__":
    main()
