"""Where a search scores its candidates (``eval_device``): resolved and checked before any work, the model itself
left where it is, device copies made once and made again when the weights change."""
import pytest
import torch

from tavt_kit import ConfigError
from tavt_kit.cli import main
from tavt_kit.data import Normalize
from tavt_kit.search.evaluate import CandidateEvaluator, evaluation_device, model_on
from conftest import random_splits, search_model
from tavt_kit.search import EvaluationOptions

pytestmark = pytest.mark.usefixtures("one_thread")


def test_auto_is_cuda_only_where_torch_sees_a_gpu():
    assert evaluation_device("auto") == ("cuda" if torch.cuda.is_available() else "cpu")
    assert evaluation_device(None) == evaluation_device("auto")
    assert evaluation_device("CPU") == "cpu"


@pytest.mark.parametrize("value, expected", [
    ("gpu", "eval_device='gpu': expected auto, cpu, cuda or cuda:N"),
    ("cuda:x", "eval_device='cuda:x': expected auto, cpu, cuda or cuda:N"),
])
def test_a_bad_device_is_a_config_error_naming_it(value, expected):
    with pytest.raises(ConfigError, match=expected.replace("(", r"\(").replace(")", r"\)")):
        evaluation_device(value)


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the refusal on a machine without a GPU")
def test_cuda_without_a_gpu_is_refused_before_any_work():
    with pytest.raises(ConfigError, match="eval_device=cuda: torch sees no CUDA GPU here"):
        evaluation_device("cuda")
    from tavt_kit import search_schedules

    with pytest.raises(ConfigError, match="eval_device=cuda"):
        search_schedules(search_model(), random_splits(8, 8), ["1M MACs"],
                         evaluation=EvaluationOptions(device="cuda"), log=lambda s: None)


def test_model_on_its_own_device_is_the_model_itself():
    model = search_model()
    assert model_on(model, None) is model
    assert model_on(model, "cpu") is model


def test_a_device_copy_is_made_once_and_again_after_the_weights_change():
    """Exercised on the meta device, which every machine has (a GPU's copy follows the same path)."""
    model = search_model()
    a = model_on(model, "meta")
    assert a is not model and next(a.parameters()).device.type == "meta"
    assert next(model.parameters()).device.type == "cpu"  # the caller's model stays where it was
    assert model_on(model, "meta") is a  # one copy per (model, device)
    with torch.no_grad():
        next(model.parameters()).add_(1.0)  # an optimiser step: the copy is stale
    assert model_on(model, "meta") is not a


def test_the_evaluator_on_a_device_matches_it_on_the_model():
    model = search_model()
    (hi, hl), _ = random_splits(24, 4)
    scheds = [model.full_schedule(), model.make_schedule([12, 8, 4])]
    norm = Normalize.from_model(model)
    here = CandidateEvaluator(model, hi, hl, 8, transform=norm).scores(scheds)
    there = CandidateEvaluator(model, hi, hl, 8, transform=norm, device="cpu").scores(scheds)
    assert here.correct == there.correct and here.nll == pytest.approx(there.nll)


def test_cli_eval_device_is_checked_in_one_line(capsys):
    assert main(["search", "--checkpoint", "fgvc_tiny", "--eval-device", "gpu", "--macs-budget", "1M"]) == 2
    err = capsys.readouterr().err
    assert "--eval-device gpu: expected cpu, cuda or cuda:N" in err and err.count("\n") == 1
