"""The bad-input probe: bad inputs, kills and faults against the command line, counted by what they get.

    python benchmarks/probe_bad_input.py [--verbose]

Every case runs ``python -m tavt_kit.cli ...`` (a fresh process, as a user
would) on files this script makes in a temporary folder, or, for the faults,
the library call in this process with the fault injected. Each outcome is
classified:

* clean error: exit status 2 and one line ``fgvc-kit: error: ...`` (deprecation
  warnings aside);
* traceback: a Python traceback reached the user;
* silent acceptance: a bad input ran to exit status 0;
* data loss: a file that was valid before the fault changed, or no longer loads;
* other: anything else (an error in several lines, another exit status).

It prints one line per case and the counts.
"""
from __future__ import annotations

import argparse
import hashlib
import json
import os
import subprocess
import sys
import tempfile

import numpy as np
import torch

import tavt_kit


def make_files(d: str) -> dict:
    """Checkpoints, drop configs, datasets and runs the cases use."""
    torch.manual_seed(0)
    f = {}
    model = tavt_kit.create_model("fgvc_tiny", num_classes=10)
    f["ckpt"] = tavt_kit.save_checkpoint(model, os.path.join(d, "tiny.safetensors"), extra={"data": {"name": "demo"}})
    nan = tavt_kit.create_model("fgvc_tiny", num_classes=10)
    with torch.no_grad():
        nan.blocks[0].mlp.fc1.weight[0, 0] = float("nan")
    f["nan"] = tavt_kit.save_checkpoint(nan, os.path.join(d, "nan.safetensors"))
    f["nocls"] = tavt_kit.save_checkpoint(tavt_kit.create_model("fgvc_tiny", num_classes=10, class_token=False,
                                                                global_pool="avg"), os.path.join(d, "nocls.safetensors"))
    other = tavt_kit.create_model("vit_tiny_patch16_224", img_size=32, patch_size=4, depth=6, num_classes=10)
    f["other_drop"] = os.path.join(d, "other.json")
    other.make_schedule([64] * 6).save(f["other_drop"], model_info={"backbone": {"name": "vit_tiny_patch16_224"}})
    f["binary"] = os.path.join(d, "bin.json")
    open(f["binary"], "wb").write(b"\xff\xfe\x00\x81")
    f["evil"] = os.path.join(d, "evil.pth")
    torch.save({"model": {"w": torch.zeros(1)}, "hook": print}, f["evil"])
    f["afile"] = os.path.join(d, "afile")
    open(f["afile"], "w").write("x")
    run = os.path.join(d, "distill_run")
    os.makedirs(run)
    json.dump({"format": "fgvc-kit/distill-run", "args": {}}, open(os.path.join(run, "config.json"), "w"))
    open(os.path.join(run, "train_state.safetensors"), "wb").close()
    f["distill_run"] = run
    from PIL import Image

    one = os.path.join(d, "one", "train", "cat")
    os.makedirs(one)
    for i in range(3):
        Image.fromarray(np.full((16, 16, 3), i * 40, np.uint8)).save(os.path.join(one, f"{i}.png"))
    os.makedirs(os.path.join(d, "one", "test", "cat"))
    Image.fromarray(np.zeros((16, 16, 3), np.uint8)).save(os.path.join(d, "one", "test", "cat", "0.png"))
    f["one_class"] = os.path.join(d, "one")
    cub = os.path.join(d, "CUB_200_2011")
    os.makedirs(os.path.join(cub, "images", "001.A"))
    for i in range(1, 5):
        Image.fromarray(np.full((16, 16, 3), i * 30, np.uint8)).save(os.path.join(cub, "images", "001.A", f"{i}.jpg"))
    open(os.path.join(cub, "images.txt"), "w").write("".join(f"{i} 001.A/{i}.jpg\n" for i in range(1, 5)))
    open(os.path.join(cub, "image_class_labels.txt"), "w").write("1 1\n2 2\n3 999\n4 1\n")
    open(os.path.join(cub, "train_test_split.txt"), "w").write("1 1\n2 1\n3 1\n4 0\n")
    open(os.path.join(cub, "classes.txt"), "w").write("1 A\n2 B\n3 C\n")
    f["cub"] = cub
    best = {"counts": [64, 48, 32, 16, 8, 4], "macs": 1.9e7, "holdout_accuracy": 0.9, "test_accuracy": 0.9}
    search = {"format": "fgvc-kit/search", "model": {"weights_sha256": "0" * 64}, "objective": "macs",
              "budgets": [{"label": "20M MACs", "objective": "macs", "limit": 2e7, "best": best}],
              "pareto_front": [best],
              "full": {"counts": [64] * 6, "macs": 5e7, "holdout_accuracy": 0.9}, "smallest": {}, "candidates": [],
              "timing": {"evaluations": 0}, "settings": {"holdout_images": 0, "test_images": 0}}
    f["search_other"] = os.path.join(d, "search.json")
    json.dump(search, open(f["search_other"], "w"))
    f["search_malformed"] = os.path.join(d, "malformed.json")
    json.dump({"format": "fgvc-kit/search", "budgets": [{"label": "x"}]}, open(f["search_malformed"], "w"))
    return f


def cli_cases(f: dict, d: str):
    """(name, argv): every one is bad input that must get one clean line."""
    ck = str(f["ckpt"])
    return [
        ("empty --drop", ["info", "--drop", ""]),
        ("empty --keep-ratio", ["info", "--keep-ratio", ""]),
        ("duplicate keep-ratio block", ["info", "--keep-ratio", "2:0.5,2:0.9"]),
        ("--img-size 0", ["info", "--img-size", "0"]),
        ("--img-size 100000", ["info", "--checkpoint", "vit_base_patch16_224", "--img-size", "100000"]),
        ("binary drop config", ["info", "--drop", f["binary"]]),
        ("pickled checkpoint", ["info", "--checkpoint", f["evil"]]),
        ("missing checkpoint", ["info", "--checkpoint", os.path.join(d, "missing.safetensors")]),
        ("drop config of another model (info)", ["info", "--checkpoint", ck, "--drop", f["other_drop"]]),
        ("drop config of another model (evaluate)", ["evaluate", "--checkpoint", ck, "--drop", f["other_drop"]]),
        ("NaN weights", ["evaluate", "--checkpoint", str(f["nan"])]),
        ("--resume with --overwrite", ["train", "--resume", "--overwrite", "--out", os.path.join(d, "r1")]),
        ("--data for the demo", ["train", "--data", d, "--out", os.path.join(d, "r2")]),
        ("train --resume of a distill run", ["train", "--resume", "--out", f["distill_run"]]),
        ("--out is a file (train)", ["train", "--out", f["afile"]]),
        ("one-class folder dataset", ["train", "--dataset", "folder", "--data", f["one_class"], "--model",
                                      "fgvc_tiny", "--out", os.path.join(d, "r3")]),
        ("CUB label beyond classes.txt", ["train", "--dataset", "cub", "--data", f["cub"], "--model", "fgvc_tiny",
                                          "--out", os.path.join(d, "r4")]),
        ("negative --steps", ["train", "--steps", "-5", "--out", os.path.join(d, "r5")]),
        ("explicit warm-up longer than the run", ["train", "--steps", "100", "--warmup-steps", "500",
                                                  "--out", os.path.join(d, "r6")]),
        ("MAC budget below the space", ["search", "--checkpoint", ck, "--macs-budget", "1",
                                        "--out", os.path.join(d, "s1")]),
        ("negative latency budget", ["search", "--checkpoint", ck, "--latency-budget=-5ms",
                                     "--out", os.path.join(d, "s2")]),
        ("argument without its value", ["search", "--checkpoint", ck, "--macs-budget"]),
        ("cls scorer without a class token", ["distill", "--checkpoint", str(f["nocls"]), "--scorer", "cls",
                                              "--out", os.path.join(d, "d1")]),
        ("model option for distill", ["distill", "--checkpoint", ck, "--model", "vit_small_patch16_224",
                                      "--out", os.path.join(d, "d2")]),
        ("--out is a file (export)", ["export", "--checkpoint", ck, "--out", f["afile"]]),
        ("search of other weights", ["export", "--checkpoint", ck, "--search", f["search_other"], "--budget",
                                     "20M MACs", "--out", os.path.join(d, "e1")]),
        ("unknown precision", ["export", "--checkpoint", ck, "--precision", "fp8", "--out", os.path.join(d, "e2")]),
        ("--out is a file (bench)", ["bench", "--out", f["afile"], "--quiet"]),
        ("missing latency table", ["bench", "predict", os.path.join(d, "missing.json")]),
        ("two batch sizes for a table", ["bench", "profile", "--batch-size", "1", "2"]),
        ("missing search.json", ["report", "--search", os.path.join(d, "missing.json")]),
        ("malformed search.json", ["report", "--search", f["search_malformed"], "--out", os.path.join(d, "rep0")]),
        ("a budget nothing fits", ["report", "--search", f["search_other"], "--budget", "1M MACs",
                                   "--out", os.path.join(d, "rep")]),
        ("prune --out a file name", ["prune", "--checkpoint", ck, "--ratio", "0.3", "--out", os.path.join(d, "p.pt")]),
        ("unknown option", ["bench", "--no-such-option"]),
    ]


def classify(rc: int, err: str) -> str:
    lines = [line for line in err.strip().splitlines() if not line.startswith("fgvc-kit: warning:")]
    if "Traceback" in err:
        return "traceback"
    if rc == 0:
        return "silent acceptance"
    if rc == 2 and len(lines) == 1 and lines[0].startswith("fgvc-kit: error:"):
        return "clean error"
    return "other"


def digest(path: str) -> str:
    return hashlib.sha256(open(path, "rb").read()).hexdigest()


def fault_cases(f: dict, d: str):
    """(name, fn): each returns the outcome of a fault against files that were valid before it."""
    from tavt_kit.export import VerifyOptions, export_model
    from tavt_kit.export import verify as verify_mod
    from tavt_kit.search.evolution import Journal

    def torn_journal():
        path = os.path.join(d, "journal.jsonl")
        j = Journal(path, {"settings": {}})
        j.record(((4, 2), ()), accuracy=0.5)
        with open(path, "a") as fh:
            fh.write('{"kind": "candidate", "counts": [50,')
        Journal(path, {"settings": {}}).record(((3, 1), ()), accuracy=0.2)
        j3 = Journal(path, {"settings": {}})
        ok = set(j3.entries) == {((4, 2), ()), ((3, 1), ())} and all(json.loads(x) for x in open(path).read().splitlines())
        return "clean" if ok else "data loss"

    model = tavt_kit.load_checkpoint(str(f["ckpt"]))
    images = torch.zeros(8, 3, 64, 64, dtype=torch.uint8)
    labels = torch.arange(8) % 10
    out = os.path.join(d, "export")
    given = VerifyOptions(data=(images, labels))
    export_model(model, out, [32, 24, 16, 12, 8, 4], ("onnx",), verify=given)

    def folder_state():
        return {p: digest(os.path.join(out, p)) for p in sorted(os.listdir(out))}

    def kill_during_verification():
        before = folder_state()
        real = verify_mod.verify_export

        def killed(*a, **k):
            raise KeyboardInterrupt

        verify_mod.verify_export = killed
        try:
            export_model(model, out, [16, 8, 8, 4, 4, 2], ("onnx",), verify=given)
        except KeyboardInterrupt:
            pass
        finally:
            verify_mod.verify_export = real
        return "clean" if folder_state() == before else "data loss"

    def failed_verification_over_a_verified_file():
        before = digest(os.path.join(out, "model.onnx"))
        real = verify_mod.ExportedRunner.__call__
        verify_mod.ExportedRunner.__call__ = lambda self, x: 1.0 - real(self, x)  # an export that is wrong
        try:
            export_model(model, out, [32, 24, 16, 12, 8, 4], ("onnx",),
                         verify=VerifyOptions(data=(images, labels), max_logit_diff=0.0))
        except tavt_kit.ExportError:
            pass
        finally:
            verify_mod.ExportedRunner.__call__ = real
        doc = json.load(open(os.path.join(out, "export.json")))
        exact = all(digest(os.path.join(out, r["path"])) == r["sha256"] for r in doc["artefacts"])
        return "clean" if digest(os.path.join(out, "model.onnx")) == before and exact else "data loss"

    def full_disk_while_saving_a_checkpoint():
        path = str(f["ckpt"])
        before = digest(path)
        real = os.replace

        def full(src, dst):
            raise OSError(28, "No space left on device", dst)

        os.replace = full
        try:
            tavt_kit.save_checkpoint(model, path)
        except OSError:
            pass
        finally:
            os.replace = real
        tavt_kit.load_checkpoint(path)
        leftovers = [p for p in os.listdir(os.path.dirname(path)) if ".tmp-" in p]
        return "clean" if digest(path) == before and not leftovers else "data loss"

    return [("torn search journal", torn_journal), ("kill during export verification", kill_during_verification),
            ("failed verification over a verified file", failed_verification_over_a_verified_file),
            ("full disk while saving a checkpoint", full_disk_while_saving_a_checkpoint)]


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--verbose", action="store_true", help="print each case's stderr")
    a = p.parse_args()
    counts = {"clean error": 0, "traceback": 0, "silent acceptance": 0, "data loss": 0, "other": 0}
    with tempfile.TemporaryDirectory() as d:
        f = make_files(d)
        env = dict(os.environ, OMP_NUM_THREADS="1")
        for name, argv in cli_cases(f, d):
            proc = subprocess.run([sys.executable, "-m", "tavt_kit.cli", *map(str, argv)], capture_output=True,
                                  text=True, cwd=d, env=env, timeout=600)
            kind = classify(proc.returncode, proc.stderr)
            counts[kind] += 1
            print(f"{kind:<18} {name}" + (f"\n    {proc.stderr.strip()}" if a.verbose or kind != "clean error"
                                           else ""))
        for name, fn in fault_cases(f, d):
            kind = fn()
            kind = "clean error" if kind == "clean" else kind
            counts[kind] += 1
            print(f"{kind:<18} {name}")
    total = sum(counts.values())
    print(f"\n{total} cases: {counts['clean error']} clean, {counts['traceback']} tracebacks, "
          f"{counts['silent acceptance']} silent acceptances, {counts['data loss']} data-loss cases, "
          f"{counts['other']} other")
    return 0 if counts["clean error"] == total else 1


if __name__ == "__main__":
    sys.exit(main())
