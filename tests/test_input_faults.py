"""Bad input of every class ends in one line naming the flag, file or field (exit status 2), never silently:
data options that would test a model on its training images, broken annotation files, repeated or out-of-range
options, opsets the exporter would not write, and demo stages whose files changed."""
from __future__ import annotations

import argparse
import json
import os

import pytest
import torch

import tavt_kit
from tavt_kit.cli import main
from tavt_kit.data import DataSpec, load_raw
from tavt_kit.errors import ConfigError, DatasetError

from conftest import one_line

SMALL = {"train": "64", "holdout": "32", "test": "32"}


@pytest.fixture(scope="module")
def cluttered_ckpt(tmp_path_factory):
    """A model that records training on small cluttered digits (seed 0)."""
    torch.manual_seed(0)
    m = tavt_kit.create_model("fgvc_tiny", num_classes=10)
    m.spec["data"] = DataSpec(name="cluttered-digits", options={**SMALL, "seed": "0"}).to_dict()
    return str(tavt_kit.save_checkpoint(m, tmp_path_factory.mktemp("ckpt") / "cluttered.safetensors"))


def _args(**kw):
    base = dict(dataset=None, data=None, holdout=None, split_seed=None, resize=None, train_crop=None,
                skip_bad_images=None, dataset_options=None, workers=None)
    return argparse.Namespace(**{**base, **kw})


# ------------------------------------------------------------ data options
def test_dataset_options_merge_with_the_checkpoints_key_by_key():
    from tavt_kit.cli.data_args import data_spec_from_args

    recorded = DataSpec(name="cluttered-digits", options={**SMALL, "seed": "0"}).to_dict()
    spec = data_spec_from_args(_args(dataset_options={"test": "20"}), fallback=recorded)
    assert spec.options == {"train": 64, "holdout": 32, "test": 20, "seed": 0}
    # naming the same dataset keeps the record as the base too
    spec = data_spec_from_args(_args(dataset="cluttered", dataset_options={"canvas": "48"}), fallback=recorded)
    assert spec.options["train"] == 64 and spec.options["canvas"] == 48


@pytest.mark.parametrize("command", ["search", "evaluate", "distill"])
def test_another_source_seed_is_refused_as_test_images_from_the_training_sources(capsys, tmp_path, cluttered_ckpt,
                                                                                 command):
    argv = [command, "--checkpoint", cluttered_ckpt, "--dataset-option", "seed=1", "--out", str(tmp_path / "o")]
    assert main(argv) == 2
    err = one_line(capsys)
    assert "--dataset-option seed=1: the model was trained on cluttered-digits with seed 0" in err
    assert "test images would overlap the model's training images" in err


def test_evaluate_with_merged_options_keeps_the_stored_ones(capsys, tmp_path, cluttered_ckpt):
    out = tmp_path / "e"
    assert main(["evaluate", "--checkpoint", cluttered_ckpt, "--dataset-option", "test=20", "--no-plot",
                 "--out", str(out)]) == 0
    doc = json.load(open(next(out.glob("*.eval.json"))))
    assert doc["n"] == 20  # the given size, with the stored seed and training size


def test_another_held_out_split_of_a_file_dataset_is_refused(tmp_path):
    from test_data import make_cub

    from tavt_kit.cli.data_args import data_spec_from_args

    root = make_cub(str(tmp_path / "cub"), per_class=(6, 1))
    recorded = DataSpec(name="cub", root=root, holdout=0.34, split_seed=0).to_dict()
    assert data_spec_from_args(_args(), fallback=recorded).split_seed == 0
    with pytest.raises(ConfigError, match=r"split_seed=1: \d+ of the \d+ held-out images are images the model "
                                          r"trained on \(it was trained with holdout 0.34 and split seed 0\)"):
        data_spec_from_args(_args(split_seed=1), fallback=recorded)
    trainval = DataSpec(name="cub", root=root, holdout=0.0).to_dict()
    with pytest.raises(ConfigError, match=r"holdout=0.2: (\d+) of the \1 held-out images"):
        data_spec_from_args(_args(holdout=0.2), fallback=trainval)
    assert data_spec_from_args(_args(dataset="folder", data=str(tmp_path)), fallback=recorded).name == "folder"


# ------------------------------------------------------------ annotation files
def _rewrite(path, fn):
    lines = open(path, encoding="utf-8").read().splitlines()
    open(path, "w", encoding="utf-8", newline="").write(fn(lines))


def test_cub_classes_without_images_or_training_images_are_refused_by_name(tmp_path):
    from test_data import make_cub

    root = make_cub(str(tmp_path / "a"))
    _rewrite(os.path.join(root, "classes.txt"), lambda ls: "\n".join(ls + ["4 004.Groove_billed_Ani"]) + "\n")
    with pytest.raises(DatasetError, match=r"classes.txt: class 4 \(Groove_billed_Ani\) has no images"):
        load_raw("cub", root)
    root = make_cub(str(tmp_path / "b"))
    split = os.path.join(root, "train_test_split.txt")
    _rewrite(split, lambda ls: "\n".join(f"{l.split()[0]} 0" if 6 <= int(l.split()[0]) <= 10 else l
                                         for l in ls) + "\n")
    with pytest.raises(DatasetError, match=r"class 2 \(Laysan_Albatross\) has no training images \(its 5 images "
                                           r"are all test images in train_test_split.txt\)"):
        load_raw("cub", root)


def test_cub_ids_or_images_listed_twice_are_refused_with_their_lines(tmp_path):
    from test_data import make_cub

    root = make_cub(str(tmp_path / "a"))
    images = os.path.join(root, "images.txt")
    _rewrite(images, lambda ls: "\n".join(ls + [ls[2].split()[0] + " " + ls[4].split()[1]]) + "\n")
    with pytest.raises(DatasetError, match=r"images.txt:16: id 3 is listed twice \(lines 3 and 16\)"):
        load_raw("cub", root)
    root = make_cub(str(tmp_path / "b"))
    images = os.path.join(root, "images.txt")
    _rewrite(images, lambda ls: "\n".join(ls[:1] + [ls[1].split()[0] + " " + ls[0].split()[1]] + ls[2:]) + "\n")
    with pytest.raises(DatasetError, match=r"images.txt:2: image .* is listed twice \(ids 1 and 2\)"):
        load_raw("cub", root)


def test_cub_files_with_a_bom_and_crlf_line_ends_read_as_plain_text(tmp_path):
    from test_data import make_cub

    root = make_cub(str(tmp_path / "a"))
    for name in ("classes.txt", "images.txt", "image_class_labels.txt", "train_test_split.txt"):
        path = os.path.join(root, name)
        text = open(path, encoding="utf-8").read()
        open(path, "wb").write(b"\xef\xbb\xbf" + text.replace("\n", "\r\n").encode())
    raw = load_raw("cub", root)
    assert raw.class_names == ["Black_footed_Albatross", "Laysan_Albatross", "Sooty_Albatross"]
    assert len(raw.train) == 9 and all(os.path.isfile(p) for p, _ in raw.train)


def test_ultra_fgvc_images_listed_twice_or_classes_without_training_images_are_refused(tmp_path):
    from test_data import write_image

    root = tmp_path / "cotton"
    os.makedirs(root / "anno")
    for i in range(4):
        write_image(str(root / "images" / f"{i}.jpg"), seed=i)
    (root / "anno" / "train.txt").write_bytes(b"\xef\xbb\xbf0.jpg 1\r\n1.jpg 2\r\n")
    (root / "anno" / "test.txt").write_text("2.jpg 1\n0.jpg 2\n")
    with pytest.raises(DatasetError, match=r"anno/test.txt:2: image 0.jpg is listed twice \(anno/train.txt line 1 "
                                           r"and anno/test.txt line 2\)"):
        load_raw("cotton80", str(root))
    (root / "anno" / "test.txt").write_text("2.jpg 1\n3.jpg 3\n")
    with pytest.raises(DatasetError, match=r"anno/train.txt: class 3 has no training images"):
        load_raw("cotton80", str(root))
    (root / "anno" / "test.txt").write_text("2.jpg 1\n3.jpg 2\n")
    assert [lab for _, lab in load_raw("cotton80", str(root)).train] == [0, 1]  # the BOM and CRLF read as text


def test_coco_image_ids_listed_twice_are_refused(tmp_path):
    from tavt_kit.data.formats import _coco

    path = tmp_path / "train2017.json"
    path.write_text(json.dumps({"images": [{"id": 1, "file_name": "a.jpg"}, {"id": 1, "file_name": "b.jpg"}],
                                "annotations": [{"image_id": 1, "category_id": 0}],
                                "categories": [{"id": 0, "name": "x"}]}))
    with pytest.raises(DatasetError, match="image id 1 is listed twice in 'images'"):
        _coco(str(path), str(tmp_path), "layout")


# ------------------------------------------------------------ options
@pytest.mark.parametrize("argv, expected", [
    (["train", "--seed", "1", "--seed", "2"], "--seed given twice (--seed 1, then --seed 2); expected it once"),
    (["train", "--progress", "--no-progress"], "--progress and --no-progress contradict each other"),
    (["search", "--checkpoint", "a", "--checkpoint", "b"], "--checkpoint given twice"),
    (["bench", "profile", "--budget", "1", "--time-budget", "2"], "--time-budget given twice (--budget 1.0, then"),
    (["train", "--dataset-option", "seed=1", "--dataset-option", "seed=2"], "--dataset-option seed= given twice"),
])
def test_a_single_valued_option_given_twice_with_two_values_is_refused(capsys, argv, expected):
    with pytest.raises(SystemExit) as e:
        main(argv)
    assert e.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()[-1]
    assert err.startswith("fgvc-kit: error:") and expected in err


def test_repeatable_options_and_the_same_value_twice_are_kept():
    from tavt_kit.cli import build_parser

    args = build_parser("train").parse_args(["--seed", "3", "--seed", "3", "--dataset-option", "train=8",
                                             "--dataset-option", "test=4", "--dataset-option", "test=4"])
    assert args.seed == 3 and args.dataset_options == {"train": "8", "test": "4"}
    args = build_parser("bench").parse_args(["measure", "--drop", "1,1", "--drop", "2,2", "--latency-batch-size", "1",
                                             "8"])
    assert args.drop == ["1,1", "2,2"] and args.batch_size == [1, 8]


@pytest.mark.parametrize("argv, expected", [
    (["bench", "--random", "-2"], "--random -2: expected a non-negative number of random schedules"),
    (["bench", "profile", "--time-budget", "0"], "--time-budget 0: expected a finite, positive number of seconds"),
    (["report", "--search", "s.json", "--time-budget", "-1"], "--time-budget -1: expected a finite, positive"),
    (["train", "--lr", "nan"], "--lr nan: expected a finite, positive learning rate"),
    (["train", "--seed", "-1"], "--seed -1: expected a non-negative seed"),
    (["search", "--checkpoint", "x", "--mutations", "-1"], "--mutations -1: expected a non-negative"),
    (["demo", "--train-steps", "0"], "--train-steps 0: expected a positive number of steps"),
    (["demo", "--train-steps", "-3"], "--train-steps -3: expected a positive number of steps"),
    (["export", "--checkpoint", "x", "--threads", "-4"], "--threads -4: expected a non-negative number of threads"),
])
def test_numeric_options_of_the_wrong_sign_are_refused_naming_the_flag(capsys, tmp_path, argv, expected):
    assert main(argv + (["--out", str(tmp_path / "o")] if argv[0] != "report" else [])) == 2
    assert expected in one_line(capsys)


def test_prune_refuses_mac_targets_it_cannot_reach_with_the_models_macs(capsys, tmp_path, cluttered_ckpt):
    assert main(["prune", "--checkpoint", cluttered_ckpt, "--macs-budget", "1G", "--out", str(tmp_path / "p")]) == 2
    assert "--macs-budget 1G: the model has 0.04958 G MACs (full schedule); expected a target below" in \
        one_line(capsys)
    pytest.importorskip("torch_pruning")  # a dependency; without it the line says to install it
    assert main(["prune", "--checkpoint", cluttered_ckpt, "--macs-budget", "1K", "--out", str(tmp_path / "p")]) == 2
    err = one_line(capsys)
    assert "--macs-budget 1K: pruning cannot reach it" in err and "the model's 0.04958 G MACs" in err


# ------------------------------------------------------------ export
def test_opsets_the_exporters_would_not_write_are_refused_and_the_written_one_recorded(tmp_path):
    from tavt_kit.export import ExportOptions, QuantizeOptions
    from tavt_kit.export.onnx import export_onnx, file_opset

    for bad in (5, 13, 1000):
        with pytest.raises(ConfigError, match=f"options.opset={bad}: the exporters cannot write a ViT at it"):
            ExportOptions(opset=bad)
    with pytest.raises(ConfigError, match="accuracy_control_images=10 and quantize.accuracy_control=False "
                                          "contradict each other"):
        QuantizeOptions(accuracy_control=False, accuracy_control_images=10)
    m = tavt_kit.create_model("fgvc_tiny", num_classes=3)
    with pytest.raises(tavt_kit.errors.ExportError, match="opset 16 was not honoured \\(dynamo exporter wrote "
                                                          "opset 18, not the requested 16\\)"):
        export_onnx(m, tmp_path / "d.onnx", opset=16, exporter="dynamo")
    res = export_onnx(m, tmp_path / "a.onnx", opset=16)  # auto: TorchScript writes 16
    assert res.exporter == "torchscript" and res.opset == 16 == file_opset(str(tmp_path / "a.onnx"))
    assert res.fallback_reason is None


def test_export_cli_names_the_opset_and_the_contradiction(capsys, tmp_path, cluttered_ckpt):
    out = ["--out", str(tmp_path / "x")]
    assert main(["export", "--checkpoint", cluttered_ckpt, "--opset", "5"] + out) == 2
    assert "--opset 5: the exporters cannot write a ViT at it; expected 14.." in one_line(capsys)
    assert main(["export", "--checkpoint", cluttered_ckpt, "--no-accuracy-control", "--accuracy-control-images",
                 "5"] + out) == 2
    assert "--accuracy-control-images 5 and --no-accuracy-control contradict each other" in one_line(capsys)
    assert main(["export", "--checkpoint", cluttered_ckpt, "--latency-batch-size", "8"] + out) == 2
    assert "--latency-batch-size 8: only --precision auto measures latency" in one_line(capsys)


# ------------------------------------------------------------ demo stages
def test_a_demo_stage_whose_files_changed_or_went_missing_runs_again(tmp_path):
    from tavt_kit.demo import _Stages

    out = str(tmp_path / "demo")
    os.makedirs(os.path.join(out, "export"))
    said, runs = [], []
    main_file, other = os.path.join(out, "export", "export.json"), os.path.join(out, "export", "model.xml")

    def stage():
        runs.append(1)
        open(main_file, "w").write("{}")
        open(other, "w").write("<xml/>")
        return 0

    def go():
        _Stages(out, said.append).run("5/7 export", "export", main_file, {"quick": True}, stage, files=[other])

    go()
    go()
    assert len(runs) == 1 and said[-1] == f"[5/7 export] reusing {main_file}"
    with open(other, "r+") as f:
        f.truncate(2)
    go()
    assert len(runs) == 2 and f"(again: {other} changed since the stage finished)" in said[-2]
    os.remove(other)
    go()
    assert len(runs) == 3 and f"(again: {other} is missing)" in said[-2]
    go()
    assert len(runs) == 3
