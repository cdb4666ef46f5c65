"""Defaults a user does not set, said right: the training image size (and the warning when a size costs far
more than the model was made for), thread and core counts in saved descriptions."""
import os

import tavt_kit
from tavt_kit.cli import main
from tavt_kit.machine import describe, threads_text
from tavt_kit.train.sizing import default_img_size, model_geometry, token_warning

import pytest
from test_data import make_cub

# one intra-op thread: the oversubscription warning (its own test elsewhere) is not said while a busy machine runs
# the suite, so each test sees only the warning it is about
pytestmark = pytest.mark.usefixtures("one_thread")


# ---------------------------------------------------------------- image size
def test_image_size_rule():
    tiny = default_img_size("cub", "fgvc_tiny")
    assert (tiny.size, tiny.source, tiny.reason) == (64, "model", "fgvc_tiny's own")
    # a model made at 224 or more keeps the seeds' FGVC recipe (resolved only: nothing is built)
    vit = default_img_size("cub", "vit_base_patch16_224")
    assert (vit.size, vit.source) == (448, "recipe") and vit.made_for.img_size == 224
    assert default_img_size("cotton80", "vit_base_patch16_224").size == 384
    assert default_img_size("folder", "vit_base_patch16_224").size == 224  # plain folders: the model's own
    assert default_img_size("demo").size == 64  # no model, no checkpoint: fgvc_tiny
    # weights that are not an fgvc-kit checkpoint (architecture unknown until loaded): the recipe
    assert default_img_size("cub", None, None, "ViT-B_16.npz").size == 448
    # an fgvc-kit checkpoint: its own size, which a larger one is then measured against
    ck = default_img_size("cub", None, {"backbone": {"name": "fgvc_tiny"}, "img_size": [32, 32]})
    assert (ck.size, ck.source) == (32, "checkpoint")
    assert token_warning(ck.made_for, 128, suggest=ck.size) is None  # no patch size in this spec: unknown
    tiny = tavt_kit.create_model("fgvc_tiny", depth=2, img_size=32, num_classes=3)
    ck = default_img_size("cub", None, tiny.spec)
    assert (ck.size, ck.source, ck.made_for.img_size) == (32, "checkpoint", 32)
    assert token_warning(ck.made_for, 128, suggest=ck.size) == (
        "256 tokens per image, 16x the 16 this checkpoint was made for: each step costs ~21x; --img-size 32")


def test_token_warning_only_far_above_the_native_grid():
    geo = model_geometry("fgvc_tiny")
    assert (geo.img_size, geo.patch, geo.tokens()) == (64, 8, 64)
    assert token_warning(geo, 64) is None and token_warning(geo, 128) is None  # 4x: at the threshold
    assert token_warning(geo, 448) == ("3136 tokens per image, 49x the 64 fgvc_tiny was made for: each step "
                                       "costs ~280x; --img-size 64")
    vit = model_geometry("vit_base_patch16_224")
    assert token_warning(vit, 448) is None  # the seeds' 448 on a 224 ViT: 4x, the recipe
    assert "1024 tokens per image" in token_warning(vit, 512, suggest=448) and "--img-size 448" in \
        token_warning(vit, 512, suggest=448)


def _train(tmp_path, name, *extra):
    d = make_cub(str(tmp_path / "cub"))
    out = str(tmp_path / name)
    rc = main(["train", "--dataset", "cub", "--data", d, "--model", "fgvc_tiny", "--steps", "1", "--holdout", "0",
               "--no-test", "--no-progress", "--out", out, *extra])
    assert rc == 0
    return out


def test_train_on_cub_takes_fgvc_tiny_s_own_size_and_says_so(tmp_path, capsys):
    from tavt_kit.models import read_spec

    out = _train(tmp_path, "r")
    text = capsys.readouterr().out
    assert "train: image size 64 (fgvc_tiny's own; --img-size to change)\n" in text
    assert "warning" not in text and "fgvc_tiny 64px, cub" in text
    assert read_spec(os.path.join(out, "last.safetensors"))["img_size"] == [64, 64]


def test_train_warns_once_at_a_size_far_above_the_model_s(tmp_path, capsys):
    _train(tmp_path, "r", "--img-size", "160")
    text = capsys.readouterr().out
    lines = [ln for ln in text.splitlines() if "warning" in ln]
    assert lines == ["train: warning: 400 tokens per image, 6.25x the 64 fgvc_tiny was made for: each step costs "
                     "~9x; --img-size 64"]
    assert "image size 160 (" not in text  # given: nothing to explain


# ------------------------------------------------------------- counts in words
def test_thread_and_core_counts_in_words():
    assert threads_text(1) == "1 thread" and threads_text(4) == "4 threads" and threads_text(None) == "default threads"
    m = {"cpu": {"model": "CPU X", "available_cores": 1}, "threads": 1}
    assert describe(m) == "CPU X (1 core available, 1 thread used)"
    assert describe({"cpu": {"model": "CPU X", "available_cores": 2}, "threads": 2}) == \
        "CPU X (2 cores available, 2 threads used)"
    from tavt_kit.bench.render import bench_markdown

    md = bench_markdown({"target": {"backend": "torch", "device": "cpu", "threads": 1}, "model": {}, "results": [],
                         "machine": m})
    assert "**cpu**, 1 thread" in md
    assert "1 threads" not in md and "1 cores" not in md
