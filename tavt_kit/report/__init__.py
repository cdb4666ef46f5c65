"""The latency-budget report: which schedule meets which budget on which device, verified, with plots.

The top layer of the library: it reads the artefacts of search
(``search.json``), bench (``bench.json``) and export (``export.json``) and
writes ``report.md`` and a self-contained ``report.html``.
"""
from .budget import build_report

__all__ = ["build_report"]
