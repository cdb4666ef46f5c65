"""IDX files (MNIST / Fashion-MNIST layout): the reader, its one-line errors, the fashion-mnist dataset and the
generated cluttered-fashion benchmark, on tiny files the tests write."""
import dataclasses
import gzip
import os
import struct

import numpy as np
import pytest
import torch

from tavt_kit.data import DATASETS, DataSpec, build_dataset, cached_tensors, load_raw
from tavt_kit.data import cluttered_fashion as cf
from tavt_kit.data.datasets import training_overlap
from tavt_kit.data.fashion import DEFAULT_ROOT, FASHION_CLASSES
from tavt_kit.data.idx import find_idx, read_idx, read_idx_dataset
from tavt_kit.errors import ConfigError, DatasetError

CODES = {np.dtype(np.uint8): 0x08, np.dtype(np.int8): 0x09, np.dtype(np.int16): 0x0B, np.dtype(np.int32): 0x0C,
         np.dtype(np.float32): 0x0D, np.dtype(np.float64): 0x0E}


def idx_bytes(arr, code=None):
    arr = np.asarray(arr)
    code = CODES[arr.dtype] if code is None else code
    head = bytes([0, 0, code, arr.ndim]) + struct.pack(f">{arr.ndim}I", *arr.shape)
    return head + arr.astype(arr.dtype.newbyteorder(">")).tobytes()


def write_idx(path, arr=None, gz=False, raw=None):
    data = idx_bytes(arr) if raw is None else raw
    with (gzip.open if gz else open)(str(path), "wb") as f:
        f.write(data)
    return str(path)


def make_idx(root, per_class=(6, 2), classes=10, size=28, gz=True, seed=0):
    """train/test IDX files with ``per_class`` items of each class; images are random strokes on black."""
    os.makedirs(root, exist_ok=True)
    rng = np.random.default_rng(seed)
    out = {}
    for split, prefix, n in (("train", "train", per_class[0]), ("test", "t10k", per_class[1])):
        labels = np.tile(np.arange(classes, dtype=np.uint8), n)
        images = np.zeros((len(labels), size, size), np.uint8)
        images[:, size // 4:-size // 4, size // 4:-size // 4] = rng.integers(1, 256, (len(labels), size - 2 * (size // 4),
                                                                                     size - 2 * (size // 4)))
        write_idx(os.path.join(root, f"{prefix}-images-idx3-ubyte" + (".gz" if gz else "")), images, gz=gz)
        write_idx(os.path.join(root, f"{prefix}-labels-idx1-ubyte" + (".gz" if gz else "")), labels, gz=gz)
        out[split] = (images, labels)
    return str(root), out


# ------------------------------------------------------------------ the reader
@pytest.mark.parametrize("gz", [False, True])
def test_idx_files_read_back_exactly(tmp_path, gz):
    rng = np.random.default_rng(1)
    for arr in (rng.integers(0, 256, (3, 8, 8)).astype(np.uint8), rng.integers(-9, 9, 5).astype(np.int8),
                rng.integers(-3000, 3000, (2, 4)).astype(np.int16), rng.integers(-2**30, 2**30, 3).astype(np.int32),
                rng.standard_normal((2, 3)).astype(np.float32), rng.standard_normal(4)):
        got = read_idx(write_idx(tmp_path / f"a{arr.dtype}", arr, gz=gz))
        assert got.dtype == arr.dtype and got.shape == arr.shape and np.array_equal(got, arr)
    # found plain, gzipped or in the dotted spelling of some mirrors
    write_idx(tmp_path / "train-images.idx3-ubyte.gz", np.zeros((1, 2, 2), np.uint8), gz=True)
    assert find_idx(str(tmp_path), "train-images-idx3-ubyte").endswith("train-images.idx3-ubyte.gz")


def _bad(root, kind):
    """A dataset folder with one fault; returns the name of the file the error must name."""
    root, _ = make_idx(root, per_class=(2, 1), gz=False)
    lab = os.path.join(root, "train-labels-idx1-ubyte")
    img = os.path.join(root, "train-images-idx3-ubyte")
    data = open(img, "rb").read()
    if kind == "magic":
        open(img, "wb").write(b"\x89PNG" + data[4:])
    elif kind == "type code":
        open(img, "wb").write(data[:2] + b"\x07" + data[3:])
    elif kind == "dimensions":
        write_idx(img, np.zeros((20, 784), np.uint8))
    elif kind == "truncated":
        open(img, "wb").write(data[:-5])
    elif kind == "header":
        open(img, "wb").write(data[:9])
    elif kind == "trailing":
        open(img, "wb").write(data + b"\0\0")
    elif kind == "gzip":
        os.remove(img)
        img += ".gz"
        open(img, "wb").write(gzip.compress(data)[:-30])
    elif kind == "counts":
        write_idx(lab, np.zeros(19, np.uint8))
        return lab
    elif kind == "label range":
        write_idx(lab, np.r_[np.arange(10), np.arange(9), 12].astype(np.uint8))
        return lab
    elif kind == "negative label":
        write_idx(lab, np.r_[np.arange(10), np.arange(9), -1].astype(np.int8))
        return lab
    elif kind == "missing":
        os.remove(lab)
        return lab
    elif kind == "test size":
        t = os.path.join(root, "t10k-images-idx3-ubyte")
        write_idx(t, np.zeros((10, 20, 20), np.uint8))
        return t
    return img


@pytest.mark.parametrize("kind,expected", [
    ("magic", "not an IDX file"), ("type code", "type code 0x07 is unknown; expected one of 0x08"),
    ("dimensions", "2 dimensions; expected 3"), ("truncated", "truncated: .* expected 15680 for 20x28x28"),
    ("header", "truncated in its header"), ("trailing", "2 bytes after the 20x28x28"),
    ("gzip", "corrupt gzip"), ("counts", "19 labels but train-images-idx3-ubyte holds 20 images"),
    ("label range", r"label 12 \(item 19\) is outside the classes; expected 0..9 \(the 10 classes\)"),
    ("negative label", "label -1"), ("missing", "missing"), ("test size", "images of 20x20 pixels; expected"),
])
def test_a_bad_file_is_one_line_naming_it(tmp_path, kind, expected):
    named = _bad(tmp_path / "fashion", kind)
    with pytest.raises(DatasetError, match=expected) as e:
        build_dataset("fashion-mnist", str(tmp_path / "fashion"), "train", img_size=16)
    msg = str(e.value)
    assert "\n" not in msg and msg.startswith(named), msg


# ------------------------------------------------------------------ fashion-mnist
def test_fashion_mnist_gives_rgb_images_at_the_model_size_with_their_labels(tmp_path):
    root, files = make_idx(tmp_path / "fashion-mnist")
    (xtr, ytr), (xte, yte) = files["train"], files["test"]
    ds = {s: build_dataset("fashion", root, s, img_size=32) for s in ("train", "holdout", "test", "trainval")}
    assert [len(ds[s]) for s in ("train", "holdout", "test", "trainval")] == [54, 6, 20, 60]
    assert ds["test"].class_names == FASHION_CLASSES and ds["train"].spec.name == "fashion-mnist"
    x, y = ds["test"][3]
    assert x.dtype == torch.uint8 and tuple(x.shape) == (3, 32, 32) and y == int(yte[3])
    assert torch.equal(x[0], x[1]) and torch.equal(x[0], x[2])  # grey, repeated to RGB
    ref = torch.nn.functional.interpolate(torch.from_numpy(xte[3]).float()[None, None], size=(32, 32),
                                          mode="bilinear", align_corners=False).round().clamp(0, 255).byte()[0, 0]
    assert torch.equal(x[0], ref)
    assert ds["trainval"].targets == ytr.tolist()
    assert not set(ds["train"].samples) & set(ds["holdout"].samples)  # carved from train, stratified
    assert len(set(ds["holdout"].targets)) == 6  # stratified: six classes give one each
    native = build_dataset("idx", root, "train", img_size=28)
    row = native.samples[0][0]
    assert torch.equal(native[0][0][0], torch.from_numpy(xtr[row]))
    images, labels = cached_tensors(ds["test"])
    assert images.shape == (20, 3, 32, 32) and labels.tolist() == yte.tolist()


def test_count_options_subset_every_split_without_touching_the_held_out_carve(tmp_path):
    root, _ = make_idx(tmp_path / "fashion")
    spec = DataSpec("fashion-mnist", root, options={"train": "20", "holdout": 4, "test": 10})
    assert spec.options == {"train": 20, "holdout": 4, "test": 10}
    ds = {s: build_dataset(spec, split=s, img_size=16) for s in ("train", "holdout", "test", "trainval")}
    assert [len(ds[s]) for s in ("train", "holdout", "test", "trainval")] == [20, 4, 10, 24]
    assert np.bincount(ds["train"].targets).tolist() == [2] * 10 and np.bincount(ds["test"].targets).tolist() == [1] * 10
    full = {s: set(build_dataset("fashion-mnist", root, s, img_size=16).samples) for s in ("train", "holdout")}
    assert set(ds["train"].samples) <= full["train"] and set(ds["holdout"].samples) <= full["holdout"]
    assert DataSpec.from_dict(spec.to_dict()).options == spec.options  # JSON-able, stored in checkpoints
    # other counts never overlap; another split seed puts training images into the held-out split
    assert training_overlap(spec, DataSpec("fashion-mnist", root)) is None
    why = training_overlap(spec, DataSpec("fashion-mnist", root, split_seed=1))
    assert why and why.startswith("split_seed=1:") and "images the model trained on" in why
    with pytest.raises(ConfigError, match=r"options\['tests'\]=3: fashion-mnist has no such option"):
        DataSpec("fashion-mnist", root, options={"tests": 3})
    with pytest.raises(ConfigError, match=r"options\['train'\]=-2: expected a number of images"):
        DataSpec("fashion-mnist", root, options={"train": -2})


def test_other_idx_folders_get_numbered_classes_and_the_default_root(tmp_path, monkeypatch):
    root, _ = make_idx(tmp_path / "kmnist" / "raw", classes=4, per_class=(3, 1), gz=False)
    raw = load_raw("fashion-mnist", str(tmp_path / "kmnist"))  # found in raw/, named by number
    assert raw.class_names == ["0", "1", "2", "3"] and len(raw.train) == 12 and raw.test[0][0] == 12
    fashion_dir, _ = make_idx(tmp_path / "FashionMNIST" / "raw", per_class=(1, 1))
    assert load_raw("fashion-mnist", str(tmp_path / "FashionMNIST" / "raw")).class_names == FASHION_CLASSES
    # no root: the Debian package's folder, or one line saying it is not there
    info = DATASETS["fashion-mnist"]
    assert info.default_root == DEFAULT_ROOT == "/usr/share/datasets/fashion-mnist"
    monkeypatch.setitem(DATASETS, "fashion-mnist", dataclasses.replace(info, default_root=fashion_dir))
    assert len(build_dataset("fashion-mnist", split="test", img_size=8)) == 10
    assert DataSpec("fashion-mnist").root is None  # the default is not written into checkpoints
    monkeypatch.setitem(DATASETS, "fashion-mnist", dataclasses.replace(info, default_root=str(tmp_path / "none")))
    with pytest.raises(DatasetError, match=r"root=None: dataset fashion-mnist needs its root folder, and its default "
                                           r".*none is not there; expected .*dataset-fashion-mnist"):
        build_dataset("fashion-mnist", split="test")


@pytest.mark.skipif(not os.path.isdir(DEFAULT_ROOT), reason="Debian's dataset-fashion-mnist is not installed")
def test_the_installed_fashion_mnist_files():
    d = read_idx_dataset(DEFAULT_ROOT, 10)
    assert d["train"][0].shape == (60000, 28, 28) and d["test"][0].shape == (10000, 28, 28)
    assert np.bincount(d["train"][1]).tolist() == [6000] * 10 and np.bincount(d["test"][1]).tolist() == [1000] * 10


# ------------------------------------------------------------------ cluttered-fashion
SMALL = {"train": 40, "holdout": 12, "test": 20, "canvas": 40}


def test_cluttered_fashion_is_deterministic_disjoint_and_shows_its_item(tmp_path):
    root, files = make_idx(tmp_path / "fashion")
    every = np.concatenate([files["train"][0], files["test"][0]])
    labels = np.concatenate([files["train"][1], files["test"][1]])
    a1, s1, meta = cf.generate(root, dict(SMALL, seed=1))
    cf._generate.cache_clear()
    a2, _, _ = cf.generate(root, dict(SMALL, seed=1))
    a3, _, _ = cf.generate(root, dict(SMALL, seed=2))
    assert torch.equal(a1, a2) and not torch.equal(a1, a3) and a1.shape == (72, 1, 40, 40)
    src = cf.sources_of(dict(SMALL, seed=1), root)
    assert meta["source_items"] == {"train": 54, "holdout": 6, "test": 20}
    sets = {k: set(v.tolist()) for k, v in src.items()}
    assert not sets["train"] & sets["holdout"] and not sets["train"] & sets["test"] and not sets["holdout"] & sets["test"]
    for split, lay in cf.provenance(root, dict(SMALL, seed=1)).items():
        assert set(lay.item.tolist()) <= sets[split] and set(lay.clutter.ravel().tolist()) <= sets[split]
        assert (lay.clutter != lay.item[:, None]).all()  # clutter from OTHER items
        assert (labels[lay.item] == s1[split][1]).all()
        for i, row in enumerate(s1[split][0]):
            (y, x), s = lay.item_pos[i], 28
            region = a1[row, 0, y:y + s, x:x + s].numpy()
            item = every[lay.item[i]]
            assert (region >= item).all() and (region[item > 0] == item[item > 0]).mean() > 0.5
    ds = {k: build_dataset(DataSpec("cluttered-idx", root, options=SMALL), split=k, img_size=32)
          for k in ("train", "holdout", "test")}
    assert [len(ds[k]) for k in ds] == [40, 12, 20] and tuple(ds["test"][0][0].shape) == (3, 32, 32)
    assert ds["train"].class_names == FASHION_CLASSES and ds["holdout"].describe()["holdout"] == "own split"
    why = training_overlap(DataSpec("cluttered-fashion", root, options=SMALL),
                           DataSpec("cluttered-fashion", root, options=dict(SMALL, seed=5)))
    assert why and why.startswith("options['seed']=5")


def test_cluttered_fashion_item_sizes_and_options(tmp_path):
    root, _ = make_idx(tmp_path / "fashion", per_class=(3, 1), size=12)
    o = dict(SMALL, canvas=24, item_min=8, item_max=16, fragment=5, clutter=3, clutter_brightness=50)
    a, _, _ = cf.generate(root, o)
    lay = cf.provenance(root, o)["train"]
    assert set(lay.item_size.tolist()) > {8} and lay.item_size.max() <= 16 and a.shape[-1] == 24
    for bad, match in [({"fragment": 30}, "fragment <= item_min"), ({"item_min": 50}, "item_max <= canvas"),
                       ({"test": 0}, "at least one image"), ({"digit_min": 3}, "cluttered-fashion has no such")]:
        with pytest.raises(ConfigError, match=match):
            DataSpec("cluttered-fashion", root, options=bad)


def test_train_on_an_idx_folder_from_the_command_line(tmp_path, capsys):
    from tavt_kit.cli import main

    root, _ = make_idx(tmp_path / "fashion", per_class=(4, 2))
    rc = main(["train", "--dataset", "fashion-mnist", "--data", root, "--steps", "2", "--batch-size", "8",
               "--img-size", "32", "--out", str(tmp_path / "run"), "--no-progress"])
    assert rc in (0, None)
    out = capsys.readouterr().out
    assert "fashion-mnist" in out and os.path.isfile(tmp_path / "run" / "best.safetensors")
