"""The issue-14 fused loss and multi-tensor optimizer steps, on and off, in one process.

    python -m benchmarks.fused_probe [--repeat 9] [--device cpu]
    python benchmarks/compare.py fused

Times the same training step with the backend's op overrides
``softmax_xent``/``softmax_xent_grad``/``sgd_step``/``adam_step`` offered
("fused") and hidden ("composed": the compositions they replace), in
alternating runs so that load on a shared machine hits both alike:

- the LSTM language-model step of ``compare.py models`` (vocab 10,000: the
  loss over 400 x 10,000 logits; SGD over 7 parameters);
- one MLPResNet(784, 100) Adam step, batch 128 (the step of ``compare.py
  mlp``; Adam over 28 parameters);
- the loss alone (forward + backward) on 400 x 10,000 logits, and the Adam
  step alone on MLPResNet's parameters.
"""

from __future__ import annotations

import argparse
import contextlib

import numpy as np

from benchmarks.benchmarks.timing import alternating_medians

FUSED = ("softmax_xent", "softmax_xent_grad", "sgd_step", "adam_step")


@contextlib.contextmanager
def _composed(device):
    """Hide the fused overrides of ``device`` (the ops then run their compositions)."""
    device.op_override(FUSED[0])  # fills the device's override table
    table = device._overrides  # a benchmark may reach in; library code never does
    saved = {name: table.pop(name) for name in FUSED if name in table}
    try:
        yield
    finally:
        table.update(saved)


def _pair(device, step):
    def composed():
        with _composed(device):
            step()
    return step, composed


def _mlp_adam(device, batch=128):
    import needle as ndl
    from needle.models.mlp_resnet import MLPResNet
    rng = np.random.default_rng(0)
    np.random.seed(0)
    previous = ndl.set_default_device(device)
    model = MLPResNet(784, 100)
    ndl.set_default_device(previous)
    opt = ndl.optim.Adam(model.parameters(), lr=1e-3, weight_decay=1e-3)
    x = ndl.Tensor(rng.random((batch, 784), dtype=np.float32), device=device)
    y = ndl.Tensor(rng.integers(0, 10, batch).astype(np.float32), device=device)
    loss_fn = ndl.nn.SoftmaxLoss()

    def step():
        opt.reset_grad()
        loss = loss_fn(model(x), y)
        loss.backward()
        opt.step()
        loss.numpy()

    def adam_only():
        opt.step()
    step()
    return step, adam_only


def _loss_only(device, rows=400, classes=10000):
    import needle as ndl
    rng = np.random.default_rng(1)
    z = ndl.Tensor(rng.standard_normal((rows, classes), dtype=np.float32), device=device, requires_grad=True)
    y = ndl.Tensor(rng.integers(0, classes, rows).astype(np.float32), device=device)
    loss_fn = ndl.nn.SoftmaxLoss()

    def step():
        loss = loss_fn(z, y)
        loss.backward()
        z.grad.numpy()
    return step


def report(repeat=9, device=None):
    import needle as ndl
    import needle.backend_ndarray as nd
    from benchmarks.models_probe import lstm_lm_step
    device = device or ndl.cpu()
    if isinstance(device, str):
        device = nd.device(device)
    if not device.enabled():
        print(f"\n== fused: {device} is unavailable")
        return {}
    if device.op_override("softmax_xent") is None:
        print(f"\n== fused: {device} offers no fused loss/optimizer overrides; nothing to compare")
        return {}
    lstm, _ = lstm_lm_step(device=device, build_only=True)
    mlp_step, adam_only = _mlp_adam(device)
    cases = {
        "LSTM LM step (SGD)": lstm,
        "MLPResNet Adam step": mlp_step,
        "SoftmaxLoss fwd+bwd 400x10000": _loss_only(device),
        "Adam step alone (MLPResNet params)": adam_only,
    }
    print(f"\n== fused: loss/optimizer overrides on vs off ({device}), medians of {repeat} alternating runs")
    print(f"{'case':38s} {'composed ms':>12s} {'fused ms':>10s} {'speed-up':>9s}")
    out = {}
    for name, fn in cases.items():
        fused, composed = alternating_medians(list(_pair(device, fn)), repeat)
        out[name] = {"fused": fused, "composed": composed}
        print(f"{name:38s} {composed * 1e3:12.2f} {fused * 1e3:10.2f} {composed / fused:8.2f}x")
    return out


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=9)
    parser.add_argument("--device", default="cpu")
    args = parser.parse_args(argv)
    report(args.repeat, args.device)


if __name__ == "__main__":
    main()
