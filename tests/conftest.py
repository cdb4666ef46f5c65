import copy
import logging

import numpy as np
import pytest
import torch

logging.getLogger("timm").setLevel(logging.ERROR)

# tiny ViT: 64x64 images, 8x8 patches -> 64 patch tokens, 3 blocks of width 64
TINY = dict(img_size=64, patch_size=8, embed_dim=64, depth=3, num_heads=2)


def search_model():
    """The search tests' model: a 3-block fgvc_tiny on 32 px images, 4 classes, seeded."""
    import tavt_kit

    torch.manual_seed(0)
    return tavt_kit.create_model("fgvc_tiny", depth=3, img_size=32, num_classes=4).eval()


def random_splits(n_holdout: int, n_test: int):
    """Seeded random uint8 images and labels for that model: ``((images, labels), (images, labels))``."""
    g = torch.Generator().manual_seed(1)

    def split(n):
        return torch.randint(0, 256, (n, 3, 32, 32), dtype=torch.uint8, generator=g), torch.randint(0, 4, (n,),
                                                                                                  generator=g)
    return split(n_holdout), split(n_test)


@pytest.fixture(scope="module")
def one_thread():
    """Tiny models: one intra-op thread is as fast, and robust when other jobs share the cores."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


def kill_once_written(cmd, path, timeout=180):
    """Run ``cmd`` and SIGKILL it as soon as ``path`` exists (a job killed after its first checkpoint)."""
    import os
    import signal
    import subprocess
    import time

    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                            env=dict(os.environ, OMP_NUM_THREADS="1"))
    deadline = time.time() + timeout
    while time.time() < deadline and proc.poll() is None:
        if path.exists():
            proc.send_signal(signal.SIGKILL)
            break
        time.sleep(0.05)
    proc.wait()
    assert path.exists(), proc.stderr.read().decode()


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)


def perturb(model, scale=0.02):
    """Random weights everywhere (LayerScale gammas, norms, pos embeds) so tests see every parameter."""
    with torch.no_grad():
        for p in model.parameters():
            p.add_(torch.randn_like(p) * scale)
    return model


def timm_to_vit_pytorch(sd, ffvt=False):
    """timm ViT state dict -> the seeds' ViT-pytorch layout (as TAVT/FFVT save it)."""
    out = {
        "transformer.embeddings.patch_embeddings.weight": sd["patch_embed.proj.weight"],
        "transformer.embeddings.patch_embeddings.bias": sd["patch_embed.proj.bias"],
        "transformer.embeddings.position_embeddings": sd["pos_embed"],
        "transformer.embeddings.cls_token": sd["cls_token"],
        "head.weight": sd["head.weight"], "head.bias": sd["head.bias"],
    }
    depth = 1 + max(int(k.split(".")[1]) for k in sd if k.startswith("blocks."))
    norm = "ff_encoder_norm" if ffvt else "encoder_norm"
    out[f"transformer.encoder.{norm}.weight"] = sd["norm.weight"]
    out[f"transformer.encoder.{norm}.bias"] = sd["norm.bias"]
    for i in range(depth):
        pre = "transformer.encoder.ff_last_layer" if (ffvt and i == depth - 1) else f"transformer.encoder.layer.{i}"
        b = f"blocks.{i}."
        for src, dst in [("norm1", "attention_norm"), ("norm2", "ffn_norm"), ("mlp.fc1", "ffn.fc1"),
                         ("mlp.fc2", "ffn.fc2"), ("attn.proj", "attn.out")]:
            for t in ("weight", "bias"):
                out[f"{pre}.{dst}.{t}"] = sd[f"{b}{src}.{t}"]
        for t in ("weight", "bias"):
            q, k, v = sd[f"{b}attn.qkv.{t}"].chunk(3, 0)
            out[f"{pre}.attn.query.{t}"], out[f"{pre}.attn.key.{t}"], out[f"{pre}.attn.value.{t}"] = q, k, v
    return {k: v.clone() for k, v in out.items()}


def timm_to_npz(model, path):
    """Write a timm ViT as a Google JAX .npz (the ViT-B_16.npz layout)."""
    sd = {k: v.detach().numpy() for k, v in model.state_dict().items()}
    H = model.blocks[0].attn.num_heads
    C = model.embed_dim
    hd = C // H
    w = {
        "embedding/kernel": sd["patch_embed.proj.weight"].transpose(2, 3, 1, 0),
        "embedding/bias": sd["patch_embed.proj.bias"],
        "cls": sd["cls_token"],
        "Transformer/posembed_input/pos_embedding": sd["pos_embed"],
        "Transformer/encoder_norm/scale": sd["norm.weight"],
        "Transformer/encoder_norm/bias": sd["norm.bias"],
        "head/kernel": sd["head.weight"].T,
        "head/bias": sd["head.bias"],
        "pre_logits/kernel": np.eye(C, dtype=np.float32),
        "pre_logits/bias": np.zeros(C, dtype=np.float32),
    }
    for i in range(len(model.blocks)):
        b, p = f"blocks.{i}.", f"Transformer/encoderblock_{i}/"
        w[p + "LayerNorm_0/scale"], w[p + "LayerNorm_0/bias"] = sd[b + "norm1.weight"], sd[b + "norm1.bias"]
        w[p + "LayerNorm_2/scale"], w[p + "LayerNorm_2/bias"] = sd[b + "norm2.weight"], sd[b + "norm2.bias"]
        qkv_w, qkv_b = sd[b + "attn.qkv.weight"], sd[b + "attn.qkv.bias"]
        for j, n in enumerate(("query", "key", "value")):
            w[p + f"MultiHeadDotProductAttention_1/{n}/kernel"] = qkv_w[j * C:(j + 1) * C].T.reshape(C, H, hd)
            w[p + f"MultiHeadDotProductAttention_1/{n}/bias"] = qkv_b[j * C:(j + 1) * C].reshape(H, hd)
        w[p + "MultiHeadDotProductAttention_1/out/kernel"] = sd[b + "attn.proj.weight"].T.reshape(H, hd, C)
        w[p + "MultiHeadDotProductAttention_1/out/bias"] = sd[b + "attn.proj.bias"]
        w[p + "MlpBlock_3/Dense_0/kernel"], w[p + "MlpBlock_3/Dense_0/bias"] = sd[b + "mlp.fc1.weight"].T, sd[b + "mlp.fc1.bias"]
        w[p + "MlpBlock_3/Dense_1/kernel"], w[p + "MlpBlock_3/Dense_1/bias"] = sd[b + "mlp.fc2.weight"].T, sd[b + "mlp.fc2.bias"]
    np.savez(path, **w)


#: a small ViT the trained fixture fits in seconds: 32x32 images, 4x4 patches -> 64 patch tokens, 2 blocks of width 64
TRAINED = dict(depth=2, img_size=32, patch_size=4, embed_dim=64, num_heads=2)


@pytest.fixture(scope="session")
def trained_checkpoint(tmp_path_factory):
    """A tiny fgvc_tiny trained for 300 steps on the demo digits (about 85 % test top-1; ~12 s on 2 cores).

    For tests that need real accuracy (int8 accuracy control, precision choice); the checkpoint records the
    demo dataset, so verification, calibration and held-out images come from it.
    """
    import tavt_kit
    from tavt_kit.export import load_verify_data
    from tavt_kit.export.verify import normalized_batches

    torch.manual_seed(0)
    model = tavt_kit.create_model("fgvc_tiny", num_classes=10, **TRAINED)
    train = load_verify_data(model, "demo", split="train")
    x = torch.cat(list(normalized_batches(model, train.images, 256)))
    y = train.labels
    opt = torch.optim.AdamW(model.parameters(), lr=3e-3, weight_decay=0.05)
    g = torch.Generator().manual_seed(0)
    model.train()
    for _ in range(300):
        idx = torch.randint(0, len(x), (64,), generator=g)
        loss = torch.nn.functional.cross_entropy(model(x[idx]), y[idx])
        opt.zero_grad()
        loss.backward()
        opt.step()
    model.eval()
    path = tmp_path_factory.mktemp("trained") / "digits.safetensors"
    tavt_kit.save_checkpoint(model, path, extra={"data": {"name": "demo"}})
    return str(path)


def exact_table(data):
    """The table with a block 10 us per token (attention and MLP halves 5 us each), the embedding and head 0.1 ms
    and no offset."""
    data = copy.deepcopy(data)
    per_token = {"plain_ms": 0.01, "prop_ms": 0.01, "head_ms": 0.0}
    for key, value in data.items():
        if isinstance(value, dict) and "ms" in value and "tokens" in value:
            value["ms"] = [per_token.get(key, 0.005) * t + (0.1 if key == "head_ms" else 0.0)
                           for t in value["tokens"]]
        elif key.endswith("_ms") and isinstance(value, (int, float)):
            data[key] = 0.1 if key != "offset_ms" else 0.0
    return data


def scaled_table(data, factor):
    data = copy.deepcopy(data)
    for key, value in data.items():
        if isinstance(value, dict) and "ms" in value and "tokens" in value:
            value["ms"] = [v * factor for v in value["ms"]]
        elif key.endswith("_ms") and isinstance(value, (int, float)):
            data[key] = value * factor
    return data


def one_line(capsys) -> str:
    """The command's stderr: exactly one ``fgvc-kit: error: ...`` line, no traceback."""
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "Traceback" not in err, err
    assert err.startswith("fgvc-kit: error:"), err
    return err


def noisy_supernet(tmp_path, parent_path, noise):
    """A 'supernet' whose weights are the parent's plus noise (distillation that went wrong), recording its parent;
    the path of its checkpoint in ``tmp_path``."""
    import tavt_kit
    from tavt_kit.models.checkpoint import parent_record

    parent = tavt_kit.load_checkpoint(parent_path)
    model = tavt_kit.load_checkpoint(parent_path)
    g = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(noise * p.std().clamp_min(1e-3) * torch.randn(p.shape, generator=g))
    model.spec.setdefault("distillation", {})["parent"] = parent_record(parent_path, parent)
    return str(tavt_kit.save_checkpoint(model, tmp_path / "supernet.safetensors"))


def pytest_configure(config):
    """Under pytest-xdist (``-n N``) each worker computes with its share of the cores: N processes of torch's
    default thread count (every core each) would oversubscribe the machine and spin against each other."""
    import os

    workers = int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "0") or 0)
    if workers > 1:
        share = max(1, (os.cpu_count() or 1) // workers)
        torch.set_num_threads(share)
        os.environ.setdefault("OMP_NUM_THREADS", str(share))
