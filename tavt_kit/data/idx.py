"""Reading IDX files: the array format of MNIST, Fashion-MNIST, KMNIST and their kin, plain or gzipped.

An IDX file is a 4-byte header -- two zero bytes, a type code (``0x08`` unsigned byte, ``0x09`` signed byte,
``0x0B`` 16-bit, ``0x0C`` 32-bit integer, ``0x0D`` 32-bit, ``0x0E`` 64-bit float) and the number of dimensions
-- then each dimension's size as a big-endian 32-bit integer, then the values, big-endian, row-major. A gzipped
file is recognised by its content, whatever its name. A dataset is the four files
``train-images-idx3-ubyte``, ``train-labels-idx1-ubyte``, ``t10k-images-idx3-ubyte`` and
``t10k-labels-idx1-ubyte`` (each may end in ``.gz``; the dotted ``train-images.idx3-ubyte`` spelling of some
mirrors is read too), in one folder, or in its ``raw/``, ``FashionMNIST/raw/``, ``MNIST/raw/`` or
``KMNIST/raw/`` subfolder (torchvision's layouts; the first that holds the training labels).

Every fault -- a missing file, a wrong header, a file shorter or longer than its header says, images and labels
that do not pair up, a label outside the classes -- is one :class:`DatasetError` line naming the file and what
was expected. Nothing here knows a dataset's class names (:mod:`.fashion` does).
"""
from __future__ import annotations

import functools
import gzip
import os
import zlib
from typing import Dict, Optional, Tuple

import numpy as np

from ..errors import DatasetError

#: IDX type code -> (numpy dtype, big-endian, as the file stores it) and its name
IDX_TYPES: Dict[int, Tuple[str, str]] = {0x08: (">u1", "unsigned byte"), 0x09: (">i1", "signed byte"),
                                          0x0B: (">i2", "16-bit integer"), 0x0C: (">i4", "32-bit integer"),
                                          0x0D: (">f4", "32-bit float"), 0x0E: (">f8", "64-bit float")}
#: each split's (images, labels) file names, without ``.gz``
SPLIT_FILES = {"train": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
               "test": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte")}
#: the subfolders searched, in order, when the root does not hold the files itself (torchvision's layouts)
SUBFOLDERS = ("raw", "FashionMNIST/raw", "MNIST/raw", "KMNIST/raw")
LAYOUT = ("the IDX files train-images-idx3-ubyte, train-labels-idx1-ubyte, t10k-images-idx3-ubyte, "
          "t10k-labels-idx1-ubyte (each may be .gz) in one folder")
_TYPE_LIST = ", ".join(f"0x{c:02X} {name}" for c, (_, name) in IDX_TYPES.items())
_GZIP = b"\x1f\x8b"


def _read_bytes(path: str) -> bytes:
    """The file's bytes, un-gzipped when it is gzip (by its first two bytes, not its name)."""
    try:
        with open(path, "rb") as f:
            data = f.read()
    except FileNotFoundError:
        raise DatasetError(f"{path}: missing; expected an IDX file") from None
    except OSError as e:
        raise DatasetError(f"{path}: cannot be read ({e.strerror or e}); expected a readable IDX file") from None
    if data[:2] != _GZIP:
        return data
    try:
        return gzip.decompress(data)
    except (EOFError, OSError, zlib.error) as e:
        raise DatasetError(f"{path}: truncated or corrupt gzip data ({e}); expected a complete gzipped IDX "
                           "file") from None


def read_idx(path: str, ndim: Optional[int] = None) -> np.ndarray:
    """The array an IDX file holds (native byte order); ``ndim``: the number of dimensions it must have."""
    data = _read_bytes(path)
    if len(data) < 4:
        raise DatasetError(f"{path}: {len(data)} bytes; expected an IDX file (a 4-byte header, the sizes, the "
                           "values)")
    if data[0] != 0 or data[1] != 0:
        raise DatasetError(f"{path}: not an IDX file (it starts with bytes {data[:4].hex(' ')}); expected two zero "
                           f"bytes, a type code and the number of dimensions")
    code, dims = data[2], data[3]
    if code not in IDX_TYPES:
        raise DatasetError(f"{path}: IDX type code 0x{code:02X} is unknown; expected one of {_TYPE_LIST}")
    if ndim is not None and dims != ndim:
        raise DatasetError(f"{path}: an IDX file of {dims} dimension{'s' if dims != 1 else ''}; expected "
                           f"{ndim} ({'count x rows x columns' if ndim == 3 else 'one value per item'})")
    head = 4 + 4 * dims
    if len(data) < head:
        raise DatasetError(f"{path}: truncated in its header ({len(data)} bytes); expected {head} bytes of header "
                           f"for {dims} dimensions")
    shape = tuple(int(v) for v in np.frombuffer(data, dtype=">u4", count=dims, offset=4))
    dtype, name = IDX_TYPES[code]
    need = int(np.prod(shape, dtype=np.int64)) * np.dtype(dtype).itemsize
    got = len(data) - head
    what = f"{'x'.join(map(str, shape)) or 'one'} {name}{'s' if shape != () else ''}"
    if got < need:
        raise DatasetError(f"{path}: truncated: {got} bytes of values; expected {need} for {what}")
    if got > need:
        raise DatasetError(f"{path}: {got - need} bytes after the {what} its header declares; expected the file "
                           "to end there")
    arr = np.frombuffer(data, dtype=dtype, count=need // np.dtype(dtype).itemsize, offset=head).reshape(shape)
    return arr.astype(np.dtype(dtype).newbyteorder("="))


def find_idx(folder: str, stem: str) -> str:
    """The path of the IDX file ``stem`` in ``folder`` (plain or ``.gz``, dashed or dotted spelling)."""
    dotted = stem.replace("-idx", ".idx")
    for name in (stem, stem + ".gz", dotted, dotted + ".gz"):
        path = os.path.join(folder, name)
        if os.path.isfile(path):
            return path
    raise DatasetError(f"{os.path.join(folder, stem)}: missing (nor {stem}.gz); expected {LAYOUT}")


def idx_folder(root: str) -> str:
    """The folder of ``root`` holding the IDX files: ``root`` itself or its ``raw/`` subfolder."""
    if root is None or root == "":
        raise DatasetError(f"root={root!r}: expected the folder of {LAYOUT}")
    root = os.fspath(root)
    if not os.path.isdir(root):
        raise DatasetError(f"{root}: {'not a folder' if os.path.exists(root) else 'not found'}; expected the "
                           f"folder of {LAYOUT}")
    for sub in ("",) + SUBFOLDERS:
        d = os.path.join(root, sub) if sub else root
        stem = SPLIT_FILES["train"][1]
        if any(os.path.isfile(os.path.join(d, n)) for n in (stem, stem + ".gz", stem.replace("-idx", ".idx"),
                                                             stem.replace("-idx", ".idx") + ".gz")):
            return d
    return root


def read_split(folder: str, split: str, num_classes: Optional[int] = None) -> Tuple[np.ndarray, np.ndarray, str]:
    """One split's images (uint8 ``(N, H, W)``), labels (int64 ``(N,)``) and the labels file's path.

    Images must be unsigned bytes; labels integers in ``0..num_classes-1`` (non-negative when not given), one
    per image.
    """
    img_path, lab_path = (find_idx(folder, stem) for stem in SPLIT_FILES[split])
    images = read_idx(img_path, ndim=3)
    if images.dtype != np.uint8:
        raise DatasetError(f"{img_path}: images of {images.dtype} values; expected unsigned bytes (IDX type 0x08)")
    labels = read_idx(lab_path, ndim=1)
    if labels.dtype.kind not in "iu":
        raise DatasetError(f"{lab_path}: labels of {labels.dtype} values; expected integers (IDX type 0x08)")
    if len(labels) != len(images):
        raise DatasetError(f"{lab_path}: {len(labels)} labels but {os.path.basename(img_path)} holds {len(images)} "
                           "images; expected one label per image")
    labels = labels.astype(np.int64)
    if len(labels):
        low, high = int(labels.min()), int(labels.max())
        top = num_classes - 1 if num_classes is not None else None
        if low < 0 or (top is not None and high > top):
            bad = low if low < 0 else high
            at = int(np.flatnonzero(labels == bad)[0])
            within = f"0..{top} (the {num_classes} classes)" if top is not None else "a non-negative class"
            raise DatasetError(f"{lab_path}: label {bad} (item {at}) is outside the classes; expected {within}")
    return images, labels, lab_path


def dataset_key(root: str, num_classes: Optional[int] = None) -> Tuple:
    """A hashable key of the IDX dataset in ``root`` as it is now (its folder, its files' sizes and times, the
    class count): what :func:`read_key` reads and caches by; a missing file is named here."""
    folder = idx_folder(root)
    stamp = []
    for stems in SPLIT_FILES.values():
        for stem in stems:
            st = os.stat(find_idx(folder, stem))
            stamp.append((st.st_size, st.st_mtime_ns))
    return os.path.realpath(folder), tuple(stamp), num_classes


def read_idx_dataset(root: str, num_classes: Optional[int] = None) -> Dict[str, Tuple[np.ndarray, np.ndarray]]:
    """Both splits of an IDX dataset: ``{"train": (images, labels), "test": (images, labels)}``.

    ``num_classes``: the labels must lie below it; when None, the training labels decide it and the test labels
    must lie among them. Train and test images must have one size. Read once per folder and file versions (do
    not write into the arrays).
    """
    return read_key(dataset_key(root, num_classes))


def read_key(key: Tuple) -> Dict[str, Tuple[np.ndarray, np.ndarray]]:
    """:func:`read_idx_dataset` of a :func:`dataset_key`."""
    return _read_cached(*key)


@functools.lru_cache(maxsize=2)
def _read_cached(folder: str, stamp: Tuple, num_classes: Optional[int]):
    train_x, train_y, _ = read_split(folder, "train", num_classes)
    if len(train_y) == 0:
        raise DatasetError(f"{find_idx(folder, SPLIT_FILES['train'][1])}: no items; expected the training labels")
    n = num_classes if num_classes is not None else int(train_y.max()) + 1
    test_x, test_y, test_path = read_split(folder, "test", n)
    if test_x.shape[1:] != train_x.shape[1:]:
        raise DatasetError(f"{find_idx(folder, SPLIT_FILES['test'][0])}: images of {test_x.shape[1]}x"
                           f"{test_x.shape[2]} pixels; expected the training images' {train_x.shape[1]}x"
                           f"{train_x.shape[2]}")
    return {"train": (train_x, train_y), "test": (test_x, test_y)}
