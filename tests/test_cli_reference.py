"""docs/cli.md is the reference generated from the command's parsers, and stays so."""
import os
import subprocess
import sys

from tavt_kit.cli import COMMANDS
from tavt_kit.cli.reference import REGENERATE, cli_reference

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DOC = os.path.join(ROOT, "docs", "cli.md")


def test_docs_cli_md_is_the_generated_reference():
    text = cli_reference()
    with open(DOC, encoding="utf-8") as f:
        on_disk = f.read()
    assert on_disk == text, f"docs/cli.md is stale: regenerate it with `{REGENERATE}`"


def test_every_command_and_visible_flag_is_in_the_reference():
    from test_vocabulary import PARSERS, _options

    text = cli_reference()
    for name in COMMANDS:
        assert f"## fgvc-kit {name}\n" in text, name
    missing = {name: [f for f in _options(p) if f"`{f}" not in text] for name, p in PARSERS.items()}
    assert not {k: v for k, v in missing.items() if v}, missing


def test_the_reference_does_not_depend_on_the_terminal_or_the_folder(tmp_path):
    """Run from another folder with a narrow and a wide terminal: the same text, and no path of this machine."""
    env = dict(os.environ, PYTHONPATH=ROOT + os.pathsep + os.environ.get("PYTHONPATH", ""))
    outs = []
    for columns in ("40", "250"):
        env["COLUMNS"] = columns
        run = subprocess.run([sys.executable, "-m", "tavt_kit.cli.reference"], cwd=tmp_path, env=env,
                             capture_output=True, text=True, check=True)
        outs.append(run.stdout)
    assert outs[0] == outs[1] == cli_reference()
    for where in {ROOT, str(tmp_path), os.path.expanduser("~"), sys.prefix}:
        assert where not in outs[0], where
