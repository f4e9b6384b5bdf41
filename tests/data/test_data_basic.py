"""DataLoader order and batching, NDArrayDataset, transforms (RNG calls of course API §6 (docs/design.md))."""

import numpy as np
import pytest

import needle as ndl
import needle.backend_ndarray as nd


class _PlainDataset(ndl.data.Dataset):
    """Only integer indexing: exercises the loader's per-sample path."""

    def __init__(self, x, y, transforms=None):
        super().__init__(transforms)
        self.x, self.y = x, y

    def __len__(self):
        return len(self.x)

    def __getitem__(self, i):
        return self.apply_transforms(self.x[i]), self.y[i]


def _collect(loader):
    return [tuple(t.numpy() for t in batch) for batch in loader]


def test_unshuffled_batches_in_order_with_short_last_batch():
    x = np.arange(23 * 2, dtype=np.float64).reshape(23, 2)
    y = np.arange(23, dtype=np.uint8)
    loader = ndl.data.DataLoader(ndl.data.NDArrayDataset(x, y), batch_size=5)
    batches = _collect(loader)
    assert len(loader) == 5 and [b[0].shape[0] for b in batches] == [5, 5, 5, 5, 3]
    np.testing.assert_array_equal(np.concatenate([b[0] for b in batches]), x)
    np.testing.assert_array_equal(np.concatenate([b[1] for b in batches]), y)
    assert _collect(loader)[0][0].tolist() == batches[0][0].tolist()  # repeatable


def test_batches_are_float32_tensors_on_ndarrays():
    x = np.random.rand(6, 3)
    y = np.array([0, 1, 2, 0, 1, 2])
    X, Y = next(iter(ndl.data.DataLoader(ndl.data.NDArrayDataset(x, y), batch_size=4)))
    assert isinstance(X, ndl.Tensor) and X.dtype == "float32" and Y.dtype == "float32"
    assert isinstance(X.cached_data, nd.NDArray)
    np.testing.assert_allclose(X.numpy(), x[:4], rtol=1e-6)
    np.testing.assert_array_equal(Y.numpy(), [0, 1, 2, 0])


def test_shuffle_draws_one_permutation_per_iteration():
    n, bs = 37, 8
    x = np.random.rand(n, 4)
    np.random.seed(0)
    loader = ndl.data.DataLoader(ndl.data.NDArrayDataset(x), batch_size=bs, shuffle=True)
    # the constructor draws nothing
    assert np.random.rand() == np.random.RandomState(0).rand()
    np.random.seed(42)
    first = np.concatenate([b[0] for b in _collect(loader)])
    second = np.concatenate([b[0] for b in _collect(loader)])
    np.random.seed(42)
    p1 = np.random.permutation(n)
    p2 = np.random.permutation(n)
    np.testing.assert_allclose(first, x[p1], rtol=1e-6)
    np.testing.assert_allclose(second, x[p2], rtol=1e-6)
    assert [b[0].shape[0] for b in _collect(loader)] == [8, 8, 8, 8, 5]


def test_per_sample_path_equals_index_array_path_with_transforms():
    imgs = np.random.rand(10, 4, 4, 1).astype(np.float32)
    labels = np.arange(10)
    tforms = [ndl.data.RandomFlipHorizontal(0.5), ndl.data.RandomCrop(1)]
    plain = ndl.data.DataLoader(_PlainDataset(imgs, labels, tforms), batch_size=4, shuffle=True)
    np.random.seed(3)
    a = _collect(plain)

    class _Batched(_PlainDataset):
        supports_index_arrays = True

        def __getitem__(self, i):
            if np.ndim(i) == 0:
                return super().__getitem__(i)
            return np.stack([self.apply_transforms(im) for im in self.x[i]]), self.y[i]

    np.random.seed(3)
    b = _collect(ndl.data.DataLoader(_Batched(imgs, labels, tforms), batch_size=4, shuffle=True))
    for (xa, ya), (xb, yb) in zip(a, b):
        np.testing.assert_array_equal(xa, xb)
        np.testing.assert_array_equal(ya, yb)


def test_dataloader_alias_and_bad_batch_size():
    assert ndl.data.Dataloader is ndl.data.DataLoader
    with pytest.raises(ValueError, match="batch_size"):
        ndl.data.DataLoader(ndl.data.NDArrayDataset(np.zeros((3, 1))), batch_size=0)


def test_ndarray_dataset_indexing():
    a, b = np.arange(10).reshape(5, 2), np.arange(5) * 10
    ds = ndl.data.NDArrayDataset(a, b)
    assert len(ds) == 5
    np.testing.assert_array_equal(ds[3][0], a[3])
    np.testing.assert_array_equal(ds[1:3][1], [10, 20])
    np.testing.assert_array_equal(ds[np.array([4, 0])][0], a[[4, 0]])
    with pytest.raises(ValueError, match="array 1 has 4 rows"):
        ndl.data.NDArrayDataset(a, b[:4])


# -- transforms -------------------------------------------------------------------
def test_random_flip_horizontal_one_draw():
    img = np.arange(2 * 3 * 1, dtype=np.float32).reshape(2, 3, 1)
    tf = ndl.data.RandomFlipHorizontal(p=0.5)
    for seed in range(6):
        np.random.seed(seed)
        out = tf(img)
        expected = img[:, ::-1, :] if np.random.RandomState(seed).rand() < 0.5 else img
        np.testing.assert_array_equal(out, expected)
        assert np.random.rand() == np.random.RandomState(seed).rand(2)[1]  # exactly one draw
    np.testing.assert_array_equal(ndl.data.RandomFlipHorizontal(p=1.0)(img), img[:, ::-1, :])
    np.testing.assert_array_equal(ndl.data.RandomFlipHorizontal(p=0.0)(img), img)


def test_random_crop_shift_and_zero_fill():
    img = np.arange(1, 5 * 6 * 2 + 1, dtype=np.float32).reshape(5, 6, 2)
    tf = ndl.data.RandomCrop(padding=2)
    for seed in range(8):
        np.random.seed(seed)
        out = tf(img)
        sx, sy = np.random.RandomState(seed).randint(low=-2, high=3, size=2)
        assert out.shape == img.shape
        padded = np.zeros((9, 10, 2), dtype=np.float32)
        padded[2:7, 2:8] = img
        np.testing.assert_array_equal(out, padded[2 + sx : 7 + sx, 2 + sy : 8 + sy])
    np.random.seed(1)
    # a known shift by hand: seed 1 gives (shift_x, shift_y) = (1, 2) for padding 2
    assert tuple(np.random.randint(low=-2, high=3, size=2)) == (1, 2)
    np.random.seed(1)
    out = tf(img)
    np.testing.assert_array_equal(out[:4, :4], img[1:5, 2:6])
    assert (out[4:] == 0).all() and (out[:, 4:] == 0).all()


from hypothesis import given, settings, strategies as st  # noqa: E402


@settings(max_examples=40, deadline=None)
@given(n=st.integers(1, 60), batch_size=st.integers(1, 70), shuffle=st.booleans(), seed=st.integers(0, 2**31 - 1))
def test_loader_batches_partition_the_dataset(n, batch_size, shuffle, seed):
    x = np.arange(n, dtype=np.float32).reshape(n, 1) * 2
    y = np.arange(n) % 7
    loader = ndl.data.DataLoader(ndl.data.NDArrayDataset(x, y), batch_size=batch_size, shuffle=shuffle)
    np.random.seed(seed)
    batches = _collect(loader)
    order = np.random.RandomState(seed).permutation(n) if shuffle else np.arange(n)
    sizes = [b[0].shape[0] for b in batches]
    assert sizes == [batch_size] * (n // batch_size) + ([n % batch_size] if n % batch_size else [])
    assert len(loader) == len(batches)
    np.testing.assert_array_equal(np.concatenate([b[0] for b in batches])[:, 0], x[order, 0])
    np.testing.assert_array_equal(np.concatenate([b[1] for b in batches]), y[order])
