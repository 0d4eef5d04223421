"""Data set loaders: tiny files in the real on-disk formats, written here byte by byte."""

from __future__ import annotations

import gzip
import struct
from pathlib import Path

import numpy as np
import pytest
import torch

from jacspec.data.datasets import DataSet, centre_crop, gaussian_mixture, load_dataset, read_idx

# ----------------------------------------------------------------------------- writers


def write_idx(path: Path, arr: np.ndarray, gz: bool) -> None:
    """IDX: 0x0000, type 0x08 (ubyte), ndim, big-endian uint32 dims, raw bytes."""
    assert arr.dtype == np.uint8
    blob = struct.pack(">HBB", 0, 0x08, arr.ndim) + struct.pack(f">{arr.ndim}I", *arr.shape)
    blob += arr.tobytes()
    if gz:
        with gzip.open(path, "wb") as fh:
            fh.write(blob)
    else:
        path.write_bytes(blob)


def write_mnist(folder: Path, rng: np.random.Generator, n_train: int, n_test: int, gz: bool,
                size: int = 28) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    folder.mkdir(parents=True, exist_ok=True)
    out = {}
    for prefix, n, split in (("train", n_train, "train"), ("t10k", n_test, "test")):
        images = rng.integers(0, 256, size=(n, size, size), dtype=np.uint8)
        labels = rng.integers(0, 10, size=n, dtype=np.uint8)
        suffix = ".gz" if gz else ""
        write_idx(folder / f"{prefix}-images-idx3-ubyte{suffix}", images, gz)
        write_idx(folder / f"{prefix}-labels-idx1-ubyte{suffix}", labels, gz)
        out[split] = (images, labels)
    return out


def cifar_records(images: np.ndarray, labels: list[np.ndarray]) -> bytes:
    """Each record: the label bytes, then 1024 R, 1024 G, 1024 B bytes (row-major 32x32)."""
    rows = []
    for i in range(len(images)):
        head = bytes(int(lab[i]) for lab in labels)
        planes = b"".join(images[i, c].tobytes() for c in range(3))
        rows.append(head + planes)
    return b"".join(rows)


# ----------------------------------------------------------------------------- IDX


@pytest.mark.parametrize("gz", [True, False])
@pytest.mark.parametrize("name", ["mnist", "fashion_mnist"])
def test_idx_roundtrip(tmp_path: Path, gz: bool, name: str) -> None:
    rng = np.random.default_rng(1)
    written = write_mnist(tmp_path / name, rng, n_train=7, n_test=5, gz=gz)
    for split in ("train", "test"):
        data = load_dataset(name, split, root=tmp_path)
        images, labels = written[split]
        assert data.x.dtype == torch.float32 and data.y.dtype == torch.int64
        assert data.x.shape == (len(labels), 1, 28, 28)
        np.testing.assert_array_equal(data.x.numpy(), images[:, None].astype(np.float32) / 255)
        np.testing.assert_array_equal(data.y.numpy(), labels.astype(np.int64))
        assert data.num_classes == 10 and len(data) == len(labels)


def test_idx_root_from_env_and_files_directly_in_root(tmp_path: Path, monkeypatch) -> None:
    written = write_mnist(tmp_path, np.random.default_rng(2), 4, 3, gz=False)
    monkeypatch.setenv("JACSPEC_DATA", str(tmp_path))
    data = load_dataset("mnist", "test")
    np.testing.assert_array_equal(data.y.numpy(), written["test"][1])


def test_idx_other_dtypes_and_endianness(tmp_path: Path) -> None:
    arr = (np.arange(-6, 6).reshape(3, 4) * 1000).astype(">i4")
    blob = struct.pack(">HBB", 0, 0x0C, 2) + struct.pack(">2I", 3, 4) + arr.tobytes()
    (tmp_path / "a.idx").write_bytes(blob)
    got = read_idx(tmp_path / "a.idx")
    np.testing.assert_array_equal(got, arr.astype(np.int32))
    assert got.dtype == np.int32


def test_idx_errors(tmp_path: Path, monkeypatch) -> None:
    with pytest.raises(ValueError, match=r"train-images-idx3-ubyte\[\.gz\].*does not exist"):
        load_dataset("mnist", root=tmp_path / "nowhere")
    monkeypatch.delenv("JACSPEC_DATA", raising=False)
    with pytest.raises(ValueError, match="root is not set"):
        load_dataset("mnist")
    write_mnist(tmp_path, np.random.default_rng(3), 4, 3, gz=False)
    img = tmp_path / "train-images-idx3-ubyte"
    img.write_bytes(img.read_bytes()[:-5])  # truncated
    with pytest.raises(ValueError, match="corrupt"):
        load_dataset("mnist", root=tmp_path)
    img.write_bytes(b"\x01\x02\x03\x04garbage")
    with pytest.raises(ValueError, match="not an IDX file"):
        load_dataset("mnist", root=tmp_path)
    gz = tmp_path / "g"
    write_mnist(gz, np.random.default_rng(4), 4, 3, gz=True)
    bad = gz / "t10k-labels-idx1-ubyte.gz"
    bad.write_bytes(bad.read_bytes()[:12])
    with pytest.raises(ValueError, match="corrupt"):
        load_dataset("mnist", "test", root=gz)
    # labels and images disagree on n
    mis = tmp_path / "m"
    write_mnist(mis, np.random.default_rng(5), 4, 3, gz=False)
    write_idx(mis / "t10k-labels-idx1-ubyte", np.zeros(2, np.uint8), gz=False)
    with pytest.raises(ValueError, match="do not match"):
        load_dataset("mnist", "test", root=mis)


# ----------------------------------------------------------------------------- CIFAR


def test_cifar10_binary(tmp_path: Path) -> None:
    rng = np.random.default_rng(6)
    folder = tmp_path / "cifar-10-batches-bin"
    folder.mkdir()
    train_imgs, train_labels = [], []
    for i in range(1, 6):
        n = i  # uneven batch sizes: 1..5
        imgs = rng.integers(0, 256, (n, 3, 32, 32), dtype=np.uint8)
        labs = rng.integers(0, 10, n)
        (folder / f"data_batch_{i}.bin").write_bytes(cifar_records(imgs, [labs]))
        train_imgs.append(imgs)
        train_labels.append(labs)
    test_imgs = rng.integers(0, 256, (4, 3, 32, 32), dtype=np.uint8)
    test_labels = rng.integers(0, 10, 4)
    (folder / "test_batch.bin").write_bytes(cifar_records(test_imgs, [test_labels]))

    train = load_dataset("cifar10", root=tmp_path)
    assert train.x.shape == (15, 3, 32, 32) and train.num_classes == 10
    np.testing.assert_array_equal(train.x.numpy(),
                                  np.concatenate(train_imgs).astype(np.float32) / 255)
    np.testing.assert_array_equal(train.y.numpy(), np.concatenate(train_labels))
    test = load_dataset("cifar-10", "test", root=tmp_path, crop=24)
    assert test.x.shape == (4, 3, 24, 24)
    np.testing.assert_array_equal(test.x.numpy(),
                                  test_imgs[:, :, 4:28, 4:28].astype(np.float32) / 255)
    np.testing.assert_array_equal(test.y.numpy(), test_labels)

    flat = load_dataset("cifar10", "test", root=tmp_path, flatten=True)
    assert flat.x.shape == (4, 3072)
    np.testing.assert_array_equal(flat.x.numpy(), test.x.new_tensor(
        test_imgs.astype(np.float32) / 255).reshape(4, -1).numpy())

    (folder / "data_batch_3.bin").write_bytes(b"\x00" * 3000)
    with pytest.raises(ValueError, match="corrupt.*3073-byte"):
        load_dataset("cifar10", root=tmp_path)
    (folder / "data_batch_3.bin").unlink()
    with pytest.raises(ValueError, match="data_batch_3.bin"):
        load_dataset("cifar10", root=tmp_path)


def test_cifar100_binary_uses_fine_labels(tmp_path: Path) -> None:
    rng = np.random.default_rng(7)
    folder = tmp_path / "cifar-100-binary"
    folder.mkdir()
    out = {}
    for split, n in (("train", 6), ("test", 3)):
        imgs = rng.integers(0, 256, (n, 3, 32, 32), dtype=np.uint8)
        coarse = rng.integers(0, 20, n)
        fine = rng.integers(0, 100, n)
        (folder / f"{split}.bin").write_bytes(cifar_records(imgs, [coarse, fine]))
        out[split] = (imgs, fine, coarse)
    for split in ("train", "test"):
        data = load_dataset("cifar100", split, root=tmp_path)
        assert data.num_classes == 100
        np.testing.assert_array_equal(data.x.numpy(), out[split][0].astype(np.float32) / 255)
        np.testing.assert_array_equal(data.y.numpy(), out[split][1])
    coarse = load_dataset("cifar100:labels=coarse", "test", root=tmp_path)
    assert coarse.num_classes == 20
    np.testing.assert_array_equal(coarse.y.numpy(), out["test"][2])
    with pytest.raises(ValueError, match="labels=coarse"):
        load_dataset("cifar100:labels=medium", root=tmp_path)


def test_centre_crop_matches_slicing() -> None:
    x = np.arange(2 * 3 * 7 * 9).reshape(2, 3, 7, 9)
    got = centre_crop(x, 4)
    # offsets (7-4)//2 = 1 rows, (9-4)//2 = 2 columns
    np.testing.assert_array_equal(got, x[:, :, 1:5, 2:6])
    with pytest.raises(ValueError, match="larger than"):
        centre_crop(x, 8)


# ----------------------------------------------------------------------------- npz


def test_npz_roundtrip_and_test_split(tmp_path: Path) -> None:
    rng = np.random.default_rng(8)
    x = rng.standard_normal((11, 2, 3)).astype(np.float64)
    y = rng.integers(0, 4, 11)
    x_test = rng.standard_normal((5, 2, 3))
    y_test = np.array([0, 1, 2, 3, 6])
    path = tmp_path / "d.npz"
    np.savez(path, x=x, y=y, x_test=x_test, y_test=y_test)
    data = load_dataset(str(path))
    assert data.x.dtype == torch.float32 and data.x.shape == (11, 2, 3)
    np.testing.assert_array_equal(data.x.numpy(), x.astype(np.float32))
    np.testing.assert_array_equal(data.y.numpy(), y)
    assert data.num_classes == 7  # max over train and test labels + 1
    test = load_dataset(path, "test")
    np.testing.assert_array_equal(test.y.numpy(), y_test)


def test_npz_errors(tmp_path: Path) -> None:
    def save(**arrays) -> str:
        p = tmp_path / "bad.npz"
        np.savez(p, **arrays)
        return str(p)

    with pytest.raises(ValueError, match="NaN or Inf"):
        load_dataset(save(x=np.array([[0.0], [np.nan]]), y=np.array([0, 1])))
    with pytest.raises(ValueError, match="NaN or Inf"):
        load_dataset(save(x=np.array([[0.0], [np.inf]]), y=np.array([0, 1])))
    with pytest.raises(ValueError, match="shape"):
        load_dataset(save(x=np.zeros((3, 2)), y=np.array([0, 1])))
    with pytest.raises(ValueError, match="integers"):
        load_dataset(save(x=np.zeros((2, 2)), y=np.array([0.5, 1.0])))
    with pytest.raises(ValueError, match="no arrays 'x_test'"):
        load_dataset(save(x=np.zeros((2, 2)), y=np.array([0, 1])), "test")
    with pytest.raises(ValueError, match="object arrays"):
        load_dataset(save(x=np.array([[1], "a"], dtype=object), y=np.array([0, 1])))
    (tmp_path / "junk.npz").write_bytes(b"not a zip file at all")
    with pytest.raises(ValueError, match="not a readable .npz"):
        load_dataset(str(tmp_path / "junk.npz"))
    with pytest.raises(FileNotFoundError, match="does not exist"):
        load_dataset(str(tmp_path / "missing.npz"))


# ----------------------------------------------------------------------------- built-ins


def test_digits_split_is_deterministic_stratified_and_scaled() -> None:
    from sklearn.datasets import load_digits

    train, test = load_dataset("digits"), load_dataset("digits", "test")
    assert (len(train), len(test)) == (1437, 360)
    assert train.x.shape == (1437, 64) and train.x.dtype == torch.float32
    assert float(train.x.min()) == 0.0 and float(train.x.max()) == 1.0
    # the two splits partition the 1,797 images (compare as sorted rows)
    ref = load_digits()
    both = np.concatenate([train.x.numpy(), test.x.numpy()]) * 16
    key = lambda a: a[np.lexsort(a.T[::-1])]  # noqa: E731
    np.testing.assert_array_equal(key(both), key(ref.data.astype(np.float32)))
    # stratified: class counts within 1 of 20% of each class
    counts = np.bincount(test.y.numpy(), minlength=10)
    np.testing.assert_allclose(counts, 0.2 * np.bincount(ref.target), atol=1)
    again = load_dataset("digits")
    assert torch.equal(train.x, again.x) and torch.equal(train.y, again.y)
    img = load_dataset("digits", flatten=False)
    assert img.x.shape == (1437, 1, 8, 8)
    assert torch.equal(img.x.reshape(1437, 64), train.x)
    crop = load_dataset("digits", crop=4)
    assert crop.x.shape == (1437, 16)
    assert torch.equal(crop.x, img.x[:, :, 2:6, 2:6].reshape(1437, 16))


def test_random_labels_are_seeded_draws() -> None:
    data = load_dataset("digits")
    r1 = load_dataset("digits", random_labels=True, seed=3)
    r2 = data.with_random_labels(3)
    r3 = data.with_random_labels(4)
    assert torch.equal(r1.x, data.x)
    assert torch.equal(r1.y, r2.y) and not torch.equal(r1.y, r3.y)
    # uniform draws: about 1/10 agree with the true labels, all classes appear
    agree = float((r1.y == data.y).double().mean())
    assert 0.05 < agree < 0.16
    assert set(r1.y.tolist()) == set(range(10))
    perm = data.with_random_labels(5, permute=True)
    assert torch.equal(torch.bincount(perm.y, minlength=10), torch.bincount(data.y, minlength=10))
    assert float((perm.y == data.y).double().mean()) < 0.2
    assert r1.settings["random_labels"] and r1.settings["label_seed"] == 3


def test_subset_and_loader() -> None:
    data = load_dataset("digits")
    sub = load_dataset("digits", n=100, seed=1)
    assert len(sub) == 100
    # every subset row is a row of the full set, no duplicates
    rows = {tuple(r) for r in data.x.numpy().tolist()}
    assert all(tuple(r) in rows for r in sub.x.numpy().tolist())
    assert torch.equal(sub.x, data.subset(100, seed=1).x)
    assert not torch.equal(sub.x, data.subset(100, seed=2).x)
    with pytest.raises(ValueError, match="n must be"):
        data.subset(5000)
    batches = list(sub.loader(batch_size=32, shuffle=True, seed=0))
    assert [len(b[1]) for b in batches] == [32, 32, 32, 4]
    xs = torch.cat([b[0] for b in batches])
    assert torch.equal(xs, torch.cat([b[0] for b in sub.loader(32, shuffle=True, seed=0)]))
    assert sorted(map(tuple, xs.tolist())) == sorted(map(tuple, sub.x.tolist()))


def test_gaussian_mixture() -> None:
    x, y = gaussian_mixture(300, 3, 5, separation=4.0, seed=0)
    assert x.shape == (300, 5) and x.dtype == np.float32
    assert np.bincount(y).tolist() == [100, 100, 100]
    # class-conditional noise is N(0, I): per-class covariance near identity
    for c in range(3):
        cov = np.cov(x[y == c].T.astype(np.float64))
        assert np.abs(cov - np.eye(5)).max() < 0.5
    train = load_dataset("gaussian:k=3,d=5,n=300,sep=4", seed=0)
    test = load_dataset("gaussian:k=3,d=5,n=300,sep=4", "test", seed=0)
    np.testing.assert_array_equal(train.x.numpy(), x)
    # same means, new samples: class means agree, samples differ
    for c in range(3):
        m_tr = train.x[train.y == c].mean(0)
        m_te = test.x[test.y == c].mean(0)
        assert float((m_tr - m_te).norm()) < 0.8
    assert not torch.equal(train.x, test.x)
    assert not torch.equal(train.x, load_dataset("gaussian:k=3,d=5,n=300,sep=4", seed=1).x)
    with pytest.raises(ValueError, match="option 'q'"):
        load_dataset("gaussian:q=1")


def test_mnist1d_is_built_locally_and_cached(tmp_path: Path, monkeypatch) -> None:
    from mnist1d.data import get_dataset_args, make_dataset

    monkeypatch.setenv("JACSPEC_CACHE", str(tmp_path))
    name = "mnist1d:num_samples=400,seed=7"  # a small variant keeps the test fast
    state = np.random.get_state()
    train = load_dataset(name)
    assert np.array_equal(np.random.get_state()[1], state[1])  # global RNG untouched
    caches = list(tmp_path.glob("mnist1d_*.npz"))
    assert len(caches) == 1 and not list(tmp_path.glob("*.tmp"))
    assert train.x.shape == (320, 40) and train.x.dtype == torch.float32
    assert train.num_classes == 10 and len(load_dataset(name, "test")) == 80
    # the same numbers as the package's own generator with those arguments
    args = get_dataset_args()
    args.num_samples, args.seed = 400, 7
    ref = make_dataset(args)
    np.testing.assert_array_equal(train.x.numpy(), ref["x"].astype(np.float32))
    np.testing.assert_array_equal(train.y.numpy(), ref["y"])
    # the cache is what is read next time (overwrite it and see)
    with np.load(caches[0]) as f:
        arrays = {k: f[k] for k in f.files}
    arrays["y"] = (arrays["y"] + 1) % 10
    np.savez(caches[0], **arrays)
    again = load_dataset(name, flatten=False)
    assert again.x.shape == (320, 1, 40)
    assert torch.equal(again.y, (train.y + 1) % 10)
    with pytest.raises(ValueError, match="mnist1d option 'url'"):
        load_dataset("mnist1d:url=http://example.org")


def test_unknown_name_and_bad_arguments() -> None:
    with pytest.raises(ValueError, match=r"dataset 'foo' is not known; expected one of digits"):
        load_dataset("foo")
    with pytest.raises(ValueError, match="split"):
        load_dataset("digits", "valid")
    with pytest.raises(ValueError, match="crop"):
        load_dataset("digits", crop=0)
    with pytest.raises(ValueError, match="needs image inputs"):
        load_dataset("gaussian", crop=2)
    with pytest.raises(ValueError, match="labels must lie"):
        DataSet(torch.zeros(2, 3), torch.tensor([0, 5]), num_classes=3, name="t")


# ----------------------------------------------------------------------------- npz shapes


def test_npz_flat_features_are_kept_as_stored(tmp_path: Path) -> None:
    """On the old code (n, d) came back as (n, 1, d), which a user's MLP rejects."""
    rng = np.random.default_rng(9)
    x = rng.standard_normal((7, 5)).astype(np.float32)
    np.savez(tmp_path / "flat.npz", x=x, y=np.arange(7) % 3)
    data = load_dataset(tmp_path / "flat.npz")
    assert data.x.shape == (7, 5) and data.input_shape == (5,)
    np.testing.assert_array_equal(data.x.numpy(), x)
    assert load_dataset(tmp_path / "flat.npz", flatten=True).x.shape == (7, 5)
    assert load_dataset(tmp_path / "flat.npz", flatten=False).x.shape == (7, 1, 5)


def test_npz_channel_and_flatten_rule(tmp_path: Path) -> None:
    rng = np.random.default_rng(10)
    imgs = rng.standard_normal((4, 6, 5)).astype(np.float32)  # (n, H, W), no channel axis
    chw = rng.standard_normal((4, 3, 6, 5)).astype(np.float32)  # (n, C, H, W)
    np.savez(tmp_path / "hw.npz", x=imgs, y=np.zeros(4, np.int64))
    np.savez(tmp_path / "chw.npz", x=chw, y=np.zeros(4, np.int64))
    kept = load_dataset(tmp_path / "hw.npz")
    assert kept.x.shape == (4, 6, 5)
    chan = load_dataset(tmp_path / "hw.npz", flatten=False)
    assert chan.x.shape == (4, 1, 6, 5)
    np.testing.assert_array_equal(chan.x.numpy()[:, 0], imgs)
    flat = load_dataset(tmp_path / "hw.npz", flatten=True)
    np.testing.assert_array_equal(flat.x.numpy(), imgs.reshape(4, 30))
    assert load_dataset(tmp_path / "chw.npz", flatten=False).x.shape == (4, 3, 6, 5)
    assert load_dataset(tmp_path / "chw.npz", flatten=True).x.shape == (4, 90)
    # a crop works on stored (H, W) images too
    crop = load_dataset(tmp_path / "hw.npz", crop=4, flatten=False)
    np.testing.assert_array_equal(crop.x.numpy()[:, 0], imgs[:, 1:5, 0:4])
    with pytest.raises(TypeError, match="flatten must be True, False or None"):
        load_dataset(tmp_path / "hw.npz", flatten="yes")


def test_one_pixel_rule_uint8_to_unit_interval(tmp_path: Path) -> None:
    """uint8 pixels are divided by 255 (as IDX and CIFAR); other dtypes are cast unchanged."""
    rng = np.random.default_rng(11)
    pix = rng.integers(0, 256, (5, 4, 4), dtype=np.uint8)
    np.savez(tmp_path / "u8.npz", x=pix, y=np.arange(5) % 2)
    data = load_dataset(tmp_path / "u8.npz", flatten=False)
    assert data.x.dtype == torch.float32 and data.x.shape == (5, 1, 4, 4)
    np.testing.assert_array_equal(data.x.numpy()[:, 0], pix.astype(np.float32) / 255)
    assert float(data.x.max()) <= 1.0
    np.savez(tmp_path / "i16.npz", x=pix.astype(np.int16), y=np.arange(5) % 2)
    np.testing.assert_array_equal(load_dataset(tmp_path / "i16.npz").x.numpy(),
                                  pix.astype(np.float32))


def test_npz_keras_keys_and_missing_x_names_the_keys_found(tmp_path: Path) -> None:
    rng = np.random.default_rng(12)
    x_tr = rng.integers(0, 256, (6, 4, 4), dtype=np.uint8)
    y_tr = np.arange(6) % 3
    x_te = rng.integers(0, 256, (2, 4, 4), dtype=np.uint8)
    np.savez(tmp_path / "keras.npz", x_train=x_tr, y_train=y_tr, x_test=x_te,
             y_test=np.array([3, 0]))
    train = load_dataset(tmp_path / "keras.npz")
    np.testing.assert_array_equal(train.x.numpy(), x_tr.astype(np.float32) / 255)
    np.testing.assert_array_equal(train.y.numpy(), y_tr)
    assert train.num_classes == 4  # labels of both splits
    assert load_dataset(tmp_path / "keras.npz", "test").x.shape == (2, 4, 4)

    np.savez(tmp_path / "other.npz", inputs=np.zeros((2, 3)), targets=np.array([0, 1]))
    with pytest.raises(ValueError) as info:
        load_dataset(tmp_path / "other.npz")
    msg = str(info.value)
    assert "\n" not in msg
    assert "'x' and 'y' or 'x_train' and 'y_train'" in msg
    assert "it has 'inputs', 'targets'" in msg
    np.savez(tmp_path / "nolabels.npz", x=np.zeros((2, 3)))
    with pytest.raises(ValueError, match=r"it has 'x'\); store the integer labels as 'y'"):
        load_dataset(tmp_path / "nolabels.npz")


def test_idx_shape_options(tmp_path: Path) -> None:
    """IDX images arrive as (1, 28, 28) with --channel or without; --flatten gives (784,)."""
    written = write_mnist(tmp_path / "mnist", np.random.default_rng(13), 3, 2, gz=False)
    for flatten in (None, False):
        assert load_dataset("mnist", root=tmp_path, flatten=flatten).x.shape == (3, 1, 28, 28)
    flat = load_dataset("mnist", root=tmp_path, flatten=True)
    np.testing.assert_array_equal(
        flat.x.numpy(), written["train"][0].reshape(3, -1).astype(np.float32) / 255)
