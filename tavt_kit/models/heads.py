"""Classification heads over a token-drop backbone.

``linear`` is timm's own pooling (class token, average, attention pooling,
distillation head) followed by its classifier; it reads the tokens that
survive the schedule.
"""
from __future__ import annotations

from typing import Any, Dict

from ..errors import ConfigError

#: head name -> the arguments it takes (with defaults)
HEAD_ARGS: Dict[str, Dict[str, Any]] = {
    "linear": {},
}


def check_head(head: str, kwargs: Dict[str, Any]) -> Dict[str, Any]:
    """Validate ``head`` and pop its arguments out of ``kwargs`` (the rest go to timm)."""
    if head not in HEAD_ARGS:
        raise ConfigError(f"unknown head {head!r}; expected one of {', '.join(HEAD_ARGS)}")
    args = dict(HEAD_ARGS[head])
    for key in list(kwargs):
        if key in args:
            args[key] = kwargs.pop(key)
    return args
