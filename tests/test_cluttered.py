"""The built-in cluttered-digits benchmark: disjoint sources per split, determinism, options, its own held-out split."""
import json

import numpy as np
import pytest
import torch

import tavt_kit
from tavt_kit.cli import main
from tavt_kit.data import DataSpec, build_dataset
from tavt_kit.data.cluttered import DEFAULT_OPTIONS, generate, option_key, provenance, source_splits
from tavt_kit.data.demo import digits

SMALL = {"train": 60, "holdout": 30, "test": 40}


def test_defaults_resolve_one_image_to_the_issue_s_precision():
    # one test image <= 0.05 points of accuracy, one held-out image <= 0.1 points
    assert 100 / DEFAULT_OPTIONS["test"] <= 0.05 and 100 / DEFAULT_OPTIONS["holdout"] <= 0.1


def test_splits_draw_from_disjoint_source_digits_and_cover_every_class():
    src = source_splits(0)
    a, b, c = (set(src[k].tolist()) for k in ("train", "holdout", "test"))
    assert not (a & b) and not (a & c) and not (b & c)
    assert len(a | b | c) == len(digits()[1])
    labels = digits()[1]
    for k in ("train", "holdout", "test"):
        assert set(labels[src[k]].tolist()) == set(range(10))


def test_every_image_is_built_from_its_own_split_s_sources_only():
    key = option_key(dict(SMALL, seed=3))
    src = source_splits(3)
    _, splits, meta = generate(key)
    used = provenance(key)
    labels = digits()[1]
    for split in ("train", "holdout", "test"):
        order, clutter = used[split]
        allowed = set(src[split].tolist())
        assert set(order.tolist()) <= allowed and set(clutter.ravel().tolist()) <= allowed
        assert (labels[order] == splits[split][1]).all()  # the label is the labelled digit's
        # every source of the split is the labelled digit equally often (up to one)
        counts = np.bincount(order, minlength=len(labels))[src[split]]
        assert counts.max() - counts.min() <= 1
    assert meta["source_digits"] == {k: len(v) for k, v in src.items()}


def test_generation_is_deterministic_and_seeded():
    a1, s1, _ = generate(option_key(dict(SMALL, seed=1)))
    a2, _, _ = generate(option_key(dict(SMALL, seed=1)))
    a3, _, _ = generate(option_key(dict(SMALL, seed=2)))
    assert torch.equal(a1, a2) and not torch.equal(a1, a3)
    assert [len(s1[k][0]) for k in ("train", "holdout", "test")] == [60, 30, 40]
    # the digit covers a small part of the image: most pixels are background or clutter
    assert float((a1 > 0).float().mean()) < 0.5


def test_dataset_splits_options_and_model_input():
    spec = DataSpec("cluttered-digits", options=SMALL)
    ds = {k: build_dataset(spec, split=k) for k in ("train", "holdout", "test", "trainval")}
    assert [len(ds[k]) for k in ("train", "holdout", "test", "trainval")] == [60, 30, 40, 90]
    x, y = ds["train"][0]
    assert x.dtype == torch.uint8 and tuple(x.shape) == (3, 64, 64) and 0 <= y < 10
    assert ds["holdout"].describe()["holdout"] == "own split"
    small = build_dataset(spec, split="test", img_size=32)
    assert tuple(small[0][0].shape) == (3, 32, 32)
    spec2 = DataSpec.from_dict(spec.to_dict())  # stored in checkpoints
    assert spec2.options == SMALL and len(build_dataset(spec2, split="test")) == 40


@pytest.mark.parametrize("options,match", [
    ({"tests": 5}, r"options\['tests'\]=5: cluttered-digits has no such option"),
    ({"test": "many"}, r"options\['test'\]=many: expected an integer"),
    ({"test": 0}, "expected at least one image"),
    ({"digit_min": 40, "digit_max": 30}, "digit_min <= digit_max"),
    ({"fragment": 99}, "fragment <= digit_min"),
])
def test_bad_options_are_one_line_errors(options, match):
    with pytest.raises(tavt_kit.ConfigError, match=match):
        DataSpec("cluttered-digits", options=options)


def test_cli_refuses_holdout_fraction_and_options_for_a_file_dataset(tmp_path, capsys):
    base = ["train", "--dataset", "cluttered-digits", "--out", str(tmp_path / "t"), "--steps", "1"]
    assert main(base + ["--holdout", "0.2"]) == 2
    err = capsys.readouterr().err.strip()
    assert "--holdout 0.2" in err and "own held-out split" in err and len(err.splitlines()) == 1
    assert main(["train", "--dataset", "demo", "--dataset-option", "seed=1", "--out", str(tmp_path / "u"),
                 "--steps", "1"]) == 2
    assert "--dataset-option seed=1: dataset demo takes no options" in capsys.readouterr().err
    with pytest.raises(SystemExit) as e:
        main(base + ["--dataset-option", "seed"])
    assert e.value.code == 2 and "expected KEY=VALUE" in capsys.readouterr().err


def test_train_records_the_options_and_distill_inherits_them(tmp_path):
    out = tmp_path / "train"
    opts = ["--dataset-option", "train=64", "--dataset-option", "holdout=32", "--dataset-option", "test=32"]
    assert main(["train", "--dataset", "cluttered-digits", *opts, "--out", str(out), "--steps", "2",
                 "--batch-size", "16", "--eval-every", "2", "--warmup-steps", "1", "--no-progress",
                 "--model", "fgvc_tiny"]) == 0
    spec = tavt_kit.models.read_spec(str(out / "best.safetensors"))
    assert spec["data"]["name"] == "cluttered-digits"
    assert spec["data"]["options"] == {"train": 64, "holdout": 32, "test": 32}
    dist = tmp_path / "distill"
    assert main(["distill", "--checkpoint", str(out / "best.safetensors"), "--out", str(dist), "--steps", "2",
                 "--batch-size", "16", "--eval-every", "2", "--warmup-steps", "1", "--no-progress"]) == 0
    assert "top1_full" in json.loads((dist / "results.json").read_text())["holdout"]
    dspec = tavt_kit.models.read_spec(str(dist / "best.safetensors"))["data"]
    assert dspec["options"] == {"train": 64, "holdout": 32, "test": 32}  # the teacher's data, inherited
