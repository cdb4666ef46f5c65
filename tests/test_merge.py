"""Token merging (ToMe) as a reducer: equal to an independent ToMe reference, batches, heads, schedules, MACs, ONNX."""
import json
import math

import pytest
import timm
import torch

import tavt_kit
from conftest import perturb
from tavt_kit import ConfigError, ScheduleError, TokenSchedule

# tiny timm ViTs: 64x64 images, 8x8 patches -> 64 patch tokens, depth 4
TINY = dict(img_size=64, patch_size=8, embed_dim=48, depth=4, num_heads=2)
SMALL = dict(img_size=32, patch_size=8, embed_dim=32, depth=4, num_heads=2)  # 16 patch tokens
VARIANTS = {
    "class token": ("vit_base_patch16_224", {}),
    "distilled, 2 prefix tokens": ("deit_base_distilled_patch16_224", {}),
    "registers + class token": ("vit_base_patch16_224", {"reg_tokens": 3}),
    "no class token, avg pool": ("vit_base_patch16_224", {"class_token": False, "global_pool": "avg"}),
}


def _pair(name, kwargs, size=TINY, **model_kw):
    ref = perturb(timm.create_model(name, num_classes=7, **size, **kwargs), 0.05).eval()
    model = tavt_kit.create_model(name, num_classes=7, **size, **kwargs, **model_kw).eval()
    model.load_state_dict(ref.state_dict())
    return ref, model


def tome_counts(num_patches, depth, r):
    """The schedule of ToMe's timm patch with constant ``r`` (its clamp: at most half the patch tokens)."""
    counts, n = [], num_patches
    for _ in range(depth):
        n -= min(r, n // 2)
        counts.append(n)
    return counts


# ----------------------------------------------------------- an independent ToMe reference
def tome_reference(vit, img, r, prop_attn=True, rounds=None):
    """ToMe (bipartite_soft_matching + merge_wavg + ToMeBlock/ToMeAttention) in plain loops over timm modules.

    ``rounds``: per block, the r of each bipartite round (default: ToMe's one round of ``r``, clamped); a later
    round of a block matches on the keys merged like the tokens (size-weighted mean).
    """
    class_token = vit.cls_token is not None
    distill = getattr(vit, "dist_token", None) is not None
    x = vit.norm_pre(vit.patch_drop(vit._pos_embed(vit.patch_embed(img))))
    size = None
    for bi, blk in enumerate(vit.blocks):
        at = blk.attn
        h = blk.norm1(x)
        B, N, C = h.shape
        q, k, v = at.qkv(h).reshape(B, N, 3, at.num_heads, C // at.num_heads).permute(2, 0, 3, 1, 4)
        logits = (q @ k.transpose(-2, -1)) * at.scale
        if prop_attn and size is not None:
            logits = logits + size.log()[:, None, None, :, 0]
        out = (logits.softmax(dim=-1) @ v).transpose(1, 2).reshape(B, N, C)
        x = x + at.proj(out)
        metric = k.mean(1)
        block_rounds = rounds[bi] if rounds is not None else [min(r, (N - int(class_token) - int(distill)) // 2)]
        for rr in block_rounds:
            if rr <= 0:
                continue
            if size is None:
                size = torch.ones_like(x[..., :1])
            new_x, new_size, new_metric = [], [], []
            for i in range(B):  # one image at a time
                m = metric[i] / metric[i].norm(dim=-1, keepdim=True)
                scores = m[::2] @ m[1::2].T
                if class_token:
                    scores[0, :] = -math.inf
                if distill:
                    scores[:, 0] = -math.inf
                node_max, node_idx = scores.max(dim=-1)
                edge = node_max.argsort(descending=True)
                unm, src = edge[rr:], edge[:rr]
                dst = node_idx[src]
                if class_token:
                    unm = unm.sort()[0]

                def merge(t):
                    a, b = t[::2], t[1::2]
                    b = b.scatter_reduce(0, dst[:, None].expand(-1, t.shape[1]), a[src], reduce="sum")
                    if distill:
                        return torch.cat([a[unm][:1], b[:1], a[unm][1:], b[1:]])
                    return torch.cat([a[unm], b])

                s = merge(size[i])
                new_x.append(merge(x[i] * size[i]) / s)
                new_metric.append(merge(metric[i] * size[i]) / s)
                new_size.append(s)
            x, size, metric = torch.stack(new_x), torch.stack(new_size), torch.stack(new_metric)
        x = x + blk.mlp(blk.norm2(x))
    return vit.forward_head(vit.norm(x))


@pytest.mark.parametrize("variant", ["class token", "distilled, 2 prefix tokens", "no class token, avg pool"])
@pytest.mark.parametrize("prop_attn", [True, False])
@pytest.mark.parametrize("r", [4, 13, 30])  # 30: every block hits the half limit
def test_equals_tome_reference(variant, prop_attn, r):
    ref, model = _pair(*VARIANTS[variant], reducer="merge", prop_attn=prop_attn)
    counts = tome_counts(64, 4, r)
    x = torch.randn(3, 3, 64, 64)
    with torch.no_grad():
        expected = tome_reference(ref, x, r, prop_attn)
        got = model(x, drop=counts)
        full = model(x)
    assert (got - expected).abs().max() <= 1e-4
    assert (got - full).abs().max() > 1e-3  # merging really changed the computation


@pytest.mark.parametrize("variant", ["class token", "distilled, 2 prefix tokens", "no class token, avg pool"])
def test_merging_more_than_half_of_a_block_runs_several_bipartite_rounds(variant):
    """64 -> 20 -> 6 -> 3 -> 1 patch tokens: each block past ToMe's half runs the fewest rounds that can, each
    keeping about the same fraction, later rounds matching on the size-weighted merged keys."""
    from tavt_kit.models.token_merge import merge_rounds

    assert [merge_rounds(n, k) for n, k in [(64, 20), (20, 6), (6, 3), (3, 1)]] == [(36, 20), (11, 6), (3,), (2, 1)]
    ref, model = _pair(*VARIANTS[variant], reducer="merge")
    x = torch.randn(3, 3, 64, 64)
    with torch.no_grad():
        expected = tome_reference(ref, x, 0, rounds=[[28, 16], [9, 5], [3], [1, 1]])
        got = model(x, drop=[20, 6, 3, 1])
        one_round = tome_reference(ref, x, 0, rounds=[[44], [14], [3], [2]])  # what one round each cannot do
    assert (got - expected).abs().max() <= 1e-4
    assert (got - one_round).abs().max() > 1e-3


def test_merge_rounds_never_merge_more_than_half_and_end_at_the_count():
    from tavt_kit.models.token_merge import merge_rounds

    for n in range(1, 200):
        for k in range(1, n + 1):
            rounds, prev = merge_rounds(n, k), n
            assert len(rounds) == (0 if k == n else 1 if n - k <= n // 2 else len(rounds))
            for c in rounds:
                assert c < prev and prev - c <= prev // 2
                prev = c
            assert prev == k
            greedy, m = 0, n
            while m > k:
                m, greedy = m - m // 2, greedy + 1
            assert len(rounds) == greedy  # the fewest rounds that can
    with pytest.raises(ConfigError, match="expected 1 <= 0 <= 5"):
        merge_rounds(5, 0)


def test_prop_attn_matters_and_is_switchable():
    _, model = _pair(*VARIANTS["class token"], reducer="merge")
    x = torch.randn(2, 3, 64, 64)
    counts = tome_counts(64, 4, 16)
    with torch.no_grad():
        on = model(x, drop=counts)
        model.prop_attn = False
        off = model(x, drop=counts)
    assert (on - off).abs().max() > 1e-5


@pytest.mark.parametrize("variant", list(VARIANTS))
def test_batch_equals_images_one_by_one(variant):
    _, model = _pair(*VARIANTS[variant], size=SMALL, reducer="merge")
    x = torch.randn(4, 3, 32, 32)
    drop = [12, 8, 6, 3]
    with torch.no_grad():
        batch = model(x, drop=drop)
        single = torch.cat([model(x[i:i + 1], drop=drop) for i in range(4)])
        full = model(x)
    assert batch.shape == (4, 7)
    assert (batch - single).abs().max() <= 1e-5
    assert (batch - full).abs().max() > 1e-4


@pytest.mark.parametrize("variant", list(VARIANTS))
def test_prefix_tokens_never_merge_and_sizes_add_up(variant):
    _, model = _pair(*VARIANTS[variant], size=SMALL, reducer="merge")
    P = model.num_prefix_tokens
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        tokens, state = model.forward_tokens(x, drop=[12, 8, 6, 3], restore=True)
        embedded = model.embed_tokens(x)
    assert tokens.shape == (2, P + 3, 32)
    assert torch.equal(state.size[:, :P, 0], torch.ones(2, P))
    assert torch.equal(state.size[:, P:, 0].sum(1), torch.full((2,), 16.0))
    # each grid position belongs to one token; a token's size is the number of positions it holds
    counts = torch.stack([torch.bincount(o, minlength=3) for o in state.owner]).float()
    assert torch.equal(counts, state.size[:, P:, 0])
    assert embedded.shape[1] == P + 16


@pytest.mark.parametrize("variant", list(VARIANTS))
def test_restore_maps_a_merged_token_to_all_its_positions(variant):
    _, model = _pair(*VARIANTS[variant], size=SMALL, reducer="merge")
    P = model.num_prefix_tokens
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        out, grid = model.forward_features(x, drop=[12, 8, 8, 5], restore=True)
        _, state = model.forward_tokens(x, drop=[12, 8, 8, 5], restore=True)
    assert out.shape == (2, P + 5, 32) and grid.shape == (2, 16, 32)
    expected = out[:, P:].gather(1, state.owner.unsqueeze(-1).expand(-1, -1, 32))
    assert torch.equal(grid, expected)
    assert all(len(torch.unique(g, dim=0)) == 5 for g in grid)


def test_drop_then_merge_then_drop_restores_every_position():
    _, model = _pair(*VARIANTS["class token"], size=SMALL)
    sched = TokenSchedule((12, 8, 6, 4), 16, reducers=("drop", "merge", None, "merge"))
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        out, grid = model.forward_features(x, drop=sched, restore=True)
        batch = model(x, drop=sched)
        single = torch.cat([model(x[i:i + 1], drop=sched) for i in range(2)])
        _, state = model.forward_tokens(x, drop=sched, restore=True)
    assert grid.shape == (2, 16, 32) and out.shape == (2, 5, 32)
    assert (batch - single).abs().max() <= 1e-5
    # dropped positions (4 in block 0, then those of the 2 tokens block 2 drops) hold their last state,
    # the others the final state of the token they are part of
    alive = state.owner >= 0
    assert 4 + 2 <= (~alive).sum(1).min() and alive.sum(1).min() >= 4
    final = (grid.unsqueeze(2) == out[:, 1:].unsqueeze(1)).all(-1).any(-1)
    assert torch.equal(final, alive)


def test_per_block_reducers_override_the_model_reducer():
    _, drop_model = _pair(*VARIANTS["class token"], size=SMALL)
    merge_model = tavt_kit.create_model("vit_base_patch16_224", num_classes=7, **SMALL, reducer="merge").eval()
    merge_model.load_state_dict(drop_model.state_dict())
    x = torch.randn(2, 3, 32, 32)
    counts = (12, 8, 6, 3)
    with torch.no_grad():
        a = drop_model(x, drop=TokenSchedule(counts, 16, reducers=("merge",) * 4))
        b = merge_model(x, drop=counts)
        c = merge_model(x, drop=TokenSchedule(counts, 16, reducers=("drop",) * 4))
        d = drop_model(x, drop=counts)
    assert torch.allclose(a, b, atol=1e-6) and torch.allclose(c, d, atol=1e-6)
    assert (a - d).abs().max() > 1e-4


def test_reducer_attribute_and_limits():
    _, model = _pair(*VARIANTS["class token"], size=SMALL)
    assert model.reducer == "drop"
    with pytest.raises(ConfigError, match="drop, merge") as e:
        model.reducer = "prune"
    assert "\n" not in str(e.value)
    model.reducer = "merge"
    model.schedule = [8, 4, 2, 1]
    with pytest.raises(ConfigError, match="fuse"):
        model.fuse = True
        model(torch.randn(1, 3, 32, 32))
    model.fuse = False
    model.reducer = "drop"
    model.schedule = [12, 5, 5, 5]
    model.fuse = True
    with pytest.raises(ConfigError, match="fuse"):
        model.reducer = "merge"  # re-validates the default schedule
    model.fuse = False
    with pytest.raises(ConfigError, match="unknown reducer"):
        tavt_kit.create_model("vit_base_patch16_224", reducer="tome", **SMALL)
    with pytest.raises(ConfigError, match="fuse"):
        tavt_kit.create_model("vit_base_patch16_224", reducer="merge", fuse=True, **SMALL)


def test_vitae_refuses_merge():
    kw = dict(img_size=96, num_classes=5, NC_depth=[0, 0, 3])
    with pytest.raises(ConfigError, match="reducer") as e:
        tavt_kit.create_model("ViTAE_basic_Tiny", reducer="merge", **kw)
    assert "\n" not in str(e.value)
    model = tavt_kit.create_model("ViTAE_basic_Tiny", **kw)
    with pytest.raises(ConfigError, match="not supported"):
        model.reducer = "merge"
    n = model.num_patches
    with pytest.raises(ConfigError, match="not supported"):
        model.make_schedule(TokenSchedule((n, n - 4, n - 6), n, reducers=(None, "merge", None)))


# ----------------------------------------------------------------- schedules
def test_schedule_reducers_round_trip(tmp_path):
    s = TokenSchedule((12, 8, 6, 3), 16, reducers=("drop", "merge", None, "merge"))
    assert "reducers ['drop', 'merge', None, 'merge']" in str(s)
    assert s != TokenSchedule((12, 8, 6, 3), 16) and hash(s) != hash(TokenSchedule((12, 8, 6, 3), 16))
    assert TokenSchedule((12, 8, 6, 3), 16, reducers=(None,) * 4) == TokenSchedule((12, 8, 6, 3), 16)
    d = s.to_dict()
    assert d["version"] == 2 and d["reducers"] == ["drop", "merge", None, "merge"]
    assert TokenSchedule.from_dict(json.loads(json.dumps(d))) == s
    s.save(tmp_path / "m.json", model_info={"depth": 4})
    loaded = TokenSchedule.load(tmp_path / "m.json")
    assert loaded == s and loaded.meta == {"depth": 4}
    plain = TokenSchedule((12, 8, 6, 3), 16).to_dict()
    assert "version" not in plain and "reducers" not in plain and plain["min_tokens"] == 1  # version 1, unchanged


def test_old_reader_refuses_a_file_with_reducers():
    """What a reader from before reducers does: min_tokens through its integer check (it ignored other keys)."""
    from tavt_kit.schedules.schedule import _as_int

    d = TokenSchedule((12, 8, 6, 3), 16, reducers=("merge",) * 4).to_dict()
    with pytest.raises(ScheduleError, match="version 2 .*reducers"):
        _as_int(d["min_tokens"], "min_tokens")
    with pytest.raises(ScheduleError, match="version 3 is not known"):
        TokenSchedule.from_dict({**d, "version": 3})
    with pytest.raises(ScheduleError, match="needs \"version\": 2"):
        TokenSchedule.from_dict({"counts": [3], "num_patches": 4, "reducers": ["merge"]})


def test_bad_reducers_are_refused():
    with pytest.raises(ScheduleError, match="reducers has 3 entries, the schedule has 4 blocks") as e:
        TokenSchedule((12, 8, 6, 3), 16, reducers=("drop", "merge", None))
    assert "\n" not in str(e.value)
    with pytest.raises(ScheduleError, match=r"reducers\[1\] = 'tome'"):
        TokenSchedule((12, 8, 6, 3), 16, reducers=("drop", "tome", None, None))


# ---------------------------------------------------------------------- heads
HEADS = {"ffvt": {"num_token": 3}, "mixvit": {"mask_topk": 0.2}, "pim": {"num_selects": 8, "fpn_size": 32}}


@pytest.mark.parametrize("head", list(HEADS))
def test_each_head_runs_with_a_merge_schedule(head):
    model = perturb(tavt_kit.create_model("vit_base_patch16_224", num_classes=4, head=head, reducer="merge",
                                          **SMALL, **HEADS[head]))
    drop = [12, 8, 6, 4]
    x, y = torch.randn(4, 3, 32, 32), torch.arange(4)
    model.eval()
    with torch.no_grad():
        logits = model(x, drop=drop)
        single = torch.cat([model(x[i:i + 1], drop=drop) for i in range(4)])
        assert logits.shape == (4, 4) and (logits - single).abs().max() <= 1e-5
        assert (logits - model(x)).abs().max() > 1e-5
        if head != "ffvt":
            out, grid = model.forward_features(x, drop=drop, restore=True)
            assert grid.shape == (4, 16, 32)
    model.train()
    logits, aux = model(x, drop=drop, labels=y)
    assert logits.shape == (4, 4) and all(torch.isfinite(v) for v in aux.values())
    (logits.sum() + sum(aux.values(), torch.zeros(()))).backward()


# ----------------------------------------------------------------------- MACs
def test_merge_macs_are_drop_macs_plus_the_merge_part():
    model = tavt_kit.create_model("vit_base_patch16_224", num_classes=4, **TINY)
    counts = tome_counts(64, 4, 13)
    drop = tavt_kit.count_macs(model, counts)
    merge = tavt_kit.count_macs(model, TokenSchedule(counts, 64, reducers=("merge",) * 4))
    hd = model.blocks[0].attn.head_dim
    expected, n = 0, 64
    for k in counts:
        N = 1 + n
        expected += ((N + 1) // 2) * (N // 2) * hd + N * 48
        n = k
    assert merge["merge"] == expected
    assert merge.total() == drop.total() + expected
    assert {p: m for p, m in merge.by_part().items() if p != "merge"} == drop.by_part()


def test_a_block_merging_more_than_half_counts_each_round():
    model = tavt_kit.create_model("vit_base_patch16_224", num_classes=4, **TINY)
    hd, C = model.blocks[0].attn.head_dim, 48
    macs = tavt_kit.count_macs(model, TokenSchedule((20, 20, 20, 20), 64, reducers=("merge", None, None, None)))
    # rounds 64 -> 36 -> 20 (65 then 37 tokens with the class token); keys weighted by size before round 2
    assert macs["merge"] == (33 * 32 * hd + 65 * C + 65 * hd) + (19 * 18 * hd + 37 * C)


# ----------------------------------------------------------------------- ONNX
@pytest.mark.parametrize("rounds", ["one", "several"])
def test_merge_model_exports_to_onnx_and_runs(tmp_path, rounds):
    ort = pytest.importorskip("onnxruntime")
    _, model = _pair(*VARIANTS["class token"], size=SMALL, reducer="merge")
    model.schedule = [12, 8, 6, 3] if rounds == "one" else [5, 5, 2, 1]  # 16 -> 5: two bipartite rounds
    x = torch.randn(2, 3, 32, 32)
    path = tmp_path / "merge.onnx"
    torch.onnx.export(model, (x,), str(path), dynamo=True)
    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    y = torch.randn(2, 3, 32, 32)
    got = sess.run(None, {sess.get_inputs()[0].name: y.numpy()})[0]
    with torch.no_grad():
        expected = model(y)
    assert abs(torch.from_numpy(got) - expected).max() <= 1e-4
