"""Distillation's settings and how a run fills them: TAVT's defaults, the demo's, and the parent's recorded data.

:class:`DistillSettings` (None = the default) extends fine-tuning's optimisation settings with the in-place
distillation ones; :func:`resolve_distill` fills a run from them, taking the data the checkpoint was trained on
unless told otherwise. Messages name the settings (``bound=``), never a command's options.
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any, Dict, Optional, Union

from ..errors import ConfigError, TavtKitError
from ..train.recipes import OptimSettings, SEEDS_RECIPE, fit_warmup, resolve_settings, stored_settings

RUN_FORMAT = "fgvc-kit/distill-run"
#: parent_mix="auto": the weight chosen on the held-out images (tavt_kit.distill.choose_parent_mix)
MIX_AUTO = "auto"
#: TAVT's distillation settings on top of the seeds' fine-tuning recipe, except the teacher: the sub-networks
#: learn a frozen copy of the parent (the checkpoint), and the full model is held to the parent by a distillation
#: loss as strong as the sub-networks' together (3 = sandwich + 1) instead of training on the labels; TAVT's
#: moving full-model teacher let the full schedule drift (docs/benchmarks/distill_recipe.md)
DISTILL_DEFAULTS: Dict[str, Any] = dict(bound=0.2, drop_blocks=None, min_tokens=1, reducers=None, sandwich=2,
                                        kd_temperature=1.0, sub_label_weight=0.0, sub_aux=False, teacher="parent",
                                        full_label_weight=0.0, full_kd_weight=3.0, parent_mix=0.7)
#: what a run stored before these settings existed did (resumed as it started)
LEGACY_DISTILL: Dict[str, Any] = dict(teacher="full", full_label_weight=1.0, full_kd_weight=0.0, parent_mix=1.0)
#: the demo: a short run on the digits (the trained demo model is its teacher and starting point); AdamW restarted
#: at 5e-4 with weight decay on the converged model cost the full schedule 1.4-1.7 points, 2e-4 without decay
#: keeps it (docs/benchmarks/distill_recipe.md)
DEMO_DISTILL: Dict[str, Any] = dict(steps=150, lr=2e-4, warmup_steps=15, weight_decay=0.0, label_smoothing=0.0,
                                    eval_every=50, save_every=50, bound=0.3)
DISTILL_KEYS = tuple(DISTILL_DEFAULTS) + ("checkpoint",)
#: the data settings a checkpoint records, by the name its record gives them
RECORDED_DATA = (("data", "root"), ("holdout", "holdout"), ("split_seed", "split_seed"), ("resize", "resize"),
                 ("train_crop", "train_crop"), ("dataset_options", "options"))


@dataclass(frozen=True)
class DistillSettings(OptimSettings):
    """Every setting of an in-place distillation run (:func:`tavt_kit.distill.distill`); None = the default
    (:data:`DISTILL_DEFAULTS`, the recipe's, or the data the checkpoint records)."""

    bound: Optional[float] = None  #: largest drop ratio per block of the search space
    drop_blocks: Optional[str] = None  #: blocks that may drop, e.g. "3,6,9" (default: every block)
    min_tokens: Optional[int] = None
    reducers: Optional[str] = None  #: drop, merge or drop,merge
    sandwich: Optional[int] = None
    kd_temperature: Optional[float] = None
    sub_label_weight: Optional[float] = None
    sub_aux: Optional[bool] = None
    teacher: Optional[str] = None  #: parent or full
    full_label_weight: Optional[float] = None
    full_kd_weight: Optional[float] = None
    parent_mix: Optional[Union[float, str]] = None  #: a weight in (0, 1] or "auto"


def recorded_data(checkpoint: str):
    """The data a checkpoint records it was trained on: ``(record, DataSpec)``, ``(None, None)`` when none."""
    from ..data import DataSpec
    from ..models import read_spec

    spec = read_spec(checkpoint, required=False) if os.path.isfile(checkpoint) else None
    recorded = (spec or {}).get("data") or {}
    if not isinstance(recorded, dict) or not recorded.get("name"):
        return None, None
    try:
        return recorded, DataSpec.from_dict(recorded)
    except (TavtKitError, TypeError, ValueError):
        return None, None


def with_recorded_data(given: Dict[str, Any], checkpoint: str):
    """``given`` with the checkpoint's recorded data for what is not given (its dataset unless another is given;
    given dataset options win key by key); also the recorded DataSpec (None when another dataset is used)."""
    from ..data import dataset_info

    recorded, trained = recorded_data(checkpoint)
    if trained is None or (given.get("dataset") is not None and dataset_info(given["dataset"]).name != trained.name):
        return dict(given), None
    g = dict(given, dataset=recorded["name"])
    for name, key in RECORDED_DATA:
        if name == "holdout" and dataset_info(g["dataset"]).own_holdout:
            continue  # the dataset's own held-out split
        if name == "dataset_options" and given.get(name) is not None:
            g[name] = {**dict(recorded.get(key) or {}), **dict(given[name])}
        elif given.get(name) is None and recorded.get(key) is not None:
            g[name] = recorded[key]
    return g, trained


def resolve_distill(given: Dict[str, Any], checkpoint: str) -> Dict[str, Any]:
    """Every setting of a distillation run: those given, the data ``checkpoint`` records, the recipe's and
    :data:`DISTILL_DEFAULTS` for the rest (``notes``: the defaults that were fitted)."""
    from ..data import dataset_info
    from ..data.datasets import training_overlap
    from ..train.recipes import data_spec

    g, trained = with_recorded_data(given, checkpoint)
    r = resolve_settings({k: v for k, v in g.items() if k not in DISTILL_KEYS})
    if trained is not None:  # the parent's held-out and test images must not be ones it trained on
        why = training_overlap(trained, data_spec(r))
        if why is not None:
            raise ConfigError(why)
    demo = dataset_info(r["dataset"]).builtin
    for k, v in DISTILL_DEFAULTS.items():
        r[k] = given[k] if given.get(k) is not None else v
    if demo:
        for k, v in DEMO_DISTILL.items():
            if given.get(k) is None:
                r[k] = v
    r.pop("notes", None)  # the warm-up is fitted to distillation's recipe, not fine-tuning's
    recipe = DEMO_DISTILL if demo else SEEDS_RECIPE
    if "warmup_steps" not in given:
        r["warmup_steps"] = recipe["warmup_steps"]
    r["notes"] = fit_warmup(r, given, recipe)
    r["checkpoint"] = os.path.abspath(checkpoint)
    return r


def distill_given(settings: DistillSettings) -> Dict[str, Any]:
    """The settings given that a run stores (and a resumed run compares)."""
    return stored_settings(settings.given())


def check_full_weights(r: Dict[str, Any]) -> None:
    """The full model's losses: non-negative weights, at least one positive; a parent mix in (0, 1] or auto."""
    a, b = r["full_label_weight"], r["full_kd_weight"]
    if a < 0 or b < 0 or a + b <= 0:
        raise ConfigError(f"full_label_weight={a:g}, full_kd_weight={b:g}: expected non-negative weights, at "
                          "least one positive (the full model needs a loss)")
    mix = r["parent_mix"]
    if mix != MIX_AUTO and not 0 < mix <= 1:
        raise ConfigError(f"parent_mix={mix:g}: expected a weight in (0, 1] for the distilled weights "
                          f"(1 keeps them as they are), or '{MIX_AUTO}'")


REDUCERS = ("drop", "merge")


def parse_reducers(text, what: str = "reducers=") -> tuple:
    """``drop``, ``merge`` or ``drop,merge`` as a tuple; anything else is a one-line error naming ``what``."""
    names = tuple(dict.fromkeys(x.strip() for x in str(text).split(",") if x.strip()))
    bad = [x for x in names if x not in REDUCERS]
    if not names or bad:
        shown = repr(text) if what.endswith("=") and not str(text).strip() else text  # an empty value, quoted
        raise ConfigError(f"{what}{shown}: expected drop, merge or drop,merge"
                          + (f" ({bad[0]!r} is not a reducer)" if bad else ""))
    return names


def check_can_merge(model, what: str) -> None:
    """A model that can merge tokens (a timm ViT without EViT's fuse), else a one-line error naming ``what``."""
    from ..models.token_drop import TokenDropMixin

    use_drop = "reducers='drop'"
    if not isinstance(model, TokenDropMixin):
        raise ConfigError(f"{what}: this model ({type(model).__name__}) cannot merge tokens; merge works for timm "
                          f"ViTs (use {use_drop})")
    if getattr(model, "fuse", False):
        raise ConfigError(f"{what}: a model that fuses dropped tokens (EViT fuse) cannot merge; use {use_drop}")


def check_drop_blocks(value) -> None:
    """An empty ``drop_blocks`` (an empty shell variable) is refused: it must not mean "every block"."""
    if value is not None and not str(value).strip():
        raise ConfigError("drop_blocks=: empty; expected comma-separated block indices, e.g. 3,6,9 (omit "
                          "drop_blocks= for every block)")


def search_space(model, r: Dict[str, Any]):
    """The run's :class:`~tavt_kit.schedules.SearchSpace` over ``model``."""
    from ..schedules.space import SearchSpace

    blocks = None
    check_drop_blocks(r["drop_blocks"])
    if r["drop_blocks"]:
        try:
            blocks = [int(b) for b in str(r["drop_blocks"]).split(",")]
        except ValueError:
            raise ConfigError(f"drop_blocks=: expected comma-separated block indices, got {r['drop_blocks']!r}") \
                from None
    if not 0 < r["bound"] < 1:
        raise ConfigError(f"bound=: expected a drop ratio in (0, 1), got {r['bound']}")
    reducers = parse_reducers(r["reducers"]) if r.get("reducers") is not None else None
    if reducers and "merge" in reducers:
        check_can_merge(model, "reducers='" + ",".join(reducers) + "'")
    return SearchSpace.for_model(model, bound=r["bound"], drop_blocks=blocks, min_tokens=r["min_tokens"],
                                 reducers=reducers)
