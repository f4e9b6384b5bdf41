"""Before/after of the fused nn ops (issue 14), measured in one process.

For each model probe of ``models_probe`` (ResNet9, LSTM LM, Transformer) it
times the training step with the fused ops (``batch_norm_train`` on NCHW,
``layer_norm``, ``softmax``, ``lstm_gates``) against the same step with the
compositions they replaced (the modules' previous code, and no batch-norm
override), alternating the two and PyTorch in blocks and taking medians, so
load from other processes hits all three alike; both orders of the two
needle variants are run and their medians averaged.

    python benchmarks/fused_ops_ab.py [--repeat 7] [--only resnet9,lstm_lm,transformer]
"""

import argparse
import os
import sys

if __package__ in (None, ""):  # run as `python benchmarks/fused_ops_ab.py`: import this folder as `benchmarks`
    sys.path[0] = os.path.dirname(os.path.abspath(sys.path[0]))

from needle import ops  # noqa: E402


def _previous_paths():
    """The modules' forward code before the fused ops, as patches."""
    from needle.nn import nn_basic, nn_conv, nn_sequence, nn_transformer
    from needle.autograd import Tensor

    def bn2d_forward(self, x):
        nn_conv._check_nchw("BatchNorm2d", x, None)
        n, c, h, w = x.shape
        flat = ops.reshape(nn_conv._nchw_to_nhwc(x), (n * h * w, c))
        y = nn_basic.BatchNorm1d.forward(self, flat)
        return nn_conv._nhwc_to_nchw(ops.reshape(y, (n, h, w, c)))

    def ln_forward(self, x):
        shape = tuple(x.shape)
        last = len(shape) - 1
        keep = shape[:-1] + (1,)
        mean = (x.sum((last,)) / self.dim).reshape(keep)
        centred = x - mean
        var = ((centred * centred).sum((last,)) / self.dim).reshape(keep)
        return centred * (var + self.eps) ** -0.5 * self.weight + self.bias

    def softmax(self, logit):
        row_max = logit.realize_cached_data().max(axis=3, keepdims=True)
        row_max = Tensor(row_max, device=logit.device, dtype=logit.dtype, requires_grad=False)
        e = ops.exp(logit - row_max)
        total = ops.reshape(ops.summation(e, axes=3), (*logit.shape[:3], 1))
        return e / total

    def lstm_step(self, x_proj, h, c):
        batch, hid = h.shape
        z = x_proj + h @ self.W_hh
        i, f, g, o = ops.split(ops.reshape(z, (batch, 4, hid)), 1).tuple()
        i, f, g, o = ops.sigmoid(i), ops.sigmoid(f), ops.tanh(g), ops.sigmoid(o)
        c_new = f * c + i * g
        return o * ops.tanh(c_new), c_new

    return [(nn_conv.BatchNorm2d, "forward", bn2d_forward), (nn_basic.LayerNorm1d, "forward", ln_forward),
            (nn_transformer.MultiHeadAttention, "softmax", softmax),
            (nn_sequence.LSTMCell, "_step", lstm_step)]


BN_OVERRIDES = ("batch_norm_stats", "batch_norm_apply", "batch_norm_grad_stats", "batch_norm_grad_input")


def main(argv=None):
    import needle as ndl
    from benchmarks import models_probe as mp
    from benchmarks.benchmarks.timing import alternating_medians

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=7)
    parser.add_argument("--only", default="resnet9,lstm_lm,transformer")
    args = parser.parse_args(argv)
    dev = ndl.cpu()
    patches = _previous_paths()
    fused = [(cls, name, cls.__dict__[name]) for cls, name, _ in patches]
    dev.op_override("conv")  # fill the device's override table
    table = dev._overrides  # noqa: SLF001 (a benchmark toggles the table itself)
    saved = {k: table[k] for k in BN_OVERRIDES if k in table}

    def use(which):
        for cls, name, fn in (fused if which == "after" else patches):
            setattr(cls, name, fn)
        if which == "after":
            table.update(saved)
        else:
            for k in BN_OVERRIDES:
                table.pop(k, None)

    probes = {"resnet9": mp.resnet9_step, "lstm_lm": mp.lstm_lm_step, "transformer": mp.transformer_block}
    print(f"== fused ops before/after on {dev} (median of {args.repeat} alternating rounds) ==")
    for name in args.only.split(","):
        use("after")
        step, tstep = probes[name](device=dev, build_only=True)

        def before():
            use("before")
            step()

        def after():
            use("after")
            step()
        # the position in a round biases a step under load (it pays for
        # tearing down the previous step's graph and for the threads the
        # previous call left spinning): run both orders, average the medians
        b1, a1, t1 = alternating_medians([before, after, tstep], args.repeat)
        a2, b2, t2 = alternating_medians([after, before, tstep], args.repeat)
        b, a = (b1 + b2) / 2, (a1 + a2) / 2
        t = None if t1 is None else (t1 + t2) / 2
        use("after")
        line = f"{name:12s} before {b * 1e3:8.1f} ms  after {a * 1e3:8.1f} ms  speedup {b / a:4.2f}x"
        if t is not None:
            line += f"   torch {t * 1e3:8.1f} ms  ratio before {b / t:4.2f}x  after {a / t:4.2f}x"
        print(line, flush=True)


if __name__ == "__main__":
    main()
