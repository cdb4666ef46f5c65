"""Building the model a training run starts from."""
from __future__ import annotations

import os
from typing import Any, Dict, Optional, Sequence

from torch import nn

from ..errors import CheckpointError, ConfigError, DatasetError


def build_model(*, num_classes: int, class_names: Optional[Sequence[str]] = None, model: Optional[str] = None,
                pretrained: Optional[str] = None, img_size=None, head: Optional[str] = None,
                scorer: Optional[str] = None, fuse: Optional[bool] = None,
                drop_path: Optional[float] = None) -> nn.Module:
    """The model to fine-tune for ``num_classes`` classes.

    * ``pretrained`` an fgvc-kit checkpoint: its architecture, head, scorer and
      normalisation, its image size unless ``img_size`` is given; the
      classifier is re-initialised when the class count differs;
    * ``pretrained`` another file (Google ``.npz``, timm ``.pth``, the seeds'
      ViT-pytorch ``.bin``): architecture inferred from the tensors, or ``model``;
    * no ``pretrained``: ``model`` (default ``fgvc_tiny``) from scratch.
    """
    from ..models import create_model, load_checkpoint, read_spec

    if drop_path is not None and not 0 <= drop_path < 1:
        raise ConfigError(f"drop_path={drop_path!r}: expected a rate in [0, 1)")
    extra: Dict[str, Any] = {}
    if drop_path is not None:
        extra["drop_path_rate"] = float(drop_path)
    opt = {k: v for k, v in dict(head=head, scorer=scorer, fuse=fuse).items() if v is not None}
    if pretrained is None:
        return create_model(model or "fgvc_tiny", img_size=img_size, num_classes=num_classes,
                            class_names=class_names, **opt, **extra)
    pretrained = os.fspath(pretrained)
    if not os.path.exists(pretrained):
        raise CheckpointError(f"pretrained={pretrained}: checkpoint not found")
    spec = read_spec(pretrained, required=False)
    if spec is not None and spec.get("pruned"):  # fgvc-kit prune: the narrower layers rebuild from the spec
        if num_classes != spec["num_classes"] or model not in (None, spec["backbone"]["name"]) or extra \
                or opt.get("head", spec["head"]["name"]) != spec["head"]["name"]:
            raise ConfigError(f"pretrained={pretrained}: a pruned checkpoint is fine-tuned as it is (its "
                              f"{spec['num_classes']} classes and head); give no model=, head= or drop_path= with it")
        over = {k: v for k, v in dict(scorer=opt.get("scorer"), fuse=opt.get("fuse"), img_size=img_size,
                                      class_names=list(class_names) if class_names else None).items()
                if v is not None}
        return load_checkpoint(pretrained, **over)
    if spec is not None and model in (None, spec["backbone"]["name"]):
        kwargs = {k: v for k, v in spec["backbone"]["kwargs"].items() if k not in ("num_classes", "img_size")}
        kwargs.update(spec["head"].get("args") or {})
        kwargs.update(extra)
        td = spec.get("token_drop", {})
        m = create_model(spec["backbone"]["name"], img_size=img_size or spec["img_size"], num_classes=num_classes,
                         head=opt.get("head", spec["head"]["name"]), scorer=opt.get("scorer", td.get("scorer", "tavt")),
                         fuse=opt.get("fuse", td.get("fuse", False)), pretrained=pretrained,
                         class_names=class_names, **kwargs)
        m.spec["normalization"] = spec.get("normalization", m.spec["normalization"])
        return m
    if model is not None:
        return create_model(model, img_size=img_size, num_classes=num_classes, pretrained=pretrained,
                            class_names=class_names, **opt, **extra)
    over: Dict[str, Any] = dict(num_classes=num_classes, reset_head=True, class_names=class_names, **opt, **extra)
    if img_size is not None:
        over["img_size"] = img_size
    return load_checkpoint(pretrained, **over)


def check_model_fits(model: nn.Module, dataset, where: str) -> None:
    """A checkpoint's classes must be the dataset's: same count, and the same names when both have names."""
    n_model = int(getattr(model, "num_classes", 0))
    if n_model != dataset.num_classes:
        raise DatasetError(f"{where}: the model has {n_model} classes, dataset {dataset.name} has "
                           f"{dataset.num_classes}; expected a checkpoint trained on this dataset")
    names = (getattr(model, "spec", None) or {}).get("class_names")
    if names:
        for i, (a, b) in enumerate(zip(names, dataset.class_names)):
            if str(a) != str(b):
                raise DatasetError(f"{where}: class {i} is {a!r} in the checkpoint but {b!r} in dataset "
                                   f"{dataset.name}; expected the same classes in the same order")
