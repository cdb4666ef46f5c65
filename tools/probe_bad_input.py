"""The bad-input probe: bad inputs, kills, tampered files and faults against the command line, counted by what they get.

    python tools/probe_bad_input.py [--only SUBSTRING] [--list] [--slow] [--verbose]

Every command-line case runs ``python -m tavt_kit.cli ...`` (a fresh process,
as a user would) on files this script makes in a temporary folder; the faults
(a full disk, a killed verification) call the library in this process with the
fault injected. The fixtures are real: tiny checkpoints, a search of a tiny
supernet, exports, a bench and a latency table made once per run with the
library and its commands, then copied and tampered with per case. Each
outcome is classified:

* clean: exit status 2 and one line ``fgvc-kit: error: ...`` (warnings aside)
  naming what the case says it must (the file, flag or field); or, for a case
  that is not an error (a report on tampered files, a stale lock, a merge of
  options), the right result, checked in the files it wrote;
* traceback: a Python traceback reached the user;
* silent acceptance: a bad input ran to exit status 0, or a report claims what
  its files no longer show (``verified`` beside a deleted or changed file);
* data loss: a file that was valid before the fault changed, no longer loads,
  or is no longer described by the record beside it;
* unclear: an error whose one line does not name the file, flag or field it
  is about, or anything else (an error in several lines, another exit status,
  a valid input refused, a case that used an option's old spelling).

It prints one line per case (the error line under each case that is not
clean) and the counts. ``--only SUBSTRING`` runs the cases whose name contains
it (only their fixtures are made), ``--list`` prints the names, ``--slow`` adds
the expensive cases (a precision search rerun, the demo reusing damaged stages).
"""
from __future__ import annotations

import argparse
import contextlib
import errno
import functools
import hashlib
import io
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from typing import Any, Callable, List, Optional, Sequence, Tuple, Union

import numpy as np
import torch

import tavt_kit
from tavt_kit.search import EvaluationOptions, LatencyOptions, SpaceOptions

KINDS = ("clean", "traceback", "silent acceptance", "data loss", "unclear")
#: search and export settings small enough for 2 cores
EVO = ["--population", "5", "--generations", "1", "--mutations", "4", "--crossovers", "4", "--subset", "48",
       "--eval-batch-size", "48"]
TRAIN_LONG = ["--model", "fgvc_tiny", "--img-size", "32", "--batch-size", "8", "--no-test", "--no-progress",
              "--workers", "0", "--warmup-steps", "1"]
TRAIN = TRAIN_LONG + ["--steps", "2", "--eval-every", "2", "--save-every", "2"]
CLUTTER = ["--dataset", "cluttered-digits", "--dataset-option", "train=96", "--dataset-option", "holdout=48",
           "--dataset-option", "test=48", "--dataset-option", "canvas=40", "--dataset-option", "seed=3"]
#: words that explain why a report does not trust a file
DISTRUST = ("missing", "deleted", "not found", "no longer", "does not exist", "changed", "modified", "sha256",
            "differ", "checksum", "hash", "mismatch", "does not match", "not match", "another", "other weights",
            "other checkpoint", "failed", "not verified", "unverified", "untrusted", "stale", "refus", "ignored",
            "skipped", "unfinished", "incomplete")
NEGATIONS = ("not ", "NOT ", "no ", "unverified", "missing", "deleted", "changed", "modified", "differ",
             "mismatch", "failed", "another", "other ", "stale", "ignored", "skipped", "refused", "instead")
Words = Sequence[Union[str, Tuple[str, ...]]]


# ---------------------------------------------------------------------------------------------- helpers
def digest(path: str) -> str:
    return hashlib.sha256(open(path, "rb").read()).hexdigest()


def call_main(argv: Sequence[str]) -> Tuple[int, str, str]:
    """``fgvc-kit ARGV`` in this process: (exit status, stdout, stderr)."""
    from tavt_kit.cli import main

    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try:
            rc = main([str(a) for a in argv])
        except SystemExit as e:
            rc = e.code if isinstance(e.code, int) else 1
        except Exception:
            import traceback

            traceback.print_exc()
            rc = 1
    return rc, out.getvalue(), err.getvalue()


def must_run(argv: Sequence[str]) -> str:
    """A fixture command: it must succeed; returns its stdout."""
    rc, out, err = call_main(argv)
    if rc != 0:
        raise RuntimeError(f"fixture command failed: fgvc-kit {' '.join(map(str, argv))}\n{err[-3000:]}")
    if old_spelling(err):
        raise RuntimeError(f"fixture command uses an old spelling: {old_spelling(err)}")
    return out


def old_spelling(err: str) -> Optional[str]:
    """The deprecation warning of an option's old spelling, if a command printed one: a case must use the
    current spellings (an old one tests the alias, not the option)."""
    return next((ln for ln in err.splitlines() if ln.startswith("fgvc-kit: warning:") and "deprecated" in ln), None)


def error_lines(err: str) -> List[str]:
    return [ln for ln in err.strip().splitlines() if ln.strip() and not ln.startswith("fgvc-kit: warning:")
            and not ln.lstrip().startswith(("warnings.warn", "/")) and "Warning:" not in ln]


def missing_words(text: str, must: Words) -> List[str]:
    low = text.lower()
    out = []
    for m in must:
        alts = (m,) if isinstance(m, str) else tuple(m)
        if not any(a.lower() in low for a in alts):
            out.append(" or ".join(repr(a) for a in alts))
    return out


def judge_error(rc: Optional[int], err: str, must: Words = ()) -> Tuple[str, str]:
    """(kind, line) of a run that had to fail with one clean line naming ``must``."""
    lines = error_lines(err)
    line = lines[-1] if lines else f"(exit status {rc}, nothing on stderr)"
    if "Traceback" in err:
        return "traceback", line
    if rc == 0:
        return "silent acceptance", "(exit status 0)"
    if rc is None:
        return "silent acceptance", "(still running at the time limit: the input was accepted)"
    if rc == 2 and len(lines) == 1 and lines[0].startswith("fgvc-kit: error:"):
        miss = missing_words(lines[0], must)
        if miss:
            return "unclear", f"{lines[0]}  [does not name {', '.join(miss)}]"
        return "clean", lines[0]
    return "unclear", f"(exit status {rc}, {len(lines)} lines) {line}"


def classify(rc: int, err: str) -> str:
    """The kind of outcome of a bad input (kept for callers of the earlier probe)."""
    kind = judge_error(rc, err)[0]
    return "clean error" if kind == "clean" else kind


def report_text(folder: str) -> str:
    try:
        return open(os.path.join(folder, "report.md"), encoding="utf-8").read()
    except OSError:
        return ""


def claims(text: str, tokens: Sequence[str], word: str = "verified") -> List[str]:
    """Cells of ``text`` (table cells, ``;``-separated parts, lines) that mention one of ``tokens`` and say ``word``
    without a negation or a reason; rows of baselines are left out (a baseline may match an export the pick
    does not)."""
    out = []
    for ln in text.splitlines():
        if ln.startswith("| baseline"):
            continue
        for cell in re.split(r"\||;", ln):
            bare = re.sub(r"`[^`]*`", "", cell)  # a path may hold any word
            if any(t in cell for t in tokens) and re.search(rf"\b{word}\b", bare, re.I) and \
                    not any(n in bare for n in NEGATIONS):
                out.append(cell.strip())
    return out


def section(text: str, title: str) -> str:
    i = text.find(title)
    if i < 0:
        return ""
    j = text.find("\n## ", i + len(title))
    return text[i:] if j < 0 else text[i:j]


@dataclass
class Case:
    """One probe case: a command line (``argv``, run in a fresh process) or a function (``fn``, in this process).

    ``must``: words the error line must contain (a tuple: any of them). ``post(fx, rc, out, err)``: judges the
    run instead of the default (return None to fall back to it), for the cases that are not errors.
    ``setup(fx)``: runs before the command (a background writer to contend with); ``cleanup(fx)`` after it."""
    name: str
    argv: Optional[Callable[["Fixtures"], List[str]]] = None
    fn: Optional[Callable[["Fixtures"], Tuple[str, str]]] = None
    must: Words = ()
    post: Optional[Callable[..., Optional[Tuple[str, str]]]] = None
    setup: Optional[Callable[["Fixtures"], Any]] = None
    cleanup: Optional[Callable[["Fixtures"], Any]] = None
    slow: bool = False
    timeout: int = 300


def run_cli(fx: "Fixtures", argv: Sequence[str], timeout: int) -> Tuple[Optional[int], str, str]:
    """``python -m tavt_kit.cli ARGV`` in a fresh process (its own process group, killed at the time limit)."""
    proc = subprocess.Popen([sys.executable, "-m", "tavt_kit.cli", *map(str, argv)], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, cwd=fx.d, env=fx.env, start_new_session=True)
    try:
        out, err = proc.communicate(timeout=timeout)
        return proc.returncode, out, err
    except subprocess.TimeoutExpired:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        out, err = proc.communicate()
        return None, out, err


# ---------------------------------------------------------------------------------------------- the earlier cases
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
        ("missing latency table", ["bench", "predict", "--latency-table", os.path.join(d, "missing.json")]),
        ("two batch sizes for a table", ["bench", "profile", "--latency-batch-size", "1", "2"]),
        ("missing search.json", ["report", "--search", os.path.join(d, "missing.json")]),
        ("malformed search.json", ["report", "--search", f["search_malformed"], "--out", os.path.join(d, "rep0")]),
        ("a budget nothing fits", ["report", "--search", f["search_other"], "--budget", "1M MACs",
                                   "--out", os.path.join(d, "rep")]),
        ("prune --out a file name", ["prune", "--checkpoint", ck, "--channel-keep-ratio", "0.7", "--out",
                                     os.path.join(d, "p.pt")]),
        ("unknown option", ["bench", "--no-such-option"]),
    ]


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


# ---------------------------------------------------------------------------------------------- fixtures
class Fixtures:
    """The files the cases use, each made on first use (``--only`` makes only what its cases need)."""

    def __init__(self, d: str) -> None:
        self.d = d
        self.env = dict(os.environ, OMP_NUM_THREADS="1")
        self.procs: List[subprocess.Popen] = []

    def path(self, *parts: str) -> str:
        return os.path.join(self.d, *parts)

    def fresh(self, name: str) -> str:
        """A path under the temporary folder no case used before."""
        p = self.path(name)
        n = 1
        while os.path.exists(p):
            n += 1
            p = self.path(f"{name}-{n}")
        return p

    @functools.cached_property
    def old_dir(self) -> str:
        """The earlier cases' folder (made again on each run)."""
        d = self.path("earlier")
        shutil.rmtree(d, ignore_errors=True)
        os.makedirs(d)
        return d

    @functools.cached_property
    def old(self) -> dict:
        return make_files(self.old_dir)

    # ---- checkpoints
    def _tiny(self, name: str, seed: int, **extra) -> str:
        if os.path.isfile(self.path(name)):  # a --workdir of an earlier run
            return self.path(name)
        torch.manual_seed(seed)
        m = tavt_kit.create_model("fgvc_tiny", depth=3, img_size=32, num_classes=10)
        return str(tavt_kit.save_checkpoint(m, self.path(name), extra={"data": {"name": "demo"}, **extra}))

    @functools.cached_property
    def sup(self) -> str:
        """A tiny supernet (fgvc_tiny, 3 blocks, 32x32 images, 16 patches) recording the demo digits."""
        return self._tiny("supernet.safetensors", 0)

    @functools.cached_property
    def other(self) -> str:
        """The same architecture with other weights."""
        return self._tiny("other.safetensors", 1)

    @functools.cached_property
    def clutter(self) -> str:
        """fgvc_tiny trained 2 steps on cluttered digits with non-default options."""
        out = self.path("train_clutter")
        if not os.path.isfile(os.path.join(out, "best.safetensors")):
            must_run(["train", *CLUTTER, *TRAIN, "--out", out])
        return os.path.join(out, "best.safetensors")

    # ---- a real search, its export, a bench and a latency table
    @functools.cached_property
    def search(self) -> str:
        full = tavt_kit.count_macs(tavt_kit.load_checkpoint(self.sup)).total()
        out = self.path("search")
        if not os.path.isfile(os.path.join(out, "search.json")):
            must_run(["search", "--checkpoint", self.sup, "--macs-budget", f"{0.85 * full:.0f}", "--reducers",
                      "drop,merge", "--out", out, *EVO])
        return os.path.join(out, "search.json")

    @property
    def search_doc(self) -> dict:
        return json.load(open(self.search))

    @property
    def pick(self) -> dict:
        return self.search_doc["budgets"][0]["best"]

    @property
    def label(self) -> str:
        return self.search_doc["budgets"][0]["label"].replace(" ", "")

    @property
    def counts(self) -> str:
        return ",".join(map(str, self.pick["counts"]))

    @functools.cached_property
    def exp(self) -> str:
        """The search's pick exported to ONNX and OpenVINO, verified."""
        out = self.path("export_pick")
        if not os.path.isfile(os.path.join(out, "export.json")):
            must_run(["export", "--checkpoint", self.sup, "--search", self.search, "--budget", self.label,
                      "--format", "onnx,openvino", "--verify-images", "32", "--out", out])
        return out

    @functools.cached_property
    def exp_other(self) -> str:
        """The pick's schedule (merges included) exported from the other checkpoint, verified."""
        from tavt_kit.export import VerifyOptions, export_model

        out = self.path("export_w2")
        if os.path.isfile(os.path.join(out, "export.json")):
            return out
        sched = {k: v for k, v in json.load(open(self.schedule_file)).items() if k != "model"}
        export_model(tavt_kit.load_checkpoint(self.other), out, sched, ("onnx",), verify=VerifyOptions(images=32))
        return out

    @property
    def schedule_file(self) -> str:
        s = self.search_doc
        return os.path.join(os.path.dirname(self.search), s["budgets"][0]["schedule_file"])

    @functools.cached_property
    def exp_drop(self) -> str:
        """The pick's counts exported with every block dropping (the pick merges), verified."""
        out = self.path("export_drop")
        if not os.path.isfile(os.path.join(out, "export.json")):
            must_run(["export", "--checkpoint", self.sup, "--drop", self.counts, "--format", "onnx",
                      "--verify-images", "32", "--out", out])
        return out

    @functools.cached_property
    def bench_other(self) -> str:
        """bench.json of the other checkpoint at the pick's counts."""
        out = self.path("bench_other")
        if not os.path.isfile(os.path.join(out, "bench.json")):
            must_run(["bench", "--checkpoint", self.other, "--drop", self.counts, "--quiet", "--time-budget",
                      "0.05", "--min-repeats", "3", "--no-plot", "--out", out])
        return os.path.join(out, "bench.json")

    @functools.cached_property
    def table(self) -> str:
        out = self.path("profile")
        if not os.path.isfile(os.path.join(out, "latency_table.json")):
            must_run(["bench", "profile", "--checkpoint", self.sup, "--grid", "3", "--time-budget",
                      "0.05", "--min-repeats", "3", "--no-plot", "--quiet", "--out", out])
        return os.path.join(out, "latency_table.json")

    # ---- tampered copies
    def copy_export(self, src: str, name: str) -> str:
        dst = self.fresh(name)
        shutil.copytree(src, dst)
        return dst

    def edited(self, src: str, name: str, edit: Callable[[dict], Any], raw: bool = False) -> str:
        """A copy of the JSON file ``src`` changed by ``edit`` (in place), or its text when ``raw``."""
        doc = json.load(open(src))
        edit(doc)
        dst = self.fresh(name)
        with open(dst, "w") as f:
            f.write(json.dumps(doc, indent=1))
        return dst

    def kill_all(self) -> None:
        for p in self.procs:
            if p.poll() is None:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(p.pid, signal.SIGKILL)
            with contextlib.suppress(Exception):
                p.wait(timeout=30)
        self.procs.clear()

    def holder(self, argv: Sequence[str], folder: str, timeout: float = 120) -> subprocess.Popen:
        """Start ``fgvc-kit ARGV`` in the background and wait until it holds ``folder``."""
        from tavt_kit.lock import LOCK_FILE, read_holder

        proc = subprocess.Popen([sys.executable, "-m", "tavt_kit.cli", *map(str, argv)], stdout=subprocess.DEVNULL,
                                stderr=subprocess.DEVNULL, cwd=self.d, env=self.env, start_new_session=True)
        self.procs.append(proc)
        deadline = time.time() + timeout
        while time.time() < deadline and proc.poll() is None:
            if os.path.exists(os.path.join(folder, LOCK_FILE)) and (read_holder(folder) or {}).get("pid") == proc.pid:
                return proc
            time.sleep(0.05)
        raise RuntimeError(f"the background writer never held {folder} (exit status {proc.poll()})")


def old_cases(fx: Fixtures) -> List[Case]:
    """The probe's first 39 cases (35 command lines, 4 faults), as they were."""
    cases = []
    names = [n for n, _ in cli_cases(_Lazy(), "")]
    for i, name in enumerate(names):
        cases.append(Case(name, argv=lambda fx, i=i: cli_cases(fx.old, fx.old_dir)[i][1]))
    faults = ["torn search journal", "kill during export verification", "failed verification over a verified file",
              "full disk while saving a checkpoint"]
    for i, name in enumerate(faults):
        def fn(fx, i=i):
            if "faults" not in fx.__dict__:  # one verified export shared by the four, in this order
                fx.faults = dict(fault_cases(fx.old, fx.old_dir))
            return fx.faults[faults[i]](), ""
        cases.append(Case(name, fn=fn))
    return cases


class _Lazy(dict):
    """Paths for listing the earlier cases' names without making their files."""

    def __getitem__(self, key):
        return key


# ---------------------------------------------------------------------------------------------- judging helpers
def opt(argv: Sequence[str], flag: str) -> Optional[str]:
    argv = list(map(str, argv))
    return argv[argv.index(flag) + 1] if flag in argv else None


def distrust(tokens: Sequence[str], word: str = "verified", reasons: Sequence[str] = DISTRUST):
    """A report on a file it must not trust: exit 0 is right only when no line beside ``tokens`` claims ``word``
    and the report says why (a refusal is judged as an error)."""
    def post(fx, argv, rc, out, err):
        if rc != 0:
            return None
        text = report_text(opt(argv, "--out"))
        if not text:
            return "unclear", "(exit status 0 but no report.md)"
        bad = claims(text, tokens, word)
        if bad:
            return "silent acceptance", f"report.md claims: {bad[0][:220]}"
        if missing_words(text + out + err, [tuple(reasons)]):
            return "unclear", "report.md makes no claim about the file but does not say why"
        return "clean", "report.md does not trust the file and says why"
    return post


def report_argv(fx: Fixtures, *extra, search: Optional[str] = None) -> List[str]:
    return ["report", "--search", search or fx.search, "--no-remeasure", "--out", fx.fresh("report"), *extra]


def tampered_export(fx: Fixtures, name: str, change: Callable[[str, dict], Any]) -> str:
    """export.json of a copy of the verified export after ``change(folder, doc)``."""
    folder = fx.copy_export(fx.exp, name)
    doc = json.load(open(os.path.join(folder, "export.json")))
    change(folder, doc)
    json.dump(doc, open(os.path.join(folder, "export.json"), "w"), indent=1)
    return os.path.join(folder, "export.json")


def _delete(*files):
    def change(folder, doc):
        for f in files:
            os.remove(os.path.join(folder, f))
    return change


def _modify(file):
    def change(folder, doc):
        with open(os.path.join(folder, file), "ab") as f:
            f.write(b"\n<!-- changed after export -->\n" if file.endswith(".xml") else b"\0\0\0\0")
    return change


def _failed(folder, doc):
    doc["status"], doc["verified"] = "failed", False
    doc["reason"] = "openvino: top-1 drop 3.1 points > 0.5 allowed"


def _files_null(folder, doc):
    doc["files"] = None
    doc.pop("artefacts", None)


def _as_int8(folder, doc):
    """The OpenVINO files renamed model.int8.* and the record saying int8 (the ONNX file left out)."""
    for ext in (".xml", ".bin"):
        os.replace(os.path.join(folder, "model" + ext), os.path.join(folder, "model.int8" + ext))
    os.remove(os.path.join(folder, "model.onnx"))
    doc["formats"], doc["precision"] = ["openvino"], "int8"
    doc["files"] = {"openvino": dict(doc["files"]["openvino"], path="model.int8.xml", weights="model.int8.bin")}
    res = doc["verification"]["results"]
    doc["verification"]["results"] = {"openvino": dict(res["openvino"], precision_used="int8", precision="int8")}
    doc["artefacts"] = [dict(a, path="model.int8.xml", weights="model.int8.bin", precision="int8")
                        for a in doc.get("artefacts") or [] if a.get("format") == "openvino"]


def _failed_reexport(fx: Fixtures, schedule) -> str:
    """A copy of the verified export, then an export into it whose verification fails (every exported file
    answers wrongly); returns its export.json."""
    from tavt_kit.export import VerifyOptions, export_model
    from tavt_kit.export import verify as verify_mod

    folder = fx.copy_export(fx.exp, "export_reexported")
    real = verify_mod.ExportedRunner.__call__
    verify_mod.ExportedRunner.__call__ = lambda self, x: 1.0 - real(self, x)
    try:
        export_model(tavt_kit.load_checkpoint(fx.sup), folder, schedule, ("onnx",),
                     verify=VerifyOptions(images=32, max_logit_diff=0.0))
    except Exception:
        pass
    finally:
        verify_mod.ExportedRunner.__call__ = real
    return os.path.join(folder, "export.json")


def lists_verified(token: str):
    """The report must still list ``token`` (verified before a failed re-export, unchanged) as verified."""
    def post(fx, argv, rc, out, err):
        if rc != 0:
            return None
        text = report_text(opt(argv, "--out"))
        if claims(text, [token]):
            return "clean", f"report.md lists the earlier verified {token}"
        return "silent acceptance", f"report.md does not list the earlier verified {token} (still there, unchanged)"
    return post


def search_edit(fx: Fixtures, name: str, edit: Callable[[dict], Any]) -> str:
    return fx.edited(fx.search, name, edit)


def _best(doc):
    return doc["budgets"][0]["best"]


def _unfinished(doc):
    for k in ("budgets", "pareto_front", "front_area", "baselines", "timing", "plots"):
        doc.pop(k, None)


def _unfinished_precision(doc):
    doc["precisions"] = {"searched": ["fp32", "int8"]}
    for k in ("budgets", "timing"):
        doc.pop(k, None)


def says_unfinished(fx, argv, rc, out, err):
    if rc != 0:
        return None
    text = report_text(opt(argv, "--out"))
    words = ("unfinished", "incomplete", "not finished", "did not finish", "killed", "interrupted", "partial")
    if missing_words(text, [words]):
        return "silent acceptance", "report.md does not say the search is unfinished"
    return "clean", "report.md says the search is unfinished"


UNFINISHED = [("unfinished", "incomplete", "not finished", "did not finish", "killed", "interrupted", "partial",
               "missing", "budgets")]


def report_cases() -> List[Case]:
    ex = lambda fx, name, change: report_argv(fx, "--export", tampered_export(fx, name, change))  # noqa: E731
    tamper = [
        ("increasing counts", lambda d: _best(d).update(counts=sorted(_best(d)["counts"])),
         [("counts", "increas", "schedule")]),
        ("precision int4", lambda d: _best(d).update(precision="int4"), ["int4"]),
        ("accuracy 1.7", lambda d: _best(d).update(test_accuracy=1.7), [("accuracy", "1.7")]),
        ("negative holdout accuracy on the front", lambda d: d["pareto_front"][0].update(holdout_accuracy=-0.2),
         [("accuracy", "-0.2")]),
        ("negative limit", lambda d: d["budgets"][0].update(limit=-5e6), ["limit"]),
        ("impossible merge (more than half a block)", lambda d: _best(d).update(counts=[14, 5, 4],
                                                                                reducers=["merge"] * 3),
         ["merge"]),
    ]
    cases = [
        Case("report: export whose model.xml/.bin were deleted",
             lambda fx: ex(fx, "export_x1", _delete("model.xml", "model.bin")), must=["model.xml"],
             post=distrust(["model.xml"])),
        Case("report: export whose model.onnx was deleted",
             lambda fx: ex(fx, "export_x2", _delete("model.onnx")), must=["model.onnx"],
             post=distrust(["model.onnx"])),
        Case("report: model.xml modified after export (sha256 differs)",
             lambda fx: ex(fx, "export_x3", _modify("model.xml")), must=["model.xml"],
             post=distrust(["model.xml"])),
        Case("report: model.onnx modified after export (sha256 differs)",
             lambda fx: ex(fx, "export_x4", _modify("model.onnx")), must=["model.onnx"],
             post=distrust(["model.onnx"])),
        Case("report: export.json with top-level status failed",
             lambda fx: ex(fx, "export_status", _failed), must=["export.json"],
             post=distrust(["model.xml", "model.onnx"])),
        Case("report: export.json with files null (no artefacts)", lambda fx: ex(fx, "export_nofiles", _files_null),
             must=[("files", "export.json")], post=distrust(["None", "model.xml", "model.onnx"])),
        Case("report: export of another checkpoint",
             lambda fx: report_argv(fx, "--export", os.path.join(fx.exp_other, "export.json")),
             must=[("another", "other", "weights", "checkpoint")], post=distrust(["model.onnx"])),
        Case("report: bench.json of another checkpoint matched by counts",
             lambda fx: report_argv(fx, "--bench", fx.bench_other), must=["bench.json"],
             post=ship_not_measured),
        Case("report: bench.json of all-drop counts for a merging pick",
             lambda fx: report_argv(fx, "--bench", fx.edited(
                 fx.bench_other, "bench_same_weights.json",
                 lambda d: d["model"].update(weights_sha256=fx.search_doc["model"]["weights_sha256"]))),
             must=["bench.json"], post=ship_not_measured),
        Case("report: all-drop export shipped for a pick whose schedule merges",
             lambda fx: report_argv(fx, "--export", os.path.join(fx.exp_drop, "export.json")),
             must=[("merge", "reducer", "drop")], post=distrust(["model.onnx"])),
        Case("report: model.int8.xml for a pick @ fp32", lambda fx: ex(fx, "export_int8", _as_int8),
             must=[("int8", "precision")], post=distrust(["model.int8.xml"])),
        Case("report: search.json given as --export", lambda fx: report_argv(fx, "--export", fx.search),
             must=["search.json"]),
        Case("report: latency_table.json given as --export", lambda fx: report_argv(fx, "--export", fx.table),
             must=["latency_table.json"]),
        Case("report: bench.json given as --export", lambda fx: report_argv(fx, "--export", fx.bench_other),
             must=["bench.json"]),
        Case("report: export.json given as --bench",
             lambda fx: report_argv(fx, "--bench", os.path.join(fx.exp, "export.json")), must=["export.json"]),
    ]
    for name, edit, must in tamper:
        cases.append(Case(f"report: tampered search.json, {name}",
                          lambda fx, edit=edit, name=name: report_argv(
                              fx, search=search_edit(fx, "search_" + re.sub(r"\W+", "_", name) + ".json", edit)),
                          must=must))
    cases += [
        Case("report: after a failed re-export the earlier verified file is listed",
             lambda fx: report_argv(fx, "--export", _failed_reexport(
                 fx, {k: v for k, v in json.load(open(fx.schedule_file)).items() if k != "model"})),
             must=[("model.onnx", "export.json")], post=lists_verified("model.onnx")),
        Case("report: after a failed re-export of another schedule the earlier verified file is listed",
             lambda fx: report_argv(fx, "--export", _failed_reexport(fx, [16, 16, 16])),
             must=[("model.onnx", "export.json")], post=lists_verified("model.onnx")),
        Case("report: unfinished search.json (final sections missing)",
             lambda fx: report_argv(fx, search=search_edit(fx, "search_unfinished.json", _unfinished)),
             must=UNFINISHED, post=says_unfinished),
        Case("report: precision search killed mid-way (no budgets, no timing)",
             lambda fx: report_argv(fx, search=search_edit(fx, "search_killed.json", _unfinished_precision)),
             must=UNFINISHED, post=says_unfinished),
    ]
    return cases


def ship_not_measured(fx, argv, rc, out, err):
    """A bench.json that is not of the pick must not give the pick a measured latency."""
    if rc != 0:
        return None
    ship = section(report_text(opt(argv, "--out")), "## What to ship")
    bad = [ln for ln in ship.splitlines() if re.search(r"\d ms measured", ln)]
    if bad:
        return "silent acceptance", f"report.md: {bad[0][:220]}"
    return "clean", "report.md does not take the bench figure for the pick"
# ---------------------------------------------------------------------------------------------- one writer per folder
def _hold(fx: Fixtures, argv: List[str], folder: str) -> None:
    fx.held = fx.holder(argv, folder)


def _stale(fx: Fixtures, folder: str) -> None:
    """A train run that holds ``folder``, killed (SIGKILL): its lock file stays."""
    proc = fx.holder(["train", "--dataset", "demo", *TRAIN_LONG, "--steps", "100000", "--out", folder], folder)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()


def _dead_record(folder: str) -> None:
    from tavt_kit.lock import LOCK_FILE

    os.makedirs(folder, exist_ok=True)
    pid = 4_000_000  # above any pid_max: no such process
    json.dump({"pid": pid, "host": os.uname().nodename, "command": "fgvc-kit train --out x", "since": "2020-01-01"},
              open(os.path.join(folder, LOCK_FILE), "w"))


def takes_over(fx, argv, rc, out, err):
    from tavt_kit.lock import LOCK_FILE

    folder = opt(argv, "--out")
    if "Traceback" in err:
        return None
    if rc == 0:
        if os.path.exists(os.path.join(folder, LOCK_FILE)):
            return "unclear", "ran, but left the lock file behind"
        return "clean", "the stale lock was taken over"
    return "unclear", "refused a folder whose writer is gone: " + (error_lines(err) or ["?"])[-1]


def lock_cases() -> List[Case]:
    def busy_must(fx):
        return [f"PID {fx.held.pid}"]

    def train_out(fx):
        fx.lock_out = fx.fresh("train_locked")
        return fx.lock_out

    return [
        Case("lock: two train runs into one --out at once",
             setup=lambda fx: _hold(fx, ["train", "--dataset", "demo", *TRAIN_LONG, "--steps", "100000", "--out",
                                         train_out(fx)], fx.lock_out),
             argv=lambda fx: ["train", "--dataset", "demo", *TRAIN, "--out", fx.lock_out],
             must=busy_must, cleanup=lambda fx: fx.kill_all(), timeout=120),
        Case("lock: two exports into one --out at once",
             setup=lambda fx: _hold(fx, ["export", "--checkpoint", fx.sup, "--format", "onnx,openvino",
                                         "--verify-images", "449", "--out", train_out(fx)], fx.lock_out),
             argv=lambda fx: ["export", "--checkpoint", fx.sup, "--format", "onnx", "--no-verify", "--out",
                              fx.lock_out],
             must=busy_must, cleanup=lambda fx: fx.kill_all(), timeout=120),
        Case("lock: a search into the folder a train run writes",
             setup=lambda fx: _hold(fx, ["train", "--dataset", "demo", *TRAIN_LONG, "--steps", "100000", "--out",
                                         train_out(fx)], fx.lock_out),
             argv=lambda fx: ["search", "--checkpoint", fx.sup, "--out", fx.lock_out, *EVO],
             must=busy_must, cleanup=lambda fx: fx.kill_all(), timeout=120),
        Case("lock: a stale lock from a killed train run is taken over",
             setup=lambda fx: _stale(fx, train_out(fx)),
             argv=lambda fx: ["bench", "predict", "--latency-table", fx.table, "--drop", fx.counts, "--quiet",
                              "--out", fx.lock_out],
             post=takes_over, timeout=120),
        Case("lock: a lock file naming a dead PID is taken over",
             setup=lambda fx: _dead_record(train_out(fx)),
             argv=lambda fx: ["bench", "predict", "--latency-table", fx.table, "--drop", fx.counts, "--quiet",
                              "--out", fx.lock_out],
             post=takes_over, timeout=120),
    ]


# ---------------------------------------------------------------------------------------------- full disk
ENOSPC_TEXT = "No space left on device"


@contextlib.contextmanager
def patched(obj, name, value):
    real = getattr(obj, name)
    setattr(obj, name, value)
    try:
        yield real
    finally:
        setattr(obj, name, real)


def folder_digests(folder: str) -> dict:
    return {p: digest(os.path.join(folder, p)) for p in sorted(os.listdir(folder))
            if os.path.isfile(os.path.join(folder, p)) and not p.startswith(".fgvc-kit")}


def temporaries(folder: str) -> List[str]:
    return [p for p in os.listdir(folder) if ".tmp-" in p or ".staging" in p or p.startswith(".export")]


def disk_verdict(rc, err, must, before: dict, after: dict, folder: str) -> Tuple[str, str]:
    """A writer at a full disk: one clean line naming the file, the earlier files unchanged, no temporaries."""
    kind, line = judge_error(rc, err, must)
    changed = sorted(p for p in before if before[p] != after.get(p))
    if changed:
        return "data loss", f"changed or gone: {', '.join(changed)}; {line}"
    left = temporaries(folder)
    if left and kind == "clean":
        return "unclear", f"temporary files left: {', '.join(left)}; {line}"
    return kind, line


def _full_safetensors(fail_on: Callable[[str], bool]):
    import safetensors.torch
    from safetensors import SafetensorError

    real = safetensors.torch.save_file

    def save_file(tensors, filename, metadata=None):
        if fail_on(os.fspath(filename)):
            with open(filename, "wb") as f:
                f.write(b"\0" * 100)
            raise SafetensorError("Error while serializing: I/O error: No space left on device (os error 28)")
        return real(tensors, filename, metadata=metadata)

    return patched(safetensors.torch, "save_file", save_file)


def full_report(fx: Fixtures) -> Tuple[str, str]:
    import builtins

    out = fx.fresh("report_full")
    argv = ["report", "--search", fx.search, "--export", os.path.join(fx.exp, "export.json"), "--no-remeasure",
            "--out", out]
    must_run(argv)
    before = folder_digests(out)
    real = builtins.open
    where = os.path.realpath(out)

    def fake_open(file, mode="r", *a, **k):
        f = real(file, mode, *a, **k)
        if any(c in mode for c in "wax") and isinstance(file, (str, os.PathLike)) and \
                os.path.basename(os.fspath(file)).startswith(("report.md", "report.html")) and \
                os.path.realpath(os.path.dirname(os.path.abspath(file))) == where:
            def write(*_a, **_k):
                raise OSError(errno.ENOSPC, ENOSPC_TEXT)
            f.write = write
        return f

    with patched(builtins, "open", fake_open):
        rc, _, err = call_main(argv)
    return disk_verdict(rc, err, [("report", out), "no space"], before, folder_digests(out), out)


def full_save_checkpoint(fx: Fixtures) -> Tuple[str, str]:
    folder = fx.fresh("ckpt_full")
    os.makedirs(folder)
    path = os.path.join(folder, "best.safetensors")
    model = tavt_kit.load_checkpoint(fx.sup)
    tavt_kit.save_checkpoint(model, path)
    before = folder_digests(folder)
    with torch.no_grad():
        next(model.parameters()).add_(1.0)
    with _full_safetensors(lambda p: True):
        try:
            tavt_kit.save_checkpoint(model, path)
            rc, err = 0, ""
        except tavt_kit.TavtKitError as e:
            rc, err = 2, f"fgvc-kit: error: {e}"
        except Exception as e:  # what a command would show as a traceback
            rc, err = 1, f"Traceback (most recent call last):\n{type(e).__name__}: {e}"
    try:
        tavt_kit.load_checkpoint(path)
    except Exception as e:
        return "data loss", f"{path} no longer loads: {e}"
    return disk_verdict(rc, err, ["best.safetensors", "no space"], before, folder_digests(folder), folder)


def full_train(fx: Fixtures) -> Tuple[str, str]:
    from tavt_kit.models import read_spec

    out = fx.fresh("train_full")
    writes = []

    def fail_on(p):
        writes.append(os.path.basename(p).split(".tmp-")[0])
        return writes.count("last.safetensors") >= 2

    with _full_safetensors(fail_on):
        rc, _, err = call_main(["train", "--dataset", "demo", *TRAIN_LONG, "--steps", "2", "--save-every", "1",
                                "--eval-every", "1", "--out", out])
    kind, line = judge_error(rc, err, ["last.safetensors", "no space"])
    try:
        step = read_spec(os.path.join(out, "last.safetensors"))["training"]["step"]
    except Exception as e:
        return "data loss", f"last.safetensors of step 1 no longer loads ({e}); {line}"
    if step != 1 or not os.path.isfile(os.path.join(out, "train_state.safetensors")):
        return "data loss", f"last.safetensors is of step {step}, or the training state is gone; {line}"
    return kind, line


def full_search_cache(fx: Fixtures) -> Tuple[str, str]:
    out = fx.fresh("search_cache_full")
    with _full_safetensors(lambda p: f"{os.sep}cache{os.sep}" in p):
        rc, _, err = call_main(["search", "--checkpoint", fx.sup, "--out", out, *EVO])
    if rc == 0 and "Traceback" not in err:
        if "no space" in err.lower():
            return "clean", "ran without the cache and said so: " + err.strip().splitlines()[-1]
        return "silent acceptance", "the cache could not be written and nothing was said"
    kind, line = judge_error(rc, err, ["cache", "no space"])
    left = [p for p in os.listdir(os.path.join(out, "cache"))] if os.path.isdir(os.path.join(out, "cache")) else []
    bad = [p for p in left if ".tmp-" in p or os.path.getsize(os.path.join(out, "cache", p)) <= 100]
    if bad:
        return "data loss", f"half-written cache files left: {', '.join(bad)}; {line}"
    return kind, line


def full_search_json(fx: Fixtures) -> Tuple[str, str]:
    folder = fx.copy_export(os.path.dirname(fx.search), "search_json_full")
    before = folder_digests(folder)
    full = tavt_kit.count_macs(tavt_kit.load_checkpoint(fx.sup)).total()

    def replace(src, dst, _real=os.replace):
        if os.fspath(dst).endswith("search.json"):
            raise OSError(errno.ENOSPC, ENOSPC_TEXT, dst)
        return _real(src, dst)

    with patched(os, "replace", replace):
        rc, _, err = call_main(["search", "--checkpoint", fx.sup, "--macs-budget", f"{0.85 * full:.0f}",
                                "--reducers", "drop,merge", "--out", folder, *EVO])
    after = folder_digests(folder)
    return disk_verdict(rc, err, ["search.json", "no space"], {"search.json": before["search.json"]}, after,
                        folder)


def _export_full(fx: Fixtures, name: str, formats: str, fault) -> Tuple[str, str]:
    """An export into a copy of the verified export (the earlier files must stay, described by export.json) at a
    full disk."""
    folder = fx.copy_export(fx.exp, name)
    before = {p: h for p, h in folder_digests(folder).items() if p != "export.json"}
    with fault():
        rc, _, err = call_main(["export", "--checkpoint", fx.sup, "--drop", "16,12,8", "--format", formats,
                                "--verify-images", "32", "--out", folder])
    after = folder_digests(folder)
    if rc == 2 and "Traceback" not in err and "no space" not in err.lower():  # refused before writing: fine
        changed = sorted(p for p in before if before[p] != after.get(p))
        return ("data loss", f"changed: {changed}") if changed else judge_error(rc, err)
    kind, line = disk_verdict(rc, err, [".onnx" if formats == "onnx" else ".xml", "no space"], before, after,
                              folder)
    loose, _ = described(folder)
    if loose and kind != "data loss":
        return "data loss", f"export.json no longer describes {', '.join(loose)}; {line}"
    return kind, line


def _onnx_fault():
    def export(model, args, f=None, *a, **k):
        if isinstance(f, (str, os.PathLike)):
            with open(f, "wb") as fh:
                fh.write(b"\x08\x07" * 64)
        raise OSError(errno.ENOSPC, ENOSPC_TEXT, os.fspath(f) if f is not None else None)

    return patched(torch.onnx, "export", export)


@contextlib.contextmanager
def _openvino_fault():
    import openvino as ov

    import tavt_kit.files

    def iostream(*a, **k):
        raise RuntimeError("Exception from src/core/src/pass/serialize.cpp:1364:\nbasic_ios::clear: iostream error")

    with patched(ov, "save_model", iostream), patched(tavt_kit.files, "free_bytes", lambda path: 500):
        yield


def full_onnx_fresh(fx: Fixtures) -> Tuple[str, str]:
    out = fx.fresh("export_full_fresh")
    with _onnx_fault():
        rc, _, err = call_main(["export", "--checkpoint", fx.sup, "--format", "onnx", "--no-verify", "--out", out])
    kind, line = judge_error(rc, err, ["model.onnx", "no space"])
    left = [p for p in os.listdir(out) if not p.startswith(".fgvc-kit")] if os.path.isdir(out) else []
    if left == ["export.json"] and json.load(open(os.path.join(out, "export.json"))).get("status") == "failed":
        left = []  # the record of the failure
    if left:
        return ("data loss" if kind == "clean" else kind), f"left in {out}: {left}; {line}"
    return kind, line


def disk_cases() -> List[Case]:
    return [
        Case("full disk: report.md/.html keep the earlier report", fn=full_report),
        Case("full disk: save_checkpoint (safetensors wrote part of the file)", fn=full_save_checkpoint),
        Case("full disk: train's periodic checkpoint", fn=full_train),
        Case("full disk: search evaluation cache", fn=full_search_cache),
        Case("full disk: search.json keeps the earlier search.json", fn=full_search_json),
        Case("full disk: export ONNX over an earlier export", fn=lambda fx: _export_full(
            fx, "export_full_onnx", "onnx", _onnx_fault)),
        Case("full disk: export OpenVINO IR over an earlier export", fn=lambda fx: _export_full(
            fx, "export_full_ir", "openvino", _openvino_fault)),
        Case("full disk: export ONNX into a new folder", fn=full_onnx_fresh),
    ]


# ---------------------------------------------------------------------------------------------- latency tables
def _table(fx: Fixtures, name: str, edit: Callable[[dict], Any]) -> str:
    return fx.edited(fx.table, f"table_{name}.json", edit)


def _set_ms(value):
    def edit(d):
        d["plain_ms"]["ms"][1] = value
    return edit


def table_cases() -> List[Case]:
    predict = lambda fx, t: ["bench", "predict", "--latency-table", t, "--drop", fx.counts,  # noqa: E731
                             "--quiet", "--out", fx.fresh("predict")]
    search = lambda fx, t: ["search", "--checkpoint", fx.sup, "--latency-table", t, "--latency-budget",  # noqa: E731
                            "50ms", "--out", fx.fresh("search_table"), *EVO]
    edits = [
        ("version 99", lambda d: d.update(version=99), ["version"]),
        ("negative timing", _set_ms(-0.5), [("plain_ms", "negative")]),
        ("NaN timing", _set_ms(float("nan")), [("plain_ms", "nan")]),
        ("negative embed_ms", lambda d: d.update(embed_ms=-1.0), ["embed_ms"]),
        ("batch_size \"eight\"", lambda d: d["target"].update(batch_size="eight"), ["batch_size"]),
        ("string timings", lambda d: d["plain_ms"].update(ms=["fast"] * len(d["plain_ms"]["ms"])), ["plain_ms"]),
        ("model null", lambda d: d.update(model=None), ["model"]),
        ("precision int4", lambda d: d["target"].update(precision="int4"), ["int4"]),
        ("precision i8", lambda d: d["target"].update(precision="i8"), ["precision", "i8"]),
    ]
    cases = []
    for name, edit, must in edits:
        slug = re.sub(r"\W+", "_", name)
        cases.append(Case(f"latency table: {name} (bench predict)",
                          lambda fx, edit=edit, slug=slug: predict(fx, _table(fx, slug, edit)), must=must))
    for name, edit, must in edits[1:3] + edits[7:8]:
        slug = re.sub(r"\W+", "_", name)
        cases.append(Case(f"latency table: {name} (search --latency-table)",
                          lambda fx, edit=edit, slug=slug: search(fx, _table(fx, slug, edit)), must=must))
    return cases
# ---------------------------------------------------------------------------------------------- drop configs of other weights
def drop_cases() -> List[Case]:
    def edited_sched(fx):
        return fx.edited(fx.schedule_file, "schedule_other_weights.json",
                         lambda d: d["model"].update(weights_sha256="ab" * 32))

    must = [("schedule-", "drop config", "--drop"), ("weights", "another", "other", "checkpoint")]
    must2 = [("schedule_other_weights", "drop config", "--drop"), ("weights", "another", "other", "checkpoint")]
    return [
        Case("drop config of other weights (evaluate)",
             lambda fx: ["evaluate", "--checkpoint", fx.other, "--drop", fx.schedule_file], must=must),
        Case("drop config of other weights (export --drop)",
             lambda fx: ["export", "--checkpoint", fx.other, "--drop", fx.schedule_file, "--format", "onnx",
                         "--no-verify", "--out", fx.fresh("export_od")], must=must),
        Case("drop config edited to other weights (evaluate)",
             lambda fx: ["evaluate", "--checkpoint", fx.sup, "--drop", edited_sched(fx)], must=must2),
        Case("drop config edited to other weights (export --drop)",
             lambda fx: ["export", "--checkpoint", fx.sup, "--drop", edited_sched(fx), "--format", "onnx",
                         "--no-verify", "--out", fx.fresh("export_od")], must=must2),
    ]


# ---------------------------------------------------------------------------------------------- files of the wrong kind
def _write(fx: Fixtures, name: str, data: bytes) -> str:
    p = fx.fresh(name)
    open(p, "wb").write(data)
    return p


def wrong_file_cases() -> List[Case]:
    rnd = lambda fx, name: _write(fx, name, np.random.default_rng(0).bytes(4096))  # noqa: E731
    empty = lambda fx: _write(fx, "empty.safetensors", b"")  # noqa: E731
    onnx = lambda fx: os.path.join(fx.exp, "model.onnx")  # noqa: E731
    return [
        Case("pickle as --search (report)", lambda fx: ["report", "--search", fx.old["evil"], "--no-remeasure",
                                                         "--out", fx.fresh("report")], must=["evil.pth"]),
        Case("pickle as --search (export)", lambda fx: ["export", "--checkpoint", fx.sup, "--search", fx.old["evil"],
                                                         "--budget", "5M", "--out", fx.fresh("e")], must=["evil.pth"]),
        Case("binary file as --search (report)", lambda fx: ["report", "--search", fx.old["binary"],
                                                              "--no-remeasure", "--out", fx.fresh("report")],
             must=["bin.json"]),
        Case("binary file as --search (export)", lambda fx: ["export", "--checkpoint", fx.sup, "--search",
                                                              fx.old["binary"], "--budget", "5M", "--out",
                                                              fx.fresh("e")], must=["bin.json"]),
        Case("pickle as a latency table (bench predict)",
             lambda fx: ["bench", "predict", "--latency-table", fx.old["evil"], "--quiet", "--out",
                         fx.fresh("predict")],
             must=["evil.pth"]),
        Case("binary file as a latency table (search)",
             lambda fx: ["search", "--checkpoint", fx.sup, "--latency-table", fx.old["binary"], "--latency-budget",
                         "50ms", "--out", fx.fresh("s"), *EVO], must=["bin.json"]),
        Case("pickle as a latency table (search)",
             lambda fx: ["search", "--checkpoint", fx.sup, "--latency-table", fx.old["evil"], "--latency-budget",
                         "50ms", "--out", fx.fresh("s"), *EVO], must=["evil.pth"]),
        Case("zero-byte checkpoint (info)", lambda fx: ["info", "--checkpoint", empty(fx)], must=["empty"]),
        Case("zero-byte checkpoint (evaluate)", lambda fx: ["evaluate", "--checkpoint", empty(fx)], must=["empty"]),
        Case("zero-byte checkpoint (export)", lambda fx: ["export", "--checkpoint", empty(fx), "--out",
                                                           fx.fresh("e")], must=["empty"]),
        Case("random bytes as --checkpoint (.safetensors)",
             lambda fx: ["info", "--checkpoint", rnd(fx, "random.safetensors")], must=["random.safetensors"]),
        Case("random bytes as --checkpoint (.pth)",
             lambda fx: ["evaluate", "--checkpoint", rnd(fx, "random.pth")], must=["random.pth"]),
        Case("a JSON file as --checkpoint (info)", lambda fx: ["info", "--checkpoint", fx.search], must=["JSON"]),
        Case("a JSON file as --checkpoint (search)",
             lambda fx: ["search", "--checkpoint", fx.table, "--out", fx.fresh("s"), *EVO], must=["JSON"]),
        Case("an ONNX file as --checkpoint (info)", lambda fx: ["info", "--checkpoint", onnx(fx)], must=["ONNX"]),
        Case("an ONNX file as --checkpoint (export)",
             lambda fx: ["export", "--checkpoint", onnx(fx), "--out", fx.fresh("e")], must=["ONNX"]),
        Case("an OpenVINO .xml as --checkpoint (evaluate)",
             lambda fx: ["evaluate", "--checkpoint", os.path.join(fx.exp, "model.xml")], must=[("OpenVINO", "XML")]),
    ]


# ---------------------------------------------------------------------------------------------- --dataset-option merge
def options_kept(given: dict):
    """search.json must record the checkpoint's data options with ``given`` on top (or the search is refused)."""
    def post(fx, argv, rc, out, err):
        if rc != 0:
            return None
        from tavt_kit.models import read_spec

        stored = dict((read_spec(fx.clutter).get("data") or {}).get("options") or {})
        doc = json.load(open(os.path.join(opt(argv, "--out"), "search.json")))
        used = ((doc.get("source") or {}).get("data") or {}).get("options") or {}
        want = {**stored, **given}
        wrong = {k: used.get(k) for k, v in want.items() if str(used.get(k)) != str(v)}
        if not stored:
            return "unclear", "the checkpoint records no data options (fixture)"
        if wrong:
            return "silent acceptance", f"search.json scored on options {used}; expected {want}"
        return "clean", f"search.json records {used}"
    return post


def option_cases() -> List[Case]:
    return [
        Case("--dataset-option seed=1 on a model trained with other options (search)",
             lambda fx: ["search", "--checkpoint", fx.clutter, "--dataset-option", "seed=1", "--out",
                         fx.fresh("search_opt"), *EVO], must=["--dataset-option"], post=options_kept({"seed": 1})),
        Case("--dataset-option test=40 on a model trained with other options (search)",
             lambda fx: ["search", "--checkpoint", fx.clutter, "--dataset-option", "test=40", "--out",
                         fx.fresh("search_opt"), *EVO], must=["--dataset-option"], post=options_kept({"test": 40})),
    ]


# ---------------------------------------------------------------------------------------------- CUB trees
def cub_tree(fx: Fixtures, name: str, classes: List[str], images: List[Tuple[int, int, int]],
             bom_crlf: bool = False, extra_images_line: str = "") -> str:
    """A CUB_200_2011 folder: ``images`` = (image id, class id, is_train)."""
    from PIL import Image

    root = os.path.join(fx.fresh(name), "CUB_200_2011")
    for cid, cname in enumerate(classes, 1):
        os.makedirs(os.path.join(root, "images", f"{cid:03d}.{cname}"))
    for iid, cid, _ in images:
        Image.fromarray(np.full((16, 16, 3), iid * 20 % 255, np.uint8)).save(
            os.path.join(root, "images", f"{cid:03d}.{classes[cid - 1]}", f"{iid}.jpg"))
    nl = "\r\n" if bom_crlf else "\n"

    def write(fname, lines):
        text = nl.join(lines) + nl
        open(os.path.join(root, fname), "w", encoding="utf-8-sig" if bom_crlf else "utf-8", newline="").write(text)

    write("classes.txt", [f"{i} {i:03d}.{c}" for i, c in enumerate(classes, 1)])
    write("images.txt", [f"{i} {c:03d}.{classes[c - 1]}/{i}.jpg" for i, c, _ in images] +
          ([extra_images_line] if extra_images_line else []))
    write("image_class_labels.txt", [f"{i} {c}" for i, c, _ in images])
    write("train_test_split.txt", [f"{i} {t}" for i, _, t in images])
    return root


GOOD = [(1, 1, 1), (2, 1, 1), (3, 1, 0), (4, 2, 1), (5, 2, 1), (6, 2, 0)]


def cub_train(fx, root):
    args = [("2" if a == "8" else a) for a in TRAIN]  # --batch-size 2: a few images
    return ["train", "--dataset", "cub", "--data", root, *args, "--out", fx.fresh("train_cub")]


def bom_loader(fx: Fixtures) -> Tuple[str, str]:
    from tavt_kit.data.formats import load_cub

    plain = load_cub(cub_tree(fx, "cub_plain", ["Albatross", "Bunting"], GOOD))
    try:
        odd = load_cub(cub_tree(fx, "cub_bom", ["Albatross", "Bunting"], GOOD, bom_crlf=True))
    except tavt_kit.TavtKitError as e:
        return "unclear", f"a valid tree with a BOM and CRLF refused: {e}"
    except Exception as e:
        return "traceback", f"{type(e).__name__}: {e}"
    if list(odd.class_names) != list(plain.class_names):
        return "silent acceptance", f"class names {odd.class_names!r}, expected {plain.class_names!r}"
    if (len(odd.train), len(odd.test)) != (len(plain.train), len(plain.test)):
        return "silent acceptance", f"{len(odd.train)}/{len(odd.test)} images, expected " \
                                    f"{len(plain.train)}/{len(plain.test)}"
    return "clean", f"class 1 is {odd.class_names[0]!r}"


def trains(fx, argv, rc, out, err):
    if "Traceback" in err:
        return None
    if rc == 0:
        return "clean", "trained"
    return "unclear", "a valid dataset refused: " + (error_lines(err) or ["?"])[-1]


def cub_cases() -> List[Case]:
    return [
        Case("CUB: a class in classes.txt with no images",
             lambda fx: cub_train(fx, cub_tree(fx, "cub_empty_class", ["Albatross", "Bunting", "Crow"], GOOD)),
             must=["classes.txt", ("Crow", "003", "class 3")]),
        Case("CUB: a class with no training images",
             lambda fx: cub_train(fx, cub_tree(fx, "cub_no_train", ["Albatross", "Bunting", "Crow"],
                                               GOOD + [(7, 3, 0), (8, 3, 0)])),
             must=[("train_test_split.txt", "training"), ("Crow", "003", "class 3")]),
        Case("CUB: images.txt lists one id twice",
             lambda fx: cub_train(fx, cub_tree(fx, "cub_twice", ["Albatross", "Bunting"], GOOD,
                                               extra_images_line="2 001.Albatross/1.jpg")),
             must=["images.txt", ("2", "twice", "duplicate")]),
        Case("CUB: UTF-8 BOM and CRLF (the loader names class 1)", fn=bom_loader),
        Case("CUB: UTF-8 BOM and CRLF (train)",
             lambda fx: cub_train(fx, cub_tree(fx, "cub_bom_train", ["Albatross", "Bunting"], GOOD, bom_crlf=True)),
             post=trains),
    ]


# ---------------------------------------------------------------------------------------------- flags
def flag_cases() -> List[Case]:
    exp = lambda fx, *a: ["export", "--checkpoint", fx.sup, "--drop", fx.counts, "--format", "onnx",  # noqa: E731
                          "--no-verify", *a, "--out", fx.fresh("e")]
    demo = lambda fx, *a: ["demo", "--quick", "--dataset", "cluttered-digits", "--format", "onnx",  # noqa: E731
                           *a, "--out", fx.fresh("demo")]
    return [
        Case("flags: train --seed 1 --seed 2",
             lambda fx: ["train", "--dataset", "demo", *TRAIN, "--seed", "1", "--seed", "2", "--out",
                         fx.fresh("t")], must=["--seed"]),
        Case("flags: search --seed 1 --seed 2",
             lambda fx: ["search", "--checkpoint", fx.sup, "--seed", "1", "--seed", "2", "--out", fx.fresh("s"),
                         *EVO], must=["--seed"]),
        Case("flags: export --opset 5", lambda fx: exp(fx, "--opset", "5"), must=["--opset"]),
        Case("flags: export --latency-batch-size without --precision auto",
             lambda fx: exp(fx, "--latency-batch-size", "4"), must=["--latency-batch-size"]),
        Case("flags: export --accuracy-control-images with --no-accuracy-control",
             lambda fx: exp(fx, "--accuracy-control-images", "10", "--no-accuracy-control"),
             must=["--accuracy-control-images"]),
        Case("flags: bench --random -2",
             lambda fx: ["bench", "--checkpoint", fx.sup, "--random", "-2", "--quiet", "--time-budget", "0.05",
                         "--no-plot", "--out", fx.fresh("b")], must=["--random"]),
        Case("flags: report --time-budget -1",
             lambda fx: ["report", "--search", fx.search, "--time-budget", "-1", "--out", fx.fresh("report")],
             must=["--time-budget"]),
        Case("flags: bench profile --time-budget 0 names the flag",
             lambda fx: ["bench", "profile", "--checkpoint", fx.sup, "--grid", "3", "--time-budget", "0", "--quiet",
                         "--no-plot", "--out", fx.fresh("b")], must=["--time-budget"]),
        Case("flags: bench profile --time-budget -1 names the flag",
             lambda fx: ["bench", "profile", "--checkpoint", fx.sup, "--grid", "3", "--time-budget", "-1",
                         "--quiet", "--no-plot", "--out", fx.fresh("b")], must=["--time-budget"]),
        Case("flags: bench --time-budget -1",
             lambda fx: ["bench", "--checkpoint", fx.sup, "--time-budget", "-1", "--quiet", "--no-plot", "--out",
                         fx.fresh("b")], must=["--time-budget"]),
        Case("flags: prune --macs-budget 1K",
             lambda fx: ["prune", "--checkpoint", fx.sup, "--macs-budget", "1K", "--out", fx.fresh("p")],
             must=["--macs-budget"]),
        Case("flags: export --budget fast (no budget)",
             lambda fx: ["export", "--checkpoint", fx.sup, "--search", fx.search, "--budget", "fast", "--format",
                         "onnx", "--no-verify", "--out", fx.fresh("e")], must=["--budget fast", "it holds"]),
        Case("flags: export --budget below the search's front",
             lambda fx: ["export", "--checkpoint", fx.sup, "--search", fx.search, "--budget", "1K MACs", "--format",
                         "onnx", "--no-verify", "--out", fx.fresh("e")], must=["--budget 1K MACs", "front spans"]),
        Case("flags: demo --train-steps 0", lambda fx: demo(fx, "--train-steps", "0"), must=["--train-steps"],
             timeout=60),
        Case("flags: demo --train-steps -3", lambda fx: demo(fx, "--train-steps", "-3"), must=["--train-steps"],
             timeout=60),
        Case("flags: demo --distill-steps -1", lambda fx: demo(fx, "--distill-steps", "-1"),
             must=["--distill-steps"], timeout=60),
    ]


# ---------------------------------------------------------------------------------------------- export over an earlier export
def described(folder: str) -> Tuple[List[str], dict]:
    """Model files in ``folder`` that its export.json does not describe with their current sha256."""
    doc = json.load(open(os.path.join(folder, "export.json")))
    known = {}
    entries = list((doc.get("files") or {}).values()) + list(doc.get("artefacts") or [])
    for e in entries:
        if not isinstance(e, dict):
            continue
        if e.get("path"):
            known.setdefault(e["path"], set()).add(e.get("sha256"))
        if e.get("weights"):
            known.setdefault(e["weights"], set()).add(e.get("weights_sha256"))
    loose = [p for p in sorted(os.listdir(folder)) if p.endswith((".onnx", ".xml", ".bin"))
             and digest(os.path.join(folder, p)) not in known.get(p, set())]
    return loose, doc


def earlier_described(fx, argv, rc, out, err):
    if rc != 0:
        return None
    loose, _ = described(opt(argv, "--out"))
    if loose:
        return "data loss", f"export.json no longer describes {', '.join(loose)} (still in the folder)"
    return "clean", "export.json describes every file in the folder"


def overwrite_cases() -> List[Case]:
    def into(fx, fmt, drop):
        return ["export", "--checkpoint", fx.sup, "--drop", drop, "--format", fmt, "--verify-images", "32",
                "--out", fx.copy_export(fx.exp, "export_again")]

    return [
        Case("export into a folder with an earlier export (ONNX only over ONNX + OpenVINO)",
             lambda fx: into(fx, "onnx", "16,12,8"), must=["--overwrite"], post=earlier_described),
        Case("export into a folder with an earlier export (OpenVINO only, another schedule)",
             lambda fx: into(fx, "openvino", "16,8,8"), must=["--overwrite"], post=earlier_described),
        Case("export into a folder with an earlier export (the same schedule, ONNX only)",
             lambda fx: into(fx, "onnx", fx.counts), must=["--overwrite"], post=earlier_described),
    ]


# ---------------------------------------------------------------------------------------------- slow
def precision_rerun(fx: Fixtures) -> List[str]:
    out = fx.fresh("search_precision")
    base = ["search", "--checkpoint", fx.sup, "--latency-budget", "50ms", "--precisions", "fp32,int8",
            "--verify-top", "1", "--out", out, *EVO]
    must_run(base + ["--calibration-images", "16"])
    return base + ["--calibration-images", "32"]


def new_calibration(fx, argv, rc, out, err):
    if rc != 0:
        return None
    doc = json.load(open(os.path.join(opt(argv, "--out"), "search.json")))
    cal = (doc.get("settings") or {}).get("calibration")
    if "32" not in json.dumps(cal):
        return "silent acceptance", f"search.json records calibration {cal} after a rerun with 32 images"
    return "clean", f"search.json records calibration {cal}"


@functools.lru_cache(maxsize=None)
def _demo_dir(d: str) -> str:
    out = os.path.join(d, "demo_slow")
    argv = ["demo", "--quick", "--dataset", "cluttered-digits", "--format", "onnx", "--out", out]
    rc = subprocess.run([sys.executable, "-m", "tavt_kit.cli", *argv], capture_output=True, text=True, cwd=d,
                        env=dict(os.environ, OMP_NUM_THREADS="1"), timeout=900)
    if rc.returncode != 0:
        raise RuntimeError(f"fixture demo failed:\n{rc.stderr[-3000:]}")
    return out


def demo_damaged(what: str, damage: Callable[[str], None]):
    def argv(fx):
        out = _demo_dir(fx.d)
        damage(os.path.join(out, what))
        return ["demo", "--quick", "--dataset", "cluttered-digits", "--format", "onnx", "--out", out]
    return argv


def _truncate(p):
    size = os.path.getsize(p)
    with open(p, "r+b") as f:
        f.truncate(size // 2)


def demo_rebuilt(what: str, check: Callable[[str], None]):
    def post(fx, argv, rc, out, err):
        if rc != 0:
            return None
        path = os.path.join(opt(argv, "--out"), what)
        try:
            check(path)
        except Exception as e:
            return "silent acceptance", f"the demo reused its stage: {what} is still damaged ({type(e).__name__})"
        return "clean", f"the stage was run again: {what} is whole"
    return post


def _export_whole(path):
    loose, doc = described(os.path.dirname(path))
    if loose:
        raise ValueError(loose)


def slow_cases() -> List[Case]:
    return [
        Case("slow: precision search rerun with other --calibration-images", precision_rerun,
             must=["--calibration-images"], post=new_calibration, slow=True, timeout=600),
        Case("slow: demo reuses a stage whose checkpoint was truncated",
             demo_damaged("train/best.safetensors", _truncate), must=["best.safetensors"],
             post=demo_rebuilt("train/best.safetensors", tavt_kit.load_checkpoint), slow=True, timeout=900),
        Case("slow: demo reuses a stage whose search.json was deleted",
             demo_damaged("search/search.json", os.remove), must=["search.json"],
             post=demo_rebuilt("search/search.json", lambda p: json.load(open(p))["budgets"]), slow=True,
             timeout=900),
        Case("slow: demo reuses a stage whose model.onnx was truncated",
             demo_damaged("export/model.onnx", _truncate), must=["model.onnx"],
             post=demo_rebuilt("export/model.onnx", _export_whole), slow=True, timeout=900),
    ]


# ---------------------------------------------------------------------------------------------- issue #67
def _best_edit(counts_of, reducers=None):
    """An edit of search.json's first pick: its counts (from the pick's), its MACs left as they were."""
    def edit(doc):
        b = _best(doc)
        b["counts"] = counts_of(list(b["counts"]), doc)
        if reducers is not None:
            b["reducers"] = [reducers] * len(b["counts"])
    return edit


def _one_fewer(counts, doc):
    """The pick with one token fewer in its last block (a schedule still in the space, MACs not its own)."""
    return counts[:-1] + [max(1, counts[-1] - 1)] if counts[-1] > 1 else counts[:-1] + [counts[-1]]


def _merge_most(counts, doc):
    """Block 0 merges 11 of the 16 patch tokens (more than half: 44 of 64 in the issue)."""
    n = int(doc["model"]["num_patches"])
    low = n - (n * 11 + 15) // 16
    return [low] * len(counts)


def api_outcome(call: Callable[[], Any], must: Words = (), accepted: Optional[Callable[[Any], Optional[str]]] = None
                ) -> Tuple[str, str]:
    """A Python API call: a refusal must be a TavtKitError naming ``must``; where the input is valid
    (``accepted`` given) it must run, and ``accepted(result)`` says what is wrong with the result (None: right)."""
    try:
        result = call()
    except tavt_kit.TavtKitError as e:
        line = str(e).splitlines()[0] if str(e) else type(e).__name__
        if accepted is not None and not must:
            return "unclear", f"a valid call refused: {line}"
        miss = missing_words(line, must)
        return ("unclear", f"{line}  [does not name {', '.join(miss)}]") if miss else ("clean", line)
    except Exception as e:  # what a Python user would see as a traceback
        return "traceback", f"{type(e).__name__}: {str(e)[:200]}"
    if accepted is None:
        return "silent acceptance", f"accepted: {str(result)[:200]}"
    wrong = accepted(result)
    return ("silent acceptance", wrong) if wrong else ("clean", f"ran: {str(result)[:160]}")


def _search_api(fx: Fixtures, model=None, budgets: Any = "__macs__", **kw):
    """``search_schedules`` on the tiny supernet with random images and a tiny evolution (``kw`` overrides)."""
    from tavt_kit import search_schedules
    from tavt_kit.search import EvolutionSettings

    g = torch.Generator().manual_seed(0)
    split = (lambda n: (torch.randint(0, 256, (n, 3, 32, 32), dtype=torch.uint8, generator=g),
                        torch.randint(0, 10, (n,), generator=g)))
    if budgets == "__macs__":
        full = tavt_kit.count_macs(tavt_kit.load_checkpoint(fx.sup)).total()
        budgets = [f"{0.9 * full / 1e6:.4g}M MACs"]
    args = dict(evolution=EvolutionSettings(population=2, generations=1, mutations=1, crossovers=1, seed=0),
                out=fx.fresh("search_api"), log=lambda s: None, parent=None)
    args.update(kw)
    return search_schedules(model if model is not None else tavt_kit.load_checkpoint(fx.sup),
                            (split(16), split(16)), budgets, **args)


def _one_budget(label: str):
    def check(res):
        return None if list(res.budgets) == [label] else f"budgets {list(res.budgets)}, expected [{label!r}]"
    return check


def readonly_table_cache(fx: Fixtures) -> Tuple[str, str]:
    """A search whose checkpoint is in a folder that cannot be written (its table cache): it must go on, saying so.
    The folder is made unwritable by refusing every folder made under it (root ignores file modes)."""
    folder = fx.fresh("ro_checkpoint")
    os.makedirs(folder)
    ckpt = shutil.copy(fx.sup, folder)
    real = os.makedirs
    where = os.path.abspath(folder) + os.sep

    def makedirs(name, *a, **k):
        if os.path.abspath(os.fspath(name)).startswith(where):
            raise PermissionError(errno.EACCES, "Permission denied", os.fspath(name))
        return real(name, *a, **k)

    with patched(os, "makedirs", makedirs):
        rc, out, err = call_main(["search", "--checkpoint", ckpt, "--latency-budget", "50ms", "--backend", "torch",
                                  "--out", fx.fresh("search_ro"), *EVO])
    if "Traceback" in err:
        return "traceback", (error_lines(err) or ["?"])[-1]
    if rc != 0:
        return "unclear", "refused because the optional table cache cannot be written: " + (error_lines(err) or
                                                                                             ["?"])[-1]
    said = [ln for ln in (out + err).splitlines() if "warning" in ln and "could not be kept" in ln]
    if not said:
        return "unclear", "ran, but did not say that the table was not kept"
    return "clean", said[0].strip()


def _class_folders(fx: Fixtures, name: str) -> str:
    from PIL import Image

    root = fx.fresh(name)
    for split in ("train", "test"):
        for c, cls in enumerate(("cat", "dog")):
            os.makedirs(os.path.join(root, split, cls))
            for i in range(4 if split == "train" else 2):
                Image.fromarray(np.full((16, 16, 3), 40 * c + 10 * i, np.uint8)).save(
                    os.path.join(root, split, cls, f"{i}.png"))
    return root


def _link_loop(fx: Fixtures) -> List[str]:
    root = _class_folders(fx, "folder_loop")
    os.symlink(os.path.join(root, "train", "cat"), os.path.join(root, "train", "cat", "again"))
    args = [("2" if a == "8" else a) for a in TRAIN]
    return ["train", "--dataset", "folder", "--data", root, *args, "--out", fx.fresh("train_loop")]


def _decoded(fx: Fixtures, name: str, array: np.ndarray, want: int) -> Tuple[str, str]:
    """An image file of an unusual mode, decoded by the loader every dataset uses: the values it means."""
    from PIL import Image

    from tavt_kit.data.datasets import _open_image

    folder = fx.fresh("images67")
    os.makedirs(folder)
    path = os.path.join(folder, name)
    Image.fromarray(array).save(path)
    mode = Image.open(path).mode
    try:
        got = np.asarray(_open_image(path))
    except tavt_kit.TavtKitError as e:
        return "unclear", f"a valid {mode} image refused: {e}"
    except Exception as e:
        return "traceback", f"{type(e).__name__}: {e}"
    if got.shape[-1] != 3 or int(got[0, 0, 0]) != want:
        return "silent acceptance", f"{mode} image decoded to {got[0, 0].tolist()}, expected {want} (the value it means)"
    return "clean", f"{mode} image decoded to {got[0, 0].tolist()}"


def before_stages(fx, argv, rc, out, err):
    """A demo flag a late stage refuses must stop the demo before its first stage runs."""
    if rc == 0 or rc is None:
        return None
    if os.path.isdir(os.path.join(opt(argv, "--out"), "train")):
        return "silent acceptance", "the stages ran before the refusal: " + (error_lines(err) or ["?"])[-1]
    return None


def issue67_cases() -> List[Case]:
    """Result files, the Python API, flags and images of issue #67 (their names end in ``(#67)``)."""
    def search_cli(fx, *a):
        return ["search", "--checkpoint", fx.sup, *a, "--out", fx.fresh("s67"), *EVO]

    def profile(fx, *a):
        return ["bench", "profile", "--checkpoint", fx.sup, *a, "--time-budget", "0.05", "--min-repeats", "3",
                "--no-plot", "--quiet", "--out", fx.fresh("p67")]

    demo = ["demo", "--quick", "--dataset", "demo", "--format", "tflite"]
    from tavt_kit.search import EvolutionSettings

    return [
        # the report and the result files
        Case("report: export.json with files null beside its artefacts (#67)",
             lambda fx: report_argv(fx, "--export", tampered_export(fx, "export_nf",
                                                                    lambda f, d: d.update(files=None))),
             must=["export.json", "files"], post=distrust(["model.xml", "model.onnx"])),
        Case("report: tampered search.json, a pick merging 11 of 16 tokens in one block, old MACs (#67)",
             lambda fx: report_argv(fx, search=search_edit(fx, "search_merge_most.json",
                                                           _best_edit(_merge_most, "merge"))),
             must=["budgets[0].best", ("merge", "half")]),
        Case("report: tampered search.json, a pick's counts changed, old MACs (#67)",
             lambda fx: report_argv(fx, search=search_edit(fx, "search_other_macs.json", _best_edit(_one_fewer))),
             must=["budgets[0].best.macs"]),
        Case("report: search.json with candidates null (#67)",
             lambda fx: report_argv(fx, search=search_edit(fx, "search_null_list.json",
                                                           lambda d: d.update(candidates=None))),
             must=["candidates"]),
        # the Python API
        Case("api: search_schedules('best.safetensors', ...) (a path for model=) (#67)",
             fn=lambda fx: api_outcome(lambda: _search_api(fx, model=fx.sup), accepted=lambda r: None)),
        Case("api: search_schedules(evolution=dict(population=2)) (#67)",
             fn=lambda fx: api_outcome(lambda: _search_api(fx, evolution=dict(population=2, generations=1, mutations=1,
                                                                              crossovers=1)),
                                       accepted=lambda r: None if r.doc["settings"]["population"] == 2
                                       else f"searched with population {r.doc['settings']['population']}")),
        Case("api: search_schedules(evolution=dict(populaton=2)) (a misspelt key) (#67)",
             fn=lambda fx: api_outcome(lambda: _search_api(fx, evolution=dict(populaton=2)),
                                       must=["evolution", "populaton"])),
        Case("api: search_schedules(evolution=5) (#67)",
             fn=lambda fx: api_outcome(lambda: _search_api(fx, evolution=5), must=["evolution"])),
        Case("api: EvolutionSettings(population=0) (#67)",
             fn=lambda fx: api_outcome(lambda: EvolutionSettings(population=0), must=["population"])),
        Case("api: EvolutionSettings(mutation_prob=1.5) (#67)",
             fn=lambda fx: api_outcome(lambda: EvolutionSettings(mutation_prob=1.5), must=["mutation_prob"])),
        Case("api: search_schedules(budgets='50ms') is one budget (#67)",
             fn=lambda fx: api_outcome(lambda: _search_api(fx, budgets="50ms", latency=LatencyOptions(table=fx.table)),
                                       accepted=_one_budget("50ms"))),
        Case("api: search_schedules(budgets=None) (#67)",
             fn=lambda fx: api_outcome(lambda: _search_api(fx, budgets=None), must=["budgets"])),
        Case("api: EvaluationOptions(subset='10') (#67)",
             fn=lambda fx: api_outcome(lambda: EvaluationOptions(subset="10"), must=["subset"])),
        Case("api: LatencyOptions(table=T, source='measure') (#67)",
             fn=lambda fx: api_outcome(lambda: LatencyOptions(table=fx.table, source="measure"),
                                       must=["table", "source"])),
        Case("api: search_schedules(space=SpaceOptions(reducers='fold'))",
             fn=lambda fx: api_outcome(lambda: _search_api(fx, space=SpaceOptions(reducers="fold")),
                                       must=["space.reducers", "fold"])),
        # flags
        Case("flags: search --latency-budget 1e400ms (#67)", lambda fx: search_cli(fx, "--latency-budget", "1e400ms"),
             must=["--latency-budget", "finite"]),
        Case("flags: search --macs-budget 1e400 (#67)", lambda fx: search_cli(fx, "--macs-budget", "1e400"),
             must=["--macs-budget", "finite"]),
        Case("flags: search --latency-table T --latency-source measure (#67)",
             lambda fx: search_cli(fx, "--latency-table", fx.table, "--latency-source", "measure",
                                   "--latency-budget", "50ms"), must=["--latency-table", "--latency-source"]),
        Case("flags: search --mutation-prob 1.5 (#67)", lambda fx: search_cli(fx, "--mutation-prob", "1.5"),
             must=["--mutation-prob"]),
        Case("flags: export --pick searched without --search (#67)",
             lambda fx: ["export", "--checkpoint", fx.sup, "--pick", "searched", "--format", "onnx", "--no-verify",
                         "--out", fx.fresh("e67")], must=["--pick", "--search"]),
        Case("flags: bench profile --grid 0 (#67)", lambda fx: profile(fx, "--grid", "0"), must=["--grid", "2"]),
        Case("flags: bench profile --grid 1 (#67)", lambda fx: profile(fx, "--grid", "1"), must=["--grid", "2"]),
        Case("flags: bench profile --random-range 0.9,0.5 (#67)",
             lambda fx: profile(fx, "--grid", "3", "--validate", "2", "--random-range", "0.9,0.5"),
             must=["--random-range"]),
        Case("flags: bench profile --random-range 0.5,0.9 without --validate (#67)",
             lambda fx: profile(fx, "--grid", "3", "--random-range", "0.5,0.9"), must=["--random-range", "--validate"]),
        Case("flags: bench --random-range 1.5,2 (#67)",
             lambda fx: ["bench", "--checkpoint", fx.sup, "--random", "2", "--random-range", "1.5,2", "--quiet",
                         "--time-budget", "0.05", "--no-plot", "--out", fx.fresh("b67")], must=["--random-range"]),
        Case("flags: distill --drop-blocks '' (#67)",
             lambda fx: ["distill", "--checkpoint", fx.sup, "--drop-blocks", "", "--steps", "1", "--out",
                         fx.fresh("d67")], must=["--drop-blocks"]),
        Case("flags: demo --format tflite is refused before the first stage (#67)",
             lambda fx: demo + ["--out", fx.fresh("demo67")], must=["--format", "tflite"], post=before_stages,
             timeout=120),
        Case("search of a checkpoint in a read-only folder without --latency-table (#67)", fn=readonly_table_cache),
        # images and folders (the data part of the issue)
        Case("data: a class folder holding a link to itself (a loop) (#67)", _link_loop, must=["again"]),
        Case("data: a 16-bit grey PNG decodes to the values it means (#67)",
             fn=lambda fx: _decoded(fx, "grey16.png", np.full((8, 8), 40000, np.uint16), round(40000 / 257))),
        Case("data: a 32-bit float TIFF decodes to the values it means (#67)",
             fn=lambda fx: _decoded(fx, "float.tiff", np.full((8, 8), 0.5, np.float32), 128)),
    ]


def all_cases() -> List[Case]:
    return (old_cases(None) + report_cases() + lock_cases() + disk_cases() + table_cases() + drop_cases()
            + wrong_file_cases() + option_cases() + cub_cases() + flag_cases() + overwrite_cases() + issue67_cases()
            + slow_cases())


# ---------------------------------------------------------------------------------------------- running
def run_case(fx: Fixtures, case: Case) -> Tuple[str, str]:
    try:
        if case.setup:
            case.setup(fx)
        if case.fn is not None:
            return case.fn(fx)
        argv = case.argv(fx)
        must = case.must(fx) if callable(case.must) else case.must
        rc, out, err = run_cli(fx, argv, case.timeout)
        if old_spelling(err):
            return "unclear", f"{old_spelling(err)}  [the case uses an old spelling]"
        if case.post is not None and "Traceback" not in err:
            judged = case.post(fx, argv, rc, out, err)
            if judged is not None:
                return judged
        return judge_error(rc, err, must)
    finally:
        if case.cleanup:
            case.cleanup(fx)


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--only", metavar="SUBSTRING", help="run only the cases whose name contains SUBSTRING")
    p.add_argument("--list", action="store_true", help="print the cases' names and stop")
    p.add_argument("--slow", action="store_true", help="add the expensive cases (a precision search rerun, the demo)")
    p.add_argument("--keep", action="store_true", help="keep the temporary folder (its path is printed)")
    p.add_argument("--workdir", metavar="DIR", help="make the files in DIR and keep them; the fixtures found there "
                   "(from an earlier --workdir run) are reused")
    p.add_argument("--verbose", action="store_true", help="print each case's line, clean ones too")
    a = p.parse_args()
    cases = [c for c in all_cases() if (a.slow or not c.slow or (a.only and a.only in c.name))
             and (not a.only or a.only in c.name)]
    if a.list:
        for c in cases:
            print(c.name)
        return 0
    counts = {k: 0 for k in KINDS}
    d = os.path.abspath(a.workdir) if a.workdir else tempfile.mkdtemp(prefix="probe-bad-input-")
    os.makedirs(d, exist_ok=True)
    fx = Fixtures(d)
    torch.set_num_threads(1)
    t0 = time.time()
    try:
        for case in cases:
            t = time.time()
            try:
                kind, line = run_case(fx, case)
            except Exception as e:  # the probe's own fixture failed: said, not hidden
                kind, line = "unclear", f"(probe could not run this case: {type(e).__name__}: {str(e)[:300]})"
            kind = "clean" if kind in ("clean", "clean error") else kind
            counts[kind] += 1
            print(f"{kind:<18} {case.name}  [{time.time() - t:.0f}s]" +
                  (f"\n    {line}" if line and (a.verbose or kind != "clean") else ""), flush=True)
    finally:
        fx.kill_all()
        if a.keep or a.workdir:
            print(f"kept {d}")
        else:
            shutil.rmtree(d, ignore_errors=True)
    total = sum(counts.values())
    print(f"\n{total} cases: {counts['clean']} clean, {counts['traceback']} tracebacks, "
          f"{counts['silent acceptance']} silent acceptances, {counts['data loss']} data loss, "
          f"{counts['unclear']} unclear (other)  [{time.time() - t0:.0f}s]")
    return 0 if counts["clean"] == total else 1


if __name__ == "__main__":
    sys.exit(main())
