"""``fgvc-kit demo``: the whole pipeline on the built-in digits (:mod:`tavt_kit.demo`)."""
from __future__ import annotations

import argparse

from ..demo import DEFAULT_OUT


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--out", default=DEFAULT_OUT, help=f"output folder (default: {DEFAULT_OUT})")
    p.add_argument("--train-steps", type=int, help="fine-tuning steps (default: the demo recipe's)")
    p.add_argument("--distill-steps", type=int, help="distillation steps (default: the demo recipe's)")
    p.add_argument("--generations", type=int, default=6, help="search generations (default: 6)")
    p.add_argument("--population", type=int, default=12, help="search population (default: 12)")
    p.add_argument("--latency-fraction", type=float, default=0.5,
                   help="latency budget between the smallest schedule's (0) and the full model's (1) predicted "
                        "latency (default: 0.5)")
    p.add_argument("--batch", type=int, default=8, help="batch size of the latency table and bench (default: 8)")
    p.add_argument("--formats", default="onnx,openvino", help="export formats (default: onnx,openvino)")
    p.add_argument("--quick", action="store_true", help="a few steps of everything (for tests)")


def run(args) -> int:
    from ..demo import run_demo

    return run_demo(args)
