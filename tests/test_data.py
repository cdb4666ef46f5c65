"""Datasets: every format read from a small fake tree, splits, transforms, caching, errors."""
import json
import os

import numpy as np
import pytest
import torch
from PIL import Image

from tavt_kit.data import (DATASETS, DataSpec, Normalize, build_dataset, cached_tensors, load_raw,
                           stratified_split)
from tavt_kit.errors import ConfigError, DatasetError


# ------------------------------------------------------------------ fakes
def write_image(path, seed=0, size=(20, 16), fmt=None):
    """A small random RGB image (PNG or JPEG by extension)."""
    os.makedirs(os.path.dirname(path), exist_ok=True)
    rng = np.random.default_rng(seed)
    arr = rng.integers(0, 256, (size[1], size[0], 3), dtype=np.uint8)
    Image.fromarray(arr).save(path, format=fmt)
    return path


def make_cub(root, per_class=(3, 2), classes=("001.Black_footed_Albatross", "002.Laysan_Albatross",
                                               "003.Sooty_Albatross")):
    """CUB_200_2011/ inside root: per class `per_class[0]` train and `per_class[1]` test images."""
    d = os.path.join(root, "CUB_200_2011")
    os.makedirs(d, exist_ok=True)
    images, labels, split = [], [], []
    i = 0
    for c, cname in enumerate(classes, 1):
        for k in range(sum(per_class)):
            i += 1
            rel = f"{cname}/{cname.split('.')[1]}_{k:04d}_{i}.jpg"
            write_image(os.path.join(d, "images", rel), seed=i)
            images.append(f"{i} {rel}")
            labels.append(f"{i} {c}")
            split.append(f"{i} {1 if k < per_class[0] else 0}")
    for name, lines in (("images.txt", images), ("image_class_labels.txt", labels), ("train_test_split.txt", split),
                        ("classes.txt", [f"{c} {n}" for c, n in enumerate(classes, 1)])):
        with open(os.path.join(d, name), "w") as f:
            f.write("\n".join(lines) + "\n")
    return d


def make_folder(root, classes=("cat", "dog", "eel"), train=4, test=2, flat=False, size=(20, 16)):
    for c, cname in enumerate(classes):
        for k in range(train + test):
            if flat:
                sub = cname
            else:
                sub = os.path.join("train" if k < train else "test", cname)
            ext = "png" if k % 2 else "jpg"
            write_image(os.path.join(root, sub, f"{k:03d}.{ext}"), seed=100 * c + k, size=size)
    return root


# ---------------------------------------------------------------- formats
def test_cub_reads_labels_splits_and_names(tmp_path):
    make_cub(tmp_path)
    raw = load_raw("cub", str(tmp_path))  # the folder above CUB_200_2011/ works too
    assert raw.class_names == ["Black_footed_Albatross", "Laysan_Albatross", "Sooty_Albatross"]
    assert [lab for _, lab in raw.train] == [0, 0, 0, 1, 1, 1, 2, 2, 2]
    assert [lab for _, lab in raw.test] == [0, 0, 1, 1, 2, 2]
    assert all("Laysan_Albatross/" in p for p, lab in raw.train + raw.test if lab == 1)
    ds = build_dataset("cub", str(tmp_path / "CUB_200_2011"), "test", img_size=32)
    x, y = ds[0]
    assert x.dtype == torch.uint8 and x.shape == (3, 32, 32) and y == 0
    assert ds.transform_info["resize"] == [43, 43]  # 600/448 x 32


def test_nabirds_maps_sparse_taxonomy_ids_and_hierarchy(tmp_path):
    d = tmp_path / "nabirds"
    ids = {"a0b1-c2": (817, 1), "d3e4-f5": (295, 1), "0f0f-11": (817, 0), "2222-33": (295, 0), "4444-55": (599, 1),
           "6666-77": (599, 0)}
    for k, (img_id, (cid, _)) in enumerate(ids.items()):
        write_image(str(d / "images" / f"{cid:04d}" / f"{img_id}.jpg"), seed=k)
    (d / "images.txt").write_text("".join(f"{i} {c:04d}/{i}.jpg\n" for i, (c, _) in ids.items()))
    (d / "image_class_labels.txt").write_text("".join(f"{i} {c}\n" for i, (c, _) in ids.items()))
    (d / "train_test_split.txt").write_text("".join(f"{i} {t}\n" for i, (_, t) in ids.items()))
    (d / "classes.txt").write_text("0 Birds\n1 Perching Birds\n295 Common Loon\n599 Snowy Egret\n"
                                   "817 Red-tailed Hawk (Adult)\n")
    (d / "hierarchy.txt").write_text("1 0\n295 1\n599 1\n817 1\n")
    raw = load_raw("nabirds", str(d))
    assert raw.class_names == ["Common Loon", "Snowy Egret", "Red-tailed Hawk (Adult)"]
    assert sorted(lab for _, lab in raw.train) == [0, 1, 2] and len(raw.test) == 3
    assert dict((os.path.basename(p), lab) for p, lab in raw.train)["a0b1-c2.jpg"] == 2
    assert raw.meta["parents"]["Snowy Egret"] == "Perching Birds"


def test_stanford_dogs_mat_lists(tmp_path):
    import scipy.io

    files = {"train": [("n02085620-Chihuahua/n02085620_1.jpg", 1), ("n02085782-Japanese_spaniel/n02085782_2.jpg", 2),
                       ("n02085620-Chihuahua/n02085620_3.jpg", 1)],
             "test": [("n02085782-Japanese_spaniel/n02085782_4.jpg", 2)]}
    for split, rows in files.items():
        for k, (rel, _) in enumerate(rows):
            write_image(str(tmp_path / "Images" / rel), seed=k)
        file_list = np.empty((len(rows), 1), dtype=object)
        for k, (rel, _) in enumerate(rows):
            file_list[k, 0] = np.array([rel])
        scipy.io.savemat(str(tmp_path / f"{split}_list.mat"),
                         {"file_list": file_list, "labels": np.array([[lab] for _, lab in rows], dtype=np.uint8)})
    raw = load_raw("stanford_dogs", str(tmp_path))
    assert raw.class_names == ["Chihuahua", "Japanese_spaniel"]
    assert [lab for _, lab in raw.train] == [0, 1, 0] and [lab for _, lab in raw.test] == [1]
    x, y = build_dataset("dogs", str(tmp_path), "test", img_size=16)[0]
    assert x.shape == (3, 16, 16) and y == 1


def _cars_annos(rows):
    dt = [("bbox_x1", "O"), ("bbox_y1", "O"), ("bbox_x2", "O"), ("bbox_y2", "O"), ("class", "O"), ("fname", "O")]
    a = np.zeros((1, len(rows)), dtype=dt)
    for k, (fname, cls) in enumerate(rows):
        a[0, k] = (np.array([[1]]), np.array([[1]]), np.array([[10]]), np.array([[10]]), np.array([[cls]]),
                   np.array([fname]))
    return a


def test_stanford_cars_devkit(tmp_path):
    import scipy.io

    os.makedirs(tmp_path / "devkit")
    names = np.empty((1, 3), dtype=object)
    names[0, :] = [np.array(["AM General Hummer SUV 2000"]), np.array(["Acura RL Sedan 2012"]),
                   np.array(["Audi TT Hatchback 2011"])]
    scipy.io.savemat(str(tmp_path / "devkit" / "cars_meta.mat"), {"class_names": names})
    train = [("00001.jpg", 3), ("00002.jpg", 1), ("00003.jpg", 2)]
    test = [("00001.jpg", 2)]
    scipy.io.savemat(str(tmp_path / "devkit" / "cars_train_annos.mat"), {"annotations": _cars_annos(train)})
    scipy.io.savemat(str(tmp_path / "cars_test_annos_withlabels.mat"), {"annotations": _cars_annos(test)})
    for f, _ in train:
        write_image(str(tmp_path / "cars_train" / f))
    write_image(str(tmp_path / "cars_test" / "00001.jpg"), seed=9)
    raw = load_raw("cars", str(tmp_path))
    assert raw.class_names[0] == "AM General Hummer SUV 2000" and len(raw.class_names) == 3
    assert [lab for _, lab in raw.train] == [2, 0, 1] and raw.test[0][1] == 1
    assert raw.test[0][0].endswith(os.path.join("cars_test", "00001.jpg"))


def test_inat2017_coco_json(tmp_path):
    cats = [{"id": 7, "name": "Abies concolor", "supercategory": "Plantae"},
            {"id": 3, "name": "Aix sponsa", "supercategory": "Aves"}]
    for split, rows in (("train", [(1, 7), (2, 3), (3, 7)]), ("val", [(4, 3)])):
        images = []
        for img_id, cid in rows:
            rel = f"train_val_images/X/{cid}/{img_id}.jpg"
            write_image(str(tmp_path / rel), seed=img_id)
            images.append({"id": img_id, "file_name": rel, "width": 20, "height": 16})
        doc = {"images": images, "categories": cats,
               "annotations": [{"id": 10 + i, "image_id": i, "category_id": c} for i, c in rows]}
        (tmp_path / f"{split}2017.json").write_text(json.dumps(doc))
    raw = load_raw("inat2017", str(tmp_path))
    assert raw.class_names == ["Aix sponsa", "Abies concolor"]  # category id order
    assert [lab for _, lab in raw.train] == [1, 0, 1] and [lab for _, lab in raw.test] == [0]


UFGVC = ("cotton80", "soyloc", "soygene", "soyglobal", "soyageing", "ufgvc")


def test_ultra_fgvc_anno_lists_and_their_crop_ratio(tmp_path):
    for split, rows in (("train", [("1.jpg", 1), ("2.jpg", 2), ("3.jpg", 2)]), ("test", [("4.jpg", 1)])):
        for k, (rel, _) in enumerate(rows):
            write_image(str(tmp_path / "images" / rel), seed=k)
        os.makedirs(tmp_path / "anno", exist_ok=True)
        (tmp_path / "anno" / f"{split}.txt").write_text("".join(f"{r} {lab}\n" for r, lab in rows))
    ds = build_dataset("cotton80", str(tmp_path), "trainval", img_size=32, augment=False)
    assert ds.class_names == ["1", "2"] and ds.targets == [0, 1, 1]
    assert ds.transform_info["resize"] == [42, 42]  # 500/384 x 32
    for name in UFGVC:  # every set of the ultra-FGVC layout reads it, at the seeds' ultra-FGVC size
        test = build_dataset(name, str(tmp_path), "test")
        assert test.img_size == (384, 384) and test.targets == [0], name


def test_class_folders_both_layouts(tmp_path):
    make_folder(tmp_path / "split")
    raw = load_raw("folder", str(tmp_path / "split"))
    assert raw.class_names == ["cat", "dog", "eel"] and len(raw.train) == 12 and len(raw.test) == 6
    make_folder(tmp_path / "flat", train=8, test=2, flat=True)
    raw = load_raw("folder", str(tmp_path / "flat"))
    assert len(raw.train) + len(raw.test) == 30 and len(raw.test) == 6
    assert sorted(lab for _, lab in raw.test) == [0, 0, 1, 1, 2, 2]  # a fixed stratified 20 %
    assert load_raw("folder", str(tmp_path / "flat")).test == raw.test


# ------------------------------------------------------------------ demo
def test_demo_digits_fixed_splits():
    tr, ho, te = (build_dataset("demo", split=s) for s in ("train", "holdout", "test"))
    assert (len(tr), len(ho), len(te)) == (1213, 135, 449) and tr.num_classes == 10
    ids = [set(s for s, _ in d.samples) for d in (tr, ho, te)]
    assert not (ids[0] & ids[1]) and not (ids[0] & ids[2]) and not (ids[1] & ids[2])
    assert len(ids[0] | ids[1] | ids[2]) == 1797
    x, y = te[0]
    assert x.shape == (3, 64, 64) and x.dtype == torch.uint8 and 0 <= y < 10
    assert build_dataset("demo", split="test", img_size=32)[0][0].shape == (3, 32, 32)
    assert tr.class_names == [str(i) for i in range(10)]


# ---------------------------------------------------------------- splits
def test_holdout_is_deterministic_disjoint_and_stratified():
    labels = np.repeat(np.arange(5), [40, 30, 20, 10, 3])
    keep, held = stratified_split(labels, 0.1, seed=0)
    keep2, held2 = stratified_split(labels, 0.1, seed=0)
    assert np.array_equal(held, held2) and np.array_equal(keep, keep2)
    assert len(held) == round(0.1 * len(labels)) and not set(keep) & set(held)
    assert sorted(np.concatenate([keep, held]).tolist()) == list(range(len(labels)))
    per = np.bincount(labels[held], minlength=5)
    assert all(abs(per[c] - 0.1 * n) <= 1 for c, n in enumerate([40, 30, 20, 10, 3]))
    assert not np.array_equal(stratified_split(labels, 0.1, seed=1)[1], held)
    # ultra-FGVC: 3 images per class; holdout places spread over classes, never a whole class
    tiny = np.repeat(np.arange(80), 3)
    _, h = stratified_split(tiny, 0.1, seed=0)
    assert len(h) == 24 and np.bincount(tiny[h]).max() == 1


def test_train_and_holdout_splits_of_a_dataset(tmp_path):
    make_folder(tmp_path, train=10, test=1)
    tr = build_dataset("folder", str(tmp_path), "train", img_size=16, holdout=0.2, split_seed=3)
    ho = build_dataset("folder", str(tmp_path), "holdout", img_size=16, holdout=0.2, split_seed=3)
    assert len(ho) == 6 and len(tr) == 24 and sorted(ho.targets) == [0, 0, 1, 1, 2, 2]
    assert not {p for p, _ in tr.samples} & {p for p, _ in ho.samples}
    again = build_dataset("folder", str(tmp_path), "holdout", img_size=16, holdout=0.2, split_seed=3)
    assert again.samples == ho.samples
    assert len(build_dataset("folder", str(tmp_path), "train", img_size=16, holdout=0)) == 30


# ------------------------------------------------------------- transforms
def test_eval_is_deterministic_and_augmentation_follows_its_seed(tmp_path):
    make_folder(tmp_path, size=(40, 30))
    te = build_dataset("folder", str(tmp_path), "test", img_size=16)
    assert torch.equal(te[0][0], te[0][0]) and not te.augment
    tr = build_dataset("folder", str(tmp_path), "train", img_size=16, holdout=0)
    a, b = tr[(0, 7)][0], tr[(0, 7)][0]
    assert torch.equal(a, b) and not all(torch.equal(a, tr[(0, s)][0]) for s in range(3))
    state = torch.get_rng_state()
    tr[(1, 5)]
    assert torch.equal(state, torch.get_rng_state())  # seeded items leave the global RNG alone
    rrc = build_dataset("folder", str(tmp_path), "train", img_size=16, holdout=0, train_crop="rrc")
    assert rrc[(0, 1)][0].shape == (3, 16, 16)


def test_normalize_uses_the_model_spec():
    import tavt_kit

    model = tavt_kit.create_model("fgvc_tiny", depth=1)
    model.spec["normalization"] = {"mean": [0.5, 0.4, 0.3], "std": [0.25, 0.2, 0.1], "interpolation": "bicubic"}
    x = torch.full((1, 3, 2, 2), 255, dtype=torch.uint8)
    out = Normalize.from_model(model)(x)
    assert torch.allclose(out[0, :, 0, 0], torch.tensor([2.0, 3.0, 7.0]))


def test_cached_tensors_round_trip(tmp_path):
    make_folder(tmp_path / "d")
    te = build_dataset("folder", str(tmp_path / "d"), "test", img_size=16)
    x1, y1 = cached_tensors(te, cache_dir=str(tmp_path / "cache"))
    assert x1.shape == (6, 3, 16, 16) and y1.tolist() == te.targets
    assert len(os.listdir(tmp_path / "cache")) == 1
    x2, y2 = cached_tensors(te, cache_dir=str(tmp_path / "cache"))
    assert torch.equal(x1, x2) and torch.equal(y1, y2)
    assert torch.equal(x1[2], te[2][0])
    demo = build_dataset("demo", split="holdout")
    xd, yd = cached_tensors(demo)
    assert torch.equal(xd[5], demo[5][0]) and yd[5] == demo[5][1]
    with pytest.raises(ConfigError, match="augmentation"):
        cached_tensors(build_dataset("folder", str(tmp_path / "d"), "train", img_size=16))


# ----------------------------------------------------------------- errors
def test_missing_annotation_file_names_it(tmp_path):
    d = make_cub(tmp_path)
    os.remove(os.path.join(d, "images.txt"))
    with pytest.raises(DatasetError, match=r"CUB_200_2011/images.txt: missing; expected the CUB-200-2011 layout"):
        load_raw("cub", d)


@pytest.mark.parametrize("name, files, expected", [
    ("nabirds", [], "nabirds/images.txt: missing; expected the NABirds layout"),
    ("dogs", [], "dogs/Images: missing; expected the Stanford Dogs layout"),
    ("cars", ["cars_train/x.jpg"], "cars/devkit/cars_meta.mat: missing; expected the Stanford Cars devkit layout"),
    ("inat2017", [], "inat2017/train2017.json: missing; expected the iNaturalist 2017 layout"),
    ("soyloc", [], "soyloc/anno/train.txt: missing; expected the ultra-FGVC layout"),
    ("folder", [], "no class folders; expected class folders"),
])
def test_wrong_layouts_name_the_expected_files(tmp_path, name, files, expected):
    root = tmp_path / name
    os.makedirs(root)
    for f in files:
        write_image(str(root / f))
    with pytest.raises(DatasetError) as e:
        load_raw(name, str(root))
    assert expected in str(e.value) and "\n" not in str(e.value)


def test_bad_names_paths_and_images(tmp_path):
    with pytest.raises(DatasetError, match="unknown dataset 'cub2011'.*known: demo, cluttered-digits, cub, nabirds"):
        build_dataset("cub2011", str(tmp_path))
    with pytest.raises(DatasetError, match="nowhere: not found"):
        build_dataset("cub", "nowhere")
    with pytest.raises(DatasetError, match="root=None: dataset cub needs its root folder"):
        build_dataset("cub")
    with pytest.raises(ConfigError, match=r"holdout=1.5: expected a fraction in \[0, 1\)"):
        DataSpec("demo", holdout=1.5)
    with pytest.raises(ConfigError, match="no held-out split with holdout=0"):
        build_dataset("demo", split="holdout", holdout=0)
    make_folder(tmp_path / "f")
    bad = tmp_path / "f" / "test" / "cat" / "000.jpg"
    bad.write_bytes(b"not a jpeg")
    ds = build_dataset("folder", str(tmp_path / "f"), "test", img_size=16)
    with pytest.raises(DatasetError, match="000.jpg: cannot decode the image"):
        ds[0]
    d = make_cub(tmp_path / "c")
    os.remove(os.path.join(d, "images", "001.Black_footed_Albatross", "Black_footed_Albatross_0000_1.jpg"))
    with pytest.raises(DatasetError, match="image listed in the annotations is missing"):
        load_raw("cub", d)


#: every registered dataset and the test that reads its format from files it writes
TESTED = {"cub": "test_cub_reads_labels_splits_and_names",
          "nabirds": "test_nabirds_maps_sparse_taxonomy_ids_and_hierarchy",
          "dogs": "test_stanford_dogs_mat_lists", "cars": "test_stanford_cars_devkit",
          "inat2017": "test_inat2017_coco_json",
          "folder": "test_class_folders_both_layouts", "demo": "test_demo_digits_fixed_splits",
          "cluttered-digits": "test_cluttered.py", "fashion-mnist": "test_idx.py", "cluttered-fashion": "test_idx.py",
          **{n: "test_ultra_fgvc_anno_lists_and_their_crop_ratio" for n in UFGVC}}


def test_every_registered_format_is_tested():
    """A dataset registered without a test of its format fails here (add it to TESTED with its test)."""
    assert set(DATASETS) == set(TESTED), f"untested: {sorted(set(DATASETS) - set(TESTED))}"
    here = os.path.dirname(os.path.abspath(__file__))
    for name, test in TESTED.items():
        if test.endswith(".py"):
            assert os.path.isfile(os.path.join(here, test)), name
        else:
            assert callable(globals().get(test)), f"{name}: {test} is not a test of this file"


def test_a_data_root_is_stored_absolute(tmp_path, monkeypatch):
    """A checkpoint or search.json used from another folder still finds its data."""
    from tavt_kit.data import DataSpec

    monkeypatch.chdir(tmp_path)
    spec = DataSpec(name="cub", root="birds")
    assert spec.root == str(tmp_path / "birds") and os.path.isabs(DataSpec(**spec.to_dict()).root)
