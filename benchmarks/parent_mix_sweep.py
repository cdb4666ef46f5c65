"""How far to mix a supernet back toward its parent: held-out and test figures at each weight, and auto's choice.

    python benchmarks/parent_mix_sweep.py SUPERNET [SUPERNET ...] [--alphas 1,0.9,0.8,0.7,0.6,0.5] [--out FILE]

Each SUPERNET is a ``best.safetensors`` of ``fgvc-kit distill`` on cluttered-digits with its parent recorded.
A supernet already mixed (``--parent-mix A``, recorded in its spec) is unmixed first: the distilled weights
are ``(mixed - (1 - A) x parent) / A``, exact to float rounding. Then, for each weight of ``--alphas``, the
supernet mixed at that weight (``tavt_kit.distill.mix_with_parent``) is scored at the full, middle and
smallest schedules of its space on the held-out images (1500) and the test images (3000): top-1 as the paired
difference to the parent *run at the same schedule* (points, 95 % interval) and the mean NLL difference.
The last line per supernet is what ``distill --parent-mix auto`` chooses on the held-out images
(``tavt_kit.distill.choose_parent_mix``) and what that weight scores on the test images: whether the
held-out images can tell how far the full schedule drifted. With several supernets (one per seed), the mean
over them of each test difference follows, with the interval of the mean of independent paired differences.
"""
from __future__ import annotations

import argparse
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from fitness_benchmark import combine, test_scores  # noqa: E402

PROBES = ("full", "middle", "smallest")


def distilled_weights(mixed, parent) -> dict:
    """The weights before ``--parent-mix``: the mix undone where the spec records one."""
    alpha = (mixed.spec.get("distillation") or {}).get("parent_mix")
    own, p = mixed.state_dict(), parent.state_dict()
    if alpha is None or float(alpha) >= 1:
        return {k: v.clone() for k, v in own.items()}
    a = float(alpha)
    return {k: ((v - (1 - a) * p[k]) / a if v.is_floating_point() else v) for k, v in own.items()}


def sweep(path: str, alphas) -> dict:
    import torch

    from tavt_kit.data import build_dataset, cached_tensors
    from tavt_kit.distill import choose_parent_mix, fixed_schedules, mix_with_parent
    from tavt_kit.models import load_checkpoint
    from tavt_kit.models.checkpoint import load_parent
    from tavt_kit.search.pipeline import space_of
    from tavt_kit.stats import paired_difference

    model = load_checkpoint(path).eval()
    parent = load_parent(model)
    dist = distilled_weights(model, parent)
    tracked = fixed_schedules(space_of(model))
    scheds = [tracked[k] for k in PROBES]
    data = {split: cached_tensors(build_dataset("cluttered-digits", split=split, model=parent, augment=False))
            for split in ("holdout", "test")}

    def at(a: float):
        m = load_checkpoint(path).eval()
        m.load_state_dict(dist)
        return mix_with_parent(m, parent, a)

    out = {"supernet": path, "recorded_mix": (model.spec.get("distillation") or {}).get("parent_mix"),
           "parent": {}, "mixes": {}}
    ref = {}
    for split, (x, y) in data.items():
        with torch.inference_mode():
            ref[split] = test_scores(parent, scheds, x, y)
        out["parent"][split] = {k: {"top1": float(ref[split].hits[i].float().mean()), "nll": ref[split].nll[i] / len(y)}
                                for i, k in enumerate(PROBES)}
    for a in alphas:
        row = {}
        for split, (x, y) in data.items():
            with torch.inference_mode():
                sc = test_scores(at(a), scheds, x, y)
            row[split] = {k: {"vs_parent": paired_difference(sc.hits[i].tolist(), ref[split].hits[i].tolist()),
                              "nll_vs_parent": (sc.nll[i] - ref[split].nll[i]) / len(y)}
                          for i, k in enumerate(PROBES)}
        out["mixes"][f"{a:g}"] = row
        print(line(path, f"{a:g}", row), flush=True)
    x, y = data["holdout"]
    names = list(tracked)

    def score(m) -> dict:
        with torch.inference_mode():
            sc = test_scores(m, [tracked[k] for k in names], x, y)
        top = {f"top1_{k}": float(sc.hits[i].float().mean()) for i, k in enumerate(names)}
        return {**top, "top1_mean": sum(top.values()) / len(top)}

    m = load_checkpoint(path).eval()
    m.load_state_dict(dist)
    choice = choose_parent_mix(m, parent, score, alphas=alphas)
    out["auto"] = choice.to_dict()
    got = out["mixes"].get(f"{choice.alpha:g}")
    print(f"{path}: --parent-mix auto chooses {choice.alpha:g} ({choice.reason()})"
          + (f"; on the test images: {line('', '', got).strip()}" if got else ""), flush=True)
    return out


def pts(d) -> str:
    lo, hi = d["interval"]
    return f"{100 * d['difference']:+.2f} [{100 * lo:+.2f}, {100 * hi:+.2f}]"


def line(path: str, a: str, row: dict) -> str:
    cells = []
    for split in ("holdout", "test"):
        if split in row:
            cells.append(split + " " + "  ".join(f"{k} {pts(row[split][k]['vs_parent'])} nll {row[split][k]['nll_vs_parent']:+.4f}"
                                                 for k in PROBES))
    return f"{os.path.basename(os.path.dirname(path)) if path else ''} A={a}  " + " | ".join(cells)


def means(results, alphas) -> str:
    """The mean over the supernets of each weight's test differences (independent seeds), one line per weight."""
    lines = [f"mean over {len(results)} supernets, test images, paired with the parent at the same schedule:"]
    for a in alphas:
        cells = []
        for k in PROBES:
            m, lo, hi = combine([r["mixes"][f"{a:g}"]["test"][k]["vs_parent"] for r in results])
            cells.append(f"{k} {100 * m:+.2f} [{100 * lo:+.2f}, {100 * hi:+.2f}]")
        lines.append(f"  A={a:g}  " + "  ".join(cells))
    chosen = [f"{r['auto']['alpha']:g}" for r in results]
    lines.append("  --parent-mix auto chose: " + ", ".join(chosen))
    return "\n".join(lines)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("supernets", nargs="+", help="best.safetensors of distill runs on cluttered-digits")
    ap.add_argument("--alphas", default="1,0.9,0.8,0.7,0.6,0.5")
    ap.add_argument("--out", help="write every figure to this JSON file")
    args = ap.parse_args(argv)
    try:
        alphas = [float(a) for a in args.alphas.split(",") if a.strip()]
    except ValueError:
        ap.error(f"--alphas {args.alphas!r}: expected comma-separated weights in (0, 1]")
    for p in args.supernets:
        if not os.path.isfile(p):
            ap.error(f"{p}: supernet checkpoint not found")
    results = [sweep(p, alphas) for p in args.supernets]
    if len(results) > 1:
        print(means(results, alphas))
    if args.out:
        from tavt_kit.files import write_json

        write_json(results, args.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
