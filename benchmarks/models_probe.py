"""Training-step timings of the issue-7 models beside PyTorch CPU, in one process.

    python -m benchmarks.models_probe [--device cpu] [--repeat 11] [--only resnet9,lstm,transformer]

Each probe returns ``{"needle": seconds, "torch": seconds or None}``: the
medians of ``repeat`` timed runs after one warm-up run each, the two sides
timed alternately so that load drifting on a shared machine hits both.  The shapes are the issue's:
- ResNet9 forward + backward + SGD step, batch 128 of 32x32x3;
- LSTM language-model step (vocab 10,000, embedding 100, hidden 100, 2 layers,
  seq 20, batch 20): forward, loss, backward, SGD step;
- Transformer block (d_model 64, 4 heads of 16, MLP 256, seq 32, batch 32)
  forward + backward.
PyTorch is only a reference here; without it the ratios are skipped.
Gradients follow PyTorch's rule (leaves keep ``.grad``, as ``needle train``
does) unless ``--grad-rule course``.
``build_only=True`` returns the two step functions ``(needle, torch or None)``
instead of timing them (for profilers).
"""

from __future__ import annotations

import argparse

import numpy as np

from benchmarks.benchmarks.timing import alternating_medians


def _compare(needle_fn, torch_fn, repeat):
    """Medians of alternating timed runs (after a warm-up run of each)."""
    ours, theirs = alternating_medians([needle_fn, torch_fn], repeat)
    return {"needle": ours, "torch": theirs}


def _torch():
    try:
        import torch
    except ImportError:
        return None
    return torch


def _torch_device(device):
    """Where the PyTorch reference runs: on the GPU when needle's device is CUDA
    (TF32 off, so both sides do float32 arithmetic), else on the CPU."""
    torch = _torch()
    if device is not None and str(getattr(device, "name", device)).startswith("cuda"):
        torch.backends.cuda.matmul.allow_tf32 = False
        torch.backends.cudnn.allow_tf32 = False
        return "cuda"
    return "cpu"


def _needle_sgd_step(model, opt, loss_fn, x, y, logits_of=lambda out: out):
    """One needle training step: forward, softmax loss, backward, SGD step,
    then the loss back on the host (which waits for the device)."""
    def step():
        opt.reset_grad()
        loss = loss_fn(logits_of(model(x)), y)
        loss.backward()
        opt.step()
        loss.numpy()
    return step


def _torch_sgd_step(torch, tmodel, lr, x_np, y_np, device):
    """The same step for a PyTorch model, moved to the device that matches
    needle's (see :func:`_torch_device`)."""
    tdev = _torch_device(device)
    tmodel = tmodel.to(tdev)
    topt = torch.optim.SGD(tmodel.parameters(), lr=lr)
    tx, ty = torch.tensor(x_np, device=tdev), torch.tensor(y_np, device=tdev)

    def tstep():
        topt.zero_grad()
        loss = torch.nn.functional.cross_entropy(tmodel(tx), ty)
        loss.backward()
        topt.step()
        loss.item()  # like needle's loss.numpy(): waits for the device
    return tstep


# ---------------------------------------------------------------- ResNet9
def torch_resnet9(torch):
    """PyTorch's twin of ``needle.models.ResNet9`` (NCHW, same layers)."""
    tnn = torch.nn

    def cbn(a, b, k, s):
        return tnn.Sequential(tnn.Conv2d(a, b, k, s, padding=k // 2), tnn.BatchNorm2d(b), tnn.ReLU())

    class Res(tnn.Module):
        def __init__(self, f):
            super().__init__()
            self.f = f

        def forward(self, t):
            return self.f(t) + t

    return tnn.Sequential(
        cbn(3, 16, 7, 4), cbn(16, 32, 3, 2),
        Res(tnn.Sequential(cbn(32, 32, 3, 1), cbn(32, 32, 3, 1))),
        cbn(32, 64, 3, 2), cbn(64, 128, 3, 2),
        Res(tnn.Sequential(cbn(128, 128, 3, 1), cbn(128, 128, 3, 1))),
        tnn.Flatten(), tnn.Linear(128, 128), tnn.ReLU(), tnn.Linear(128, 10))


def resnet9_step(device=None, batch=128, repeat=5, build_only=False):
    import needle as ndl
    from needle import nn
    from needle.models import ResNet9

    np.random.seed(0)
    x_np = np.random.rand(batch, 3, 32, 32).astype(np.float32)
    y_np = np.random.randint(0, 10, size=batch)
    model = ResNet9(device=device)
    opt = ndl.optim.SGD(model.parameters(), lr=0.01)
    loss_fn = nn.SoftmaxLoss()
    # data batches as the DataLoader makes them (requires_grad=False), as
    # PyTorch's: no adjoint is computed for the images (the first conv's input
    # adjoint was 8 of 37 ms of a single-threaded step)
    x = ndl.Tensor(x_np, device=device, requires_grad=False)
    y = ndl.Tensor(y_np, device=device, requires_grad=False)

    step = _needle_sgd_step(model, opt, loss_fn, x, y)

    tstep = None
    torch = _torch()
    if torch is not None:
        tmodel = torch_resnet9(torch)
        tstep = _torch_sgd_step(torch, tmodel, 0.01, x_np, y_np, device)

    return (step, tstep) if build_only else _compare(step, tstep, repeat)


# ---------------------------------------------------------------- LSTM LM
def lstm_lm_step(device=None, vocab=10000, emb=100, hidden=100, layers=2, seq=20, batch=20,
                 repeat=5, build_only=False):
    import needle as ndl
    from needle import nn
    from needle.models import LanguageModel

    np.random.seed(0)
    x_np = np.random.randint(0, vocab, size=(seq, batch))
    y_np = np.random.randint(0, vocab, size=(seq * batch,))
    model = LanguageModel(emb, vocab, hidden, num_layers=layers, seq_model="lstm",
                          device=device)
    opt = ndl.optim.SGD(model.parameters(), lr=0.1)
    loss_fn = nn.SoftmaxLoss()
    x = ndl.Tensor(x_np, device=device, requires_grad=False)   # token ids, as the DataLoader's
    y = ndl.Tensor(y_np, device=device, requires_grad=False)

    step = _needle_sgd_step(model, opt, loss_fn, x, y, logits_of=lambda out: out[0])

    tstep = None
    torch = _torch()
    if torch is not None:
        tnn = torch.nn

        class LM(tnn.Module):
            def __init__(self):
                super().__init__()
                self.emb = tnn.Embedding(vocab, emb)
                self.rnn = tnn.LSTM(emb, hidden, layers)
                self.out = tnn.Linear(hidden, vocab)

            def forward(self, t):
                o, _ = self.rnn(self.emb(t))
                return self.out(o.reshape(-1, hidden))

        tstep = _torch_sgd_step(torch, LM(), 0.1, x_np, y_np, device)

    return (step, tstep) if build_only else _compare(step, tstep, repeat)


# ---------------------------------------------------------------- Transformer block
def transformer_block(device=None, d_model=64, heads=4, hidden=256, seq=32, batch=32,
                      repeat=5, build_only=False):
    import needle as ndl
    from needle import nn

    np.random.seed(0)
    x_np = np.random.randn(batch, seq, d_model).astype(np.float32)
    layer = nn.TransformerLayer(d_model, heads, d_model // heads, hidden, dropout=0.0,
                                causal=True, device=device)
    layer.eval()  # no dropout draws: compare the arithmetic only

    x = ndl.Tensor(x_np, device=device)

    def step():
        # a fresh gradient each step, as PyTorch's fresh ``requires_grad``
        # input below: x's stored gradient is a graph that reaches x again
        # (hw1's gradients of gradients), so keeping it would leave each
        # step's graph to the cyclic collector
        x.grad = None
        out = layer(x)
        out.sum().backward()
        out.numpy()

    tstep = None
    torch = _torch()
    if torch is not None:
        tnn, F = torch.nn, torch.nn.functional
        dh = d_model // heads

        class Block(tnn.Module):
            def __init__(self):
                super().__init__()
                self.nq, self.nk, self.nv = (tnn.LayerNorm(d_model) for _ in range(3))
                self.q, self.k, self.v = (tnn.Linear(d_model, d_model, bias=False)
                                          for _ in range(3))
                self.o = tnn.Linear(d_model, d_model, bias=False)
                self.norm = tnn.LayerNorm(d_model)
                self.l1, self.l2 = tnn.Linear(d_model, hidden), tnn.Linear(hidden, d_model)

            def forward(self, t):
                B, T, _ = t.shape

                def split(u):
                    return u.reshape(B, T, heads, dh).transpose(1, 2)
                a = F.scaled_dot_product_attention(split(self.q(self.nq(t))),
                                                   split(self.k(self.nk(t))),
                                                   split(self.v(self.nv(t))), is_causal=True)
                t = t + self.o(a.transpose(1, 2).reshape(B, T, d_model))
                return t + self.l2(F.relu(self.l1(self.norm(t))))

        tdev = _torch_device(device)
        block = Block().to(tdev)
        tx_np = torch.tensor(x_np, device=tdev)

        def tstep():
            tx = tx_np.clone().requires_grad_(True)
            out = block(tx)
            out.sum().backward()
            out.detach().cpu()

    return (step, tstep) if build_only else _compare(step, tstep, repeat)


PROBES = {"resnet9": resnet9_step, "lstm": lstm_lm_step, "transformer": transformer_block}


def report(quick=False, device=None, repeat=None, only=None, grad_rule="pytorch"):
    """Print each probe's needle and PyTorch step times and their ratio.

    ``grad_rule``: ``"pytorch"`` (default; what ``needle train`` uses and
    what PyTorch does: only leaves keep ``.grad``, so a step's graph goes when
    the step ends) or ``"course"`` (every node keeps its adjoint, the course
    API's default: each step's graph then sits in reference cycles until
    Python's cyclic collector runs, and its buffers come back to the
    allocator late)."""
    import needle as ndl

    if grad_rule not in ("pytorch", "course"):
        raise ValueError(f"grad_rule must be 'pytorch' or 'course', got {grad_rule!r}")
    dev = ndl.device(device) if isinstance(device, str) else (device or ndl.default_device())
    # 5 alternating rounds moved the LSTM ratio by 0.2 between runs on a
    # shared 2-core VM; 11 keep the median within a few percent
    repeat = repeat or (3 if quick else 11)
    print(f"\n== models: training steps on {dev} (median of {repeat}; ratio = needle / PyTorch; "
          f"{grad_rule}'s .grad rule) ==")
    saved = ndl.autograd.KEEP_INTERIOR_GRADS
    ndl.autograd.KEEP_INTERIOR_GRADS = grad_rule == "course"
    try:
        for name in only or list(PROBES):
            r = PROBES[name](device=dev, repeat=repeat)
            line = f"{name:12s} needle {r['needle'] * 1e3:9.1f} ms"
            if r["torch"] is not None:
                line += f"   torch {r['torch'] * 1e3:9.1f} ms   ratio {r['needle'] / r['torch']:5.2f}x"
            print(line, flush=True)
    finally:
        ndl.autograd.KEEP_INTERIOR_GRADS = saved


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default=None, help="needle device name (default device)")
    parser.add_argument("--repeat", type=int, default=None, help="alternating rounds (default 11)")
    parser.add_argument("--only", default=",".join(PROBES))
    parser.add_argument("--grad-rule", default="pytorch", choices=("pytorch", "course"),
                        help=".grad of leaves only (PyTorch, needle train) or of every node (the course)")
    args = parser.parse_args(argv)
    report(device=args.device, repeat=args.repeat, only=args.only.split(","), grad_rule=args.grad_rule)


if __name__ == "__main__":
    main()
