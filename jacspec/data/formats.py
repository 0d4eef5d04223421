"""On-disk formats read by :mod:`jacspec.data.datasets` (nothing is downloaded or unpickled).

- IDX (MNIST, Fashion-MNIST): magic ``00 00 <dtype> <ndim>``, big-endian uint32 dims, data;
  optionally gzip-compressed.
- CIFAR binary batches: records of label byte(s) + 3072 pixel bytes (R, G, B planes, 32x32).
- ``.npz`` with arrays ``x``/``y`` (or ``x_train``/``y_train``), ``x_test``/``y_test``.
- :func:`find_files`: a set's files in the first of several folder layouts that has them all.
"""

from __future__ import annotations

import gzip
import os
import tempfile
import zipfile
import zlib
from pathlib import Path

import numpy as np

from jacspec.data.batches import check_labels

__all__ = ["atomic_savez", "find_files", "idx_names", "read_bytes", "read_cifar_bin",
           "read_idx", "read_npz"]


_IDX_DTYPES = {0x08: np.dtype(">u1"), 0x09: np.dtype(">i1"), 0x0B: np.dtype(">i2"),
               0x0C: np.dtype(">i4"), 0x0D: np.dtype(">f4"), 0x0E: np.dtype(">f8")}


def read_bytes(path: Path) -> bytes:
    """The bytes of ``path``, gunzipped if it ends in ``.gz``; a ValueError if corrupt."""
    try:
        if path.suffix == ".gz":
            with gzip.open(path, "rb") as fh:
                return fh.read()
        return path.read_bytes()
    except (gzip.BadGzipFile, EOFError, zlib.error) as exc:
        raise ValueError(f"file {str(path)!r} is corrupt (bad gzip data: {exc})") from None


def read_idx(path: str | os.PathLike) -> np.ndarray:
    """Read one IDX file (optionally ``.gz``): magic ``00 00 <dtype> <ndim>``, big-endian
    uint32 dims, then the data. Returns a native-endian numpy array of shape dims."""
    path = Path(path)
    raw = read_bytes(path)
    if len(raw) < 4 or raw[0] != 0 or raw[1] != 0 or raw[2] not in _IDX_DTYPES:
        raise ValueError(f"file {str(path)!r} is not an IDX file (bad magic number)")
    dtype, ndim = _IDX_DTYPES[raw[2]], raw[3]
    header = 4 + 4 * ndim
    if ndim == 0 or len(raw) < header:
        raise ValueError(f"file {str(path)!r} is corrupt (truncated IDX header)")
    dims = tuple(int(d) for d in np.frombuffer(raw, ">u4", count=ndim, offset=4))
    expected = header + int(np.prod(dims)) * dtype.itemsize
    if len(raw) != expected:
        raise ValueError(f"file {str(path)!r} is corrupt: IDX header says shape {dims} "
                         f"({expected} bytes) but the file has {len(raw)} bytes")
    arr = np.frombuffer(raw, dtype, offset=header).reshape(dims)
    return arr.astype(dtype.newbyteorder("="))


def read_cifar_bin(path: str | os.PathLike, label_bytes: int = 1, label_index: int = -1
                   ) -> tuple[np.ndarray, np.ndarray]:
    """Read a CIFAR binary batch: records of ``label_bytes`` label bytes + 3072 pixel bytes
    (R, G, B planes of 32x32). Returns (uint8 images (n, 3, 32, 32), labels int64 (n,)) using
    the label byte at ``label_index`` (CIFAR-100: 0 coarse, 1 fine)."""
    path = Path(path)
    raw = read_bytes(path)
    rec = label_bytes + 3072
    if len(raw) == 0 or len(raw) % rec:
        raise ValueError(f"file {str(path)!r} is corrupt: {len(raw)} bytes is not a positive "
                         f"multiple of the {rec}-byte CIFAR record")
    table = np.frombuffer(raw, np.uint8).reshape(-1, rec)
    labels = table[:, label_index].astype(np.int64)
    images = table[:, label_bytes:].reshape(-1, 3, 32, 32)
    return images, labels


def find_files(root: Path, dirs: tuple[str, ...], names: list[tuple[str, ...]], what: str
                ) -> list[Path]:
    """For each entry of ``names`` (alternative file names) find it in root/<dir> (first dir
    that has all files wins); raise a ValueError listing the expected files otherwise."""
    for d in dirs:
        folder = root / d if d else root
        found = []
        for alternatives in names:
            hit = next((folder / a for a in alternatives if (folder / a).is_file()), None)
            if hit is None:
                break
            found.append(hit)
        else:
            return found
    where = " or ".join(repr(str(root / d if d else root)) for d in dirs)
    files = ", ".join(alt[0] + ("[.gz]" if len(alt) > 1 else "") for alt in names)
    note = "" if root.is_dir() else f" (folder {str(root)!r} does not exist)"
    raise ValueError(f"{what} files not found: expected {files} in {where}{note}")


def idx_names(stem: str) -> tuple[str, ...]:
    """Spellings of an IDX file name: ``stem``, ``stem.gz`` and the dotted ``.idx`` forms."""
    dotted = stem.replace("-idx", ".idx")
    return (stem, stem + ".gz", dotted, dotted + ".gz")


_NPZ_KEYS = {"train": (("x", "y"), ("x_train", "y_train")), "test": (("x_test", "y_test"),)}


def _npz_keys(path: Path, keys: set[str], split: str) -> tuple[str, str]:
    """The (inputs, labels) array names of ``split`` in a .npz holding arrays ``keys``."""
    pairs = _NPZ_KEYS[split]
    for xk, yk in pairs:
        if xk in keys and yk in keys:
            return xk, yk
    wanted = " or ".join(f"{xk!r} and {yk!r}" for xk, yk in pairs)
    found = ", ".join(repr(k) for k in sorted(keys)) or "no arrays"
    hint = ""
    if any(xk in keys for xk, _ in pairs):
        hint = "; store the integer labels as " + " or ".join(
            repr(yk) for xk, yk in pairs if xk in keys)
    raise ValueError(f"dataset file {str(path)!r} has no arrays {wanted} for split={split!r} "
                     f"(it has {found}){hint}")


def read_npz(path: Path, split: str) -> tuple[np.ndarray, np.ndarray, int, bool]:
    """(x float32, y int64, k = max label + 1 over all splits, False) of one split of a .npz;
    uint8 pixels are divided by 255. Object arrays are refused (never unpickled)."""
    if not path.is_file():
        raise FileNotFoundError(f"dataset file {str(path)!r} does not exist")
    if not zipfile.is_zipfile(path):
        raise ValueError(f"dataset file {str(path)!r} is not a readable .npz (not a zip archive)")
    try:
        with np.load(path, allow_pickle=False) as f:
            keys = set(f.files)
            xk, yk = _npz_keys(path, keys, split)
            x, y = f[xk], f[yk]
            y_all = {k: f[k] for k in ("y", "y_train", "y_test") if k in keys}
    except ValueError as exc:
        if "allow_pickle" in str(exc) or "Object arrays" in str(exc):
            raise ValueError(f"dataset file {str(path)!r} holds object arrays, which would "
                             "need unpickling; store plain numeric arrays x and y") from None
        raise
    except (OSError, EOFError, zlib.error, KeyError, zipfile.BadZipFile) as exc:
        raise ValueError(f"dataset file {str(path)!r} is not a readable .npz ({exc})") from None
    if x.dtype.kind not in "fiub" or x.ndim < 2 or x.size == 0:
        raise ValueError(f"dataset file {str(path)!r}: {xk} must be a numeric array of shape "
                         f"(n, ...) with n >= 1; got dtype {x.dtype}, shape {x.shape}")
    labels = {}
    for name, arr in y_all.items():  # every split's labels: k is counted over all of them
        try:
            labels[name] = check_labels(arr, f"dataset file {str(path)!r}: labels {name}")
        except TypeError as exc:  # a dtype that is no number: one ValueError for the file
            raise ValueError(str(exc)) from None
    if y.ndim != 1 or len(y) != len(x):
        raise ValueError(f"dataset file {str(path)!r}: {yk} must have shape ({len(x)},); got "
                         f"{y.shape}")
    if x.dtype.kind == "f" and not np.isfinite(x).all():
        raise ValueError(f"dataset file {str(path)!r}: {xk} contains NaN or Inf")
    k = max((int(a.max()) for a in labels.values() if a.size), default=-1) + 1
    xf = x.astype(np.float32) / 255.0 if x.dtype == np.uint8 else x.astype(np.float32)
    if not np.isfinite(xf).all():
        raise ValueError(f"dataset file {str(path)!r}: {xk} overflows float32")
    return xf, labels[yk], k, False


def atomic_savez(path: Path, **arrays: np.ndarray) -> None:
    """Write ``arrays`` to ``path`` as .npz via a temporary file and ``os.replace``."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=path.name + ".", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as fh:
            np.savez(fh, **arrays)
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
