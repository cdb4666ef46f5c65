"""Gathering whole token rows, the way the deployed runtimes run fastest.

``x.gather(1, idx.unsqueeze(-1).expand(-1, -1, C))`` is the usual way to pick tokens, but it exports as an index
broadcast to every channel followed by an element-wise gather. OpenVINO on a CPU ran those two nodes in about
1 ms of a 6 ms batch-1 call of a dropping fgvc_tiny (256 tokens, width 96; `benchmarks/row_gather.py`): time no
MAC count sees, which is why a schedule realised less of its MAC reduction at batch 1 than at batch 32.
:func:`take_rows` picks the same rows with one ``Gather`` over the flattened token axis, no broadcast; the
values are identical.
"""
from __future__ import annotations

import torch


def take_rows(x: torch.Tensor, idx: torch.Tensor) -> torch.Tensor:
    """``x`` (B, N, C) at token indices ``idx`` (B, k): (B, k, C), equal to ``x.gather(1, idx[..., None].expand(-1,
    -1, C))``."""
    B, N, C = x.shape
    flat = idx + (torch.arange(B, device=idx.device) * N)[:, None]
    return x.reshape(B * N, C)[flat]
