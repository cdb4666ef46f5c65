"""ViTAE / ViTAEv2 backbones: official layout and outputs, patch drop, MACs, errors.

"Same outputs as the official model" is checked against ``official_forward``
below: a functional re-statement of the official ViTAE-Transformer forward
(``ViTAE_ViT_basic`` / ``ViTAEv2_basic``: ReductionCell, NormalCell,
Token_performer, Token_transformer, window attention) that reads the state
dict by the official key names only and records which keys it used. It also
re-states the documented patch-drop semantics with explicit per-position
bookkeeping for one image, independently of ``GridState``/``select_tokens``.
"""
import argparse
import logging
import math

import pytest
import torch
import torch.nn.functional as F

import tavt_kit
import tavt_kit.models.vitae as vitae
from tavt_kit.models.factory import load_pretrained_weights
from tavt_kit import CheckpointError, ConfigError, ImageSizeError, ScheduleError, TokenSchedule

# tiny configurations of the official architectures (fast on 2 CPU cores)
V1 = ("ViTAE_basic_Tiny", dict(img_size=96, num_classes=5, NC_depth=[0, 0, 3]))  # 6x6 grid, 3 cells
V2 = ("ViTAEv2_S", dict(img_size=96, num_classes=5, NC_depth=[1, 1, 3, 1]))  # windows padded 24->28, 12->14
V2_LAST = ("ViTAEv2_S", dict(img_size=128, num_classes=5, NC_depth=[1, 1, 1, 2], drop_stage=3))


def _randomize(model):
    """Random weights and BatchNorm statistics everywhere, so every tensor of the layout matters."""
    g = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for name, p in model.named_parameters():
            p.add_(torch.randn(p.shape, generator=g) * 0.05)
        for name, b in model.named_buffers():
            if name.endswith("running_mean"):
                b.copy_(torch.randn(b.shape, generator=g) * 0.1)
            elif name.endswith("running_var"):
                b.copy_(torch.rand(b.shape, generator=g) + 0.5)
    return model.eval()


def _model(spec, **extra):
    name, kw = spec
    return _randomize(tavt_kit.create_model(name, **{**kw, **extra}))


# --------------------------------------------------------------------------------------------------
# reference: the official forward, re-stated functionally over the official key names
class Keys(dict):
    """A state dict that records which keys were read."""

    def __init__(self, sd):
        super().__init__(sd)
        self.used = set()

    def __getitem__(self, k):
        self.used.add(k)
        return super().__getitem__(k)


def _ln(P, pre, x, eps):
    return F.layer_norm(x, x.shape[-1:], P[pre + ".weight"], P[pre + ".bias"], eps)


def _lin(P, pre, x, bias=True):
    return F.linear(x, P[pre + ".weight"], P[pre + ".bias"] if bias else None)


def _conv(P, pre, x, stride=1, padding=1, dilation=1, groups=1):
    return F.conv2d(x, P[pre + ".weight"], P[pre + ".bias"], stride, padding, dilation, groups)


def _bn(P, pre, x):
    return F.batch_norm(x, P[pre + ".running_mean"], P[pre + ".running_var"], P[pre + ".weight"],
                        P[pre + ".bias"], False, 0.0, 1e-5)


def _mlp(P, pre, x):
    return _lin(P, pre + ".fc2", F.gelu(_lin(P, pre + ".fc1", x)))


def _mhsa(P, pre, x, heads, bias=True):
    """Returns (output, attention probabilities)."""
    B, N, C = x.shape
    qkv = _lin(P, pre + ".qkv", x, bias).reshape(B, N, 3, heads, C // heads).permute(2, 0, 3, 1, 4)
    q, k, v = qkv[0], qkv[1], qkv[2]
    attn = ((q @ k.transpose(-2, -1)) * (C // heads) ** -0.5).softmax(dim=-1)
    return _lin(P, pre + ".proj", (attn @ v).transpose(1, 2).reshape(B, N, C)), attn


def _window_attn(P, pre, x, H, W, ws, heads, out_dim):
    """Official NormalCell/ReductionCell window path: pad (B, C, H, W) evenly, partition, attend, reverse, crop."""
    B, _, C = x.shape
    x = x.view(B, H, W, C)
    td, lr = (ws - H % ws) % ws, (ws - W % ws) % ws
    top, left = td // 2, lr // 2
    if td + lr > 0:
        x = F.pad(x.permute(0, 3, 1, 2), (left, lr - left, top, td - top)).permute(0, 2, 3, 1).contiguous()
    Hp, Wp = H + td, W + lr
    win = x.view(B, Hp // ws, ws, Wp // ws, ws, C).permute(0, 1, 3, 2, 4, 5).contiguous().view(-1, ws * ws, C)
    B_, N, _ = win.shape
    qkv = _lin(P, pre + ".qkv", win).reshape(B_, N, 3, heads, -1).permute(2, 0, 3, 1, 4)
    q, k, v = qkv[0] * (out_dim // heads) ** -0.5, qkv[1], qkv[2]
    out = _lin(P, pre + ".proj", ((q @ k.transpose(-2, -1)).softmax(-1) @ v).transpose(1, 2).reshape(B_, N, -1))
    out = out.view(-1, ws, ws, out_dim).view(B, Hp // ws, Wp // ws, ws, ws, -1)
    out = out.permute(0, 1, 3, 2, 4, 5).contiguous().view(B, Hp, Wp, -1)
    return out[:, top:top + H, left:left + W, :].reshape(B, H * W, out_dim)


def _pcm_nc(P, pre, img, group, version):
    y = F.silu(_bn(P, pre + ".1", _conv(P, pre + ".0", img, groups=group)))
    y = F.silu(_bn(P, pre + ".4", _conv(P, pre + ".3", y, groups=group)))
    y = _conv(P, pre + ".6", y, groups=group)
    return F.silu(y) if version == 1 else y


def _reduction(P, pre, x, a, s, version):
    if x.dim() == 3:  # official: x.view(B, n, n, C).permute(0, 3, 1, 2)
        B, N, C = x.shape
        n = int(math.sqrt(N))
        x = x.view(B, n, n, C).permute(0, 3, 1, 2)
    k, st = a["kernel_size"][s], a["downsample"][s]
    ys = []
    for j, d in enumerate(a["dilations"][s]):
        pad = math.ceil(((k - 1) * d + 1 - st) / 2)
        ys.append(F.gelu(_conv(P, f"{pre}.PRM.convs.{j}.0", x, st, pad, d)).unsqueeze(-1))
    y = torch.cat(ys, dim=-1)
    B, C, W, H, Nd = y.shape
    prm = y.permute(0, 4, 1, 2, 3).flatten(3).reshape(B, Nd * C, W * H).permute(0, 2, 1)
    kind = a["rc_types"][s]
    if kind == "performer_less":
        return prm
    strides, r = [], st // 2
    for _ in range(3):
        strides.append((r > 0) + 1)
        r //= 2
    g = a["RC_group"][s]
    if version == 1:
        c = F.silu(_conv(P, pre + ".PCM.0", x, strides[0], groups=g))
        c = F.silu(_bn(P, pre + ".PCM.3", _conv(P, pre + ".PCM.2", c, strides[1], groups=g)))
        c = F.silu(_conv(P, pre + ".PCM.5", c, strides[2], groups=g))
    else:
        c = F.silu(_bn(P, pre + ".PCM.1", _conv(P, pre + ".PCM.0", x, strides[0], groups=g)))
        c = F.silu(_bn(P, pre + ".PCM.4", _conv(P, pre + ".PCM.3", c, strides[1], groups=g)))
        c = _conv(P, pre + ".PCM.6", c, strides[2], groups=g)
    T = a["token_dims"][s]
    t = _ln(P, pre + ".attn.norm1", prm, 1e-5)
    if kind == "performer":  # Token_performer.attn
        emb = T
        k_, q_, v_ = torch.split(_lin(P, pre + ".attn.kqv", t), emb, dim=-1)
        w = P[pre + ".attn.w"]
        m = w.shape[0]

        def prm_exp(z):
            xd = ((z * z).sum(dim=-1, keepdim=True)).repeat(1, 1, m) / 2
            return torch.exp(torch.einsum("bti,mi->btm", z.float(), w) - xd) / math.sqrt(m)

        kp, qp = prm_exp(k_), prm_exp(q_)
        D = torch.einsum("bti,bi->bt", qp, kp.sum(dim=1)).unsqueeze(dim=2)
        kptv = torch.einsum("bin,bim->bnm", v_.float(), kp)
        yy = torch.einsum("bti,bni->btn", qp, kptv) / (D.repeat(1, 1, emb) + 1e-8)
        out = v_ + _lin(P, pre + ".attn.proj", yy)
        mlp = lambda z: _lin(P, pre + ".attn.mlp.2", F.gelu(_lin(P, pre + ".attn.mlp.0", z)))  # noqa: E731
    elif kind == "transformer":  # Token_transformer.attn: qkv without bias, v as the skip connection
        heads = a["RC_heads"][s]
        B, N, _ = t.shape
        qkv = _lin(P, pre + ".attn.attn.qkv", t, bias=False).reshape(B, N, 3, heads, T // heads).permute(2, 0, 3, 1, 4)
        q, k_, v_ = qkv[0], qkv[1], qkv[2]
        attn = ((q @ k_.transpose(-2, -1)) * (T // heads) ** -0.5).softmax(dim=-1)
        out = _lin(P, pre + ".attn.attn.proj", (attn @ v_).transpose(1, 2).reshape(B, N, T))
        out = v_.permute(0, 2, 1, 3).reshape(B, N, T) + out
        mlp = lambda z: _mlp(P, pre + ".attn.mlp", z)  # noqa: E731
    else:  # window
        h = w_ = x.shape[-1] // st
        out = _window_attn(P, pre + ".attn.attn", t, h, w_, 7, a["RC_heads"][s], T)
        mlp = lambda z: _mlp(P, pre + ".attn.mlp", z)  # noqa: E731
    out = out + c.permute(0, 2, 3, 1).reshape(out.shape)
    return out + mlp(_ln(P, pre + ".attn.norm2", out, 1e-5))


def official_forward(sd, x, a, counts=None, drop_stage=None):
    """The official forward; with ``counts`` (one image only) the documented patch drop, position by position."""
    P = Keys(sd)
    version = a["version"]
    for s in range(len(a["downsample"])):
        x = _reduction(P, f"layers.{s}.RC", x, a, s, version)
        B, N, C = x.shape
        wh = int(math.sqrt(N))
        heads, g = a["NC_heads"][s], a["NC_group"][s]
        dropping = counts is not None and s == drop_stage
        if dropping:
            assert B == 1
            grid = x.clone()  # every position: current state if kept, last state if dropped
            kept = list(range(N))
        for i in range(a["NC_depth"][s]):
            pre = f"layers.{s}.NC.{i}"
            full = grid if dropping else x
            conv = _pcm_nc(P, pre + ".PCM", full.view(B, wh, wh, C).permute(0, 3, 1, 2), g, version)
            conv = conv.permute(0, 2, 3, 1).reshape(B, N, C)
            if dropping:
                x, conv = grid[:, kept], conv[:, kept]
            t = _ln(P, pre + ".norm1", x, 1e-6)
            if a["nc_types"][s] == "window":
                att, probs = _window_attn(P, pre + ".attn", t, wh, wh, a["window_size"], heads, C), None
            else:
                att, probs = _mhsa(P, pre + ".attn", t, heads)
            x = x + att + conv
            if dropping and counts[i] < len(kept):
                grid[:, kept] = x  # the tokens about to go keep this state
                received = probs.sum(dim=(1, 2))[0]  # attention each token receives
                top = sorted(received.topk(counts[i]).indices.tolist())
                x, kept = x[:, top], [kept[j] for j in top]
            x = x + _mlp(P, pre + ".mlp", _ln(P, pre + ".norm2", x, 1e-6))
            if dropping:
                grid[:, kept] = x
        if dropping and s < len(a["downsample"]) - 1:
            x = grid  # the next reduction cell sees the restored grid
    logits = _lin(P, "head", x.mean(dim=1))
    return logits, P.used


def _arch(model):
    name = model.variant
    a = dict(vitae.VARIANTS[name])
    a.update({k: v for k, v in model.spec["backbone"]["kwargs"].items() if k in a})
    return a


# --------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("spec", [V1, V2, V2_LAST], ids=["v1", "v2", "v2-drop-stage-3"])
def test_full_schedule_equals_the_official_forward(spec):
    model = _model(spec)
    sd = model.state_dict()
    x = torch.randn(2, 3, spec[1]["img_size"], spec[1]["img_size"])
    with torch.no_grad():
        ref, used = official_forward(sd, x, _arch(model))
        out = model(x)
        assert (out - ref).abs().max() <= 1e-4
        assert torch.equal(model(x, drop=model.full_schedule()), out)  # full schedule = unpatched path
        model.schedule = model.full_schedule()
        assert torch.equal(model(x), out)
    # the official forward read every tensor of the layout (BatchNorm's step counter aside)
    assert used == {k for k in sd if not k.endswith("num_batches_tracked")}


@pytest.mark.parametrize("spec,counts", [(V1, [30, 20, 12]), (V1, [36, 18, 18]), (V2, [36, 25, 10]),
                                         (V2_LAST, [10, 5])], ids=["v1", "v1-one-drop", "v2", "v2-stage-3"])
def test_dropped_schedule_matches_the_documented_semantics(spec, counts):
    model = _model(spec)
    x = torch.randn(1, 3, spec[1]["img_size"], spec[1]["img_size"])
    model.set_fused_attn(False)
    with torch.no_grad():
        ref, _ = official_forward(model.state_dict(), x, _arch(model), counts, model.drop_stage)
        assert (model(x, drop=counts) - ref).abs().max() <= 1e-4


@pytest.mark.parametrize("spec,counts", [(V1, [30, 20, 12]), (V2, [36, 25, 10]), (V2_LAST, [12, 5])],
                         ids=["v1", "v2", "v2-stage-3"])
def test_batch_equals_images_one_by_one(spec, counts):
    model = _model(spec)
    x = torch.randn(4, 3, spec[1]["img_size"], spec[1]["img_size"])
    with torch.no_grad():
        batch = model(x, drop=counts)
        single = torch.cat([model(x[i:i + 1], drop=counts) for i in range(4)])
        full = model(x)
    assert batch.shape == (4, 5)
    # float32 summation order differs between batch and single-image kernels: relative to the logits' size
    torch.testing.assert_close(batch, single, rtol=1e-5, atol=1e-5)
    assert (batch - full).abs().max() > 1e-3  # dropping really changed the computation


def test_restore_returns_the_full_grid_with_kept_tokens_in_place():
    model = _model(V1)
    x = torch.randn(2, 3, 96, 96)
    with torch.no_grad():
        tokens, grid = model.forward_features(x, drop=[30, 20, 12], restore=True)
        full_tokens, full_grid = model.forward_features(x, restore=True)
    assert tokens.shape == (2, 12, 256) and grid.shape == (2, 36, 256)
    assert torch.equal(full_tokens, full_grid)
    # every kept token appears in the grid, in grid order
    for b in range(2):
        hits = [int((grid[b] == t).all(dim=1).nonzero()[0]) for t in tokens[b]]
        assert hits == sorted(hits) and len(set(hits)) == 12
    assert torch.allclose(model.forward_head(tokens), model(x, drop=[30, 20, 12]))


def test_training_step_through_a_dropped_schedule():
    model = _model(V2).train()
    out = model(torch.randn(2, 3, 96, 96), drop=[30, 20, 10])
    out.sum().backward()
    grads = [p.grad for n, p in model.named_parameters() if ".NC." in n and p.requires_grad]
    assert all(g is not None and torch.isfinite(g).all() for g in grads)


def test_performer_random_features_are_a_frozen_parameter_of_the_layout():
    model = _model(V1)
    w = model.layers[0].RC.attn.w
    assert isinstance(w, torch.nn.Parameter) and not w.requires_grad
    assert "layers.0.RC.attn.w" in model.state_dict() and "layers.1.RC.attn.w" in model.state_dict()
    model.train()
    model(torch.randn(1, 3, 96, 96)).sum().backward()
    assert w.grad is None


# ------------------------------------------------------------------------------------- checkpoints
def _official_file(path, sd, wrapper="state_dict", prefix="module.", extra=None):
    obj = {"epoch": 299, "arch": "ViTAE", "args": argparse.Namespace(model="ViTAE_basic_Tiny", lr=1e-3),
           wrapper: {prefix + k: v.clone() for k, v in sd.items()}}
    obj.update(extra or {})
    torch.save(obj, path)
    return path


@pytest.mark.parametrize("wrapper,prefix", [("state_dict", "module."), ("state_dict_ema", ""),
                                            ("state_dict", "")])
@pytest.mark.parametrize("spec", [V1, V2], ids=["v1", "v2"])
def test_official_checkpoint_loads_strictly_with_official_outputs(tmp_path, spec, wrapper, prefix):
    src = _model(spec)
    sd = src.state_dict()
    path = _official_file(tmp_path / "official.pth.tar", sd, wrapper, prefix)
    name, kw = spec
    model = tavt_kit.create_model(name.lower(), pretrained=str(path), **kw).eval()
    x = torch.randn(2, 3, kw["img_size"], kw["img_size"])
    with torch.no_grad():
        ref, _ = official_forward(sd, x, _arch(src))
        assert (model(x) - ref).abs().max() <= 1e-4
    assert model.spec["provenance"]["source_kind"] == "vitae-official"


def test_ema_weights_are_preferred_and_unused_window_tensors_are_accepted(tmp_path):
    src = _model(V2)
    sd = src.state_dict()
    noisy = {k: v + 1.0 if v.is_floating_point() else v for k, v in sd.items()}
    # some versions of the official window attention also save an index buffer and an unused bias table
    extra = {"layers.0.NC.0.attn.relative_position_index": torch.zeros(49, 49, dtype=torch.long),
             "layers.0.NC.0.attn.relative_position_bias_table": torch.zeros(169, 1)}
    path = _official_file(tmp_path / "both.pth", noisy, "state_dict", "module.",
                          {"state_dict_ema": {**{f"module.{k}": v for k, v in sd.items()},
                                              **{f"module.{k}": v for k, v in extra.items()}}})
    model = tavt_kit.create_model("ViTAEv2_S", pretrained=str(path), **V2[1])
    assert all(torch.equal(model.state_dict()[k], v) for k, v in sd.items())


def test_mismatched_checkpoints_are_refused_in_one_line(tmp_path):
    sd = _model(V1).state_dict()
    small = tavt_kit.create_model("ViTAE_basic_Small", img_size=96, num_classes=5, NC_depth=[0, 0, 3])
    with pytest.raises(CheckpointError, match="has shape") as e:
        load_pretrained_weights(small, str(_official_file(tmp_path / "t.pth", sd)))
    assert "\n" not in str(e.value)
    model = tavt_kit.create_model(V1[0], **V1[1])
    cut = {k: v for k, v in sd.items() if "NC.2." not in k}
    with pytest.raises(CheckpointError, match="missing layers.2.NC.2"):
        load_pretrained_weights(model, str(_official_file(tmp_path / "cut.pth", cut)))
    deeper = tavt_kit.create_model(V1[0], **{**V1[1], "NC_depth": [0, 0, 2]})
    with pytest.raises(CheckpointError, match="unexpected layers.2.NC.2"):
        load_pretrained_weights(deeper, str(_official_file(tmp_path / "deep.pth", sd)))
    # another class count: a fresh head for fine-tuning, or an error when that is not allowed
    other = tavt_kit.create_model(V1[0], pretrained=str(tmp_path / "deep.pth"),
                                  **{**V1[1], "num_classes": 200})
    assert other.head.out_features == 200
    with pytest.raises(CheckpointError, match="checkpoint has 5 classes, the model has 200"):
        load_pretrained_weights(other, str(tmp_path / "deep.pth"), reset_head=False)


@pytest.mark.parametrize("name", list(vitae.VARIANTS))
def test_variant_is_inferred_from_an_official_state_dict(name):
    with torch.device("meta"):
        sd = tavt_kit.create_model(name, num_classes=200).state_dict()
    assert vitae.infer_vitae_args(sd) == (name, {"num_classes": 200})
    assert tavt_kit.models.convert.detect_layout(sd) == "vitae"
    shallow = {k: v for k, v in sd.items() if ".NC." not in k or ".NC.0." in k}
    inferred, kwargs = vitae.infer_vitae_args(shallow)  # Tiny and 6M differ in depth only: either rebuilds it
    assert kwargs["NC_depth"] == [min(d, 1) for d in vitae.VARIANTS[name]["NC_depth"]]
    with torch.device("meta"):
        rebuilt = tavt_kit.create_model(inferred, **kwargs).state_dict()
    assert {k: v.shape for k, v in rebuilt.items()} == {k: v.shape for k, v in shallow.items()}


@pytest.mark.parametrize("spec", [V1, V2_LAST], ids=["v1", "v2-drop-stage-3"])
def test_save_and_load_checkpoint_round_trip(tmp_path, spec):
    model = _model(spec, class_names=list("abcde"))
    model.schedule = [20, 10, 10] if spec is V1 else [12, 6]
    path = tavt_kit.save_checkpoint(model, tmp_path / "vitae.safetensors")
    back = tavt_kit.load_checkpoint(path).eval()
    assert back.variant == model.variant and back.drop_stage == model.drop_stage
    assert back.schedule == model.schedule and back.spec["class_names"] == list("abcde")
    x = torch.randn(2, 3, spec[1]["img_size"], spec[1]["img_size"])
    with torch.no_grad():
        assert torch.equal(back(x), model(x))
        assert torch.equal(back(x, drop=back.full_schedule()), model(x, drop=model.full_schedule()))
    spec_ = tavt_kit.models.read_spec(path)
    assert spec_["depth"] == model.depth and spec_["num_patches"] == model.num_patches
    assert spec_["num_prefix_tokens"] == 0


# --------------------------------------------------------------------------------------------- MACs
def _fvcore(model, size):
    fvcore = pytest.importorskip("fvcore.nn")
    logging.getLogger("fvcore").setLevel(logging.ERROR)
    model.set_fused_attn(False)  # fvcore counts nothing for scaled_dot_product_attention
    analysis = fvcore.FlopCountAnalysis(model.eval(), torch.randn(1, 3, size, size))
    analysis.unsupported_ops_warnings(False)
    analysis.uncalled_modules_warnings(False)
    return analysis.total()


@pytest.mark.parametrize("spec", [V1, V2, V2_LAST], ids=["v1", "v2", "v2-drop-stage-3"])
@pytest.mark.parametrize("keep", [None, 0.75])
def test_count_macs_agrees_with_fvcore(spec, keep):
    model = _model(spec)
    if keep is not None:
        model.schedule = TokenSchedule.from_ratios([1.0] + [keep] * (model.depth - 1), model.depth,
                                                   model.num_patches)
    ours = tavt_kit.count_macs(model).total()
    ref = _fvcore(model, spec[1]["img_size"])
    assert abs(ours - ref) / ref < 0.005, (ours, ref)


def test_mac_parts_and_what_a_schedule_changes():
    model = _model(V1)
    full = tavt_kit.count_macs(model)
    dropped = tavt_kit.count_macs(model, [30, 20, 12])
    parts = full.by_part()
    assert set(parts) >= {"conv", "attn_qkv", "attn_matmul", "attn_proj", "mlp", "norm", "head"}
    assert sum(parts.values()) == full.total() == sum(full.by_module().values())
    assert dropped["conv"] == full["conv"]  # the grid branch always runs at full size
    assert dropped["layers.0.RC"] == full["layers.0.RC"]
    assert dropped["mlp"] < full["mlp"] and dropped["attn_matmul"] < full["attn_matmul"]
    assert dropped["layers.2.NC.2"] < dropped["layers.2.NC.1"] < dropped["layers.2.NC.0"] < full["layers.2.NC.0"]


@pytest.mark.parametrize("name,params,gmacs", [("ViTAEv2_S", 19.2, 5.7), ("ViTAEv2_48M", 48.6, 13.3),
                                               ("ViTAEv2_B", 89.7, 24.3), ("ViTAE_basic_Tiny", 4.8, None),
                                               ("ViTAE_basic_6M", 6.5, None), ("ViTAE_basic_Small", 23.6, None)])
def test_published_sizes_at_224(name, params, gmacs):
    """Parameters (and ViTAEv2 MACs) of the full-size variants agree with the papers' tables."""
    with torch.device("meta"):
        model = tavt_kit.create_model(name)
    assert abs(sum(p.numel() for p in model.parameters()) / 1e6 - params) / params < 0.025
    if gmacs is not None:
        assert abs(tavt_kit.count_macs(model).gmacs - gmacs) / gmacs < 0.02
    assert model.num_patches == 196 and model.geometry()["patch_size"] == [model.total_stride] * 2


# ------------------------------------------------------------------------------------ names, errors
@pytest.mark.parametrize("name", ["ViTAE_basic_Tiny", "vitae_basic_tiny", "vitae_t", "ViTAE_basic_6M",
                                  "ViTAE_basic_13M", "vitae_s", "ViTAEv2_S", "vitaev2_48m", "ViTAEv2_B"])
def test_official_and_lower_case_names(name):
    canon = vitae.canonical_name(name)
    assert canon in vitae.VARIANTS and name.lower() in tavt_kit.models.BACKBONES


def test_geometry_and_depth():
    v1 = tavt_kit.create_model("vitae_t", img_size=448, NC_depth=[0, 0, 2], num_classes=0)
    assert v1.depth == 2 and v1.num_patches == 28 * 28 and v1.num_classes == 0
    geo = v1.geometry()
    assert (geo["img_size"], geo["patch_size"], geo["depth"], geo["num_patches"], geo["num_prefix_tokens"],
            geo["embed_dim"]) == ([448, 448], [16, 16], 2, 784, 0, 256)
    v2 = tavt_kit.create_model("ViTAEv2_S", img_size=96, NC_depth=[1, 1, 3, 2])
    assert v2.depth == 3 and v2.num_patches == 36 and v2.geometry()["patch_size"] == [32, 32]
    v3 = tavt_kit.create_model("ViTAEv2_S", img_size=96, NC_depth=[1, 1, 3, 2], drop_stage=3)
    assert v3.depth == 2 and v3.num_patches == 9


def test_cls_scorer_and_fuse_are_refused():
    with pytest.raises(ConfigError, match="scorer 'cls' needs a class token; ViTAE_basic_Tiny has none"):
        tavt_kit.create_model("ViTAE_basic_Tiny", img_size=64, scorer="cls")
    # distill --scorer checks a loaded model with check_scorer: ViTAE's attention computes TAVT's score only, so a
    # tavt-sampled run would have recorded a scorer that never ran
    from tavt_kit.models.token_drop import check_scorer

    with pytest.raises(ConfigError, match="scorer 'tavt-sampled': ViTAE supports 'tavt'"):
        check_scorer(tavt_kit.create_model("ViTAE_basic_Tiny", img_size=64), "tavt-sampled")
    with pytest.raises(ConfigError, match="fuse=True is not supported"):
        tavt_kit.create_model("ViTAEv2_S", img_size=64, fuse=True)


def test_window_stages_cannot_drop():
    with pytest.raises(ConfigError, match="stage 1 uses window attention.*global-attention stages 2, 3"):
        tavt_kit.create_model("ViTAEv2_S", img_size=96, drop_stage=1)
    model = tavt_kit.create_model(V2[0], **V2[1])
    with pytest.raises(ScheduleError, match="only in global-attention stage 2.*window-attention stages"):
        model.schedule = [144, 144, 36, 30, 20, 9]  # one count per cell of every stage
    with pytest.raises(ScheduleError, match="only in global-attention stage 2"):
        model(torch.randn(1, 3, 96, 96), drop=TokenSchedule.full(1, 576))  # a window stage's grid
    with pytest.raises(ScheduleError, match="above the grid of 36"):
        model.make_schedule([40, 30, 20])


@pytest.mark.parametrize("name,size,match", [
    ("ViTAE_basic_Tiny", 100, "not a multiple of 16.*use e.g. 96 or 112"),
    ("ViTAE_basic_Tiny", 8, "not a multiple of 16"),
    ("ViTAE_basic_Small", (224, 160), "needs square images.*224x160"),
    ("ViTAEv2_S", 112, "not a multiple of 32.*use e.g. 96 or 128"),
    ("ViTAEv2_B", (256, 128), "needs square images"),
])
def test_bad_image_sizes_are_refused(name, size, match):
    with pytest.raises(ImageSizeError, match=match):
        tavt_kit.create_model(name, img_size=size)


def test_input_of_another_size_is_refused():
    model = tavt_kit.create_model(V1[0], **V1[1])
    with pytest.raises(ImageSizeError, match="built for 96x96 images, got 112x112"):
        model(torch.randn(1, 3, 112, 112))


def test_unknown_arguments_are_refused():
    with pytest.raises(ConfigError, match="unknown argument"):
        tavt_kit.create_model("ViTAE_basic_Tiny", img_size=64, depth=3)
    with pytest.raises(ConfigError, match="one value per stage"):
        tavt_kit.create_model("ViTAE_basic_Tiny", img_size=64, NC_depth=[1, 2])


def test_load_checkpoint_infers_an_official_vitae_file(tmp_path):
    m = tavt_kit.create_model("ViTAE_basic_Tiny", img_size=64, num_classes=5).eval()
    torch.save({"state_dict_ema": {"module." + k: v for k, v in m.state_dict().items()}}, tmp_path / "off.pth")
    back = tavt_kit.load_checkpoint(tmp_path / "off.pth", img_size=64).eval()
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        assert torch.equal(m(x), back(x))
    assert len(tavt_kit.count_macs(m).by_block()) == m.depth
    with pytest.raises(tavt_kit.ConfigError, match="no hub weights"):
        tavt_kit.create_model("ViTAE_basic_Tiny", pretrained=True)
