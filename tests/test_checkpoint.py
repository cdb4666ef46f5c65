import json
import os

import pytest
import timm
import torch

import tavt_kit
from conftest import TINY, perturb, timm_to_npz, timm_to_vit_pytorch
from tavt_kit import CheckpointError, TokenSchedule

X = torch.randn(2, 3, 64, 64)


def _ref(name="vit_base_patch16_224", **kw):
    return perturb(timm.create_model(name, num_classes=7, **{**TINY, **kw})).eval()


def _same(a, b, x=X, drop=None):
    for m in (a, b):
        if not tavt_kit.models.is_patched(m):
            tavt_kit.patch(m)  # in place; the full schedule is timm's own forward
    with torch.no_grad():
        return (a.eval()(x, drop=drop) - b.eval()(x, drop=drop)).abs().max().item() <= 1e-5


def test_round_trip_rebuilds_from_the_file_alone(tmp_path):
    model = perturb(tavt_kit.create_model("deit_base_distilled_patch16_224", num_classes=4, scorer="cls",
                                          fuse=True, class_names=["a", "b", "c", "d"], **TINY))
    model.schedule = [60, 40, 20]
    path = tavt_kit.save_checkpoint(model, tmp_path / "m.safetensors")
    back = tavt_kit.load_checkpoint(path)
    assert back.scorer == "cls" and back.fuse and back.schedule == model.schedule
    assert back.spec["class_names"] == ["a", "b", "c", "d"]
    assert _same(model, back) and _same(model, back, drop=[64, 64, 64])
    spec = tavt_kit.models.read_spec(path)
    assert spec["backbone"]["name"] == "deit_base_distilled_patch16_224" and spec["num_patches"] == 64
    assert not any(f.endswith(".tmp") or "tmp-" in f for f in os.listdir(tmp_path))


def test_patched_user_model_round_trip(tmp_path):
    ref = _ref("deit3_small_patch16_224")
    model = tavt_kit.patch(ref)
    back = tavt_kit.load_checkpoint(tavt_kit.save_checkpoint(model, tmp_path / "p.safetensors"))
    assert _same(model, back, drop=[50, 30, 10])


def test_img_size_override_resamples_position_embeddings(tmp_path):
    model = tavt_kit.create_model("fgvc_tiny")
    path = tavt_kit.save_checkpoint(model, tmp_path / "m.safetensors")
    big = tavt_kit.load_checkpoint(path, img_size=128)
    assert big.num_patches == 256 and big(torch.randn(1, 3, 128, 128)).shape == (1, 10)


def test_google_npz_import(tmp_path):
    ref = _ref()
    timm_to_npz(ref, tmp_path / "ViT-T_8.npz")
    model = tavt_kit.load_checkpoint(tmp_path / "ViT-T_8.npz")
    assert model.depth == 3 and model.embed_dim == 64 and model.blocks[0].attn.num_heads == 2
    assert model.spec["normalization"]["mean"][0] == pytest.approx(0.485)
    assert _same(ref, model)
    # fine-tuning at twice the resolution with a new classifier
    ft = tavt_kit.create_model("vit_base_patch16_224", pretrained=str(tmp_path / "ViT-T_8.npz"), img_size=128,
                               num_classes=200, **{k: v for k, v in TINY.items() if k != "img_size"})
    assert ft.num_patches == 256 and ft.head.out_features == 200
    assert torch.equal(ft.blocks[1].mlp.fc1.weight, ref.blocks[1].mlp.fc1.weight)


@pytest.mark.parametrize("ffvt", [False, True])
def test_seed_vit_pytorch_bin_import(tmp_path, ffvt):
    ref = _ref()
    torch.save(timm_to_vit_pytorch(ref.state_dict(), ffvt=ffvt), tmp_path / "CUB_checkpoint.bin")
    model = tavt_kit.load_checkpoint(tmp_path / "CUB_checkpoint.bin")  # heads = width / 64 = 1 by default
    assert model.depth == 3 and model.num_classes == 7 and model.num_patches == 64
    model = tavt_kit.load_checkpoint(tmp_path / "CUB_checkpoint.bin", num_heads=2)
    if ffvt:  # runs as FFVT, not as a plain ViT (tests/test_heads.py checks it against the official forward)
        assert model.head_name == "ffvt" and model.fgvc_head.num_token == 12
    else:
        assert _same(ref, model) and _same(ref, model, drop=[50, 20, 5])


def test_timm_checkpoint_wrappers(tmp_path):
    ref = _ref()
    wrapped = {"epoch": 3, "state_dict": {f"module.{k}": v for k, v in ref.state_dict().items()}}
    torch.save(wrapped, tmp_path / "ckpt.pth")
    model = tavt_kit.create_model("vit_base_patch16_224", pretrained=str(tmp_path / "ckpt.pth"), num_classes=7,
                                  **TINY)
    assert _same(ref, model)
    assert _same(ref, tavt_kit.load_checkpoint(tmp_path / "ckpt.pth", num_heads=2))


def test_a_foreign_file_is_read_once(tmp_path, monkeypatch):
    # the architecture is inferred from the tensors and the same tensors are loaded: the file is not read twice
    # (an ONNX backbone or a large .pth costs seconds per read), and the spec still names the file
    from tavt_kit.models import checkpoint, convert

    ref = _ref()
    torch.save(ref.state_dict(), tmp_path / "plain.pth")
    reads = []

    def counted(path, *a, **kw):
        reads.append(os.fspath(path))
        return read(path, *a, **kw)

    read = convert.read_weights
    monkeypatch.setattr(convert, "read_weights", counted)
    monkeypatch.setattr(checkpoint, "read_weights", counted)
    model = tavt_kit.load_checkpoint(tmp_path / "plain.pth", num_heads=2)
    assert reads == [str(tmp_path / "plain.pth")]
    assert _same(ref, model)
    assert model.spec["provenance"]["source"] == str(tmp_path / "plain.pth")


def test_loading_never_unpickles_objects(tmp_path):
    class Evil:
        def __reduce__(self):
            return (os.system, ("echo pwned",))
    torch.save({"state_dict": {"x": torch.zeros(1)}, "obj": Evil()}, tmp_path / "evil.pth")
    with pytest.raises(CheckpointError, match="fgvc-kit never unpickles"):
        tavt_kit.load_checkpoint(tmp_path / "evil.pth")


def test_bad_checkpoints(tmp_path):
    with pytest.raises(CheckpointError, match="missing.safetensors: checkpoint not found"):
        tavt_kit.load_checkpoint(tmp_path / "missing.safetensors")
    model = tavt_kit.create_model("fgvc_tiny")
    path = tavt_kit.save_checkpoint(model, tmp_path / "m.safetensors")
    data = open(path, "rb").read()
    for name, blob in [("trunc.safetensors", data[: len(data) // 2]), ("trunc.pth", b"PK\x03\x04garbage"),
                       ("trunc.npz", b"PK\x03\x04")]:
        (tmp_path / name).write_bytes(blob)
        with pytest.raises(CheckpointError, match=name) as e:
            tavt_kit.load_checkpoint(tmp_path / name)
        assert "\n" not in str(e.value)
    torch.save({"foo.weight": torch.zeros(2)}, tmp_path / "other.pth")
    with pytest.raises(CheckpointError, match="unrecognised checkpoint layout"):
        tavt_kit.load_checkpoint(tmp_path / "other.pth")
    with pytest.raises(CheckpointError, match="checkpoint has 10 classes, num_classes=3 was given"):
        tavt_kit.load_checkpoint(path, num_classes=3)
    other = tavt_kit.create_model("fgvc_tiny", num_classes=3)
    with pytest.raises(CheckpointError, match="checkpoint has 10 classes, the model has 3"):
        tavt_kit.models.factory.load_pretrained_weights(other, path, reset_head=False)
    wrong = tavt_kit.create_model("vit_base_patch16_224", **TINY)
    torch.save(wrong.state_dict(), tmp_path / "wrong.pth")
    with pytest.raises(CheckpointError, match="shape"):
        tavt_kit.create_model("fgvc_tiny", pretrained=str(tmp_path / "wrong.pth"))


def test_drop_config_belongs_to_a_model(tmp_path):
    model = tavt_kit.create_model("fgvc_tiny")
    s = TokenSchedule.from_ratios({2: 0.5}, 6, 64)
    s.save(tmp_path / "drop.json", model_info={"name": "fgvc_tiny", "num_patches": 64})
    assert model.make_schedule(str(tmp_path / "drop.json")) == s
    other = tavt_kit.create_model("fgvc_tiny", img_size=128)
    with pytest.raises(tavt_kit.ScheduleError, match="grid of 64 patch tokens, the model has 256"):
        other.make_schedule(str(tmp_path / "drop.json"))
    assert json.loads((tmp_path / "drop.json").read_text())["model"]["name"] == "fgvc_tiny"
