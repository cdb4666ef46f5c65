"""Class folders and image files that used to come out silently wrong: link loops that relabel images, and pixel
modes (16-bit, 32-bit, float, palette with transparency, CMYK, alpha) that ``convert("RGB")`` got wrong."""
import os

import numpy as np
import pytest
from PIL import Image

from tavt_kit.data import build_dataset, load_raw
from tavt_kit.data.decode import to_rgb
from tavt_kit.errors import DatasetError


def make_folder(root, classes=("cls0", "cls1"), per_split=(6, 2)):
    for split, n in zip(("train", "test"), per_split):
        for c in classes:
            os.makedirs(root / split / c, exist_ok=True)
            for i in range(n):
                Image.new("RGB", (8, 8), (10 * i, 0, 0)).save(root / split / c / f"{i}.png")
    return str(root)


# ------------------------------------------------------------------ links in class folders
def test_a_link_loop_is_refused_naming_the_link(tmp_path):
    root = make_folder(tmp_path / "d")
    os.symlink("..", tmp_path / "d" / "train" / "cls0" / "up")  # 12 training images once became 443
    with pytest.raises(DatasetError, match=r"^d/train/cls0/up: links back to .*/d/train, a folder that holds it "
                                           r"\(a loop"):
        load_raw("folder", root)
    os.remove(tmp_path / "d" / "train" / "cls0" / "up")
    os.makedirs(tmp_path / "d" / "train" / "cls0" / "deep")
    os.symlink("..", tmp_path / "d" / "train" / "cls0" / "deep" / "again")  # a loop one level down
    with pytest.raises(DatasetError, match="deep/again: links back to .*cls0, a folder that holds it"):
        load_raw("folder", root)


def test_a_link_into_another_class_or_a_folder_read_twice_is_refused(tmp_path):
    root = make_folder(tmp_path / "d")
    os.symlink(tmp_path / "d" / "train" / "cls1", tmp_path / "d" / "train" / "cls0" / "more")
    with pytest.raises(DatasetError, match="cls0/more: links into class folder cls1, whose images would be "
                                           "labelled cls0 too"):
        load_raw("folder", root)
    os.remove(tmp_path / "d" / "train" / "cls0" / "more")
    os.makedirs(tmp_path / "extra")
    os.symlink(tmp_path / "extra", tmp_path / "d" / "train" / "cls0" / "a")
    os.symlink(tmp_path / "extra", tmp_path / "d" / "train" / "cls1" / "b")
    with pytest.raises(DatasetError, match=r"cls1/b: the folder .*extra is read already \(as d/train/cls0/a\)"):
        load_raw("folder", root)


def test_a_link_to_a_folder_elsewhere_is_still_followed_in_sorted_order(tmp_path):
    root = make_folder(tmp_path / "d")
    os.makedirs(tmp_path / "elsewhere" / "sub")
    Image.new("RGB", (8, 8)).save(tmp_path / "elsewhere" / "sub" / "x.png")
    os.symlink(tmp_path / "elsewhere", tmp_path / "d" / "train" / "cls1" / "zz")
    raw = load_raw("folder", root)
    cls1 = [p for p, lab in raw.train if lab == 1]
    assert len(raw.train) == 13 and cls1[-1].endswith(os.path.join("cls1", "zz", "sub", "x.png"))
    assert [os.path.basename(p) for p in cls1[:6]] == [f"{i}.png" for i in range(6)]


# ------------------------------------------------------------------ pixel modes
def _decoded(tmp_path, im, name, **save):
    """The image as a folder dataset decodes it: uint8 CHW (8 x 8, no augmentation)."""
    d = tmp_path / name.split(".")[0]
    for c in ("a", "b"):
        os.makedirs(d / "train" / c, exist_ok=True)
        os.makedirs(d / "test" / c, exist_ok=True)
        im.save(d / "train" / c / name, **save)
        Image.new("RGB", (8, 8)).save(d / "test" / c / "0.png")
    ds = build_dataset("folder", str(d), "train", img_size=8, resize=8, augment=False)
    return ds[0][0].numpy()


def test_sixteen_and_thirty_two_bit_grey_are_scaled_by_their_range(tmp_path):
    im16 = Image.fromarray(np.full((8, 8), 32768, np.uint16))
    assert im16.mode.startswith("I;16")
    x = _decoded(tmp_path, im16, "grey16.png")
    assert x.shape == (3, 8, 8) and (x == 128).all()  # convert("RGB") made it 255
    assert (_decoded(tmp_path, Image.fromarray(np.full((8, 8), 65535, np.uint16)), "white16.png") == 255).all()
    i32 = Image.fromarray(np.full((8, 8), 16384, np.int32))  # mode I holding 16-bit data
    assert i32.mode == "I" and (_decoded(tmp_path, i32, "i32.tif") == 64).all()
    big = Image.fromarray(np.full((8, 8), 2 ** 30, np.int32))  # beyond 16 bits: the 32-bit range
    assert (_decoded(tmp_path, big, "big32.tif") == 128).all()
    with pytest.raises(DatasetError, match=r"neg32.tif: 32-bit integer pixels down to -5; expected non-negative"):
        _decoded(tmp_path, Image.fromarray(np.full((8, 8), -5, np.int32)), "neg32.tif")


def test_float_images_in_unit_or_byte_range_and_refused_otherwise(tmp_path):
    half = Image.fromarray(np.full((8, 8), 0.5, np.float32))
    assert half.mode == "F" and (_decoded(tmp_path, half, "half.tif") == 128).all()  # was all black
    assert (_decoded(tmp_path, Image.fromarray(np.full((8, 8), 200.0, np.float32)), "byte.tif") == 200).all()
    for name, value, match in (("hot.tif", 300.0, r"span 300..300; expected intensities in \[0, 1\] or \[0, 255\]"),
                               ("nan.tif", np.nan, "NaN or infinite")):
        with pytest.raises(DatasetError, match=match) as e:
            _decoded(tmp_path, Image.fromarray(np.full((8, 8), value, np.float32)), name)
        assert str(e.value).startswith(str(tmp_path)) and name in str(e.value) and "\n" not in str(e.value)


def test_transparency_is_composited_on_black(tmp_path):
    p = Image.new("P", (8, 8), 0)
    p.putpalette([255, 255, 255, 200, 0, 0] + [0] * 762)
    p.paste(1, (0, 0, 4, 8))
    x = _decoded(tmp_path, p, "pal.png", transparency=0)  # index 0 (white) transparent
    assert (x[:, :, :4] == np.array([200, 0, 0])[:, None, None]).all() and (x[:, :, 4:] == 0).all()
    rgba = Image.new("RGBA", (8, 8), (200, 100, 50, 128))
    rgba.paste((255, 255, 255, 0), (0, 0, 8, 4))  # transparent white: black, not white
    x = _decoded(tmp_path, rgba, "rgba.png")
    assert (x[:, :4] == 0).all() and (abs(x[:, 4:].astype(int) - np.array([100, 50, 25])[:, None, None]) <= 1).all()
    assert (_decoded(tmp_path, Image.new("LA", (8, 8), (200, 255)), "la.png") == 200).all()
    for mode, colour in (("PA", (3, 128)), ("La", (100, 128)), ("RGBa", (100, 50, 25, 128))):
        out = np.asarray(to_rgb(Image.new(mode, (2, 2), colour)))
        assert out.shape == (2, 2, 3) and out.max() <= 101, mode


def test_cmyk_one_bit_and_other_modes(tmp_path):
    cmyk = Image.new("CMYK", (8, 8), (0, 0, 0, 128))
    assert (abs(_decoded(tmp_path, cmyk, "cmyk.jpg").astype(int) - 127) <= 3).all()
    assert (_decoded(tmp_path, cmyk, "cmyk.tif") == 127).all()
    assert (_decoded(tmp_path, Image.new("1", (8, 8), 1), "bits.png") == 255).all()
    assert np.asarray(to_rgb(Image.new("YCbCr", (2, 2), (128, 128, 128)))).tolist() == [[[128] * 3] * 2] * 2

    class Odd:
        mode, info = "BGR;15", {}

    with pytest.raises(DatasetError, match=r"^odd.bmp: image mode BGR;15 is not one fgvc-kit decodes; expected"):
        to_rgb(Odd(), "odd.bmp")
