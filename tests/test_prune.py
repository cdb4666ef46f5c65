import pytest
import torch

import tavt_kit
from tavt_kit.models.compress import prune_model

pytest.importorskip("torch_pruning")


def _model():
    torch.manual_seed(0)
    return tavt_kit.create_model("vit_base_patch16_224", img_size=64, patch_size=8, embed_dim=64, depth=3,
                                 num_heads=4, num_classes=5)


def test_ratio_prunes_heads_and_mlp_keeps_width_and_schedules(tmp_path):
    model = _model()
    full = tavt_kit.count_macs(model).total()
    prune_model(model, ratio=0.5)
    heads = [b.attn.num_heads for b in model.blocks]
    hidden = [b.mlp.fc1.out_features for b in model.blocks]
    assert sum(heads) < 12 and sum(hidden) < 3 * 256
    assert model.embed_dim == 64 and model.blocks[0].attn.qkv.in_features == 64
    assert model.spec["pruned"] == {"heads": heads, "mlp_hidden": hidden}
    x = torch.randn(2, 3, 64, 64)
    model.eval()
    with torch.no_grad():
        y_full, y_drop = model(x), model(x, drop=[50, 30, 10])
    assert y_full.shape == (2, 5) and not torch.allclose(y_full, y_drop)
    pruned = tavt_kit.count_macs(model).total()
    assert pruned < 0.75 * full
    assert tavt_kit.count_macs(model, [50, 30, 10]).total() < pruned  # the two compressions compose
    back = tavt_kit.load_checkpoint(tavt_kit.save_checkpoint(model, tmp_path / "p.safetensors"))
    with torch.no_grad():
        assert torch.allclose(back.eval()(x, drop=[50, 30, 10]), y_drop, atol=1e-6)
    assert [b.attn.num_heads for b in back.blocks] == heads


def test_macs_target_and_taylor_importance():
    model = _model()
    full = tavt_kit.count_macs(model).total()
    calib = [(torch.randn(4, 3, 64, 64), torch.randint(0, 5, (4,)))]
    prune_model(model, macs_target=0.6 * full, importance="taylor", calibration=calib, steps=8)
    assert tavt_kit.count_macs(model).total() <= 0.6 * full


def test_bad_arguments():
    model = _model()
    with pytest.raises(tavt_kit.ConfigError, match="exactly one of ratio"):
        prune_model(model)
    with pytest.raises(tavt_kit.ConfigError, match=r"^ratio=1.5: expected a fraction in \(0, 1\)"):
        prune_model(model, ratio=1.5)
    with pytest.raises(tavt_kit.ConfigError, match="importance=.taylor. needs calibration"):
        prune_model(model, ratio=0.3, importance="taylor")
    with pytest.raises(tavt_kit.ConfigError, match="macs_target=.*: expected a positive number below the model"):
        prune_model(model, macs_target=1e15)
