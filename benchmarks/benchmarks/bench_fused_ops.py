"""asv: the fused nn ops (issue 14) forward + backward on every available
backend, beside the compositions they replace (``variant`` "fused" or
"composed"): BatchNorm2d on nn.Conv's channels-last NCHW view, layer norm,
the attention softmax, the LSTM cell's gates and a whole LSTM layer's
recurrence (lstm_layer against the cell steps), at the sizes of the
ResNet9 / Transformer / LSTM LM probes.  Also: ResNet9's convolutions on
its small late maps (where most taps read only padding) and its first
7x7 layer, and the layer-norm / softmax row kernels on each cpu SIMD path."""

import numpy as np
from asv_runner.benchmarks.mark import SkipNotImplemented

from .cases import available_devices


def _device_names():
    try:
        return [d.name for d in available_devices()]
    except Exception:  # needle not importable in this env
        return ["cpu_numpy"]


def _batch_norm(ndl, ops, dev, fused):
    rng = np.random.default_rng(0)
    leaf = ndl.Tensor(rng.standard_normal((128, 8, 8, 32)).astype(np.float32), device=dev,
                      requires_grad=True)
    w, b = (ndl.Tensor(np.ones(32, np.float32), device=dev, requires_grad=True) for _ in range(2))

    def run():
        x = ops.transpose(ops.transpose(leaf, (2, 3)), (1, 2))  # NCHW view of NHWC memory
        if fused:
            y = ops.batch_norm_train(x, w, b)
        else:
            n, c, h, wd = x.shape
            flat = ops.reshape(ops.transpose(ops.transpose(x, (1, 2)), (2, 3)), (n * h * wd, c))
            y = ops.batch_norm_train(flat, w, b)  # the previous BatchNorm2d: permute, 2-D op, back
            y = ops.transpose(ops.transpose(ops.reshape(y, (n, h, wd, c)), (2, 3)), (1, 2))
        y.sum().backward()
    return run


def _layer_norm(ndl, ops, dev, fused):
    rng = np.random.default_rng(1)
    x = ndl.Tensor(rng.standard_normal((32, 32, 64)).astype(np.float32), device=dev, requires_grad=True)
    w, b = (ndl.Tensor(np.ones(64, np.float32), device=dev, requires_grad=True) for _ in range(2))

    def run():
        if fused:
            y = ops.layer_norm(x, w, b)
        else:
            mean = ops.reshape(ops.summation(x, (2,)) / 64, (32, 32, 1))
            centred = x - mean
            var = ops.reshape(ops.summation(centred * centred, (2,)) / 64, (32, 32, 1))
            y = centred * (var + 1e-5) ** -0.5 * w + b
        y.sum().backward()
    return run


def _softmax(ndl, ops, dev, fused):
    rng = np.random.default_rng(2)
    x = ndl.Tensor(rng.standard_normal((32, 4, 32, 32)).astype(np.float32), device=dev, requires_grad=True)
    g = ndl.Tensor(rng.standard_normal((32, 4, 32, 32)).astype(np.float32), device=dev)

    def run():
        if fused:
            y = ops.softmax(x)
        else:
            m = ndl.Tensor(x.realize_cached_data().max(axis=3, keepdims=True), device=dev)
            e = ops.exp(x - m)
            y = e / ops.reshape(ops.summation(e, (3,)), (32, 4, 32, 1))
        (y * g).sum().backward()
    return run


def _lstm_gates(ndl, ops, dev, fused):
    rng = np.random.default_rng(3)
    z = ndl.Tensor(rng.standard_normal((20, 400)).astype(np.float32), device=dev, requires_grad=True)
    c = ndl.Tensor(rng.standard_normal((20, 100)).astype(np.float32), device=dev, requires_grad=True)

    def run():
        if fused:
            h, c2 = ops.split(ops.lstm_gates(z, c), 1).tuple()
        else:
            i, f, g, o = ops.split(ops.reshape(z, (20, 4, 100)), 1).tuple()
            i, f, g, o = ops.sigmoid(i), ops.sigmoid(f), ops.tanh(g), ops.sigmoid(o)
            c2 = f * c + i * g
            h = o * ops.tanh(c2)
        (h.sum() + c2.sum()).backward()
    return run


def _lstm_layer(ndl, ops, dev, fused):
    # the LSTM LM probe's layer: 20 steps of batch 20, hidden 100
    rng = np.random.default_rng(4)
    p = ndl.Tensor(rng.standard_normal((20, 20, 400)).astype(np.float32), device=dev, requires_grad=True)
    w = ndl.Tensor(rng.standard_normal((100, 400)).astype(np.float32) * 0.1, device=dev, requires_grad=True)
    h0, c0 = (ndl.Tensor(np.zeros((20, 100), np.float32), device=dev) for _ in range(2))

    def run():
        if fused:
            y = ops.lstm_layer(p, w, h0, c0)
        else:  # the cell steps nn.LSTM ran before (one lstm_gates node a step)
            h, c, hs = h0, c0, []
            for p_t in ops.split(p, 0).tuple():
                h, c = ops.split(ops.lstm_gates(p_t + h @ w, c), 1).tuple()
                hs.append(h)
            y = ops.stack(hs + [c], 0)
        y.sum().backward()
    return run


CASES = {"batch_norm2d 128x32x8x8": _batch_norm, "layer_norm 32x32x64": _layer_norm,
         "softmax 32x4x32x32": _softmax, "lstm_gates 20x100": _lstm_gates,
         "lstm_layer 20 steps 20x100": _lstm_layer}


class FusedOps:
    params = (list(CASES), ["fused", "composed"], _device_names())
    param_names = ["op", "variant", "device"]
    timeout = 300

    def setup(self, op, variant, device):
        import needle as ndl
        from needle import ops
        dev = ndl.device(device)
        if not dev.enabled():
            raise SkipNotImplemented(f"{device} unavailable")
        self.run = CASES[op](ndl, ops, dev, variant == "fused")
        self.run()  # warm-up

    def time_forward_backward(self, op, variant, device):
        self.run()


# ResNet9's convolutions (nn.Conv forward + backward, batch 128): the first
# 7x7 stride-4 layer on 3 channels, and the late 3x3 ones on 2x2 and 1x1 maps,
# whose taps mostly read padding (the cpu kernels skip those taps)
CONV_SHAPES = {"7x7/4 3->16 on 32x32": (3, 16, 7, 4, 32), "3x3/2 64->128 on 2x2": (64, 128, 3, 2, 2),
               "3x3 128->128 on 1x1": (128, 128, 3, 1, 1)}


class ConvResNet9Layers:
    params = (list(CONV_SHAPES), _device_names())
    param_names = ["layer", "device"]
    timeout = 300

    def setup(self, layer, device):
        import needle as ndl
        from needle import nn
        dev = ndl.device(device)
        if not dev.enabled():
            raise SkipNotImplemented(f"{device} unavailable")
        cin, cout, k, stride, size = CONV_SHAPES[layer]
        conv = nn.Conv(cin, cout, k, stride=stride, device=dev)
        x = ndl.Tensor(np.random.default_rng(5).standard_normal((128, cin, size, size)).astype(np.float32),
                       device=dev, requires_grad=True)

        def run():
            conv(x).sum().backward()
        self.run = run
        run()  # warm-up

    def time_forward_backward(self, layer, device):
        self.run()


class CpuSimdRowKernels:
    """Layer norm and the attention softmax (forward + backward) on each of
    the cpu backend's SIMD paths; paths this CPU cannot run are skipped."""
    params = (["layer_norm 32x32x64", "softmax 32x4x32x32"], ["avx512", "avx2", "none"])
    param_names = ["op", "simd"]
    timeout = 300

    def setup(self, op, simd):
        import needle as ndl
        from needle import ops
        try:
            import needle_cpu._ext as ext
            ext.set_simd(simd)
        except Exception as exc:  # not built, or a path this CPU lacks
            raise SkipNotImplemented(f"cpu simd {simd}: {exc}")
        dev = ndl.cpu()
        self.run = CASES[op](ndl, ops, dev, True)
        self.run()

    def time_forward_backward(self, op, simd):
        self.run()

    def teardown(self, op, simd):
        import needle_cpu._ext as ext
        ext.set_simd("auto")
