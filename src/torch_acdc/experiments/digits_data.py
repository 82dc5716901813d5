"""Handwritten-digit data without downloads: scikit-learn's bundled 8x8 digits, or MNIST from local IDX files.

Both loaders return a :class:`DigitData` of flattened float32 images scaled to [0, 1] and int64 labels.
MNIST files are the standard big-endian IDX format (``train-images-idx3-ubyte``, ``train-labels-idx1-ubyte``,
``t10k-images-idx3-ubyte``, ``t10k-labels-idx1-ubyte``), plain or gzipped (``.gz``).
"""
from __future__ import annotations

import gzip
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import TensorDataset

__all__ = ["DigitData", "load_sklearn_digits", "load_mnist", "read_idx", "write_idx", "MNIST_FILES"]

MNIST_FILES = {
    "train_images": "train-images-idx3-ubyte",
    "train_labels": "train-labels-idx1-ubyte",
    "test_images": "t10k-images-idx3-ubyte",
    "test_labels": "t10k-labels-idx1-ubyte",
}

# IDX type byte -> numpy big-endian dtype
_IDX_DTYPES = {0x08: ">u1", 0x09: ">i1", 0x0B: ">i2", 0x0C: ">i4", 0x0D: ">f4", 0x0E: ">f8"}


@dataclass
class DigitData:
    """A train/test split: datasets of (x (in_features,) float32 in [0, 1], y int64) pairs."""

    name: str
    train: TensorDataset
    test: TensorDataset
    in_features: int
    num_classes: int

    def describe(self) -> str:
        return (f"{self.name}: {len(self.train)} train / {len(self.test)} test, {self.in_features} features, "
                f"{self.num_classes} classes")


def _dataset(x: np.ndarray, y: np.ndarray, scale: float) -> TensorDataset:
    images = torch.from_numpy(np.ascontiguousarray(x, dtype=np.float32).reshape(len(x), -1) / scale)
    return TensorDataset(images, torch.from_numpy(np.asarray(y, dtype=np.int64)))


def load_sklearn_digits(test_fraction: float = 0.25, seed: int = 0) -> DigitData:
    """scikit-learn's 1797 8x8 digits (64 features, pixel values 0..16 scaled to [0, 1]), stratified split."""
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    x, y = load_digits(return_X_y=True)
    x_tr, x_te, y_tr, y_te = train_test_split(x, y, test_size=test_fraction, random_state=seed, stratify=y)
    return DigitData("sklearn-digits", _dataset(x_tr, y_tr, 16.0), _dataset(x_te, y_te, 16.0), 64, 10)


def read_idx(path: str | Path) -> np.ndarray:
    """Read one IDX file (plain, or gzip if it ends in .gz): magic 0x0000 <type> <ndim>, big-endian uint32
    dimension sizes, then the data. Raises ValueError on a malformed or truncated file."""
    path = Path(path)
    try:
        with (gzip.open if path.suffix == ".gz" else open)(path, "rb") as f:
            raw = f.read()
    except (OSError, EOFError, gzip.BadGzipFile) as e:  # truncated or corrupt .gz, unreadable file
        raise ValueError(f"{path}: cannot be read ({type(e).__name__}: {e})") from e
    if len(raw) < 4 or raw[0] != 0 or raw[1] != 0 or raw[2] not in _IDX_DTYPES:
        raise ValueError(f"{path}: not an IDX file (bad magic {raw[:4].hex()})")
    ndim = raw[3]
    header = 4 + 4 * ndim
    dims = tuple(int(d) for d in np.frombuffer(raw, dtype=">u4", count=ndim, offset=4)) if ndim else ()
    dtype = np.dtype(_IDX_DTYPES[raw[2]])
    expected = int(np.prod(dims)) * dtype.itemsize
    if len(raw) - header != expected:
        raise ValueError(f"{path}: header says {dims} x {dtype.itemsize} bytes = {expected} bytes of data, "
                         f"file has {len(raw) - header}")
    return np.frombuffer(raw, dtype=dtype, offset=header).reshape(dims).astype(dtype.newbyteorder("="))


def write_idx(path: str | Path, array: np.ndarray) -> Path:
    """Write ``array`` as an IDX file (gzip if ``path`` ends in .gz); the inverse of :func:`read_idx`."""
    path = Path(path)
    codes = {np.dtype(v).newbyteorder("="): k for k, v in _IDX_DTYPES.items()}
    dtype = np.asarray(array).dtype
    if dtype not in codes:
        raise ValueError(f"IDX cannot store dtype {dtype}; expected one of {sorted(str(d) for d in codes)}")
    array = np.asarray(array)
    payload = (bytes([0, 0, codes[dtype], array.ndim]) + np.asarray(array.shape, dtype=">u4").tobytes()
               + array.astype(dtype.newbyteorder(">")).tobytes())
    with (gzip.open if path.suffix == ".gz" else open)(path, "wb") as f:
        f.write(payload)
    return path


def _find(data_dir: Path, stem: str) -> Path:
    for name in (stem, stem + ".gz"):
        if (data_dir / name).exists():
            return data_dir / name
    raise FileNotFoundError(f"MNIST file {stem}[.gz] not found in {data_dir}")


def load_mnist(data_dir: str | Path, limit_train: int | None = None, limit_test: int | None = None) -> DigitData:
    """MNIST (or any IDX digits set with the standard file names) from ``data_dir``: 784 features in [0, 1].

    ``limit_train`` / ``limit_test`` keep the first examples only (quick runs). Raises ValueError naming the
    file for unreadable / truncated / bad-gzip files, labels outside 0..9, NaN or infinite pixels, and
    train / test images of different sizes.
    """
    data_dir = Path(data_dir)
    files = {key: _find(data_dir, stem) for key, stem in MNIST_FILES.items()}
    arrays = {key: read_idx(path) for key, path in files.items()}
    for split in ("train", "test"):
        images, labels = arrays[f"{split}_images"], arrays[f"{split}_labels"]
        if images.ndim != 3 or labels.ndim != 1 or len(images) != len(labels):
            raise ValueError(f"MNIST {split} ({files[split + '_images']}, {files[split + '_labels']}): expected "
                             f"images (N, H, W) and labels (N,), got {images.shape} and {labels.shape}")
        if labels.size and (labels.min() < 0 or labels.max() > 9):
            raise ValueError(f"{files[split + '_labels']}: labels must be digits 0..9, got values in "
                             f"[{labels.min()}, {labels.max()}]")
        if images.dtype.kind == "f" and not np.isfinite(images).all():
            raise ValueError(f"{files[split + '_images']}: images contain NaN or infinite pixels")
    if arrays["train_images"].shape[1:] != arrays["test_images"].shape[1:]:
        raise ValueError(f"MNIST in {data_dir}: train images are {arrays['train_images'].shape[1:]} pixels but "
                         f"test images {arrays['test_images'].shape[1:]}; both must have the same size")
    tr, te = slice(limit_train), slice(limit_test)
    train = _dataset(arrays["train_images"][tr], arrays["train_labels"][tr], 255.0)
    test = _dataset(arrays["test_images"][te], arrays["test_labels"][te], 255.0)
    h, w = arrays["train_images"].shape[1:]
    return DigitData("mnist", train, test, h * w, 10)
