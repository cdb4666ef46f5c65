"""An int8 latency table quantises its parts and whole models ahead of their timing, in parallel processes on as
many cores as it is timed on; each is then taken as made, and a second table in the same folder makes none."""
import pytest

import tavt_kit
from tavt_kit.bench import TimingPolicy, profile_latency
from tavt_kit.bench.quantize_ahead import QuantizeJob, quantize_ahead
from tavt_kit.errors import ExportError
from tavt_kit.target import DeploymentTarget

pytestmark = [pytest.mark.usefixtures("one_thread"), pytest.mark.nncf]
QUICK = TimingPolicy(warmup=1, min_repeats=3, max_repeats=3, budget_s=0.05)
INT8 = DeploymentTarget(backend="openvino", precision="int8", threads=1)


def tiny():
    return tavt_kit.create_model("fgvc_tiny", depth=2, img_size=32).eval()


def test_an_int8_table_quantises_everything_ahead_and_a_second_one_nothing(tmp_path):
    first, second = [], []
    t1 = profile_latency(tiny(), target=INT8, grid=3, policy=QUICK, workdir=str(tmp_path), time_limit_s=5,
                         progress=first.append)
    ahead = [m for m in first if "to int8 ahead" in m]
    assert len(ahead) == 1 and ahead[0].startswith("quantising ")
    n = int(ahead[0].split()[1])
    assert n == len(list(tmp_path.glob("*.int8.xml")))  # every part and whole model timed had its copy made ahead
    assert not [m for m in first if m.startswith("quantising part") or m.endswith("(int8)")], first  # none in place
    assert t1.precision == "int8" and t1.data["target"]["int8"]["calibration"] == "random inputs (latency only)"
    t2 = profile_latency(tiny(), target=INT8, grid=3, policy=QUICK, workdir=str(tmp_path), time_limit_s=5,
                         progress=second.append)
    assert not [m for m in second if "int8" in m and m.startswith("quantis")], second  # kept from the first
    assert set(t2.to_dict()["noise"]["points"]) == set(t1.to_dict()["noise"]["points"])


def test_quantisations_run_in_worker_processes_and_a_failure_names_its_file(tmp_path):
    from tavt_kit.export.onnx import export_module

    part = tavt_kit.create_model("fgvc_tiny", depth=1, img_size=32).blocks[0].eval()
    import torch

    src = str(tmp_path / "block.onnx")
    export_module(part, torch.randn(2, 17, part.attn.qkv.in_features), src, input_name="input",
                  output_name="output", dynamic_axes={0: "batch"})
    done = []
    jobs = [QuantizeJob(src, str(tmp_path / f"q{i}.xml"), [2, 17, part.attn.qkv.in_features],
                        lambda i=i: done.append(i)) for i in range(2)]
    assert quantize_ahead(jobs, workers=2) == 2
    assert sorted(done) == [0, 1] and all((tmp_path / f"q{i}.xml").is_file() for i in range(2))
    bad = tmp_path / "broken.onnx"
    bad.write_bytes(b"not a model")
    jobs = [QuantizeJob(str(bad), str(tmp_path / "b.xml"), [2, 17, 8], lambda: done.append("bad")),
            QuantizeJob(src, str(tmp_path / "q2.xml"), [2, 17, part.attn.qkv.in_features], lambda: done.append(2))]
    with pytest.raises(ExportError, match="broken.onnx"):
        quantize_ahead(jobs, workers=2)
    assert done[-1] == 2 and "bad" not in done  # the other one finished and was recorded


def test_a_script_without_a_main_guard_quantises_in_workers(tmp_path):
    # the workers are processes started afresh: a user's script that calls a search at its top level (no
    # ``if __name__ == "__main__"``) is not imported again by them, as multiprocessing's spawn would
    import subprocess
    import sys

    script = tmp_path / "notebook_like.py"
    script.write_text(
        "import torch, tavt_kit\n"
        "from tavt_kit.export.onnx import export_module\n"
        "from tavt_kit.bench.quantize_ahead import QuantizeJob, quantize_ahead\n"
        "blk = tavt_kit.create_model('fgvc_tiny', depth=1, img_size=32).blocks[0].eval()\n"
        "C = blk.attn.qkv.in_features\n"
        f"src = export_module(blk, torch.randn(2, 17, C), {str(tmp_path / 'b.onnx')!r}, input_name='input',\n"
        "                    output_name='output', dynamic_axes={0: 'batch'}).path\n"
        "done = []\n"
        f"jobs = [QuantizeJob(src, {str(tmp_path)!r} + f'/q{{i}}.xml', [2, 17, C], lambda i=i: done.append(i))\n"
        "        for i in range(2)]\n"
        "print('made', quantize_ahead(jobs, workers=2), sorted(done))\n")
    proc = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "made 2 [0, 1]" in proc.stdout


def test_int8_models_quantised_ahead_score_as_those_made_in_place():
    # the search's int8 verifications (the front, your model's int8 deployables) quantise several at once on a
    # target of several threads: the same models as quantised one by one
    import numpy as np
    import torch

    from tavt_kit.schedules import TokenSchedule
    from tavt_kit.search.deployed import DeployedScorer

    torch.manual_seed(0)
    model = tavt_kit.create_model("fgvc_tiny", depth=2, img_size=32).eval()
    calib = np.random.default_rng(0).standard_normal((16, 3, 32, 32)).astype(np.float32)
    images, labels = torch.randn(24, 3, 32, 32), torch.randint(0, model.num_classes, (24,))
    scheds = [TokenSchedule.full(2, model.num_patches), TokenSchedule([12, 8], model.num_patches)]
    ahead = DeployedScorer(model, lambda x: x, lambda: calib, batch_size=8, threads=2)
    in_place = DeployedScorer(model, lambda x: x, lambda: calib, batch_size=8, threads=1)
    try:
        assert ahead.workers == 2
        ahead.prepare(scheds)
        assert ahead.quantized == 2  # both made ahead, in worker processes
        for s in scheds:
            a, b = ahead.scores(s, "int8", images, labels)[0], in_place.scores(s, "int8", images, labels)[0]
            assert a.correct == b.correct and a.nll == pytest.approx(b.nll, rel=1e-5)
        assert ahead.quantized == 2 and in_place.quantized == 2  # scoring quantised nothing more
    finally:
        ahead.close()
        in_place.close()
