import json
import subprocess
import sys

import pytest

import tavt_kit
from tavt_kit.cli import main


def test_help_lists_every_subcommand(capsys):
    with pytest.raises(SystemExit):
        main(["--help"])
    out = capsys.readouterr().out
    for cmd in ("train", "distill", "search", "export", "bench", "report", "evaluate", "info", "demo"):
        assert cmd in out


def test_info_on_builtin_model_and_schedule(capsys, tmp_path):
    assert main(["info", "--keep-ratio", "3:0.5"]) == 0
    out = capsys.readouterr().out
    assert "fgvc_tiny" in out and "MACs (drop)" in out and "x fewer" in out
    model = tavt_kit.create_model("fgvc_tiny")
    ckpt = tavt_kit.save_checkpoint(model, tmp_path / "m.safetensors")
    model.make_schedule([64, 48, 32, 16, 8, 4]).save(tmp_path / "drop.json")
    assert main(["info", str(ckpt), "--drop", str(tmp_path / "drop.json"), "--json"]) == 0
    info = json.loads(capsys.readouterr().out)
    assert info["spec"]["depth"] == 6
    assert info["macs_at_schedule"]["total"] < info["macs_full"]["total"]
    assert info["macs_at_schedule"]["schedule"] == [64, 48, 32, 16, 8, 4]


@pytest.mark.parametrize("argv, expected", [
    (["info", "--drop", "64,65,3,3,3,3"], "schedule[1] = 65 is above the grid of 64"),
    (["info", "--drop", "64,32"], "schedule has 2 counts, the model has 6 blocks"),
    (["info", "--drop", "a,b"], "--drop: expected a drop-config JSON file or comma-separated integers"),
    (["info", "--checkpoint", "nosuch_model"], "unknown model 'nosuch_model'"),
    (["info", "--checkpoint", "missing.safetensors"], "missing.safetensors: checkpoint not found"),
    (["info", "--checkpoint", "vit_base_patch16_224", "--img-size", "450"], "img_size 450 is not a multiple of the patch size 16"),
])
def test_bad_input_is_one_line_and_nonzero(capsys, argv, expected):
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert expected in err and err.count("\n") == 1 and "Traceback" not in err


def test_console_script_exit_status():
    proc = subprocess.run([sys.executable, "-m", "tavt_kit.cli", "info", "--drop", "1,2,3,4,5,6"],
                          capture_output=True, text=True)
    assert proc.returncode == 2 and "increases" in proc.stderr and "Traceback" not in proc.stderr
