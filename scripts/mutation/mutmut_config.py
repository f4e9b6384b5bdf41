"""mutmut 2 hook and per-file test selection for scripts/mutation.sh.

``TESTS`` maps a source file (or folder prefix, longest match wins) to the
fast tests that exercise it: each mutant of that file runs only those, so a
run over the listed paths fits a 2-core machine.  ``python mutmut_config.py
PATH`` prints the selection for PATH (mutation.sh builds its runner from it).
"""

from __future__ import annotations

import sys

_OPS = ["tests/core/test_ops.py", "tests/core/test_ops_norm.py", "tests/core/test_backward_constants.py",
        "tests/core/test_public_api.py", "tests/core/test_mutants_ops.py"]
TESTS = {
    # fastest, NumPy-only oracles first: with -x most mutants die before torch loads
    # + the PyTorch-style API (param groups, zero_grad, state_dict, schedulers) and the fused steps
    "contrib/optim": ["tests/optim/test_optim_reference.py", "tests/optim/test_optim.py",
                      "tests/optim/test_optim_torch_style.py", "tests/optim/test_fused_step.py",
                      "tests/core/test_jit.py"],   # the replay-time lr, Adam's t, guards, in-place states
    # test_nn_torch_style holds the Module helpers' tests (legacy checkpoint keys, named_children, to, repr)
    "contrib/nn/nn_basic.py": ["tests/nn/test_nn_basic.py", "tests/nn/test_mutants_nn.py",
                               "tests/nn/test_nn_torch_style.py"],
    # Conv2d's own checks (padding, dilation, groups) are pinned in test_nn_torch_style
    "contrib/nn/nn_conv.py": ["tests/nn/test_nn_conv.py", "tests/nn/test_mutants_nn.py",
                              "tests/nn/test_nn_torch_style.py"],
    # nn.LSTM runs ops.lstm_layer: its module tests are in test_fused_lstm
    "contrib/nn/nn_sequence.py": ["tests/nn/test_nn_sequence.py", "tests/nn/test_mutants_nn.py",
                                  "tests/nn/test_fused_lstm.py"],
    "contrib/nn/nn_transformer.py": ["tests/nn/test_nn_transformer.py", "tests/nn/test_mutants_nn.py"],
    # DistributedDataParallel and SyncBatchNorm run in the ranks that test's `needle launch` starts
    # (the mutant reaches them through PYTHONPATH); the world-of-one tests run in-process
    "contrib/nn/parallel.py": ["tests/distributed/test_distributed.py"],
    "contrib/nn": ["tests/nn"],
    # contrib/data: per file, the fast tests first, the worker-process tests (seconds each) last
    "contrib/data/data_basic.py": ["tests/data/test_mutants_data.py", "tests/data/test_data_basic.py",
                                   "tests/data/test_samplers.py", "tests/data/test_data_public_helpers.py",
                                   "tests/test_bad_input.py", "tests/data/test_dataloader_workers.py"],
    "contrib/data/data_transforms.py": ["tests/data/test_mutants_data.py", "tests/data/test_data_basic.py",
                                        "tests/test_bad_input.py", "tests/data/test_cifar10.py"],
    "contrib/data/samplers.py": ["tests/data/test_mutants_data.py", "tests/data/test_samplers.py"],
    "contrib/data/download.py": ["tests/data/test_mutants_data.py", "tests/test_bad_input.py",
                                 "tests/data/test_download.py", "tests/data/test_download_large.py"],
    "contrib/data/workers.py": ["tests/data/test_mutants_data.py", "tests/data/test_dataloader_workers.py"],
    "contrib/data/datasets/ndarray_dataset.py": ["tests/data/test_mutants_data.py", "tests/data/test_data_basic.py",
                                                 "tests/test_bad_input.py", "tests/data/test_samplers.py"],
    "contrib/data/datasets/mnist_dataset.py": ["tests/data/test_mutants_data.py", "tests/data/test_mnist_dataset.py",
                                               "tests/test_bad_input.py"],
    "contrib/data/datasets/cifar10_dataset.py": ["tests/data/test_mutants_data.py", "tests/data/test_cifar10.py",
                                                 "tests/test_bad_input.py"],
    "contrib/data/datasets/ptb_dataset.py": ["tests/data/test_mutants_data.py", "tests/data/test_ptb.py",
                                             "tests/test_bad_input.py"],
    "contrib/data": ["tests/data", "tests/test_bad_input.py"],
    "core/ops/ops_logarithmic.py": ["tests/core/test_mutants_ops.py", "tests/core/test_ops.py",
                                    "tests/core/test_conformance.py", "-k", "'logsumexp or softmax or follow'"],
    "core/ops/ops_conv.py": ["tests/core/test_mutants_ops.py", "tests/nn/test_nn_conv.py", "tests/core/test_ops.py",
                             "tests/cpu/test_no_copy.py",
                             "tests/core/test_public_api.py"],
    "core/ops/ops_pooling.py": ["tests/core/test_mutants_ops.py", "tests/nn/test_nn_conv.py", "tests/core/test_ops.py"],
    # the fused rows (softmax, layer norm) and the LSTM gates: their own tests hold the oracles
    "core/ops/ops_rows.py": ["tests/core/test_mutants_ops.py", "tests/nn/test_fused_rows.py",
                             "tests/nn/test_nn_basic.py", "tests/nn/test_nn_transformer.py"],
    "core/ops/ops_lstm.py": ["tests/core/test_mutants_ops.py", "tests/nn/test_fused_lstm.py",
                             "tests/nn/test_nn_sequence.py"],
    # files whose oracles live outside the generic op tests (coverage under _OPS alone:
    # ops_tensor_api 27%, ops_optim 44%, ops_loss only through test_mutants_ops)
    "core/ops/ops_loss.py": ["tests/core/test_mutants_ops.py", "tests/nn/test_fused_softmax_loss.py",
                             "tests/core/test_jit.py"],   # the device-side one-hot of a capture
    # random draws (eager NumPy ones and a capture's device generator), constants, one-hot
    "core/init/init_basic.py": ["tests/core/test_init.py", "tests/core/test_jit.py"],
    "core/ops/ops_tensor_api.py": ["tests/core/test_mutants_ops.py", "tests/core/test_tensor_api.py"],
    "core/ops/ops_optim.py": ["tests/core/test_mutants_ops.py", "tests/optim/test_fused_step.py"],
    # the tuple adjoints' dropped-slot path (_slot) is exercised by a training step's backward
    "core/ops/ops_tuple.py": _OPS + ["tests/models/test_step_memory.py"],
    "core/ops": _OPS,
    # the graph, Tensor's methods, the grad-ready hooks, PyTorch's .grad rule (KEEP_INTERIOR_GRADS
    # off, test_step_memory) and local_vjp (the fused rows' second order)
    "core/autograd.py": ["tests/core/test_mutants_autograd.py", "tests/core/test_autograd.py",
                         "tests/core/test_tensor_api.py", "tests/core/test_grad_ready_hooks.py",
                         "tests/models/test_step_memory.py", "tests/core/test_public_api.py",
                         "tests/core/test_ops.py", "tests/nn/test_fused_rows.py", "tests/core/test_reliability.py",
                         "tests/test_bad_input.py"],
    "core/backend_ndarray/ndarray.py": ["tests/core/test_mutants_ndarray.py", "tests/core/test_ndarray.py",
                                        "tests/core/test_host_view.py", "tests/core/test_reliability.py",
                                        "tests/test_bad_input.py", "tests/core/test_conformance.py"],
    # needle.jit: capture (recorders, hooks) and replay (signatures, planning, checks)
    "core/replay.py": ["tests/core/test_jit.py", "tests/models/test_train_jit.py"],
    "core/backend_ndarray/capture.py": ["tests/core/test_jit.py", "tests/models/test_train_jit.py"],
}


def tests_for(path: str) -> list[str]:
    path = path.rstrip("/")
    best = max((k for k in TESTS if path == k or path.startswith(k + "/")), key=len, default=None)
    if best is None:
        raise SystemExit(f"mutmut_config: no tests mapped for {path!r}; add it to TESTS")
    import os
    # pytest options (-k ...) pass through; test paths not written yet are left out
    return [t for t in TESTS[best] if not t.startswith("tests/") or os.path.exists(t.split("::")[0])]


if __name__ == "__main__":
    print(" ".join(tests_for(sys.argv[1])))
