"""FGVC heads under patch drop: FFVT, Mix-ViT, PIM (and the linear head's training contract)."""
import logging
import math

import pytest
import timm
import torch
import torch.nn.functional as F

import tavt_kit
from conftest import TINY, perturb, timm_to_vit_pytorch
from tavt_kit import CheckpointError, ConfigError, ScheduleError

DROP = [50, 30, 20]  # tiny ViT: 64 patch tokens, 3 blocks
HEADS = {
    "linear": {},
    "ffvt": {"num_token": 5},
    "mixvit": {"mask_topk": 0.1, "mask_weight": 1.0},
    "pim": {"num_selects": 16, "fpn_size": 32},
}


def _model(head, name="vit_base_patch16_224", num_classes=4, **kw):
    args = {**HEADS[head], **kw}
    return perturb(tavt_kit.create_model(name, num_classes=num_classes, head=head, **TINY, **args))


def _one_line(err):
    assert "\n" not in str(err.value), str(err.value)


# ------------------------------------------------------------------ training contract
@pytest.mark.parametrize("head", ["ffvt", "mixvit", "pim"])
def test_each_head_trains_with_its_auxiliary_losses_decreasing(head):
    torch.manual_seed(0)
    model = _model(head).train()
    x, y = torch.randn(8, 3, 64, 64), torch.arange(8) % 4
    opt = torch.optim.Adam(model.parameters(), lr=2e-3)
    history = []
    for step in range(8):
        torch.manual_seed(1)  # the same substitution partners every step (Mix-ViT)
        logits, aux = model(x, drop=DROP if step % 2 else None, labels=y)
        assert logits.shape == (8, 4) and all(v.dim() == 0 for v in aux.values())
        loss = F.cross_entropy(logits, y) + sum(aux.values())
        history.append({"ce": F.cross_entropy(logits, y).item(), **{k: v.item() for k, v in aux.items()}})
        opt.zero_grad()
        loss.backward()
        opt.step()
    expected = {"ffvt": {"ce"}, "mixvit": {"ce", "mixvit"}, "pim": {"ce", "pim_blocks", "pim_dropped"}}[head]
    assert set(history[0]) == expected
    for key in expected:  # compare like with like: the same schedule (full) at the first and the last even step
        assert history[-2][key] < history[0][key], (key, history[0][key], history[-2][key])


def test_training_mode_return_types():
    x, y = torch.randn(2, 3, 64, 64), torch.tensor([0, 1])
    linear = _model("linear").train()
    assert isinstance(linear(x), torch.Tensor)  # a plain call still gives logits only
    logits, aux = linear(x, drop=DROP, labels=y)
    assert logits.shape == (2, 4) and aux == {}
    ffvt = _model("ffvt").train()
    assert isinstance(ffvt(x), torch.Tensor) and ffvt(x, labels=y)[1] == {}
    mix = _model("mixvit").train()
    logits, aux = mix(x)  # its loss needs no labels
    assert set(aux) == {"mixvit"}
    pim = _model("pim").train()
    with pytest.raises(ConfigError, match="head 'pim' needs labels in training mode") as e:
        pim(x)
    _one_line(e)
    for m in (linear, ffvt, mix, pim):  # eval: logits only, whatever is passed
        out = m.eval()(x, drop=DROP, labels=y)
        assert isinstance(out, torch.Tensor) and out.shape == (2, 4)


# ---------------------------------------------------------------- schedules and batching
@pytest.mark.parametrize("head", list(HEADS))
@pytest.mark.parametrize("scorer,fuse", [("tavt", False), ("cls", True)])
def test_full_and_dropped_schedules_batch_equals_one_by_one(head, scorer, fuse):
    model = _model(head, scorer=scorer, fuse=fuse).eval()
    x = torch.randn(3, 3, 64, 64)
    with torch.no_grad():
        full = model(x)
        dropped = model(x, drop=DROP)
        single = torch.cat([model(x[i:i + 1], drop=DROP) for i in range(3)])
        single_full = torch.cat([model(x[i:i + 1]) for i in range(3)])
    assert full.shape == dropped.shape == (3, 4)
    assert (dropped - single).abs().max() <= 1e-5
    assert (full - single_full).abs().max() <= 1e-5
    assert (full - dropped).abs().max() > 1e-4  # the schedule really changed the computation


def test_ffvt_last_block_reads_class_token_plus_selected_tokens():
    model = _model("ffvt", num_token=6).eval()
    seen = []
    model.blocks[-1].register_forward_pre_hook(lambda m, a: seen.append(a[0].shape[1]))
    with torch.no_grad():
        model(torch.randn(2, 3, 64, 64), drop=DROP)
        feats = model.forward_features(torch.randn(2, 3, 64, 64))
    assert seen == [1 + 2 * 6, 1 + 2 * 6] and feats.shape == (2, 13, 64)


def test_pim_reads_restored_grids_of_the_tapped_blocks():
    model = _model("pim").eval()
    x = torch.randn(2, 3, 64, 64)
    outs = {}
    for i, blk in enumerate(model.blocks):
        blk.register_forward_hook(lambda m, a, o, i=i: outs.__setitem__(i, o))
    with torch.no_grad():
        full = model.pim.features(model, x)
        assert [f.shape for f in full] == [(2, 65, 64)] * 3
        assert all(torch.equal(f, outs[i]) for f, i in zip(full, model.pim.tap_blocks))
        dropped = model.pim.features(model, x, drop=DROP)
        assert [f.shape for f in dropped] == [(2, 65, 64)] * 3  # every position, whatever the schedule
        # the last block's grid is TAVT's drop-and-restore grid (PIM replaced the final norm by an identity)
        tokens, grid = model.forward_features(x, drop=DROP, restore=True)
    assert torch.equal(dropped[-1], torch.cat([tokens[:, :1], grid], 1))
    assert (dropped[0] - full[0]).abs().max() > 1e-4  # block 0 dropped tokens: its output differs


# --------------------------------------------------------------------------- Mix-ViT
def test_mixvit_substitutes_patches_from_another_sample_never_the_class_token(monkeypatch):
    from tavt_kit.models.heads import mixvit

    torch.manual_seed(0)
    model = _model("mixvit", mask_topk=0.25).train()
    pre, mixed = {}, {}
    after_block = mixvit._RolloutObserver.after_block

    def spy(self, i, x, state, info):
        after_block(self, i, x, state, info)
        if i == self.depth - 2:
            pre["x"] = x.detach().clone()
    monkeypatch.setattr(mixvit._RolloutObserver, "after_block", spy)
    model.mixvit.block.register_forward_pre_hook(lambda m, a: mixed.__setitem__("x", a[0].detach().clone()))
    x = torch.randn(4, 3, 64, 64)
    for drop in (None, DROP):
        model(x, drop=drop)
        a, b = pre["x"], mixed["x"]
        n = a.shape[1] - 1
        assert torch.equal(a[:, 0], b[:, 0])  # the class token stays
        changed = (a != b).any(-1)
        assert changed.sum(1).tolist() == [int(0.25 * n)] * 4
        for j in range(4):  # every substituted token is a token of another sample
            for t in changed[j].nonzero().flatten().tolist():
                hits = [k for k in range(4) if (a[k] == b[j, t]).all(-1).any()]
                assert hits and j not in hits
    # a batch of one: nothing to mix, loss 0 (connected to the branch)
    _, aux = model(x[:1])
    assert aux["mixvit"].item() == 0.0 and aux["mixvit"].requires_grad


def test_mixvit_ranks_by_the_official_mutual_attention_rollout(monkeypatch):
    from tavt_kit.models.heads import mixvit

    model = _model("mixvit", mask_topk=0.25).train()
    seen = []
    scores = mixvit._RolloutObserver.scores
    monkeypatch.setattr(mixvit._RolloutObserver, "scores", lambda self: seen.append(scores(self)) or seen[-1])
    x = torch.randn(3, 3, 64, 64)
    model(x)
    # the official generate_masks (pure-ViT Mix-ViT), restated on attention computed here
    with torch.no_grad():
        h = model.norm_pre(model._pos_embed(model.patch_embed(x)))
        probs, contributions = [], []
        for blk in model.blocks:
            a = blk.attn
            q, k, _ = a.qkv(blk.norm1(h)).reshape(3, 65, 3, 2, 32).permute(2, 0, 3, 1, 4)
            logits = (q * a.scale) @ k.transpose(-2, -1)
            probs.append(logits.softmax(-1))
            contributions.append(logits.softmax(-2))
            h = blk(h)
        w, c = probs[0], contributions[0]
        for i in range(1, len(probs)):
            w, c = probs[i] @ w, contributions[i] @ c
        expected = w[:, :, 0, 1:].mean(1) * c[:, :, 1:, 0].mean(1)
    assert torch.allclose(seen[0], expected, rtol=1e-4, atol=1e-9)


def test_mixvit_inference_is_the_backbone_and_drops_its_branch(tmp_path):
    model = _model("mixvit").eval()
    plain = tavt_kit.create_model("vit_base_patch16_224", num_classes=4, **TINY).eval()
    sd = model.inference_state_dict()
    assert not any(k.startswith("mixvit.") for k in sd) and any(k.startswith("mixvit.") for k in model.state_dict())
    plain.load_state_dict(sd)
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        assert torch.equal(model(x, drop=DROP), plain(x, drop=DROP))
    path = tavt_kit.save_checkpoint(model, tmp_path / "infer.safetensors", inference_only=True)
    back = tavt_kit.load_checkpoint(path).eval()
    assert back.spec["head"]["inference_only"] and back.head_name == "mixvit"
    with torch.no_grad():
        assert torch.equal(back(x, drop=DROP), model(x, drop=DROP))
    # the branch restarts from the loaded backbone, ready to train again
    assert torch.equal(back.mixvit.block.mlp.fc1.weight, back.blocks[-1].mlp.fc1.weight)


# ---------------------------------------------------------------------------- FFVT
def official_ffvt(sd, x, num_heads, num_token):
    """An independent re-statement of the official FFVT forward on the ViT-pytorch state dict."""
    C = sd["transformer.embeddings.cls_token"].shape[-1]
    w = sd["transformer.embeddings.patch_embeddings.weight"]
    h = F.conv2d(x, w, sd["transformer.embeddings.patch_embeddings.bias"], stride=w.shape[-1])
    h = h.flatten(2).transpose(1, 2)
    h = torch.cat([sd["transformer.embeddings.cls_token"].expand(x.shape[0], -1, -1), h], 1)
    h = h + sd["transformer.embeddings.position_embeddings"]

    def lin(t, name):
        return F.linear(t, sd[name + ".weight"], sd[name + ".bias"])

    def block(pre, h):
        B, N, _ = h.shape
        hn = F.layer_norm(h, (C,), sd[pre + "attention_norm.weight"], sd[pre + "attention_norm.bias"], 1e-6)
        q, k, v = (lin(hn, pre + f"attn.{n}").view(B, N, num_heads, -1).permute(0, 2, 1, 3)
                   for n in ("query", "key", "value"))
        scores = q @ k.transpose(-1, -2) / math.sqrt(q.shape[-1])
        probs = scores.softmax(-1)
        contribution = scores.softmax(-2)[:, :, :, 0]
        h = lin((probs @ v).permute(0, 2, 1, 3).reshape(B, N, C), pre + "attn.out") + h
        hn = F.layer_norm(h, (C,), sd[pre + "ffn_norm.weight"], sd[pre + "ffn_norm.bias"], 1e-6)
        return lin(F.gelu(lin(hn, pre + "ffn.fc1")), pre + "ffn.fc2") + h, probs, contribution

    layers = sorted({int(k.split(".")[3]) for k in sd if k.startswith("transformer.encoder.layer.")})
    tokens = [[] for _ in range(x.shape[0])]
    for i in layers:
        h, probs, contribution = block(f"transformer.encoder.layer.{i}.", h)
        order = torch.argsort(contribution.mean(1) * probs[:, :, 0, :].mean(1), dim=1, descending=True)
        for b in range(x.shape[0]):
            tokens[b].extend(h[b, order[b, :num_token]])
    h = torch.cat([h[:, :1], torch.stack([torch.stack(t) for t in tokens])], dim=1)
    h, _, _ = block("transformer.encoder.ff_last_layer.", h)
    h = F.layer_norm(h, (C,), sd["transformer.encoder.ff_encoder_norm.weight"],
                     sd["transformer.encoder.ff_encoder_norm.bias"], 1e-6)
    return lin(h[:, 0], "head")


@pytest.mark.parametrize("num_token", [5, None])
def test_ffvt_official_checkpoint_gives_the_reference_logits(tmp_path, num_token):
    ref = perturb(timm.create_model("vit_base_patch16_224", num_classes=7, **{**TINY, "depth": 4}), 0.05)
    sd = timm_to_vit_pytorch(ref.state_dict(), ffvt=True)
    torch.save(sd, tmp_path / "CUB_ffvt_checkpoint.bin")
    kw = {} if num_token is None else {"num_token": num_token}
    model = tavt_kit.load_checkpoint(tmp_path / "CUB_ffvt_checkpoint.bin", num_heads=2, **kw).eval()
    assert model.head_name == "ffvt" and model.fgvc_head.num_token == (num_token or 12)
    x = torch.randn(3, 3, 64, 64)
    with torch.no_grad():
        expected = official_ffvt(sd, x, num_heads=2, num_token=num_token or 12)
        got = model(x)
        plain = ref.eval()(x)  # the same weights read as a plain ViT compute something else
    assert (got - expected).abs().max() <= 1e-5
    assert (plain - expected).abs().max() > 1e-3
    with pytest.raises(CheckpointError, match="FFVT checkpoint .* runs with head='ffvt', head='linear' was given"):
        tavt_kit.load_checkpoint(tmp_path / "CUB_ffvt_checkpoint.bin", num_heads=2, head="linear")


# ------------------------------------------------------------------------ checkpoints
@pytest.mark.parametrize("head", list(HEADS))
def test_save_load_round_trip(tmp_path, head):
    model = _model(head, class_names=list("abcd"))
    model.schedule = DROP
    if head == "pim":  # non-trivial batch-norm statistics
        model.train()(torch.randn(4, 3, 64, 64), labels=torch.arange(4))
    path = tavt_kit.save_checkpoint(model.eval(), tmp_path / f"{head}.safetensors")
    back = tavt_kit.load_checkpoint(path).eval()
    assert back.head_name == head and back.spec["head"] == model.spec["head"] and back.schedule == model.schedule
    assert back.state_dict().keys() == model.state_dict().keys()
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        assert torch.equal(back(x), model(x)) and torch.equal(back(x, drop=None if head == "ffvt" else [64] * 3),
                                                              model(x, drop=None if head == "ffvt" else [64] * 3))
    assert all(torch.equal(v, back.state_dict()[k]) for k, v in model.state_dict().items())


def test_pretrained_backbone_into_a_head_and_head_mismatches(tmp_path):
    plain = _model("linear")
    torch.save(plain.state_dict(), tmp_path / "plain.pth")
    pim = tavt_kit.create_model("vit_base_patch16_224", num_classes=4, head="pim", pretrained=str(tmp_path / "plain.pth"),
                                **TINY, **HEADS["pim"])
    assert torch.equal(pim.blocks[1].attn.qkv.weight, plain.blocks[1].attn.qkv.weight)
    path = tavt_kit.save_checkpoint(pim, tmp_path / "pim.safetensors")
    # a PIM checkpoint as the starting point of another PIM model with more classes: head weights kept
    # where they fit, the classifiers re-initialised
    again = tavt_kit.create_model("vit_base_patch16_224", num_classes=9, head="pim", pretrained=str(path),
                                  **TINY, **HEADS["pim"])
    assert torch.equal(again.pim.proj[0][0].weight, pim.pim.proj[0][0].weight)
    assert again.pim.combiner.classifier.out_features == 9
    with pytest.raises(CheckpointError, match="checkpoint has head 'pim', head='ffvt' was given") as e:
        tavt_kit.load_checkpoint(path, head="ffvt")
    _one_line(e)
    with pytest.raises(CheckpointError, match="carries head 'pim' weights .*the model's head is 'linear'") as e:
        tavt_kit.create_model("vit_base_patch16_224", num_classes=4, pretrained=str(path), **TINY)
    _one_line(e)
    with pytest.raises(ConfigError, match="cannot override fpn_siz"):
        tavt_kit.load_checkpoint(path, fpn_siz=8)
    ffvt = tavt_kit.save_checkpoint(_model("ffvt"), tmp_path / "ffvt.safetensors")
    assert tavt_kit.load_checkpoint(ffvt, num_token=9).fgvc_head.num_token == 9  # no weights depend on it


# ------------------------------------------------------------------------------- ONNX
@pytest.mark.filterwarnings("ignore::torch.jit.TracerWarning")
@pytest.mark.parametrize("head", ["ffvt", "mixvit", "pim"])
def test_eval_forward_exports_to_onnx(tmp_path, head):
    onnx = pytest.importorskip("onnx")
    ort = pytest.importorskip("onnxruntime")
    model = _model(head, scorer="cls", fuse=True).eval()
    model.schedule = DROP
    x = torch.randn(2, 3, 64, 64)
    path = str(tmp_path / f"{head}.onnx")
    torch.onnx.export(model, (x,), path, dynamo=False, input_names=["image"], output_names=["logits"],
                      dynamic_axes={"image": {0: "batch"}, "logits": {0: "batch"}}, opset_version=17)
    graph = onnx.load(path).graph
    exported = sum(math.prod(t.dims) for t in graph.initializer)
    needed = sum(v.numel() for v in model.inference_state_dict().values())
    if head == "mixvit":  # nothing of the substitution branch is in the graph
        branch = sum(v.numel() for k, v in model.state_dict().items() if k.startswith("mixvit."))
        assert exported <= needed < exported + branch
    sess = ort.InferenceSession(path, providers=["CPUExecutionProvider"])
    for batch in (x, torch.randn(3, 3, 64, 64)):
        with torch.no_grad():
            expected = model(batch).numpy()
        got = sess.run(None, {"image": batch.numpy()})[0]
        assert abs(got - expected).max() <= 1e-4


# ------------------------------------------------------------------------------- MACs
@pytest.mark.parametrize("head", ["ffvt", "mixvit", "pim"])
@pytest.mark.parametrize("keep", [None, [60, 40, 40, 20]])
def test_count_macs_includes_the_head_and_agrees_with_fvcore(head, keep):
    fvcore = pytest.importorskip("fvcore.nn")
    logging.getLogger("fvcore").setLevel(logging.ERROR)
    model = tavt_kit.create_model("deit_base_distilled_patch16_224", num_classes=4, head=head, scorer="cls", fuse=True,
                                  **{**TINY, "depth": 4}, **HEADS[head])
    model.schedule = keep
    ours = tavt_kit.count_macs(model)
    for blk in model.blocks:
        blk.attn.fused_attn = False  # fvcore counts nothing for scaled_dot_product_attention
    analysis = fvcore.FlopCountAnalysis(model.eval(), torch.randn(1, 3, 64, 64))
    analysis.unsupported_ops_warnings(False)
    analysis.uncalled_modules_warnings(False)
    ref = analysis.total()
    assert abs(ours.total() - ref) / ref < 0.005, (ours.total(), ref)
    parts = ours.by_part()
    if head == "ffvt":
        assert parts["maws"] > 0 and ours.tokens[-1] == 2 + 3 * HEADS["ffvt"]["num_token"]
    if head == "pim":
        assert parts["fpn"] > 0 and parts["combiner"] > 0 and "head" not in parts
    if head == "mixvit":
        plain = tavt_kit.create_model("deit_base_distilled_patch16_224", num_classes=4, scorer="cls", fuse=True,
                                      **{**TINY, "depth": 4})
        assert ours.total() == tavt_kit.count_macs(plain, keep).total()


# -------------------------------------------------------------------------- bad input
def test_bad_head_arguments_are_one_line_errors():
    cases = [
        (ConfigError, "unknown head 'fvt'", dict(head="fvt")),
        (ConfigError, "num_token is an argument of head 'ffvt', not of head 'linear'", dict(num_token=3)),
        (ConfigError, "num_token=70 is outside \\[1, 65\\]", dict(head="ffvt", num_token=70)),
        (ConfigError, "num_token must be an integer", dict(head="ffvt", num_token=2.5)),
        (ConfigError, "num_selects=66 is outside \\[1, 65\\]", dict(head="pim", num_selects=66)),
        (ConfigError, "num_selects add up to 12", dict(head="pim", num_selects=4)),
        (ConfigError, "tap_blocks \\[0, 1\\] must include the last block \\(2\\)", dict(head="pim", tap_blocks=[0, 1])),
        (ConfigError, "tap_blocks=5 is outside", dict(head="pim", tap_blocks=[1, 5])),
        (ConfigError, "mask_topk=0.0 is outside", dict(head="mixvit", mask_topk=0.0)),
        (ConfigError, "mask_topk=0.01 substitutes int", dict(head="mixvit", mask_topk=0.01)),
    ]
    for err, msg, kw in cases:
        with pytest.raises(err, match=msg) as e:
            tavt_kit.create_model("vit_base_patch16_224", num_classes=4, **TINY, **kw)
        _one_line(e)
    with pytest.raises(ConfigError, match="head 'ffvt' needs a class token"):
        tavt_kit.create_model("vit_medium_patch16_gap_256", num_classes=4, head="ffvt", **TINY)


def test_num_token_impossible_for_a_schedule_fails_when_the_schedule_is_set():
    model = _model("ffvt", num_token=12)
    with pytest.raises(ScheduleError, match=r"schedule\[1\] = 8 leaves 9 tokens after block 1, fewer than the "
                                            r"head's num_token=12") as e:
        model.schedule = [40, 8, 8]
    _one_line(e)
    with pytest.raises(ScheduleError, match="num_token=12"):
        model(torch.randn(1, 3, 64, 64), drop=[10, 10, 2])
    model.schedule = [40, 11, 1]  # the last count does not apply: the last block reads the selected tokens
    with torch.no_grad():
        assert model.eval()(torch.randn(1, 3, 64, 64)).shape == (1, 4)
    assert tavt_kit.count_macs(model).tokens[-1] == 1 + 2 * 12
