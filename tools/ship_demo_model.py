"""Make the model ``fgvc-kit demo`` ships as "your model": fgvc_tiny trained on cluttered-digits by the built-in
recipe, copied into the package with its record (the command, the held-out curve, the test top-1, the sha256).

    python tools/ship_demo_model.py                 # trains (about 10 minutes on one core), then ships
    python tools/ship_demo_model.py --run DIR       # ships a finished run of the same command

The demo refuses a shipped file whose sha256 is not the recorded one.
"""
import argparse
import json
import os
import shutil
import subprocess
import sys

from tavt_kit.demo import SHIPPED_MODEL
from tavt_kit.export.record import sha256

COMMAND = ["fgvc-kit", "train", "--dataset", "cluttered-digits", "--seed", "0"]


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--run", metavar="DIR", help="a finished run of the command (default: train one in runs/demo-model)")
    args = p.parse_args()
    run = args.run or os.path.join("runs", "demo-model")
    if args.run is None:
        subprocess.run(COMMAND + ["--out", run, "--overwrite"], check=True)
    with open(os.path.join(run, "results.json"), encoding="utf-8") as f:
        results = json.load(f)
    with open(os.path.join(run, "config.json"), encoding="utf-8") as f:
        config = json.load(f)
    curve = []
    with open(os.path.join(run, "metrics.jsonl"), encoding="utf-8") as f:
        for line in f:
            event = json.loads(line)
            if event.get("event") == "eval" and event.get("split") == "holdout":
                curve.append([event["step"], round(event["top1"], 4)])
    test = (results.get("test") or {}).get("best") or {}  # the test scores of best.safetensors, the file shipped
    if "top1" not in test:
        raise SystemExit(f"{run}/results.json: no test top-1 (run the command without --no-test)")
    shutil.copyfile(os.path.join(run, "best.safetensors"), SHIPPED_MODEL)
    record = {"model": "fgvc_tiny", "dataset": "cluttered-digits", "command": " ".join(COMMAND),
              "steps": config["train"]["steps"],
              "holdout_curve": curve, "best_step": results.get("best_step"), "test_top1": round(test["top1"], 4),
              "test_images": test.get("n"),
              "sha256": sha256(SHIPPED_MODEL)}
    path = os.path.splitext(SHIPPED_MODEL)[0] + ".json"
    with open(path, "w", encoding="utf-8") as f:
        json.dump(record, f, indent=1)
        f.write("\n")
    print(f"shipped {SHIPPED_MODEL} ({100 * record['test_top1']:.2f} % test top-1) and {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
