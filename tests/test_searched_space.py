"""The space a search runs in, resolved before any work: your model's (merging, no training), a supernet's with
merging added where it drops, the reducers a user gives checked against the model, merging taken back where no
latency objective can price it, and a MAC budget below everything the search can return refused in one line."""
import pytest

import tavt_kit
from tavt_kit.errors import ConfigError, TavtKitError, UnreachableBudgetError
from tavt_kit.search import SpaceOptions
from tavt_kit.search.evolution import Budget
from tavt_kit.search.space import priced_space, searched_space
from conftest import search_model


def _drop_only(schedule):
    """A latency objective made from a table profiled for drop only: a merging block has no price."""
    if schedule.reducers and "merge" in schedule.reducers:
        raise TavtKitError("the table prices drop only")
    return 1e-3 * sum(schedule.counts)


def test_a_supernet_that_drops_also_merges_unless_no_objective_can_price_it():
    model = search_model()
    said = []
    space = searched_space(model, SpaceOptions(), own=False, log=said.append)
    assert space.reducers == ("drop", "merge") and space.bounds == (0.2,) * model.depth
    assert priced_space(space, {"fp32": lambda s: 1e-3 * sum(s.counts)}, said.append) == space
    dropped = priced_space(space, {"fp32": _drop_only}, said.append)
    assert dropped.reducers == ("drop",) and dropped.bounds == space.bounds
    assert any("cannot price merging" in s for s in said)


def test_your_model_is_searched_by_merging_up_to_half_of_each_block():
    model = search_model()
    space = searched_space(model, SpaceOptions(), own=True, log=lambda s: None)
    assert space.reducers == ("merge",) and space.bounds == (0.5,) * model.depth
    assert searched_space(model, SpaceOptions(bound=0.3), own=True).bounds == (0.3,) * model.depth


def test_given_reducers_are_kept_and_checked_against_the_model():
    model = search_model()
    assert searched_space(model, SpaceOptions(reducers="drop"), own=False).reducers == ("drop",)
    fusing = tavt_kit.create_model("fgvc_tiny", depth=3, img_size=32, num_classes=4, fuse=True)
    with pytest.raises(ConfigError, match=r"reducers=merge: this model \(.*fusing dropped tokens\) cannot merge"):
        searched_space(fusing, SpaceOptions(reducers="merge"), own=False)
    quiet = []
    assert searched_space(fusing, SpaceOptions(), own=True, log=quiet.append).reducers == ("drop",)
    assert "cannot merge tokens" in quiet[0]


def test_a_mac_budget_below_every_schedule_is_refused_before_any_work():
    model = search_model()
    full = tavt_kit.count_macs(model).total()
    searched_space(model, SpaceOptions(), own=False, budgets=[Budget("macs", 0.5 * full)])
    with pytest.raises(UnreachableBudgetError, match=r"budgets='1M MACs': below every schedule the search can "
                                                     r"return; achievable: .*M to .*M MACs") as e:
        searched_space(model, SpaceOptions(), own=False, budgets=[Budget("macs", 1e6)])
    assert e.value.budget.limit == 1e6
