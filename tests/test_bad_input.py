"""Bad input is refused with one line naming the file, field or flag; nothing valid is lost on a fault."""
from __future__ import annotations

import hashlib
import json
import os

import pytest
import torch

import tavt_kit
from tavt_kit.cli import main
from tavt_kit.errors import DatasetError

from conftest import one_line


@pytest.fixture(scope="module")
def ckpt(tmp_path_factory):
    torch.manual_seed(0)
    path = tmp_path_factory.mktemp("ckpt") / "tiny.safetensors"
    return str(tavt_kit.save_checkpoint(tavt_kit.create_model("fgvc_tiny", num_classes=10), path))


@pytest.mark.parametrize("argv, expected", [
    (["info", "--drop", ""], "--drop: empty; expected a schedule"),
    (["info", "--keep-ratio", " "], "--keep-ratio: empty; expected a schedule"),
    (["info", "--keep-ratio", "2:0.5,2:0.9"], "block 2 is given twice"),
    (["info", "--img-size", "0"], "--img-size 0: expected a positive image size"),
    (["info", "--checkpoint", "vit_base_patch16_224", "--img-size", "100000"], "GiB for one attention matrix"),
    (["train", "--resume", "--overwrite"], "--resume and --overwrite contradict each other"),
    (["train", "--data", "some/dir", "--out", "OUT"], "the built-in demo dataset has no root folder"),
])
def test_contradictions_and_empty_values_are_refused(capsys, tmp_path, argv, expected):
    assert main([str(tmp_path / "out") if a == "OUT" else a for a in argv]) == 2
    assert expected in one_line(capsys)


def test_a_drop_config_for_another_model_is_refused_everywhere(tmp_path, capsys, ckpt):
    other = tavt_kit.create_model("vit_tiny_patch16_224", img_size=32, patch_size=4, depth=6, num_classes=10)
    path = str(tmp_path / "other.json")
    other.make_schedule([64] * 6).save(path, model_info={"backbone": {"name": "vit_tiny_patch16_224"},
                                                        "img_size": [32, 32]})
    for argv in (["info", "--checkpoint", ckpt, "--drop", path],
                 ["evaluate", "--checkpoint", ckpt, "--drop", path]):
        assert main(argv) == 2
        assert "is a schedule for vit_tiny_patch16_224, the checkpoint is fgvc_tiny" in one_line(capsys)


def test_unreadable_drop_configs_and_pickled_checkpoints_are_one_line(tmp_path, capsys):
    binary = tmp_path / "bin.json"
    binary.write_bytes(b"\xff\xfe\x00\x81")
    assert main(["info", "--drop", str(binary)]) == 2
    assert "not a drop config (not UTF-8 text)" in one_line(capsys)

    evil = tmp_path / "evil.pth"
    torch.save({"model": {"w": torch.zeros(1)}, "hook": print}, evil)  # a global a payload could be
    assert main(["info", "--checkpoint", str(evil)]) == 2
    err = one_line(capsys)
    assert "fgvc-kit never unpickles" in err and "weights_only=False" not in err


def test_evaluate_refuses_weights_that_are_not_finite(tmp_path, capsys):
    m = tavt_kit.create_model("fgvc_tiny", num_classes=10)
    with torch.no_grad():
        m.blocks[0].mlp.fc1.weight[0, 0] = float("nan")
    path = str(tavt_kit.save_checkpoint(m, tmp_path / "nan.safetensors"))
    assert main(["evaluate", "--checkpoint", path]) == 2
    assert "blocks.0.mlp.fc1.weight holds NaN or infinite values" in one_line(capsys)


def test_runs_of_one_kind_are_not_resumed_as_another(tmp_path, capsys, ckpt):
    run = tmp_path / "distill"
    run.mkdir()
    (run / "config.json").write_text(json.dumps({"format": "fgvc-kit/distill-run", "args": {}}))
    (run / "train_state.safetensors").write_bytes(b"")
    assert main(["train", "--resume", "--out", str(run)]) == 2
    assert "holds a fgvc-kit/distill-run run, not a fgvc-kit/train-run run" in one_line(capsys)


def test_distill_validates_the_scorer_as_create_model_does(tmp_path, capsys):
    m = tavt_kit.create_model("fgvc_tiny", num_classes=10, class_token=False, global_pool="avg")
    path = str(tavt_kit.save_checkpoint(m, tmp_path / "nocls.safetensors"))
    assert main(["distill", "--checkpoint", path, "--scorer", "cls", "--steps", "1", "--no-progress",
                 "--out", str(tmp_path / "d")]) == 2
    assert "scorer 'cls' needs a class token" in one_line(capsys)


def test_a_mac_budget_below_the_space_exits_non_zero_with_the_range(tmp_path, capsys, ckpt):
    assert main(["search", "--checkpoint", ckpt, "--macs-budget", "1", "--out", str(tmp_path / "s")]) == 2
    assert "--macs-budget 1 MACs: below every schedule the search can return; achievable:" in one_line(capsys)


def test_datasets_refuse_labels_outside_their_class_list_and_a_single_class(tmp_path):
    from test_data import make_cub, make_folder

    root = make_cub(str(tmp_path / "cub"))
    labels = os.path.join(root, "image_class_labels.txt")
    lines = open(labels).read().splitlines()
    lines[3] = lines[3].split()[0] + " 999"
    open(labels, "w").write("\n".join(lines) + "\n")
    with pytest.raises(DatasetError, match=r"image_class_labels.txt: line 4: image 4 has class 999; expected 1..3"):
        tavt_kit.data.load_raw("cub", root)
    one = make_folder(str(tmp_path / "one"), classes=("cat",))
    with pytest.raises(DatasetError, match="one class folder \\(cat\\); a classifier needs at least two"):
        tavt_kit.data.load_raw("folder", one)


def test_a_full_disk_is_one_line_and_keeps_the_previous_file(tmp_path, capsys, monkeypatch):
    table = str(tmp_path / "t" / "latency_table.json")
    assert main(["bench", "profile", "--grid", "32,64", "--warmup", "1", "--min-repeats", "3", "--time-budget",
                 "0.02", "--threads", "1", "--no-calibrate", "--no-plot", "--quiet", "--out",
                 str(tmp_path / "t")]) == 0
    out = tmp_path / "p"
    assert main(["bench", "predict", "--latency-table", table, "--keep-ratio", "0.9", "--out", str(out),
                 "--quiet"]) == 0
    before = hashlib.sha256((out / "predictions.json").read_bytes()).hexdigest()
    capsys.readouterr()

    def full(src, dst):
        raise OSError(28, "No space left on device", dst)

    monkeypatch.setattr(os, "replace", full)
    assert main(["bench", "predict", "--latency-table", table, "--keep-ratio", "0.5", "--out", str(out),
                 "--quiet"]) == 2
    err = one_line(capsys)
    assert "predictions.json: cannot write it, no space left on the device" in err and "previous version is unchanged" in err
    assert hashlib.sha256((out / "predictions.json").read_bytes()).hexdigest() == before
    assert not [f for f in os.listdir(out) if ".tmp-" in f]  # no half-written file left beside it


def test_worker_errors_and_argument_errors_are_one_line(tmp_path, capsys):
    from tavt_kit.cli import one_line as cli_one_line
    from tavt_kit.errors import DatasetError

    wrapped = DatasetError("Caught DatasetError in DataLoader worker process 0.\nOriginal Traceback (most recent "
                           "call last):\n  File \"x.py\", line 1, in f\ntavt_kit.errors.DatasetError: a.jpg: cannot "
                           "decode the image (OSError: truncated)\n")
    assert cli_one_line(wrapped) == "a.jpg: cannot decode the image (OSError: truncated)"
    with pytest.raises(SystemExit) as e:
        main(["search", "--checkpoint", "x", "--macs-budget"])
    assert e.value.code == 2
    assert "fgvc-kit: error: search: argument --macs-budget: expected one argument" in one_line(capsys)
    (tmp_path / "afile").write_text("x")
    assert main(["bench", "--out", str(tmp_path / "afile"), "--quiet"]) == 2
    assert "is a file; expected an output folder" in one_line(capsys)


def test_a_run_that_stopped_before_its_first_checkpoint_starts_again(tmp_path, capsys):
    out = tmp_path / "run"
    out.mkdir()
    (out / "config.json").write_text(json.dumps({"format": "fgvc-kit/train-run", "args": {}}))  # no state
    assert main(["train", "--resume", "--out", str(out)]) == 2
    assert "holds no run to resume" in one_line(capsys)
    assert main(["train", "--steps", "1", "--no-test", "--no-progress", "--out", str(out)]) == 0


def test_skip_bad_images_leaves_them_out_and_says_which(tmp_path, capsys):
    from test_data import make_folder

    root = make_folder(str(tmp_path / "data"), train=4, test=2)
    bad = os.path.join(root, "train", "dog", "000.jpg")
    open(bad, "wb").write(b"not an image")
    argv = ["train", "--dataset", "folder", "--data", root, "--model", "fgvc_tiny", "--img-size", "32",
            "--steps", "1", "--holdout", "0", "--no-test", "--no-progress", "--workers", "0"]
    assert main(argv + ["--out", str(tmp_path / "a")]) == 2
    assert "000.jpg: cannot decode the image" in one_line(capsys)
    assert main(argv + ["--skip-bad-images", "--out", str(tmp_path / "b")]) == 0
    assert "skipped 1 unreadable train image (--skip-bad-images)" in capsys.readouterr().out
    res = json.loads((tmp_path / "b" / "results.json").read_text())
    assert [s["path"] for s in res["skipped_images"]["train"]] == [bad]
