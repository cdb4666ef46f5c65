"""The supernet's pick fine-tuned toward your model, competing for its budget (``search_schedules(finetune=...)``).

The supernet's weights serve every schedule of its space; the pick a budget ships needs them for one. Measured on
the latency benchmark (``docs/benchmarks/pick_finetune.md``), 150 steps at the pick's schedule toward your model
won back 1.2 points at 0.3 of its latency. :class:`PickFinetune` asks the search to do it for every budget whose
recommendation is made against your model (a supernet with a recorded parent):

1. the budget's pick (its schedule and reducers; picks shared by budgets are trained once) is fine-tuned from the
   supernet's weights toward your model (:func:`tavt_kit.distill.distill_schedule`: KL to its soft predictions)
   into ``finetuned/<schedule>/`` of the search folder; a killed run resumes from its checkpoints. The last step
   is kept: no held-out image chooses the weights, so the held-out comparison below is not biased by it;
2. it is scored as it ships, at the pick's precision (int8: quantised with NNCF on the search's calibration images
   and run in OpenVINO, as the pick was), on the images the recommendation compares on and on the test images
   (``vs_parent``: paired with your model); its latency is the pick's, timed in the search's round: the same
   graph with other weights (``timed_as``);
3. where it leads the supernet's pick it was made from on the images the choice is made on (paired per image,
   ``finetuned.versus_pick``), the budget is recommended again with it in the supernet pick's place
   (:func:`~.recommend.recommend`, the same gate: it ships only where it beats the best deployable on your model's
   weights beyond noise, paired per image), as the family ``finetuned``; where it does not, the supernet's pick
   keeps its place and the recommendation stays as it was. The row keeps the supernet's own pick (``best``) and
   gets ``finetuned``; ``export --search --budget`` exports the fine-tuned checkpoint where it is recommended.
"""
from __future__ import annotations

import copy
import os
from dataclasses import dataclass
from typing import Any, Dict, Optional

import torch
from torch import nn

from ..errors import ConfigError
from ..stats import accuracy_interval, paired_difference
from .data import _dist
from .evolution import entry_gene
from .recommend import paired_lead, recommend

#: the folder of the fine-tuned picks, in the search folder
FINETUNED_DIR = "finetuned"
#: the family a fine-tuned pick competes as (``recommended.family``, ``recommended.weights``)
FAMILY = "finetuned"
#: the latency fields a fine-tuned pick takes from its pick (the same graph, timed in the same round)
TIMED_FIELDS = ("latency_ms", "latency_measured_ms", "measured_fraction_of_full", "measured_fraction_interval",
                "measured_within_budget", "within_budget")


@dataclass(frozen=True)
class PickFinetune:
    """How the search fine-tunes its picks: ``train_set`` (the training images, e.g. ``build_dataset(spec,
    split="train", model=model)``), ``steps`` at ``batch_size`` with AdamW at ``lr`` (no weight decay, a tenth of
    the steps warm-up), KL at ``kd_temperature`` to your model plus ``label_weight`` times cross-entropy."""

    train_set: Any
    steps: int = 150
    lr: float = 2e-4
    batch_size: int = 64
    kd_temperature: float = 1.0
    label_weight: float = 0.0
    seed: int = 0

    def __post_init__(self):
        for name in ("steps", "batch_size"):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, int) or v < 1:
                raise ConfigError(f"finetune.{name}={v!r}: expected a positive integer")
        for name in ("lr", "kd_temperature"):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, (int, float)) or not v > 0:
                raise ConfigError(f"finetune.{name}={v!r}: expected a positive number")
        if isinstance(self.label_weight, bool) or not isinstance(self.label_weight, (int, float)) \
                or self.label_weight < 0:
            raise ConfigError(f"finetune.label_weight={self.label_weight!r}: expected a non-negative number")
        if self.train_set is None or len(self.train_set) == 0:
            raise ConfigError("finetune.train_set: expected the training images (a dataset with images in it)")

    def config(self):
        """The trainer's settings (a checkpoint every 25 steps: a killed fine-tune resumes there; its progress as
        the trainer shows it: a bar on a terminal, else a line on stderr at most every few seconds)."""
        from ..train import TrainConfig

        return TrainConfig(steps=self.steps, batch_size=min(self.batch_size, len(self.train_set)), optimizer="adamw",
                           lr=float(self.lr), weight_decay=0.0, warmup_steps=max(1, self.steps // 10),
                           eval_every=0, save_every=min(self.steps, 25), log_every=10, seed=self.seed,
                           progress=None)


class FinetuneStage:
    """Fine-tunes each budget's pick and lets it compete (the module docstring), for a search's ``ctx`` with its
    ``ParentStage`` (your model, its deployed scorers and the paired evidence)."""

    def __init__(self, ctx, parent_stage, finetune: PickFinetune):
        self.ctx, self.parents, self.options = ctx, parent_stage, finetune
        self._models: Dict[tuple, tuple] = {}  # schedule gene -> (model, relative folder, scorer)

    def apply(self, doc: dict) -> None:
        ctx = self.ctx
        rows = [r for r in doc["budgets"] if r.get("best") is not None and "training_free" in r]
        ctx.log(f"fine-tuning {len({entry_gene(r['best'])[:2] for r in rows})} pick(s) toward your model, "
                 f"{self.options.steps} steps each")
        for row in rows:
            best = row["best"]
            sched = ctx.schedule(entry_gene(best))
            model, folder, scorer = self._finetuned(row, sched)
            entry = self._entry(best, model, sched, scorer, folder)
            row[FAMILY] = entry
            entry["versus_pick"] = versus = self._versus_pick(best, model, sched, scorer, folder)
            if not versus["replaces_pick"]:  # the supernet's own pick stays the searched option
                ctx.log(f"{row['label']}: the fine-tuned pick does not lead the supernet's pick on the images the "
                        f"choice is made on ({versus['metric']} lead {versus['lead']:+.4f}); the pick keeps its place")
                continue
            rec = self._recommend(row, entry, model, sched, scorer, folder)
            if rec.get("family") == "searched":
                rec.update(family=FAMILY, weights=FAMILY, checkpoint=entry["checkpoint"])
            row["recommended"] = rec

    def close(self) -> None:
        for _, _, scorer in self._models.values():
            scorer.close()

    # ------------------------------------------------------------------ pieces
    def _finetuned(self, row: dict, sched):
        """(model, folder relative to the search's, its deployed scorer) of the row's pick (at ``sched``), fine-tuned
        once."""
        from ..distill import distill_schedule
        from ..models import load_checkpoint
        from ..train import LAST_FILE
        from .deployed import DeployedScorer

        ctx = self.ctx
        gene = entry_gene(row["best"])[:2]  # counts and reducers: one fine-tune serves every precision
        if gene in self._models:
            return self._models[gene]
        name = os.path.splitext(row.get("schedule_file") or f"schedule-{row['label']}")[0]
        folder = os.path.join(FINETUNED_DIR, name)
        out = os.path.join(ctx.out_dir, folder)
        last = os.path.join(out, LAST_FILE)
        if not finished(out, self.options.steps):
            with torch.inference_mode(False), torch.enable_grad():
                model = copy.deepcopy(ctx.model).train()
                model.spec.pop("search_space", None)  # its weights will serve one schedule
                ctx.log(f"fine-tuning {name} ({list(row['best']['counts'])}) toward your model")
                distill_schedule(model, self.parents.parent, sched, self.options.train_set, self.options.config(),
                                 out_dir=out, resume=os.path.isfile(os.path.join(out, "train_state.safetensors")),
                                 kd_temperature=self.options.kd_temperature, label_weight=self.options.label_weight)
        model = load_checkpoint(last).eval()
        calib = ctx.data.calibration
        scorer = DeployedScorer(model, ctx.transform, lambda: calib(ctx.calibration_images, ctx.settings.seed),
                                ctx.batch_size, ctx.objectives["fp32"].target.threads if ctx.objectives else None,
                                {p: o.target for p, o in ctx.objectives.items()})
        self._models[gene] = (model, folder, scorer)
        return self._models[gene]

    def _scores(self, model, sched, precision: str, scorer, images, labels, deployed: bool):
        """Per-image scores of ``model`` at ``sched`` and ``precision`` as the search scores the pick: held-out
        (``deployed`` False) in PyTorch (bf16/fp16 autocast) but int8 deployed; test on the deployed runtime."""
        from .evaluate import CandidateEvaluator
        from .deployed import AUTOCAST

        if precision == "int8" or (deployed and precision != "fp32"):
            return scorer.scores(sched, precision, images, labels)[0]
        ev = CandidateEvaluator(model, images, labels, self.ctx.batch_size, transform=self.ctx.transform,
                                autocast=AUTOCAST.get(precision), device=self.ctx.device)
        return ev.scores([sched], per_image=True)

    def _entry(self, best: dict, model: nn.Module, sched, scorer, folder: str) -> Dict[str, Any]:
        from ..models.checkpoint import weights_digest
        from ..train import LAST_FILE

        ctx = self.ctx
        precision = best.get("precision", "fp32")
        evidence = self.parents._evidence()
        if evidence.images is ctx.holdout:  # the images the gate compares on: scored once, for both
            losses, hits = evidence.values(self._key(folder), model, sched, precision, scorer)
        else:
            sc = self._scores(model, sched, precision, scorer, ctx.holdout.images, ctx.holdout.labels, False)
            losses, hits = sc.losses[0], sc.hits[0]
        acc, nll = float(hits.double().mean()), float(losses.double().mean())
        d = {k: best[k] for k in ("counts", "reducers", "precision", "macs", "speedup_macs") if k in best}
        d.update(weights=FAMILY, checkpoint=os.path.join(folder, LAST_FILE), weights_sha256=weights_digest(model),
                 steps=self.options.steps, holdout_accuracy=acc,
                 holdout_interval=accuracy_interval(acc, ctx.n_holdout), holdout_nll=nll,
                 holdout_source="OpenVINO int8 (NNCF PTQ, transformer)" if precision == "int8" else "PyTorch " + (
                     "fp32" if precision == "fp32" else f"{precision} autocast"))
        # the schedule carries the evolution's winner's curse on the held-out images as the pick does
        d.update({k: best[k] for k in ("fitness_measured", "fitness_shrunk") if k in best})
        if ctx.selection is not None:
            d.update(ctx.selection.fields(self._key(folder), model, sched, precision, deployed=scorer))
        d.update({k: best[k] for k in TIMED_FIELDS if k in best})
        d["timed_as"] = "the pick: the same graph, other weights"
        ref = getattr(self.parents, "_parent_hits", None)
        if ctx.n_test:
            t = self._scores(model, sched, precision, scorer, ctx.test.images, ctx.test.labels, True)
            h = t.hits[0]
            acc = float(h.double().mean())
            d.update(test_accuracy=acc, test_interval=accuracy_interval(acc, ctx.n_test))
            if ref is not None:
                d["vs_parent"] = paired_difference(h.tolist(), ref.tolist())
        return d

    @staticmethod
    def _key(folder: str) -> str:
        return f"{FAMILY}:{folder}"

    def _versus_pick(self, best: dict, model, sched, scorer, folder: str) -> Dict[str, Any]:
        """The fine-tuned pick's paired lead over the supernet's pick it was made from (the same schedule and
        precision), per image on the images the recommendation compares on: ``{"metric", "lead", "se"}``. Only a
        fine-tuned pick that leads it replaces it in the competition (``replaces_pick``); else the supernet's pick
        keeps its place and the budget's recommendation stays as it was (the fine-tune made it worse: compared
        with the other options in its place, it could ship over the better pick it was made from)."""
        ctx, parents = self.ctx, self.parents
        metric = "accuracy" if ctx.fitness == "accuracy" else "NLL"
        evidence = parents._evidence()
        precision = best.get("precision", "fp32")
        tuned = evidence.values(self._key(folder), model, sched, precision, scorer)
        pick = evidence.values("supernet", ctx.model, sched, precision, parents._scorers.get("supernet"))
        lead, se = paired_lead(tuned, pick, metric)
        return {"metric": metric, "lead": lead, "se": se, "replaces_pick": lead > 0}

    def _recommend(self, row: dict, entry: dict, model, sched, scorer, folder: str) -> dict:
        """The budget's recommendation with ``entry`` as its searched option (:func:`~.recommend.recommend`)."""
        from .parent import _weights

        ctx, parents = self.ctx, self.parents
        metric = "accuracy" if ctx.fitness == "accuracy" else "NLL"
        evidence = parents._evidence()

        def values(family: str, d: dict):
            if family == "searched":
                return evidence.values(self._key(folder), model, sched, d.get("precision", "fp32"), scorer)
            weights = _weights(family)
            return evidence.values(weights, parents.parent, ctx.schedule(entry_gene(d)), d.get("precision", "fp32"),
                                   parents._scorers.get(weights))

        selection = ctx.selection
        return recommend({**row, "best": entry}, row["training_free"], fitness=ctx.fitness,
                         selection_images=selection.n if selection else None,
                         evidence=lambda a, da, b, db: paired_lead(values(a, da), values(b, db), metric),
                         confidence=ctx.ship.confidence,
                         searched_name="the pick fine-tuned toward your model")


def check_finetune(finetune: Optional[PickFinetune], parent: Optional[nn.Module], model: nn.Module
                   ) -> Optional[PickFinetune]:
    """``search_schedules``' ``finetune`` option, refused before the search where nothing could be fine-tuned: the
    picks are fine-tuned toward your model, so the search needs one (a supernet's recorded parent), and a search
    of your own model has no supernet weights to fine-tune."""
    if finetune is None:
        return None
    if parent is None:
        raise ConfigError("finetune: the picks are fine-tuned toward your model and this search has none (a supernet "
                          "of fgvc-kit distill records it; or give parent=)")
    if _dist()[1] > 1:
        raise ConfigError("finetune: a search that fine-tunes its picks runs on one process")
    if parent is model:
        raise ConfigError("finetune: this search runs on your model's own weights (no supernet): its picks need no "
                          "fine-tune toward it")
    return finetune


def finetune_picks(ctx, parent_stage, doc: dict) -> None:
    """Each budget's pick of ``ctx`` (a :class:`~.context.SearchContext`) fine-tuned toward your model and
    competing for the budget (the module docstring): ``finetuned`` and ``recommended`` of each row of ``doc``."""
    ft = FinetuneStage(ctx, parent_stage, ctx.finetune)
    try:
        ft.apply(doc)
    finally:
        ft.close()


def finished(out: str, steps: int) -> bool:
    """Whether the fine-tune in ``out`` ran its ``steps`` (its metrics log says so, and its checkpoint is there)."""
    import json

    from ..train import LAST_FILE

    path = os.path.join(out, "metrics.jsonl")
    if not (os.path.isfile(path) and os.path.isfile(os.path.join(out, LAST_FILE))):
        return False
    with open(path) as fh:
        for line in fh:
            try:
                d = json.loads(line)
            except ValueError:
                continue
            if d.get("event") == "end" and int(d.get("step", -1)) >= steps:
                return True
    return False
