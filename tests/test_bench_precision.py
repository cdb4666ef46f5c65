"""Latency at each precision: bf16/fp16 only where the CPU has them, int8 through NNCF, tables that know theirs.

(Issue #17 item 1; was tests/test_latency_precision.py.)
"""
import json
import sys

import pytest
import torch

import tavt_kit
from tavt_kit.bench import LatencyTable, TimingPolicy, measure_latency, profile_latency
from tavt_kit.cli import main
from tavt_kit.errors import BackendError, ConfigError, LatencyTableError
from tavt_kit.target import DeploymentTarget, Precision

QUICK = TimingPolicy(warmup=1, min_repeats=3, max_repeats=3, budget_s=0.05)

pytestmark = [pytest.mark.usefixtures("one_thread"), pytest.mark.nncf]

OV = DeploymentTarget(backend="openvino")
EAGER = DeploymentTarget(backend="torch")


def tiny(scorer="tavt"):
    torch.manual_seed(0)
    return tavt_kit.create_model("fgvc_tiny", depth=3, img_size=32, scorer=scorer).eval()


@pytest.fixture
def no_native_low_precision(monkeypatch):
    """A CPU whose OpenVINO reports neither BF16 nor FP16."""
    import tavt_kit.export.openvino as ov

    monkeypatch.setattr(ov, "device_capabilities", lambda device="cpu": ("FP32", "INT8"))


@pytest.mark.parametrize("scorer", ["tavt", "cls", "tavt-sampled"])  # cls: its parts once exported an If that NNCF could not run
def test_int8_table_is_profiled_from_quantised_parts_and_knows_its_precision(scorer):
    m = tiny(scorer)
    table = profile_latency(m, target=OV.with_(precision="int8"), grid=3, policy=QUICK, calibrate=False)
    assert table.precision == "int8" and table.target.precision == "int8" and table.target.backend == "openvino"
    assert table.data["target"]["int8"]["calibration"] == "random inputs (latency only)"
    assert "NNCF" in table.data["target"]["int8"]["quantized_with"]
    # one quantised part per block kind, reshaped to and run at every grid point
    assert len(table.data["plain_ms"]["measured"]) == len(table.data["grid"]) == 3
    assert all(t > 0 for t in table.data["plain_ms"]["measured"] + table.data["head_ms"]["measured"])
    full, dropped = table.predict(m.full_schedule()), table.predict([12, 8, 4])
    assert full > 0 and dropped > 0  # (which is faster is not asserted: sub-ms timings of a tiny model are noise)
    table.check(m, table.target)
    with pytest.raises(LatencyTableError, match="profiled at int8, not bf16; profile a table with precision=bf16"):
        table.check(m, table.target.with_(precision="bf16"))
    with pytest.raises(LatencyTableError, match="profiled at int8, not fp32"):
        table.check(m, table.target.with_(precision="f32"))  # any spelling of a precision


def test_precision_names_and_check_messages():
    assert [Precision.parse(p) for p in ("f32", "f16", "bf16", "int8")] == ["fp32", "fp16", "bf16", "int8"]
    assert [Precision.OPENVINO_HINT[p] for p in Precision.ALL] == ["f32", "bf16", "f16", "f32"]
    with pytest.raises(ConfigError, match="precision='int4': expected one of fp32, bf16, fp16, int8"):
        DeploymentTarget(precision="int4")
    from tavt_kit.cli.bench import PRECISIONS

    assert PRECISIONS == Precision.ALL  # the command line's names are the library's


def test_a_table_made_before_precisions_reads_as_fp32(tmp_path):
    m = tiny()
    table = profile_latency(m, target=EAGER.with_(precision="f32"), grid=3, policy=QUICK, calibrate=False)  # any name
    assert table.precision == "fp32" and table.data["target"]["precision"] == "fp32"
    data = table.to_dict()
    data["target"].pop("precision", None)
    path = tmp_path / "old.json"
    path.write_text(json.dumps(data))
    old = LatencyTable.load(path)
    assert old.precision == "fp32"
    data["target"]["precision"] = "f32"  # tables before one precision vocabulary said f32 (and f16)
    assert LatencyTable(data).precision == "fp32" and LatencyTable(data).target == table.target
    data["target"]["precision"] = "f16"
    assert LatencyTable(data).precision == "fp16"
    data["target"]["precision"] = "bf16"
    bf16 = LatencyTable(data, source="t.json")
    assert bf16.precision == "bf16"
    bf16.check(target=OV.with_(precision="bf16"), fields=("precision",))
    with pytest.raises(LatencyTableError) as e:
        bf16.check(target=OV.with_(precision="int8"), fields=("precision",))
    assert str(e.value) == "t.json was profiled at bf16, not int8; profile a table with precision=int8"
    data["target"]["precision"] = "f8"
    with pytest.raises(LatencyTableError, match="malformed latency table: target.precision='f8': expected a precision, one of fp32, bf16, fp16, int8"):
        LatencyTable(data)
    old.check(target=EAGER)
    old.check(target=EAGER.with_(precision="f32"))
    with pytest.raises(LatencyTableError, match="profiled at fp32, not int8"):
        old.check(target=OV.with_(precision="int8"), fields=("precision",))
    # measuring at int8 with an fp32 table is refused before anything is exported
    with pytest.raises(LatencyTableError, match="profiled at fp32, not int8"):
        measure_latency(m, [[12, 8, 4]], target=OV.with_(precision="int8"), table=path, policy=QUICK)


def test_int8_measurement_runs_the_quantised_model():
    rep = measure_latency(tiny(), [[12, 8, 4]], target=OV.with_(precision="int8"), policy=QUICK)
    assert rep.target.precision == "int8" and rep.precision_used == "int8+fp32"
    assert rep.to_dict()["target"]["precision_requested"] == "int8"
    assert all(r.stats.p50 > 0 for r in rep.results)
    assert all(r.info.get("int8", {}).get("calibration") == "random inputs (latency only)" for r in rep.results)


def test_an_fp32_file_is_not_timed_as_int8(tmp_path):
    from tavt_kit.export.openvino import convert_openvino

    xml = convert_openvino(tiny(), tmp_path / "m.xml", schedule=[12, 8, 4]).xml_path
    with pytest.raises(ConfigError, match="precision=int8: .* is not a quantised file"):
        measure_latency(xml, target=OV.with_(precision="int8"), policy=QUICK)


def test_low_precision_is_refused_where_the_cpu_lacks_it(no_native_low_precision):
    for precision, name in (("bf16", "bf16"), ("f16", "fp16")):
        with pytest.raises(BackendError, match=f"precision={name}: this CPU has no native {name} inference"):
            measure_latency(tiny(), target=OV.with_(precision=precision), policy=QUICK)
        with pytest.raises(BackendError, match=f"no native {name} inference"):
            profile_latency(tiny(), target=OV.with_(precision=precision), grid=3, policy=QUICK)


def test_precision_needs_openvino_and_int8_needs_nncf(monkeypatch):
    with pytest.raises(ConfigError, match="precision=int8 is only available with backend=openvino"):
        measure_latency(tiny(), target=DeploymentTarget(backend="onnxruntime", precision="int8"))
    monkeypatch.setitem(sys.modules, "nncf", None)
    with pytest.raises(BackendError, match="pip install nncf") as e:
        profile_latency(tiny(), target=OV.with_(precision="int8"), grid=3, policy=QUICK)
    assert "\n" not in str(e.value) and "NNCF" in str(e.value)
    with pytest.raises(BackendError, match="pip install nncf"):
        measure_latency(tiny(), [[12, 8, 4]], target=OV.with_(precision="int8"), policy=QUICK)


def test_cli_int8_without_nncf_is_one_line_before_any_work(tmp_path, capsys, monkeypatch):
    monkeypatch.setitem(sys.modules, "nncf", None)
    import tavt_kit.models as models

    monkeypatch.setattr(models, "load_model", lambda *a, **k: pytest.fail("the model was loaded"))
    for mode in (["profile"], []):
        out = tmp_path / "x"
        assert main(["bench", *mode, "--checkpoint", "fgvc_tiny", "--backend", "openvino", "--precision", "int8",
                     "--out", str(out), "--quiet"]) == 2
        err = capsys.readouterr().err
        assert "pip install nncf" in err and "Traceback" not in err and len(err.strip().splitlines()) == 1
        assert not out.exists()


def test_cli_profile_at_int8_and_bad_precision(tmp_path, capsys, no_native_low_precision):
    out = tmp_path / "t"
    assert main(["bench", "profile", "--checkpoint", "fgvc_tiny", "--backend", "openvino", "--precision", "int8",
                 "--grid", "3", "--no-calibrate", "--warmup", "1", "--min-repeats", "3", "--max-repeats", "3",
                 "--out", str(out), "--quiet", "--no-plot"]) == 0
    assert json.loads((out / "latency_table.json").read_text())["target"]["precision"] == "int8"
    assert main(["bench", "--checkpoint", "fgvc_tiny", "--backend", "openvino", "--precision", "bf16",
                 "--out", str(tmp_path / "b")]) == 2
    err = capsys.readouterr().err
    assert "--precision bf16: this CPU has no native bf16" in err and "Traceback" not in err



def test_cli_predict_checks_the_tables_precision(tmp_path, capsys):
    table = profile_latency(tiny(), grid=3, policy=QUICK, calibrate=False)  # default: torch eager, fp32
    path = table.save(tmp_path / "t.json")
    assert main(["bench", "predict", path, "--precision", "fp32", "--keep-ratio", "0.5", "--out", str(tmp_path)]) == 0
    assert "fp32)" in capsys.readouterr().out
    assert main(["bench", "predict", path, "--precision", "int8", "--keep-ratio", "0.5", "--out", str(tmp_path)]) == 2
    assert "profiled at fp32, not int8; profile a table with --precision int8" in capsys.readouterr().err
    assert main(["bench", "predict", path, "--precision", "f32", "--out", str(tmp_path)]) == 0  # the deprecated alias
