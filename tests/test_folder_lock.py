"""One writer per output folder: a second process is refused with the holder's PID, a killed holder's lock is
taken over, and one process may nest the folders it holds (the demo's stages)."""
from __future__ import annotations

import os
import signal
import subprocess
import sys

import pytest

from tavt_kit.cli import main
from tavt_kit.errors import FolderBusyError
from tavt_kit.lock import LOCK_FILE, folder_lock, held_folders, read_holder

pytestmark = pytest.mark.skipif(sys.platform == "win32", reason="folder locks use fcntl.flock")

HOLD = ("import sys, time\n"
        "from tavt_kit.lock import folder_lock\n"
        "with folder_lock(sys.argv[1], command='fgvc-kit train --dataset-option seed=1 --out held'):\n"
        "    print('held', flush=True)\n"
        "    time.sleep(300)\n")


@pytest.fixture
def holder():
    """Start a process that holds a folder; yields a function (folder -> the process)."""
    procs = []

    def start(folder):
        proc = subprocess.Popen([sys.executable, "-c", HOLD, str(folder)], stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE, text=True)
        procs.append(proc)
        line = proc.stdout.readline().strip()
        assert line == "held", proc.stderr.read()
        return proc

    yield start
    for proc in procs:
        if proc.poll() is None:
            proc.kill()
        proc.wait()
        proc.stdout.close()
        proc.stderr.close()


def test_a_second_process_is_refused_with_the_holders_pid(tmp_path, holder):
    out = tmp_path / "run"
    proc = holder(out)
    assert read_holder(out)["pid"] == proc.pid
    with pytest.raises(FolderBusyError) as e:
        with folder_lock(out):
            pass
    msg = str(e.value)
    assert "\n" not in msg and str(out) in msg and f"PID {proc.pid}" in msg and "fgvc-kit train" in msg
    # refusing touched nothing: the holder's record is still there
    assert read_holder(out)["pid"] == proc.pid


WRITERS = {
    "train": ["train", "--dataset", "demo"],
    "distill": ["distill", "--checkpoint", "missing.safetensors"],
    "search": ["search", "--checkpoint", "missing.safetensors"],
    "export": ["export", "--checkpoint", "missing.safetensors"],
    "bench measure": ["bench", "--checkpoint", "fgvc_tiny"],
    "bench profile": ["bench", "profile", "--checkpoint", "fgvc_tiny"],
    "bench predict": ["bench", "predict", "missing.json"],
    "prune": ["prune", "--checkpoint", "missing.safetensors", "--channel-keep-ratio", "0.7"],
    "demo": ["demo", "--quick"],
}


def _never_run(monkeypatch, command: str) -> None:
    """The command's work fails the test: it must be refused before it starts."""
    from tavt_kit.cli import command_module

    def run(args):
        raise AssertionError(f"fgvc-kit {command} ran without holding its folder")

    monkeypatch.setattr(command_module(command), "run", run)


@pytest.mark.parametrize("name", list(WRITERS) + ["report"])
def test_every_command_that_writes_a_folder_is_refused_before_any_work(tmp_path, holder, capsys, monkeypatch, name):
    out = tmp_path / "out"
    proc = holder(out)
    argv = WRITERS.get(name) or ["report", "--search", str(tmp_path / "search.json")]
    _never_run(monkeypatch, argv[0])
    argv = argv + ["--out", str(out)]
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and f"PID {proc.pid}" in err and str(out) in err, err
    assert "--dataset-option seed=1" in err  # the holder's command as it was typed
    assert sorted(os.listdir(out)) == [LOCK_FILE]  # nothing was written


def test_the_reports_default_folder_is_held(tmp_path, holder, capsys, monkeypatch):
    _never_run(monkeypatch, "report")
    (tmp_path / "search").mkdir()
    proc = holder(tmp_path / "search" / "report")
    assert main(["report", "--search", str(tmp_path / "search" / "search.json")]) == 2
    assert f"PID {proc.pid}" in capsys.readouterr().err


def test_a_lock_left_by_a_killed_process_is_taken_over(tmp_path, holder):
    out = tmp_path / "run"
    proc = holder(out)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert (out / LOCK_FILE).exists() and read_holder(out)["pid"] == proc.pid  # the stale record is still there
    with folder_lock(out, command="second"):
        rec = read_holder(out)
        assert rec["pid"] == os.getpid() and rec["command"] == "second"
    assert not (out / LOCK_FILE).exists()  # released: the lock file goes with it
    assert out.is_dir()


def test_release_leaves_the_folder_as_the_command_left_it(tmp_path):
    kept, empty = tmp_path / "kept", tmp_path / "a" / "empty"
    with folder_lock(kept):
        (kept / "results.json").write_text("{}")
    assert sorted(os.listdir(kept)) == ["results.json"]
    with folder_lock(empty):  # created by the lock and nothing written: removed again, as before the command
        assert empty.is_dir()
    assert not (tmp_path / "a").exists()
    (tmp_path / "there").mkdir()
    with folder_lock(tmp_path / "there"):
        pass
    assert (tmp_path / "there").is_dir()


def test_one_process_may_nest_the_folders_it_holds(tmp_path, holder):
    demo = tmp_path / "demo"
    with folder_lock(demo):
        with folder_lock(demo):  # re-entering a folder this process holds
            with folder_lock(demo / "train"):  # a stage folder inside it
                assert {os.path.realpath(demo), os.path.realpath(demo / "train")} <= set(held_folders())
            assert (demo / LOCK_FILE).exists()
        assert (demo / LOCK_FILE).exists()  # still held by the outer block
        assert read_holder(demo)["pid"] == os.getpid()
    assert not (demo / LOCK_FILE).exists() and held_folders() == []
    # while this process holds a folder, another process is still refused
    with folder_lock(demo):
        probe = subprocess.run([sys.executable, "-c", "import sys\nfrom tavt_kit.lock import folder_lock\n"
                                "with folder_lock(sys.argv[1]):\n    pass\n", str(demo)],
                               capture_output=True, text=True)
        assert probe.returncode != 0 and f"PID {os.getpid()}" in probe.stderr


def test_the_demos_stages_run_as_commands_inside_the_demos_folder(tmp_path):
    """The demo holds its folder and runs each stage through ``invoke``, which holds the stage's folder: the
    same process nests them (no deadlock), and each stage folder is held while its command runs."""
    from tavt_kit import demo
    from tavt_kit.cli.common import invoke

    seen = []

    class Stage:
        @staticmethod
        def add_arguments(p):
            p.add_argument("--out")

        @staticmethod
        def output_folder(args):
            return args.out

        @staticmethod
        def run(args):
            seen.append(sorted(held_folders()))
            return 0

    out = tmp_path / "demo"
    args = type("A", (), {"out": str(out)})()
    assert demo.output_folder(args) == str(out)
    with folder_lock(demo.output_folder(args)):
        assert invoke(Stage, "train", ["--out", str(out / "train")]) == 0
        assert invoke(Stage, "report", ["--out", str(out)]) == 0  # a stage writing the demo's own folder
    assert seen == [sorted([os.path.realpath(out), os.path.realpath(out / "train")]), [os.path.realpath(out)]]
    assert not (out / LOCK_FILE).exists()
