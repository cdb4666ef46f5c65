"""A search over an hour on this machine says so once, after its first generation, with what shortens it."""
import pytest

import tavt_kit
import tavt_kit.progress
from tavt_kit.cli import main
from tavt_kit.search import EvolutionSettings, ShipPolicy

pytestmark = pytest.mark.usefixtures("one_thread")


def test_a_long_search_says_its_eta_once_and_the_command_names_the_flags(tmp_path, trained_checkpoint, monkeypatch,
                                                                          capsys):
    model = tavt_kit.load_checkpoint(trained_checkpoint)
    budget = 0.8 * tavt_kit.count_macs(model).total() / 1e6
    evo = EvolutionSettings(population=3, generations=1, mutations=2, crossovers=2, seed=0)
    lines = []
    tavt_kit.search_schedules(model, None, [f"{budget:.4g}M MACs"], evolution=evo,
                              ship=ShipPolicy(parent_search=False), out=str(tmp_path / "quick"), log=lines.append)
    assert not [s for s in lines if s.startswith("search: ETA")]  # seconds here: nothing said
    monkeypatch.setattr(tavt_kit.progress, "LONG_JOB_S", 0.0)  # as on a machine where it takes hours
    lines = []
    tavt_kit.search_schedules(model, None, [f"{budget:.4g}M MACs"], evolution=evo,
                              ship=ShipPolicy(parent_search=False), out=str(tmp_path / "lib"), log=lines.append)
    said = [s for s in lines if s.startswith("search: ETA")]
    assert len(said) == 1 and "for 1 generations; over an hour" in said[0] and "--" not in said[0]
    capsys.readouterr()
    assert main(["search", "--checkpoint", trained_checkpoint, "--macs-budget", f"{budget:.4g}M", "--population", "3",
                 "--generations", "1", "--mutations", "2", "--crossovers", "2", "--no-parent-search",
                 "--out", str(tmp_path / "cli")]) == 0
    out = [s for s in capsys.readouterr().out.splitlines() if s.startswith("search: ETA")]
    assert len(out) == 1 and out[0].endswith("--generations or --population to shorten it")
