"""Hugging Face ViT-family checkpoints and the backbone of an exported ONNX graph load into fgvc-kit's models."""
import numpy as np
import pytest
import torch
from safetensors.torch import save_file
from torch import nn

import tavt_kit
from tavt_kit.errors import CheckpointError
from tavt_kit.models.hf import hf_vit_to_timm, timm_to_hf_vit


def _tiny(**kw):
    args = dict(img_size=32, patch_size=8, embed_dim=48, depth=2, num_heads=3, num_classes=5)
    args.update(kw)
    return tavt_kit.create_model("vit_tiny_patch16_224", **args).eval()


LAYOUTS = {  # (timm kwargs, transformers layout, model prefix)
    "vit": (dict(), "vit", "vit."),
    "deit": (dict(), "deit", "deit."),
    "dinov2": (dict(init_values=1e-5), "dinov2", "dinov2."),
    "dinov2-backbone": (dict(init_values=1e-5), "dinov2", ""),
}


@pytest.mark.parametrize("name", sorted(LAYOUTS))
def test_hf_safetensors_load_equal_to_the_model_they_were_written_from(tmp_path, name):
    kw, layout, prefix = LAYOUTS[name]
    src = _tiny(**kw)
    with torch.no_grad():  # layer scale and norms away from their initial values, so a lost tensor shows
        for p in src.parameters():
            p.add_(torch.randn_like(p) * 0.05)
    sd = {k: v for k, v in src.state_dict().items() if not k.startswith("fgvc")}
    hf = timm_to_hf_vit(sd, layout, prefix)
    assert any(".attention.attention.query." in k for k in hf)
    hf[prefix + "embeddings.mask_token"] = torch.zeros(1, 48)  # masked-image pretraining only: dropped
    path = tmp_path / "model.safetensors"
    save_file({k: v.contiguous() for k, v in hf.items()}, str(path))
    loaded = tavt_kit.load_checkpoint(str(path), num_heads=3).eval()
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        assert torch.allclose(loaded(x), src(x), atol=1e-6)
        assert torch.allclose(loaded.forward_features(x), src.forward_features(x), atol=1e-6)


def test_an_unknown_tensor_of_a_hf_layout_is_one_line_naming_it(tmp_path):
    hf = timm_to_hf_vit(_tiny().state_dict(), "vit", "vit.")
    hf["vit.encoder.layer.0.attention.attention.rotary.weight"] = torch.zeros(3)
    with pytest.raises(CheckpointError, match=r"vit\.encoder\.layer\.0\.attention\.attention\.rotary\.weight"):
        hf_vit_to_timm(hf, "x.safetensors")
    del hf["vit.encoder.layer.0.attention.attention.rotary.weight"]
    del hf["vit.encoder.layer.1.attention.attention.key.bias"]
    with pytest.raises(CheckpointError, match="layer 1 lacks"):
        hf_vit_to_timm(hf, "x.safetensors")


def test_a_layout_nobody_knows_is_refused_naming_the_layouts_that_load(tmp_path):
    path = tmp_path / "odd.safetensors"
    save_file({"encoder.stage0.conv.weight": torch.zeros(2, 2)}, str(path))
    with pytest.raises(CheckpointError) as e:
        tavt_kit.load_checkpoint(str(path))
    msg = str(e.value)
    assert "\n" not in msg and "odd.safetensors" in msg and "Hugging Face" in msg


# --------------------------------------------------------------- an ONNX graph with a DINOv2-layout backbone
class _Layer(nn.Module):
    def __init__(self, d, heads):
        super().__init__()
        self.heads = heads
        self.norm1, self.norm2 = nn.LayerNorm(d, eps=1e-6), nn.LayerNorm(d, eps=1e-6)
        self.attention = nn.Module()
        self.attention.attention = nn.Module()
        for n in ("query", "key", "value"):
            setattr(self.attention.attention, n, nn.Linear(d, d))
        self.attention.output = nn.Module()
        self.attention.output.dense = nn.Linear(d, d)
        self.layer_scale1, self.layer_scale2 = nn.Module(), nn.Module()
        self.layer_scale1.lambda1 = nn.Parameter(torch.rand(d))
        self.layer_scale2.lambda1 = nn.Parameter(torch.rand(d))
        self.mlp = nn.Module()
        self.mlp.fc1, self.mlp.fc2 = nn.Linear(d, 4 * d), nn.Linear(4 * d, d)

    def forward(self, x):
        b, n, d = x.shape
        h = self.norm1(x)
        a = self.attention.attention
        q, k, v = (m(h).reshape(b, n, self.heads, -1).transpose(1, 2) for m in (a.query, a.key, a.value))
        att = torch.softmax(q @ k.transpose(-1, -2) * (d // self.heads) ** -0.5, -1)
        y = (att @ v).transpose(1, 2).reshape(b, n, d)
        x = x + self.layer_scale1.lambda1 * self.attention.output.dense(y)
        return x + self.layer_scale2.lambda1 * self.mlp.fc2(nn.functional.gelu(self.mlp.fc1(self.norm2(x))))


class _Dinov2WithDecoder(nn.Module):
    """A tiny model laid out as ``transformers``' Dinov2Model (position grid 6x6, resized in the graph to the
    input's grid by a cubic interpolation) under ``backbone.``, plus a decoder the import must ignore."""

    def __init__(self, d=32, heads=2, depth=2, patch=4, grid=6):
        super().__init__()
        self.backbone = nn.Module()
        e = self.backbone.embeddings = nn.Module()
        e.cls_token = nn.Parameter(torch.randn(1, 1, d))
        e.mask_token = nn.Parameter(torch.zeros(1, d))
        e.position_embeddings = nn.Parameter(torch.randn(1, 1 + grid * grid, d))
        e.patch_embeddings = nn.Module()
        e.patch_embeddings.projection = nn.Conv2d(3, d, patch, patch)
        self.backbone.encoder = nn.Module()
        self.backbone.encoder.layer = nn.ModuleList(_Layer(d, heads) for _ in range(depth))
        self.backbone.layernorm = nn.LayerNorm(d, eps=1e-6)
        self.decoder = nn.Conv2d(d, 1, 1)
        self.grid = grid

    def forward(self, x):
        e = self.backbone.embeddings
        p = e.patch_embeddings.projection(x)
        b, d, gh, gw = p.shape
        tokens = torch.cat([e.cls_token.expand(b, -1, -1), p.flatten(2).transpose(1, 2)], 1)
        pos = e.position_embeddings[:, 1:].reshape(1, self.grid, self.grid, d).permute(0, 3, 1, 2)
        pos = nn.functional.interpolate(pos, size=(gh, gw), mode="bicubic", align_corners=False)
        pos = torch.cat([e.position_embeddings[:, :1], pos.flatten(2).transpose(1, 2)], 1)
        h = tokens + pos
        for layer in self.backbone.encoder.layer:
            h = layer(h)
        h = self.backbone.layernorm(h)
        grid = h[:, 1:].transpose(1, 2).reshape(b, d, gh, gw)
        return torch.sigmoid(self.decoder(grid))


@pytest.fixture(scope="module")
def onnx_backbone(tmp_path_factory):
    torch.manual_seed(0)
    model = _Dinov2WithDecoder().eval()
    with torch.no_grad():  # distinct values: an exporter shares identical initializers (fresh norms) by one name
        for p in model.parameters():
            p.add_(torch.randn_like(p) * 0.1)
    path = str(tmp_path_factory.mktemp("onnx") / "focus.onnx")
    with torch.no_grad():
        torch.onnx.export(model, (torch.randn(1, 3, 16, 16),), path, input_names=["input_image"],
                          output_names=["importance"], dynamic_axes={"input_image": {0: "n"}}, opset_version=14,
                          dynamo=False)
    return path


def test_the_backbone_of_an_onnx_graph_imports_equal_to_the_graph(onnx_backbone):
    import onnx

    from tavt_kit.models.onnx_import import last_hidden_state, run_nodes

    names = {i.name for i in onnx.load(onnx_backbone).graph.initializer}
    assert not any(n.endswith("query.weight") for n in names)  # the exporter left the matrices anonymous
    model = tavt_kit.load_checkpoint(onnx_backbone, num_heads=2, num_classes=3, reset_head=True).eval()
    assert model.pos_embed.shape == (1, 1 + 16, 32)  # the graph's own 4x4 grid, resized as the graph does
    x = np.random.default_rng(0).standard_normal((3, 3, 16, 16)).astype(np.float32)
    (ref,) = run_nodes(onnx_backbone, [last_hidden_state(onnx_backbone)], x)
    with torch.no_grad():
        got = model.forward_features(torch.from_numpy(x)).numpy()
    assert np.abs(got - ref).max() <= 1e-4
    assert model(torch.from_numpy(x)).shape == (3, 3)
    assert model.spec["normalization"]["mean"] == pytest.approx([0.485, 0.456, 0.406])


def test_a_graph_without_a_vit_backbone_is_not_a_checkpoint(tmp_path):
    path = str(tmp_path / "conv.onnx")
    torch.onnx.export(nn.Conv2d(3, 2, 3).eval(), (torch.randn(1, 3, 8, 8),), path, dynamo=False)
    with pytest.raises(CheckpointError) as e:
        tavt_kit.load_checkpoint(path)
    assert "\n" not in str(e.value) and "conv.onnx" in str(e.value) and "ONNX" in str(e.value)


def test_a_pretrained_backbone_on_a_builtin_dataset_gets_the_fine_tuning_recipe(onnx_backbone, tmp_path):
    from tavt_kit.cli import build_parser
    from tavt_kit.cli.train import PRETRAINED_RECIPE, resolve_train_args

    def resolved(*argv):
        return resolve_train_args(build_parser("train").parse_args(["--dataset", "cluttered-digits", *argv]))

    assert resolved("--checkpoint", onnx_backbone)["lr"] == PRETRAINED_RECIPE["lr"]  # not 1.5e-3 from scratch
    assert resolved("--checkpoint", onnx_backbone, "--lr", "1e-4")["lr"] == 1e-4
    assert resolved()["lr"] != PRETRAINED_RECIPE["lr"]


def test_a_converted_backbone_is_named_as_the_field_names_it():
    """A converted checkpoint is built from a timm entry whose arguments it overrides: its logs and ``info`` name
    what it is (``ViT-S/14``), not the entry (``vit_base_patch16_224``); a registered model keeps its name."""
    from tavt_kit.models import describe_backbone

    def spec(name, **kw):
        return {"backbone": {"name": name, "kwargs": kw}}

    assert describe_backbone(spec("vit_base_patch16_224", embed_dim=384, depth=12, num_heads=6, patch_size=14)) \
        == "ViT-S/14"
    assert describe_backbone(spec("vit_base_patch16_224", embed_dim=32, depth=2, num_heads=2, patch_size=8)) \
        == "ViT 2x32/8"
    assert describe_backbone(spec("fgvc_tiny", embed_dim=96, depth=6, num_heads=3)) == "fgvc_tiny"
    assert describe_backbone(spec("vit_small_patch16_224")) == "vit_small_patch16_224"
