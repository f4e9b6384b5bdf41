"""MNISTDataset / IDX reader: generated files (good, truncated, malformed) and the real test split."""

import gzip
import struct
from pathlib import Path

import numpy as np
import pytest

import needle as ndl
from needle.errors import DataFormatError

SHARED_MNIST = Path(__file__).parents[2].parent / "shared" / "data" / "mnist"


def idx_images(images: np.ndarray, magic=2051) -> bytes:
    n, r, c = images.shape
    return struct.pack(">IIII", magic, n, r, c) + images.astype(np.uint8).tobytes()


def idx_labels(labels: np.ndarray, magic=2049) -> bytes:
    return struct.pack(">II", magic, len(labels)) + labels.astype(np.uint8).tobytes()


def write(path: Path, payload: bytes, compress=True) -> str:
    path.write_bytes(gzip.compress(payload) if compress else payload)
    return str(path)


@pytest.fixture
def small(tmp_path):
    rng = np.random.RandomState(0)
    images = rng.randint(0, 256, size=(7, 28, 28)).astype(np.uint8)
    labels = rng.randint(0, 10, size=7).astype(np.uint8)
    img = write(tmp_path / "img.gz", idx_images(images))
    lab = write(tmp_path / "lab.gz", idx_labels(labels))
    return images, labels, img, lab, tmp_path


def test_reads_generated_gzip_and_plain_files(small):
    images, labels, img, lab, tmp = small
    for img_path, lab_path in [(img, lab), (write(tmp / "img", idx_images(images), False),
                                            write(tmp / "lab", idx_labels(labels), False))]:
        ds = ndl.data.MNISTDataset(img_path, lab_path)
        assert len(ds) == 7
        x, y = ds[3]
        assert x.shape == (28, 28, 1) and x.dtype == np.float32
        np.testing.assert_allclose(x[:, :, 0], images[3] / 255.0, rtol=1e-6)
        assert y == labels[3]
        xs, ys = ds[np.array([5, 1])]
        assert xs.shape == (2, 28, 28, 1) and ys.tolist() == [labels[5], labels[1]]
        assert ds[2:5][0].shape == (3, 28, 28, 1)


def test_transforms_apply_per_sample(small):
    images, labels, img, lab, _ = small
    ds = ndl.data.MNISTDataset(img, lab, transforms=[ndl.data.RandomFlipHorizontal(p=1.0)])
    np.testing.assert_allclose(ds[0][0][:, :, 0], images[0][:, ::-1] / 255.0, rtol=1e-6)
    np.testing.assert_allclose(ds[np.array([2, 4])][0][1, :, :, 0], images[4][:, ::-1] / 255.0, rtol=1e-6)


def test_loader_over_mnist(small):
    images, labels, img, lab, _ = small
    X, y = next(iter(ndl.data.DataLoader(ndl.data.MNISTDataset(img, lab), batch_size=4)))
    assert X.shape == (4, 28, 28, 1) and X.dtype == "float32"
    np.testing.assert_array_equal(y.numpy(), labels[:4])


@pytest.mark.parametrize(
    "case, make, pattern",
    [
        ("bad image magic", lambda im, lb: (idx_images(im, magic=2049), idx_labels(lb)), "magic number is 2049.*expected 2051"),
        ("bad label magic", lambda im, lb: (idx_images(im), idx_labels(lb, magic=2051)), "magic number is 2051.*expected 2049"),
        ("truncated images", lambda im, lb: (idx_images(im)[:-100], idx_labels(lb)), "truncated: header declares images of shape \\(7, 28, 28\\)"),
        ("trailing bytes", lambda im, lb: (idx_images(im), idx_labels(lb) + b"xx"), "trailing bytes"),
        ("short header", lambda im, lb: (idx_images(im)[:10], idx_labels(lb)), "too short for the 16-byte IDX images header"),
        ("count mismatch", lambda im, lb: (idx_images(im), idx_labels(lb[:5])), "holds 7 images but .* holds 5 labels"),
        ("zero rows", lambda im, lb: (struct.pack(">IIII", 2051, 7, 0, 28), idx_labels(lb)), "zero dimension"),
    ],
)
def test_malformed_files_raise_data_format_error_naming_file(small, case, make, pattern):
    images, labels, _, _, tmp = small
    img_bytes, lab_bytes = make(images, labels)
    img = write(tmp / "bad-img.gz", img_bytes)
    lab = write(tmp / "bad-lab.gz", lab_bytes)
    with pytest.raises(DataFormatError, match=pattern) as info:
        ndl.data.MNISTDataset(img, lab)
    assert "bad-img.gz" in str(info.value) or "bad-lab.gz" in str(info.value)
    assert isinstance(info.value, ValueError)


def test_truncated_gzip_stream(small):
    images, labels, img, lab, tmp = small
    raw = Path(img).read_bytes()
    cut = tmp / "cut.gz"
    cut.write_bytes(raw[: len(raw) // 2])
    with pytest.raises(DataFormatError, match="cut.gz: corrupt or truncated gzip"):
        ndl.data.MNISTDataset(str(cut), lab)


def test_missing_file_is_file_not_found(tmp_path, small):
    _, _, img, lab, _ = small
    with pytest.raises(FileNotFoundError):
        ndl.data.MNISTDataset(str(tmp_path / "nope.gz"), lab)


@pytest.mark.skipif(not (SHARED_MNIST / "t10k-images-idx3-ubyte.gz").exists(),
                    reason="shared MNIST test split not present at ../shared/data/mnist")
def test_real_mnist_test_split():
    ds = ndl.data.MNISTDataset(str(SHARED_MNIST / "t10k-images-idx3-ubyte.gz"),
                               str(SHARED_MNIST / "t10k-labels-idx1-ubyte.gz"))
    assert len(ds) == 10000
    x, y = ds[np.arange(10000)]
    assert x.shape == (10000, 28, 28, 1) and 0.0 <= x.min() and x.max() <= 1.0
    counts = np.bincount(y, minlength=10)
    assert counts.sum() == 10000 and counts.min() > 800  # every digit well represented
    # the first test digit of MNIST is a 7, the second a 2
    assert y[0] == 7 and y[1] == 2
    assert abs(float(x.mean()) - 0.1325) < 0.002  # the well-known MNIST pixel mean


def test_idx_header_whose_dimensions_overflow(tmp_path):
    """Three 0xFFFFFFFF dims overflow int64 in np.prod: the size check must not wrap."""
    import struct
    from needle.data.datasets.mnist_dataset import read_idx_images
    from needle.errors import DataFormatError
    path = tmp_path / "huge-idx3-ubyte"
    # 2**21 * 2**21 * 2**22 = 2**64 wraps to 0 in int64, matching a 0-byte payload
    path.write_bytes(struct.pack(">IIII", 2051, 2**21, 2**21, 2**22))
    with pytest.raises(DataFormatError, match=str(path)):
        read_idx_images(path)
    path.write_bytes(struct.pack(">IIII", 2051, 0xFFFFFFFF, 0xFFFFFFFF, 0xFFFFFFFF))
    with pytest.raises(DataFormatError, match="truncated"):
        read_idx_images(path)
