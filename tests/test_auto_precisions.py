"""precisions: what the target declares it can run (target_precisions), "auto" resolved by a measurement (see
test_precisions_measured.py), and the note of an fp32-only search."""
import pytest

import tavt_kit
from tavt_kit.cli import main
from tavt_kit.search import parse_precisions, precisions as auto
from tavt_kit.target import DeploymentTarget

OV = DeploymentTarget(backend="openvino", device="cpu")


def caps(*names):
    return lambda device: names


def test_auto_takes_what_the_device_reports(monkeypatch):
    monkeypatch.setattr(auto, "_have_nncf", lambda: True)
    found, why = auto.target_precisions(OV, caps("FP32", "BF16", "INT8", "BIN", "EXPORT_IMPORT"))
    assert found == ("fp32", "bf16", "int8")
    assert "fp16 (no native FP16 on this CPU)" in why
    # an AVX2 CPU: no native bf16, so OpenVINO would run f32 under the bf16 name; it is left out, and why is said
    found, why = auto.target_precisions(OV, caps("FP32", "INT8"))
    assert found == ("fp32", "int8") and "bf16 (no native BF16" in why


def test_auto_leaves_int8_out_without_nncf(monkeypatch):
    monkeypatch.setattr(auto, "_have_nncf", lambda: False)
    found, why = auto.target_precisions(OV, caps("FP32", "BF16", "INT8"))
    assert found == ("fp32", "bf16")
    assert "int8 (NNCF is not installed: pip install nncf)" in why


def test_auto_on_a_runtime_that_deploys_fp32_only():
    found, why = auto.target_precisions(DeploymentTarget(backend="torch"), caps("FP32", "BF16", "INT8"))
    assert found == ("fp32",) and "torch" in why


def test_auto_without_a_latency_budget_is_fp32_and_is_said_once_with_one():
    from tavt_kit.bench.precision_speed import LatencyRatio, decide

    measure = (lambda model, target: decide({"int8": LatencyRatio(0.5, 0.4, 0.6, 10)}, {}, target))
    said = []
    assert auto.resolve_precisions("auto", OV, False, said.append, model=object(), measure=measure) == ("fp32",)
    assert said == []  # a MAC count has no precision
    assert auto.resolve_precisions(" AUTO ", OV, True, said.append, model=object(), measure=measure) == ("fp32", "int8")
    assert len(said) == 1 and said[0].startswith("precisions auto: fp32, int8 (int8 0.50x of fp32 measured")
    assert auto.resolve_precisions("int8", OV, True, said.append) == ("fp32", "int8")
    # no model to time (a caller that gives none): fp32, said
    assert auto.resolve_precisions("auto", OV, True, said.append) == ("fp32",) and "no model" in said[-1]
    # a runtime that deploys fp32 only: nothing to time
    assert auto.resolve_precisions("auto", DeploymentTarget(backend="torch"), True, said.append,
                                   model=object(), measure=measure) == ("fp32",)
    assert said[-1] == "precisions auto: fp32 (torch deploys fp32 only here)"


def test_auto_stands_alone():
    for bad in ("auto,int8", ["fp32", "auto"]):
        with pytest.raises(tavt_kit.ConfigError, match="^precisions=.*'auto' stands alone"):
            parse_precisions(bad)


def test_cli_refuses_auto_in_a_list(tmp_path, capsys):
    m = tavt_kit.create_model("fgvc_tiny", depth=2, img_size=32)
    ckpt = str(tavt_kit.save_checkpoint(m, tmp_path / "m.safetensors"))
    rc = main(["search", "--checkpoint", ckpt, "--latency-budget", "5ms", "--precisions", "auto,int8",
               "--out", str(tmp_path / "s")])
    err = capsys.readouterr().err.strip().splitlines()
    assert rc != 0 and len(err) == 1 and "'auto' stands alone" in err[0], err


def test_an_fp32_search_names_the_lower_precisions_it_leaves_out(monkeypatch):
    monkeypatch.setattr(auto, "target_precisions", lambda target: (("fp32", "bf16", "int8"), "..."))
    said = []
    auto.note_lower_precisions(OV, said.append)
    assert said == ["note: precisions fp32 only: bf16, int8 also run on this target but were left out untimed "
                    "(precisions='auto' times them beside fp32 and searches those faster here)"]
    from tavt_kit.cli import build_parser
    from tavt_kit.cli.common import flag_message

    assert "(--precisions auto times them" in flag_message(said[0], build_parser("search"))  # as the CLI says it
    said.clear()
    assert auto.resolve_precisions("fp32", OV, True, said.append, measured_here=True) == ("fp32",)
    assert len(said) == 1 and "int8" in said[0]
    monkeypatch.setattr(auto, "target_precisions", lambda target: (("fp32",), "..."))
    said.clear()
    auto.note_lower_precisions(OV, said.append)
    assert said == []
