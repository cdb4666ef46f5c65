"""A plain folder tree keeps the whole image: resized to the model's input, no crop (a named benchmark keeps its
seeds' resize + centre crop, and ``resize`` brings the crop back)."""
import os

import numpy as np
from PIL import Image

from tavt_kit.data import build_dataset


def framed(path, size=64, edge=4):
    """A black image with a white frame ``edge`` pixels wide: a crop of the whole image loses the frame."""
    a = np.zeros((size, size, 3), np.uint8)
    a[:edge], a[-edge:], a[:, :edge], a[:, -edge:] = 255, 255, 255, 255
    Image.fromarray(a).save(path)


def make_tree(root, classes=("shirt", "shoe"), per_split=(4, 2)):
    for split, n in zip(("train", "test"), per_split):
        for c in classes:
            os.makedirs(root / split / c, exist_ok=True)
            for i in range(n):
                framed(root / split / c / f"{i}.png")
    return str(root)


def test_a_plain_folder_is_resized_whole_to_the_input(tmp_path):
    root = make_tree(tmp_path / "clothes")
    ds = build_dataset("folder", root, "test", img_size=32)
    x, _ = ds[0]
    assert x.shape == (3, 32, 32)
    # the frame (4 of 64 px -> 2 of 32) is still on all four edges: nothing was cut off
    for edge in (x[:, 0, :], x[:, -1, :], x[:, :, 0], x[:, :, -1]):
        assert int(edge.min()) > 200
    assert int(x[:, 16, 16].max()) < 50
    d = ds.describe()
    assert d["resize"] == [32, 32] and d["fit"] == "whole image"


def test_training_images_of_a_folder_are_whole_too(tmp_path):
    root = make_tree(tmp_path / "clothes")
    ds = build_dataset("folder", root, "train", img_size=32, holdout=0.0)
    assert ds.augment and ds.describe()["fit"] == "whole image"
    for seed in range(3):  # the random crop of an R = S resize moves nothing; a flip keeps the frame
        x, _ = ds[(0, seed)]
        assert int(x[:, 0, :].min()) > 200 and int(x[:, :, -1].min()) > 200


def test_an_explicit_resize_crops_a_folder_as_asked(tmp_path):
    root = make_tree(tmp_path / "clothes")
    ds = build_dataset("folder", root, "test", img_size=32, resize=43)
    x, _ = ds[0]
    assert ds.describe()["resize"] == [43, 43] and ds.describe()["fit"] == "crop"
    assert int(x[:, 0, :].max()) < 50  # the centre crop of 43 px cuts the frame (about 2.7 px) off


def test_a_named_benchmark_keeps_the_seeds_crop(tmp_path):
    images = tmp_path / "CUB_200_2011" / "images"
    rows = [(1, "001.A/a.jpg", 1, 1), (2, "001.A/b.jpg", 1, 0), (3, "002.B/c.jpg", 2, 1), (4, "002.B/d.jpg", 2, 0)]
    for i, rel, _, _ in rows:
        os.makedirs(images / os.path.dirname(rel), exist_ok=True)
        framed(images / rel)
    cub = tmp_path / "CUB_200_2011"
    (cub / "images.txt").write_text("".join(f"{i} {rel}\n" for i, rel, _, _ in rows))
    (cub / "image_class_labels.txt").write_text("".join(f"{i} {c}\n" for i, _, c, _ in rows))
    (cub / "train_test_split.txt").write_text("".join(f"{i} {t}\n" for i, _, _, t in rows))
    (cub / "classes.txt").write_text("1 001.A\n2 002.B\n")
    ds = build_dataset("cub", str(cub), "test", img_size=32)
    assert ds.describe()["resize"] == [43, 43] and ds.describe()["fit"] == "crop"
