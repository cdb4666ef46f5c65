"""Render a latency-budget report in headless Chromium: check what it shows, save a screenshot.

    python tools/render_report.py runs/demo/report/report.html [--out docs/report.png] [--chromium PATH]

The report is opened the way a user opens it, in a real browser. From the
rendered page (Chromium's DOM after layout) it checks that the "What to ship"
table has, for every budget, the file to ship (or that none is exported yet),
the latency against the budget said to be measured or predicted, a verdict
(pass / FAIL) and the accuracy change against the full model, then prints the
rows and writes a full-page screenshot. Needs Chromium (Debian: ``apt-get
install chromium``); nothing is downloaded.
"""
from __future__ import annotations

import argparse
import html
import os
import re
import shutil
import subprocess
import sys
import tempfile

FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync", "--hide-scrollbars"]


def chromium(path=None) -> str:
    for name in ([path] if path else []) + ["chromium", "chromium-browser", "google-chrome"]:
        found = shutil.which(name) if name else None
        if found:
            return found
    sys.exit("render_report: Chromium not found; install it (Debian: apt-get install chromium) or pass --chromium")


def run(browser: str, args, profile: str) -> subprocess.CompletedProcess:
    return subprocess.run([browser, *FLAGS, f"--user-data-dir={profile}", *args], capture_output=True, text=True,
                          timeout=120)


def ship_rows(dom: str):
    """The rows of the rendered "What to ship" table, as lists of cell texts."""
    start = dom.find("What to ship")
    if start < 0:
        return []
    table = dom[start:dom.find("</table>", start)]
    rows = []
    for tr in re.findall(r"<tr>(.*?)</tr>", table, re.S)[1:]:
        cells = [html.unescape(re.sub(r"<[^>]+>", "", c)).strip() for c in re.findall(r"<td>(.*?)</td>", tr, re.S)]
        rows.append(cells)
    return rows


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("report", help="report.html written by fgvc-kit report (or fgvc-kit demo)")
    p.add_argument("--out", default="docs/report.png", help="screenshot path (default docs/report.png)")
    p.add_argument("--width", type=int, default=1180)
    p.add_argument("--height", type=int, default=1500)
    p.add_argument("--chromium", help="the browser executable (default: chromium on the PATH)")
    a = p.parse_args()
    browser = chromium(a.chromium)
    url = "file://" + os.path.abspath(a.report)
    with tempfile.TemporaryDirectory() as profile:
        dom = run(browser, ["--dump-dom", url], profile).stdout
        rows = ship_rows(dom)
        if not rows:
            sys.exit(f"render_report: {a.report}: the rendered page has no 'What to ship' table")
        bad = []
        for cells in rows:
            budget, ship, latency, verdict, margin, accuracy = cells[:6]
            ok = (ship and ("verified" in ship or "not exported" in ship or "nothing" in ship)
                  and (latency == "–" or "measured" in latency or "predicted" in latency or "MACs" in latency)
                  and verdict.strip("*") in ("pass", "FAIL") and ("points" in accuracy or accuracy == "–"))
            print(("ok  " if ok else "BAD ") + " | ".join(cells))
            if not ok:
                bad.append(budget)
        os.makedirs(os.path.dirname(os.path.abspath(a.out)), exist_ok=True)
        shot = run(browser, [f"--screenshot={os.path.abspath(a.out)}", f"--window-size={a.width},{a.height}", url],
                   profile)
    if not os.path.isfile(a.out):
        sys.exit(f"render_report: no screenshot written ({shot.stderr.strip()[-300:]})")
    print(f"{len(rows)} budgets rendered; screenshot {a.out}")
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
