"""Encoder classifiers against transformers PyTorch on the same weights."""

import dataclasses
import json

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from bonjax import sharding as shd
from bonjax.models.encoder import BertConfig, DistilBertConfig, EncoderClassifier, Pooling
from bonjax.models.encoder_tokenizer import minilm_tokenizer
from bonjax.models.encoder_weights import load_hf_encoder, load_minilm, minilm_dir

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")

AXIS_NAMES = {"vocab", "embed", "heads", "head_dim", "mlp", "classes", "position", None}


def _padded_batch(vocab_size, lengths, T, seed=0):
    rng = np.random.default_rng(seed)
    ids_BxT = rng.integers(1, vocab_size, size=(len(lengths), T)).astype(np.int32)
    mask_BxT = (np.arange(T)[None, :] < np.array(lengths)[:, None]).astype(np.int32)
    return ids_BxT * mask_BxT, mask_BxT


def _save_hf(model, path, dtype=None):
    if dtype is not None:
        model = model.to(dtype)
    model.save_pretrained(path, safe_serialization=True)
    return path


def _hf_bert(seed=0, **kw):
    torch.manual_seed(seed)
    cfg = transformers.BertConfig(vocab_size=101, hidden_size=32, num_hidden_layers=2,
                                  num_attention_heads=4, intermediate_size=64,
                                  max_position_embeddings=40, num_labels=3,
                                  initializer_range=0.2, **kw)
    model = transformers.BertForSequenceClassification(cfg).eval()
    with torch.no_grad():  # non-trivial LayerNorm and bias values
        for name, p in model.named_parameters():
            if "LayerNorm" in name or name.endswith("bias"):
                p.add_(0.1 * torch.randn_like(p))
    return model


def _hf_distilbert(seed=0):
    torch.manual_seed(seed)
    cfg = transformers.DistilBertConfig(vocab_size=101, dim=32, n_layers=2, n_heads=4,
                                        hidden_dim=64, max_position_embeddings=40, num_labels=3,
                                        initializer_range=0.2)
    model = transformers.DistilBertForSequenceClassification(cfg).eval()
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "layer_norm" in name.lower() or name.endswith("bias"):
                p.add_(0.1 * torch.randn_like(p))
    return model


def _torch_logits(model, ids, mask):
    with torch.no_grad():
        return model(input_ids=torch.tensor(ids, dtype=torch.long),
                     attention_mask=torch.tensor(mask, dtype=torch.long)).logits.float().numpy()


@pytest.mark.parametrize("family", ["bert", "distilbert"])
def test_classifier_matches_transformers(family, tmp_path):
    hf = _hf_bert() if family == "bert" else _hf_distilbert()
    model, params = load_hf_encoder(_save_hf(hf, tmp_path))
    expected_cls = BertConfig if family == "bert" else DistilBertConfig
    assert model.config == expected_cls.tiny()
    ids, mask = _padded_batch(101, [7, 1, 12, 3], T=12)
    got = jax.jit(model.forward)(params, ids, mask)
    want = _torch_logits(hf, ids, mask)
    err = float(np.abs(np.asarray(got.logits_BxC) - want).max())
    print(f"{family} f32 max abs logit error: {err:.3g} (logits up to {np.abs(want).max():.2f})")
    assert err <= 1e-4


def test_bert_bf16_checkpoint(tmp_path):
    hf = _hf_bert(seed=1)
    _save_hf(hf, tmp_path, torch.bfloat16)
    model, params = load_hf_encoder(tmp_path)
    hf = hf.to(torch.bfloat16).float()  # the same rounded weights, computed in float32
    assert params["word"][...].dtype == jnp.float32
    np.testing.assert_array_equal(
        np.asarray(params["word"][...]),
        hf.bert.embeddings.word_embeddings.weight.detach().numpy())
    ids, mask = _padded_batch(101, [5, 9], T=9, seed=1)
    got = model.forward(params, ids, mask).logits_BxC
    err = float(np.abs(np.asarray(got) - _torch_logits(hf, ids, mask)).max())
    print(f"bert bf16-checkpoint max abs logit error: {err:.3g}")
    assert err <= 1e-4


def test_pooled_outputs_match_transformers(tmp_path):
    hf = _hf_bert(seed=2)
    model, params = load_hf_encoder(_save_hf(hf, tmp_path))
    ids, mask = _padded_batch(101, [4, 10], T=10, seed=2)
    out = model.forward(params, ids, mask)
    with torch.no_grad():
        ref = hf.bert(input_ids=torch.tensor(ids).long(), attention_mask=torch.tensor(mask).long())
    valid = mask.astype(bool)
    hidden_err = np.abs(np.asarray(out.hidden_BxTxD) - ref.last_hidden_state.numpy())[valid].max()
    pooled_err = np.abs(np.asarray(out.pooled_BxD) - ref.pooler_output.numpy()).max()
    assert hidden_err <= 1e-4 and pooled_err <= 1e-4


def test_minilm_matches_transformers_mean_pooled_embeddings():
    texts = ["A wonderful, heartfelt film. I loved every minute!",
             "Terrible acting; the plot made no sense at all.",
             "ok"]
    tokenizer = minilm_tokenizer(max_length=32)
    ids, mask = tokenizer(texts)
    hf_tok = transformers.AutoTokenizer.from_pretrained(str(minilm_dir()))
    want = hf_tok(texts, padding="max_length", max_length=32, truncation=True, return_tensors="np")
    np.testing.assert_array_equal(ids, want["input_ids"])
    np.testing.assert_array_equal(mask, want["attention_mask"])

    model, params = load_minilm()
    assert model.config == BertConfig.minilm_l6()
    pooled = np.asarray(jax.jit(model.forward)(params, ids, mask).pooled_BxD)
    hf = transformers.BertModel.from_pretrained(str(minilm_dir())).eval()
    with torch.no_grad():
        hidden = hf(input_ids=torch.tensor(ids).long(),
                    attention_mask=torch.tensor(mask).long()).last_hidden_state.numpy()
    ref = (hidden * mask[..., None]).sum(1) / mask.sum(1, keepdims=True)
    err = float(np.abs(pooled - ref).max())
    print(f"all-MiniLM-L6-v2 mean-pooled embedding max abs error: {err:.3g}")
    assert err <= 1e-4


def test_every_parameter_has_logical_axes():
    for cfg in (BertConfig.tiny(), DistilBertConfig.tiny(), BertConfig.tiny(pooling=Pooling.MEAN)):
        _, params = EncoderClassifier.abstract(cfg)
        leaves = jax.tree.leaves(params, is_leaf=lambda x: hasattr(x, "get_metadata"))
        assert leaves
        for variable in leaves:
            axes = variable.get_metadata()["axes"]
            assert len(axes) == variable.get_value().ndim and set(axes) <= AXIS_NAMES, axes


def test_sharded_forward_equals_unsharded():
    cfg = BertConfig.tiny()
    model, params = EncoderClassifier.init(cfg, jax.random.key(3))
    mesh = shd.make_mesh((2, 2, 2))
    _, sharded = EncoderClassifier.init(cfg, jax.random.key(3), mesh=mesh)
    assert sharded["layers"][0]["fc"][...].sharding.spec == jax.sharding.PartitionSpec(
        "fsdp", "tensor")
    ids, mask = _padded_batch(cfg.vocab_size, [3, 8, 5, 1, 8, 2, 6, 4], T=8, seed=3)
    want = model.forward(params, ids, mask).logits_BxC
    with jax.set_mesh(mesh):
        batch = shd.batch_sharding(mesh, 2)
        got = jax.jit(model.forward)(sharded, jax.device_put(ids, batch),
                                     jax.device_put(mask, batch)).logits_BxC
    np.testing.assert_allclose(np.asarray(got), np.asarray(want), atol=1e-5)


def test_mean_pooling_ignores_padding():
    cfg = DistilBertConfig.tiny(pooling=Pooling.MEAN)
    model, params = EncoderClassifier.init(cfg, jax.random.key(4))
    ids, mask = _padded_batch(cfg.vocab_size, [5], T=5, seed=4)
    short = model.forward(params, ids, mask).logits_BxC
    padded_ids = np.concatenate([ids, np.full((1, 3), 7, np.int32)], 1)
    padded_mask = np.concatenate([mask, np.zeros((1, 3), np.int32)], 1)
    padded = model.forward(params, padded_ids, padded_mask).logits_BxC
    np.testing.assert_allclose(np.asarray(padded), np.asarray(short), atol=1e-6)


def test_load_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="does not exist"):
        load_hf_encoder(tmp_path / "nowhere")
    with pytest.raises(FileNotFoundError, match="config.json"):
        load_hf_encoder(tmp_path)
    hf = _hf_bert(seed=5)
    hf.config.to_json_file(tmp_path / "config.json")
    with pytest.raises(FileNotFoundError, match="model.safetensors"):
        load_hf_encoder(tmp_path)
    _save_hf(hf, tmp_path)
    with pytest.raises(ValueError, match=r"intermediate.dense.weight.*\(64, 32\).*\(48, 32\)"):
        load_hf_encoder(tmp_path, mlp_dim=48)
    bare = tmp_path / "bare"
    _save_hf(hf.bert, bare)
    with pytest.raises(ValueError, match="'classifier.weight' is missing"):
        load_hf_encoder(bare)
    model, params = load_hf_encoder(bare, new_head=True, num_classes=5)
    assert params["classifier"][...].shape == (32, 5)
    config = json.loads((tmp_path / "config.json").read_text())
    (tmp_path / "config.json").write_text(json.dumps({**config, "model_type": "roberta"}))
    with pytest.raises(ValueError, match="'roberta'"):
        load_hf_encoder(tmp_path)
    with pytest.raises(ValueError, match="not divisible"):
        dataclasses.replace(BertConfig.tiny(), num_heads=5)


def test_tokenizer_truncation_and_padding():
    text = " ".join(f"word{i}" for i in range(40))
    full_ids, _ = minilm_tokenizer(max_length=512)([text])
    full = full_ids[0][full_ids[0] != 0].tolist()
    assert full[0] == 101 and full[-1] == 102 and len(full) > 30
    ids, mask = minilm_tokenizer(max_length=16, keep_tail=5)([text, "short one"])
    assert ids[0].tolist() == full[:10] + full[-6:] and mask[0].all()
    assert mask[1].sum() == 4 and ids[1, 4:].tolist() == [0] * 12
    head_ids, _ = minilm_tokenizer(max_length=16)([text])
    assert head_ids[0].tolist() == full[:15] + [102]
    bucketed, bucket_mask = minilm_tokenizer(max_length=64, pad_multiple=8)(["short one", "hi"])
    assert bucketed.shape == bucket_mask.shape == (2, 8)
    with pytest.raises(ValueError, match="keep_tail"):
        minilm_tokenizer(max_length=16, keep_tail=15)


@pytest.mark.parametrize("spec", ["btd,dcnh->cbnth", "bnth,bnsh->bnts", "bnts,bnsh->bnth",
                                  "bnth,nhd->btd", "btd,df->btf", "btf,fd->btd"])
def test_mixed_precision_einsum_gradients(spec):
    """The bfloat16 einsum's own backward (bfloat16 operands, float32 accumulation) against
    JAX's transpose of the same forward (float32 upcasts); every form runs on this backend."""
    from bonjax.models.encoder import _einsum

    sizes = dict(b=2, t=5, s=5, d=16, c=3, n=2, h=4, f=24)
    (a, b), out = spec.split("->")[0].split(","), spec.split("->")[1]
    kx, ky, kg = jax.random.split(jax.random.key(0), 3)
    x = jax.random.normal(kx, [sizes[i] for i in a])
    y = jax.random.normal(ky, [sizes[i] for i in b])
    g = jax.random.normal(kg, [sizes[i] for i in out])

    def ours(x, y):
        return jnp.sum(_einsum(spec, x, y, jnp.bfloat16) * g)

    def jax_own(x, y):
        z = jnp.einsum(spec, x.astype(jnp.bfloat16), y.astype(jnp.bfloat16),
                       preferred_element_type=jnp.float32)
        return jnp.sum(z * g)

    got = jax.jit(jax.grad(ours, argnums=(0, 1)))(x, y)
    want = jax.grad(jax_own, argnums=(0, 1))(x, y)
    for o, w in zip(got, want, strict=True):
        err = float(jnp.linalg.norm(o.astype(jnp.float32) - w) / jnp.linalg.norm(w))
        assert err <= 1e-2, (spec, err)
    np.testing.assert_allclose(jax.jit(ours)(x, y), jax_own(x, y), rtol=1e-5)


def test_bfloat16_compute_loss_and_gradients_match_float32():
    """MiniLM in bfloat16 compute (float32 parameters, accumulation and elementwise work) gives
    the float32 loss and gradients to bfloat16 accuracy, through the jitted backward."""
    import optax
    from flax import nnx

    model, params = load_minilm(num_classes=2, key=jax.random.key(0))
    texts = ["A warm, funny and beautifully acted film.", "Dull, loud and far too long.",
             "I expected little and was won over by the end.", "The worst script in years."]
    ids, mask = minilm_tokenizer(max_length=32)(texts)
    y = jnp.array([1, 0, 1, 0])

    def loss_and_grads(dtype):
        m, _ = EncoderClassifier.abstract(dataclasses.replace(model.config, dtype=dtype))

        def loss(p):
            logits = m.forward(p, ids, mask).logits_BxC
            return optax.softmax_cross_entropy_with_integer_labels(logits, y).mean()

        value, grads = jax.jit(jax.value_and_grad(loss))(params)
        return float(value), nnx.to_pure_dict(grads)

    loss32, g32 = loss_and_grads("float32")
    loss16, g16 = loss_and_grads("bfloat16")
    assert abs(loss16 - loss32) <= 1e-2 * abs(loss32)
    leaves = {"classifier": lambda g: g["classifier"], "top fc": lambda g: g["layers"][5]["fc"],
              "bottom qkv": lambda g: g["layers"][0]["qkv"]}
    for name, leaf in leaves.items():
        w = np.asarray(leaf(g32))
        err = float(np.linalg.norm(np.asarray(leaf(g16)) - w) / np.linalg.norm(w))
        print(f"bfloat16 compute, {name} gradient: relative error {err:.3g}")
        assert err <= 5e-2, (name, err)
