"""MLPResNet structure, outputs and gradients vs PyTorch, and the hw2 epoch / train_mnist loops."""

import gzip
import struct
from pathlib import Path

import numpy as np
import pytest

import needle as ndl
import needle.nn as nn
from needle.models import MLPResNet, ResidualBlock, epoch, train_mnist

SHARED_MNIST = Path(__file__).parents[2].parent / "shared" / "data" / "mnist"


def _n_params(model):
    return sum(int(np.prod(p.shape)) for p in model.parameters())


def test_structure_and_parameter_count():
    model = MLPResNet(784, 100, num_blocks=3)
    # Linear(784,100) + 3 x [Linear(100,50) BN(50) Linear(50,100) BN(100)] + Linear(100,10)
    assert _n_params(model) == 78500 + 3 * (5050 + 100 + 5100 + 200) + 1010 == 110860
    mods = model.modules
    assert isinstance(mods[0], nn.Linear) and isinstance(mods[1], nn.ReLU) and isinstance(mods[-1], nn.Linear)
    block = mods[2]
    inner = block.modules[0].fn.modules
    assert [type(m).__name__ for m in inner] == ["Linear", "BatchNorm1d", "ReLU", "Dropout", "Linear", "BatchNorm1d"]
    assert inner[0].weight.shape == (100, 50) and inner[3].p == 0.1 and isinstance(block.modules[1], nn.ReLU)
    assert _n_params(ResidualBlock(8, 4, norm=nn.LayerNorm1d)) == (8 * 4 + 4) + 8 + (4 * 8 + 8) + 16


def test_creation_order_fixes_rng_stream():
    np.random.seed(0)
    model = MLPResNet(6, 8, num_blocks=1, num_classes=3)
    np.random.seed(0)
    first = nn.Linear(6, 8)
    block_linear = nn.Linear(8, 4)
    np.testing.assert_array_equal(model.modules[0].weight.numpy(), first.weight.numpy())
    np.testing.assert_array_equal(model.modules[2].modules[0].fn.modules[0].weight.numpy(), block_linear.weight.numpy())


def _torch_mirror(torch, model, dim, hidden, blocks, classes):
    """The same network in PyTorch with needle's weights (dropout 0, training-mode BatchNorm)."""
    tparams = [torch.tensor(p.numpy(), requires_grad=True) for p in model.parameters()]
    it = iter(tparams)

    def linear(x):
        w, b = next(it), next(it)
        return x @ w + b

    def bn(x):
        w, b = next(it), next(it)
        mean = x.mean(0)
        var = ((x - mean) ** 2).mean(0)
        return (x - mean) / torch.sqrt(var + 1e-5) * w + b

    def forward(x):
        h = torch.relu(linear(x))
        for _ in range(blocks):
            r = bn(linear(torch.relu(bn(linear(h)))))
            h = torch.relu(r + h)
        return linear(h)

    return tparams, forward


def test_training_forward_and_grads_match_torch():
    torch = pytest.importorskip("torch")
    np.random.seed(1)
    model = MLPResNet(12, 16, num_blocks=2, num_classes=5, drop_prob=0.0)
    x = np.random.randn(20, 12).astype(np.float32)
    y = np.random.randint(0, 5, size=20)
    logits = model(ndl.Tensor(x, requires_grad=False))
    loss = nn.SoftmaxLoss()(logits, ndl.Tensor(y, requires_grad=False))
    loss.backward()
    tparams, forward = _torch_mirror(torch, model, 12, 16, 2, 5)
    tlogits = forward(torch.tensor(x))
    tloss = torch.nn.functional.cross_entropy(tlogits, torch.tensor(y))
    tloss.backward()
    np.testing.assert_allclose(logits.numpy(), tlogits.detach().numpy(), rtol=1e-4, atol=1e-4)
    assert float(loss.numpy()) == pytest.approx(tloss.item(), rel=1e-5)
    for p, tp in zip(model.parameters(), tparams):
        np.testing.assert_allclose(p.grad.numpy(), tp.grad.numpy(), rtol=1e-3, atol=1e-5)


def _dataset(seed, n=120, dim=10, classes=4):
    rng = np.random.RandomState(seed)
    centers = rng.randn(classes, dim) * 2
    y = rng.randint(0, classes, size=n)
    x = (centers[y] + rng.randn(n, dim)).astype(np.float32)
    return x, y.astype(np.uint8)


def test_epoch_eval_matches_full_batch_computation():
    x, y = _dataset(0)
    np.random.seed(2)
    model = MLPResNet(10, 16, num_blocks=1, num_classes=4)
    loader = ndl.data.DataLoader(ndl.data.NDArrayDataset(x, y), batch_size=32)
    err, loss = epoch(loader, model)
    assert not model.training
    logits = model(ndl.Tensor(x, requires_grad=False)).numpy()
    lse = np.log(np.exp(logits - logits.max(1, keepdims=True)).sum(1)) + logits.max(1)
    assert isinstance(err, float) and isinstance(loss, float)
    assert err == pytest.approx(np.mean(logits.argmax(1) != y))
    assert loss == pytest.approx(np.mean(lse - logits[np.arange(len(y)), y]), rel=1e-5)


def test_epoch_training_learns_and_is_reproducible():
    x, y = _dataset(1)
    results = []
    for _ in range(2):
        np.random.seed(3)
        model = MLPResNet(10, 16, num_blocks=1, num_classes=4)
        opt = ndl.optim.Adam(model.parameters(), lr=0.01)
        loader = ndl.data.DataLoader(ndl.data.NDArrayDataset(x, y), batch_size=16, shuffle=True)
        curve = [epoch(loader, model, opt) for _ in range(8)]
        assert model.training
        results.append(curve)
    assert results[0] == results[1]  # epoch() seeds NumPy itself: dropout and shuffling repeat exactly
    assert results[0][-1][1] < 0.5 * results[0][0][1]
    assert results[0][-1][0] < 0.1


def _write_idx(folder, prefix, images, labels):
    n, r, c = images.shape
    with gzip.open(folder / f"{prefix}-images-idx3-ubyte.gz", "wb") as f:
        f.write(struct.pack(">IIII", 2051, n, r, c) + images.tobytes())
    with gzip.open(folder / f"{prefix}-labels-idx1-ubyte.gz", "wb") as f:
        f.write(struct.pack(">II", 2049, n) + labels.tobytes())


def make_mnist_folder(folder, n_train=200, n_test=100, seed=0):
    """Tiny separable MNIST-format data: class k lights up row block k."""
    rng = np.random.RandomState(seed)
    for prefix, n in (("train", n_train), ("t10k", n_test)):
        labels = rng.randint(0, 10, size=n).astype(np.uint8)
        images = rng.randint(0, 60, size=(n, 28, 28)).astype(np.uint8)
        for i, k in enumerate(labels):
            images[i, 2 * k : 2 * k + 3, :] = 250
        _write_idx(folder, prefix, images, labels)
    return folder


def test_train_mnist_on_generated_files(tmp_path):
    make_mnist_folder(tmp_path)
    out1 = train_mnist(25, 4, ndl.optim.Adam, 0.01, 0.001, 32, data_dir=str(tmp_path))
    out2 = train_mnist(25, 4, ndl.optim.Adam, 0.01, 0.001, 32, data_dir=str(tmp_path))
    assert out1 == out2 and len(out1) == 4 and all(isinstance(v, float) for v in out1)
    train_err, train_loss, test_err, test_loss = out1
    assert test_err < 0.05 and test_loss < 0.1
    assert 0 <= train_err <= 1 and train_loss > 0


@pytest.mark.skipif(not (SHARED_MNIST / "t10k-images-idx3-ubyte.gz").exists(),
                    reason="shared MNIST test split not present at ../shared/data/mnist")
def test_eval_epoch_on_real_mnist_test_split_course_value():
    """Seeded init + eval-mode epoch on the MNIST test split reproduces the course's hw2 figure."""
    np.random.seed(1)
    ds = ndl.data.MNISTDataset(str(SHARED_MNIST / "t10k-images-idx3-ubyte.gz"),
                               str(SHARED_MNIST / "t10k-labels-idx1-ubyte.gz"))
    loader = ndl.data.DataLoader(dataset=ds, batch_size=150, shuffle=False)
    model = MLPResNet(784, 10)
    model.train()
    np.testing.assert_allclose(np.array(epoch(loader, model)), [0.9164, 4.137814], rtol=1e-5, atol=1e-5)
