import pytest
import timm
import torch

import tavt_kit
from conftest import TINY, perturb
from tavt_kit import ConfigError, ImageSizeError, ScheduleError, TokenSchedule, UnknownModelError

# one model per kind of ViT the foundation must cover
VARIANTS = {
    "token pool (vit)": ("vit_base_patch16_224", {}),
    "distilled, 2 prefix tokens": ("deit_base_distilled_patch16_224", {}),
    "registers + avg pool": ("vit_base_patch16_reg4_gap_256", {}),
    "LayerScale, no_embed_class": ("deit3_small_patch16_224", {}),
    "qk-norm": ("vit_base_patch16_224", {"qk_norm": True}),
    "avg pool, no class token": ("vit_medium_patch16_gap_256", {}),
    "map attention pool": ("vit_base_patch16_siglip_224", {}),
    "pre-norm (clip)": ("vit_base_patch16_clip_224", {}),
}
DROP = [60, 40, 17]


def _pair(name, kwargs):
    ref = perturb(timm.create_model(name, num_classes=7, **TINY, **kwargs)).eval()
    model = tavt_kit.create_model(name, num_classes=7, **TINY, **kwargs).eval()
    model.load_state_dict(ref.state_dict())
    return ref, model


@pytest.mark.parametrize("variant", list(VARIANTS))
def test_full_schedule_equals_timm_forward(variant):
    ref, model = _pair(*VARIANTS[variant])
    x = torch.randn(3, 3, 64, 64)
    with torch.no_grad():
        expected = ref(x)
        assert (model(x) - expected).abs().max() <= 1e-5
        assert (model(x, drop=model.full_schedule()) - expected).abs().max() <= 1e-5


@pytest.mark.parametrize("variant", list(VARIANTS))
@pytest.mark.parametrize("scorer,fuse", [("tavt", False), ("cls", False), ("cls", True), ("tavt", True),
                                         ("tavt-sampled", False)])
def test_batch_equals_images_one_by_one(variant, scorer, fuse):
    name, kwargs = VARIANTS[variant]
    _, model = _pair(name, kwargs)
    if scorer == "cls" and model.cls_token is None:
        pytest.skip("no class token")
    model.scorer, model.fuse = scorer, fuse
    x = torch.randn(4, 3, 64, 64)
    with torch.no_grad():
        batch = model(x, drop=DROP)
        single = torch.cat([model(x[i:i + 1], drop=DROP) for i in range(4)])
        full = model(x)
    assert batch.shape == (4, 7)
    assert (batch - single).abs().max() <= 1e-5
    assert (batch - full).abs().max() > 1e-4  # dropping really changed the computation


def test_patch_keeps_weights_and_identity():
    ref = perturb(timm.create_model("vit_small_patch16_224", num_classes=5, **TINY)).eval()
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        y = ref(x)
    model = tavt_kit.patch(ref)
    assert model is ref and isinstance(model, timm.models.vision_transformer.VisionTransformer)
    with torch.no_grad():
        assert torch.equal(model(x), y)
    assert model.spec["backbone"]["name"] == "vit_small_patch16_224"


def test_default_schedule_and_sequence_drop():
    model = tavt_kit.create_model("fgvc_tiny").eval()
    x = torch.randn(2, 3, 64, 64)
    sched = TokenSchedule.from_ratios([0.8] * 6, 6, 64)
    with torch.no_grad():
        explicit = model(x, drop=list(sched.counts))
        model.schedule = sched
        assert torch.equal(model(x), explicit)
        model.schedule = None
        assert not torch.equal(model(x), explicit)
    with pytest.raises(ScheduleError, match="5 counts, the model has 6 blocks"):
        model(x, drop=[64, 32, 16, 8, 4])


def test_tokens_actually_shrink():
    model = tavt_kit.create_model("fgvc_tiny").eval()
    seen = []
    for blk in model.blocks:
        blk.mlp.register_forward_hook(lambda m, i, o: seen.append(i[0].shape[1]))
    with torch.no_grad():
        model(torch.randn(1, 3, 64, 64), drop=[64, 50, 50, 30, 10, 1])
    assert seen == [65, 51, 51, 31, 11, 2]  # class token + kept patches, measured at the MLP input


def test_restore_scatters_last_states_into_the_grid():
    model = perturb(tavt_kit.create_model("vit_small_patch16_224", num_classes=3, **TINY)).eval()
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        tokens, grid = model.forward_features(x, drop=DROP, restore=True)
        assert tokens.shape == (2, 1 + DROP[-1], 64) and grid.shape == (2, 64, 64)
        # every kept token's final state appears in the grid
        kept = tokens[:, 1:]
        hits = (grid.unsqueeze(2) - kept.unsqueeze(1)).abs().amax(-1) < 1e-6  # B, 64, kept
        assert hits.any(1).all()
        assert int(hits.any(2).sum(1)[0]) == DROP[-1]
        full_tokens, full_grid = model.forward_features(x, restore=True)
        assert torch.equal(full_grid, full_tokens[:, 1:])


def test_fuse_adds_one_token_inside_blocks_only():
    model = tavt_kit.create_model("fgvc_tiny", fuse=True).eval()
    seen = []
    model.blocks[-1].mlp.register_forward_hook(lambda m, i, o: seen.append(i[0].shape[1]))
    with torch.no_grad():
        feats = model.forward_features(torch.randn(1, 3, 64, 64), drop=[64, 32, 32, 16, 16, 8])
    assert seen == [1 + 8 + 1]
    assert feats.shape[1] == 1 + 8


def test_bad_model_arguments():
    with pytest.raises(UnknownModelError, match="unknown model 'vit_bsae_patch16_224'.*did you mean"):
        tavt_kit.create_model("vit_bsae_patch16_224")
    with pytest.raises(UnknownModelError, match="not a timm VisionTransformer"):
        tavt_kit.create_model("resnet18")
    with pytest.raises(ImageSizeError, match="img_size 70 is not a multiple of the patch size 8"):
        tavt_kit.create_model("fgvc_tiny", img_size=70)
    with pytest.raises(ConfigError, match="scorer 'cls' needs a class token"):
        tavt_kit.create_model("vit_medium_patch16_gap_256", scorer="cls", **TINY)
    with pytest.raises(ConfigError, match="unknown scorer 'foo'"):
        tavt_kit.create_model("fgvc_tiny", scorer="foo")
    with pytest.raises(ConfigError, match="unknown head 'bar'"):
        tavt_kit.create_model("fgvc_tiny", head="bar")


def test_unsupported_blocks_are_refused():
    m = timm.create_model("vit_base_patch16_224", img_size=64, depth=2, embed_dim=64, num_heads=2,
                          block_fn=timm.models.vision_transformer.ParallelScalingBlock)
    with pytest.raises(tavt_kit.UnsupportedModelError, match="block 0 is a ParallelScalingBlock"):
        tavt_kit.patch(m)


def test_training_mode_backward_through_drop():
    model = tavt_kit.create_model("fgvc_tiny", drop_path_rate=0.1).train()
    loss = model(torch.randn(2, 3, 64, 64), drop=[60, 40, 30, 20, 10, 5]).logsumexp(1).mean()
    loss.backward()
    assert model.blocks[0].attn.qkv.weight.grad is not None


def test_tavt_sampled_is_tavt_over_spaced_queries_beside_the_fused_kernel(monkeypatch):
    """``tavt-sampled`` ranks tokens by TAVT's significance summed over at most 32 query rows (the class token
    first, then every step-th token) and keeps the fused attention kernel; at <= 32 tokens it is TAVT's score."""
    import torch.nn.functional as F

    from tavt_kit.models import attention as A

    torch.manual_seed(0)
    model = tavt_kit.create_model("fgvc_tiny", num_classes=4, img_size=64, patch_size=4).eval()
    attn = model.blocks[0].attn
    calls = []
    fused = F.scaled_dot_product_attention
    monkeypatch.setattr(F, "scaled_dot_product_attention", lambda *a, **k: calls.append(1) or fused(*a, **k))
    for n in (20, 257):
        x = torch.randn(2, n, model.embed_dim)
        with torch.no_grad():
            out_t, exact = A.attention_with_info(attn, x, "tavt")
            assert not calls  # TAVT's exact score needs the whole matrix
            out_s, sampled = A.attention_with_info(attn, x, "tavt-sampled")
            assert calls  # the sampled score leaves the attention to the fused kernel
            calls.clear()
            assert torch.allclose(out_s, out_t, atol=1e-5)
            q, k, _ = attn.qkv(x).reshape(2, n, 3, attn.num_heads, attn.head_dim).permute(2, 0, 3, 1, 4).unbind(0)
            step = -(-n // A.SAMPLED_QUERIES)
            rows = ((q[:, :, ::step] * attn.scale) @ k.transpose(-2, -1)).softmax(-1).sum(dim=(1, 2))
        assert A.sampled_queries(n) == len(range(0, n, step)) <= A.SAMPLED_QUERIES
        assert torch.allclose(sampled["drop"], rows, atol=1e-5)
        if n <= A.SAMPLED_QUERIES:
            assert torch.allclose(sampled["drop"], exact["drop"], atol=1e-5)
        else:
            assert not torch.allclose(sampled["drop"], exact["drop"], atol=1e-3)
    # and it is a scorer every entry point takes
    assert tavt_kit.create_model("fgvc_tiny", scorer="tavt-sampled").scorer == "tavt-sampled"
