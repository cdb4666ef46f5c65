import logging

import pytest
import torch

import tavt_kit
from tavt_kit import TokenSchedule

fvcore = pytest.importorskip("fvcore.nn")
logging.getLogger("fvcore").setLevel(logging.ERROR)

SMALL = dict(embed_dim=64, depth=4, num_heads=2, num_classes=10)


def fvcore_macs(model, size):
    for blk in model.blocks:
        blk.attn.fused_attn = False  # fvcore counts nothing for scaled_dot_product_attention
    analysis = fvcore.FlopCountAnalysis(model.eval(), torch.randn(1, 3, size, size))
    analysis.unsupported_ops_warnings(False)
    analysis.uncalled_modules_warnings(False)
    return analysis.total()


@pytest.mark.parametrize("size", [224, 448])
@pytest.mark.parametrize("name,scorer,fuse", [
    ("vit_base_patch16_224", "tavt", False),
    ("vit_base_patch16_224", "cls", True),
    ("deit_base_distilled_patch16_224", "cls", False),
    ("vit_base_patch16_reg4_gap_256", "tavt", True),
    ("vit_base_patch16_224", "tavt-sampled", False),
])
@pytest.mark.parametrize("keep", [None, [1.0, 0.7, 0.7, 0.5]])
def test_count_macs_agrees_with_fvcore(size, name, scorer, fuse, keep):
    model = tavt_kit.create_model(name, img_size=size, scorer=scorer, fuse=fuse, **SMALL)
    if keep is not None:
        model.schedule = TokenSchedule.from_ratios(keep, model.depth, model.num_patches)
    ours = tavt_kit.count_macs(model).total()
    ref = fvcore_macs(model, size)
    assert abs(ours - ref) / ref < 0.005, (ours, ref)


def test_vit_b16_reference_figures():
    """DESIGN.md: ViT-B/16 costs 17.6 GMACs at 224 and 78.5 at 448; TAVT's smallest is ~25.7 at 448."""
    with torch.device("meta"):
        m224 = tavt_kit.create_model("vit_base_patch16_224")
        m448 = tavt_kit.create_model("vit_base_patch16_224", img_size=448)
    assert abs(tavt_kit.count_macs(m224).total() / 1e9 - 17.6) < 0.1
    assert abs(tavt_kit.count_macs(m448).total() / 1e9 - 78.5) < 0.3
    tavt = TokenSchedule.from_tavt_lengths((628, 503, 403, 323, 259, 208, 167, 134, 108, 87, 70, 56), 784)
    assert abs(tavt_kit.count_macs(m448, tavt).total() / 1e9 - 25.7) < 0.3


def test_mac_count_slices():
    model = tavt_kit.create_model("fgvc_tiny")
    full = tavt_kit.count_macs(model)
    dropped = tavt_kit.count_macs(model, [64, 32, 32, 16, 16, 8])
    parts = full.by_part()
    assert set(parts) >= {"patch_embed", "attn_qkv", "attn_matmul", "attn_proj", "mlp", "head"}
    assert sum(parts.values()) == full.total() == sum(full.by_module().values())
    assert len(full.by_block()) == 6 and full["blocks.0"] == full.by_block()[0]
    assert full["patch_embed"] == dropped["patch_embed"]
    assert dropped["mlp"] < full["mlp"] and dropped.by_block()[5] < dropped.by_block()[1]
    # MLP cost is linear in the tokens leaving each block
    mlp_full = [m for mod, p, m in full.rows if p == "mlp"]
    mlp_drop = [m for mod, p, m in dropped.rows if p == "mlp"]
    assert mlp_drop[5] * 65 == mlp_full[5] * 9
    assert "total" in str(full) and full.to_dict()["total"] == full.total()
