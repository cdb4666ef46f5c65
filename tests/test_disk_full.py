"""A full disk is one line naming the file and the space free, and the files written before stay intact:
checkpoints, training states, JSON results, logs, OpenVINO IRs, reports."""
from __future__ import annotations

import builtins
import errno
import json
import os

import pytest

from tavt_kit.cli import main
from tavt_kit.errors import DiskFullError, TavtKitError
from tavt_kit.files import append_text, write_json

ENOSPC = OSError(errno.ENOSPC, "No space left on device")


def _one_line(capsys) -> str:
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1, err
    assert "Traceback" not in err
    return err


def _no_temporaries(folder) -> None:
    left = [f for f in os.listdir(folder) if ".tmp-" in f]
    assert not left, left


def _full_safetensors(monkeypatch, fail_on):
    """safetensors' writer on a disk that fills up: for the files ``fail_on(path)`` picks it writes part of the
    file and raises what safetensors raises (SafetensorError ... os error 28)."""
    import safetensors.torch
    from safetensors import SafetensorError

    real = safetensors.torch.save_file

    def save_file(tensors, filename, metadata=None):
        if fail_on(os.fspath(filename)):
            with open(filename, "wb") as f:
                f.write(b"\0" * 100)
            raise SafetensorError("Error while serializing: I/O error: No space left on device (os error 28)")
        return real(tensors, filename, metadata=metadata)

    monkeypatch.setattr(safetensors.torch, "save_file", save_file)


def test_a_checkpoint_that_does_not_fit_keeps_the_earlier_one(tmp_path, monkeypatch):
    import torch

    import tavt_kit

    model = tavt_kit.create_model("fgvc_tiny", num_classes=3)
    path = tmp_path / "best.safetensors"
    tavt_kit.save_checkpoint(model, path)
    before = path.read_bytes()
    with torch.no_grad():
        next(model.parameters()).add_(1.0)
    _full_safetensors(monkeypatch, lambda p: True)
    with pytest.raises(DiskFullError) as e:
        tavt_kit.save_checkpoint(model, path)
    msg = str(e.value)
    assert "\n" not in msg and msg.startswith(f"{path}: ") and "free in" in msg and "needed" in msg
    assert "previous version is unchanged" in msg
    assert isinstance(e.value, TavtKitError) and isinstance(e.value, OSError) and e.value.errno == errno.ENOSPC
    assert e.value.needed and e.value.needed >= sum(p.numel() * 4 for p in model.parameters())
    assert path.read_bytes() == before
    _no_temporaries(tmp_path)


def test_train_at_a_full_disk_is_one_line_and_keeps_the_last_checkpoint(tmp_path, monkeypatch, capsys):
    """The periodic checkpoint of step 2 does not fit: the run stops with one line naming the file; the step-1
    checkpoint and training state are there, whole, to resume from."""
    from tavt_kit.models import read_spec

    writes = []

    def fail_on(p):
        writes.append(os.path.basename(p).split(".tmp-")[0])
        return writes.count("last.safetensors") >= 2

    _full_safetensors(monkeypatch, fail_on)
    out = tmp_path / "run"
    argv = ["train", "--dataset", "demo", "--model", "fgvc_tiny", "--img-size", "32", "--steps", "2",
            "--save-every", "1", "--eval-every", "1", "--batch-size", "8", "--no-test", "--no-progress",
            "--workers", "0", "--out", str(out)]
    assert main(argv) == 2
    err = _one_line(capsys)
    assert str(out / "last.safetensors") in err and "no space left" in err and "free in" in err
    assert read_spec(str(out / "last.safetensors"))["training"]["step"] == 1
    assert (out / "train_state.safetensors").is_file()
    _no_temporaries(out)
    assert not (out / ".fgvc-kit.lock").exists()


@pytest.mark.parametrize("where", ["replace", "fsync"])
def test_a_json_result_that_does_not_fit_keeps_the_earlier_one(tmp_path, monkeypatch, where):
    path = tmp_path / "search.json"
    write_json({"candidates": [1, 2, 3]}, path)
    before = path.read_bytes()

    def full(*a, **k):
        raise ENOSPC

    monkeypatch.setattr(os, where, full)  # the rename (a directory block) or the flush (delayed allocation)
    with pytest.raises(DiskFullError) as e:
        write_json({"candidates": list(range(1000))}, path)
    monkeypatch.undo()
    msg = str(e.value)
    assert "\n" not in msg and msg.startswith(f"{path}: ") and "free in" in msg
    assert path.read_bytes() == before
    _no_temporaries(tmp_path)


def test_a_quota_is_said_as_such(tmp_path, monkeypatch):
    def full(*a, **k):
        raise OSError(errno.EDQUOT, "Disk quota exceeded")

    monkeypatch.setattr(os, "replace", full)
    with pytest.raises(DiskFullError, match="quota") as e:
        write_json({}, tmp_path / "a.json")
    assert e.value.errno == errno.EDQUOT


def test_other_write_errors_are_not_called_a_full_disk(tmp_path, monkeypatch):
    def denied(*a, **k):
        raise PermissionError(errno.EACCES, "Permission denied")

    monkeypatch.setattr(os, "replace", denied)
    with pytest.raises(PermissionError):
        write_json({}, tmp_path / "a.json")
    _no_temporaries(tmp_path)


def test_a_log_line_that_does_not_fit_leaves_no_half_line(tmp_path, monkeypatch):
    path = tmp_path / "metrics.jsonl"
    append_text(path, '{"step": 1}\n')
    real = os.write

    def write(fd, data):  # a few bytes fit, then the disk is full
        if len(data) > 4:
            real(fd, bytes(data[:4]))
            raise ENOSPC
        return real(fd, data)

    monkeypatch.setattr(os, "write", write)
    with pytest.raises(DiskFullError, match="metrics.jsonl") as e:
        append_text(path, '{"step": 2, "loss": 0.5}\n')
    monkeypatch.undo()
    assert "lines before are kept" in str(e.value)
    assert path.read_text() == '{"step": 1}\n'


def test_an_openvino_ir_that_does_not_fit_keeps_the_earlier_one(tmp_path, monkeypatch):
    """OpenVINO says only "basic_ios::clear: iostream error": with the folder out of space that is a full disk;
    with space left it is passed on as it is."""
    ov = pytest.importorskip("openvino")
    import numpy as np
    from openvino import opset13 as ops

    import tavt_kit.files
    from tavt_kit.export.openvino import save_ir

    p = ops.parameter([1, 16], np.float32)
    model = ov.Model([ops.add(p, ops.constant(np.ones((1, 16), np.float32)))], [p])
    xml = tmp_path / "model.xml"
    save_ir(model, str(xml))
    before = (xml.read_bytes(), (tmp_path / "model.bin").read_bytes())

    def iostream(*a, **k):
        raise RuntimeError("Exception from src/core/src/pass/serialize.cpp:1364:\nbasic_ios::clear: iostream error")

    monkeypatch.setattr(ov, "save_model", iostream)
    with pytest.raises(RuntimeError, match="iostream") as e:  # plenty of space here: not a full disk
        save_ir(model, str(xml))
    assert not isinstance(e.value, DiskFullError)
    monkeypatch.setattr(tavt_kit.files, "free_bytes", lambda path: 500)
    with pytest.raises(DiskFullError) as e:
        save_ir(model, str(xml))
    msg = str(e.value)
    assert "\n" not in msg and msg.startswith(f"{xml}: ") and "500 bytes free" in msg
    assert (xml.read_bytes(), (tmp_path / "model.bin").read_bytes()) == before
    assert sorted(os.listdir(tmp_path)) == ["model.bin", "model.xml"]


def _full_report_folder(monkeypatch, folder):
    """The report's Markdown and HTML (or temporary files for them), however the report writes them, opened for
    writing in ``folder``, fail with ENOSPC on write."""
    real = builtins.open
    folder = os.path.realpath(folder)

    def fake_open(file, mode="r", *a, **k):
        f = real(file, mode, *a, **k)
        if any(c in mode for c in "wax") and isinstance(file, (str, os.PathLike)) and \
                os.path.basename(os.fspath(file)).startswith(("report.md", "report.html")) and \
                os.path.realpath(os.path.dirname(os.path.abspath(file))) == folder:
            def write(*_a, **_k):
                raise OSError(errno.ENOSPC, "No space left on device")
            f.write = write
        return f

    monkeypatch.setattr(builtins, "open", fake_open)


def _report_inputs(tmp_path):
    from test_report import write_inputs
    from tavt_kit.report import build_report

    sp, bp, ep = write_inputs(tmp_path)
    out = tmp_path / "report"
    paths = build_report(str(sp), str(out), str(bp), [str(ep)])
    return ["report", "--search", str(sp), "--bench", str(bp), "--export", str(ep), "--out", str(out)], out, paths


def test_a_report_at_a_full_disk_is_one_line_naming_where(tmp_path, monkeypatch, capsys):
    argv, out, _ = _report_inputs(tmp_path)
    _full_report_folder(monkeypatch, out)
    assert main(argv) == 2
    err = _one_line(capsys)
    monkeypatch.undo()
    assert str(out) in err and "no space left" in err and "free in" in err
    assert "were kept" not in err  # no claim about other files


def test_a_report_at_a_full_disk_keeps_the_earlier_report(tmp_path, monkeypatch, capsys):
    argv, out, paths = _report_inputs(tmp_path)
    before = {k: open(paths[k], "rb").read() for k in ("markdown", "html")}
    _full_report_folder(monkeypatch, out)
    assert main(argv) == 2
    monkeypatch.undo()
    assert {k: open(paths[k], "rb").read() for k in ("markdown", "html")} == before
    _no_temporaries(out)


def test_the_cli_names_the_output_folder_when_a_writer_names_no_file(tmp_path, monkeypatch, capsys):
    """A write error without a file name (a library's own writer) still says where: the output folder."""
    from tavt_kit.cli import command_module

    def run(args):
        raise RuntimeError("Error while serializing: I/O error: No space left on device (os error 28)")

    monkeypatch.setattr(command_module("bench"), "run", run)
    out = tmp_path / "bench"
    assert main(["bench", "--quiet", "--out", str(out)]) == 2
    err = _one_line(capsys)
    assert err.startswith(f"fgvc-kit: error: {out}: ") and "no space left" in err and "free in" in err
    assert json.dumps(err)  # plain text


def test_an_export_names_the_file_in_its_folder_not_the_staging_folder(tmp_path):
    """An export is built in a staging folder that goes away with the error: the line names the destination."""
    from tavt_kit.export.pipeline import _in_out_dir
    from tavt_kit.files import disk_full_error

    out = str(tmp_path / "export")
    stage = str(tmp_path / ".export.staging-abc")
    inner = os.path.join(stage, ".export-xyz")
    e = disk_full_error(ENOSPC, os.path.join(inner, "model.onnx"), 5000, kept=False)
    said = _in_out_dir(e, (inner, stage), out)
    assert isinstance(said, DiskFullError) and "staging" not in str(said) and ".export-xyz" not in str(said)
    assert str(said).startswith(os.path.join(out, "model.onnx") + ": ") and str(said).endswith(f"{out} keeps what it had")
    assert said.filename == os.path.join(out, "model.onnx") and said.needed == 5000
