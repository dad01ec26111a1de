"""Attention pieces shared by the decoders: masks, rotary embeddings and the attention core.

Einsum letters: B batch, T query tokens, S key slots, P prefix slots, N query heads,
K key/value heads, G query heads per KV head (N = K * G), H head dim, D model dim.
"""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp

from bonjax.models import matmul
from bonjax.models.kv_cache import KVCache

__all__ = ["AttentionMasks", "build_masks", "apply_rope", "rope_inv_freq", "attend", "write_cache",
           "project_in", "project_out"]

_MASKED = -1e30  # finite, so a row with no visible key (a padding query) gives no NaN


@dataclasses.dataclass(frozen=True)
class AttentionMasks:
    """Boolean masks for one forward call, per window size (None = global attention).

    ``own[window]`` is ``[B, T, S]`` over the call's own key slots; ``prefix[window]`` is
    ``[B, T, P]`` over a shared prefix's slots (or None without a prefix).
    """

    own: dict
    prefix: dict | None


def _flatten_masks(masks: AttentionMasks):
    # A pytree node so that masks can be arguments of ``jax.checkpoint`` (bonjax.models.remat);
    # the window keys (None and ints) do not sort, so they go into the static part in order.
    prefix = masks.prefix
    children = (tuple(masks.own.values()), None if prefix is None else tuple(prefix.values()))
    aux = (tuple(masks.own), None if prefix is None else tuple(prefix))
    return children, aux


def _unflatten_masks(aux, children) -> AttentionMasks:
    own_keys, prefix_keys = aux
    own, prefix = children
    prefix = None if prefix_keys is None else dict(zip(prefix_keys, prefix, strict=True))
    return AttentionMasks(dict(zip(own_keys, own, strict=True)), prefix)


jax.tree_util.register_pytree_node(AttentionMasks, _flatten_masks, _unflatten_masks)


def _window_mask(q_slots_T, k_slots_S, window: int | None):
    q = q_slots_T[:, None]
    k = k_slots_S[None, :]
    mask_TxS = k <= q
    if window is not None:
        mask_TxS &= (q - k) < window
    return mask_TxS


def build_masks(input_mask_BxT: jax.Array, cache: KVCache | None, prefix: KVCache | None,
                windows: set[int | None]) -> tuple[AttentionMasks, jax.Array, jax.Array]:
    """Masks for every window size used by a model, plus the updated slot-validity mask.

    Returns ``(masks, key_valid_BxS, write_index)``: the validity of the key slots the call
    attends to (the cache's, with this call's tokens written at ``cache.length``), and the slot
    where this call's tokens are written (0 without a cache).
    """
    B, T = input_mask_BxT.shape
    input_mask_BxT = input_mask_BxT.astype(jnp.bool_)
    if cache is None:
        key_valid_BxS = input_mask_BxT
        write_index = jnp.zeros((), jnp.int32)
        k_slots_S = jnp.arange(T)
    else:
        write_index = cache.length
        key_valid_BxS = jax.lax.dynamic_update_slice(cache.valid_BxS, input_mask_BxT,
                                                     (0, write_index))
        k_slots_S = jnp.arange(cache.max_len)
    q_slots_T = write_index + jnp.arange(T)
    own = {w: _window_mask(q_slots_T, k_slots_S, w)[None] & key_valid_BxS[:, None, :]
           for w in windows}
    prefix_masks = None
    if prefix is not None:
        b, P = prefix.valid_BxS.shape
        if B % b:
            raise ValueError(f"batch {B} is not a multiple of the prefix batch {b}")
        prefix_valid_BxP = jnp.repeat(prefix.valid_BxS, B // b, axis=0)
        q_abs_T = P + q_slots_T
        prefix_masks = {w: _window_mask(q_abs_T, jnp.arange(P), w)[None]
                        & prefix_valid_BxP[:, None, :] for w in windows}
    return AttentionMasks(own, prefix_masks), key_valid_BxS, write_index


def rope_inv_freq(head_dim: int, base: float) -> jax.Array:
    """The rotary frequencies ``base^(-2i / H)``, ``i < H / 2``, in float32."""
    return 1.0 / (base ** (jnp.arange(0, head_dim, 2, dtype=jnp.float32) / head_dim))


def apply_rope(x_BxTxNxH: jax.Array, positions_BxT: jax.Array, base: float,
               scale: float = 1.0, *, inv_freq: jax.Array | None = None) -> jax.Array:
    """Rotary embedding, halves layout (rotate_half), optional linear position scaling.

    ``inv_freq`` (``[H / 2]``) replaces the frequencies of ``base`` (:func:`rope_inv_freq`), for
    a rescaled spectrum such as Llama 3's.
    """
    H = x_BxTxNxH.shape[-1]
    if inv_freq is None:
        inv_freq = rope_inv_freq(H, base)
    angles_BxTxh = (positions_BxT.astype(jnp.float32)[..., None] / scale) * inv_freq
    cos = jnp.cos(angles_BxTxh)[:, :, None, :]
    sin = jnp.sin(angles_BxTxh)[:, :, None, :]
    x1, x2 = jnp.split(x_BxTxNxH.astype(jnp.float32), 2, axis=-1)
    out = jnp.concatenate([x1 * cos - x2 * sin, x2 * cos + x1 * sin], axis=-1)
    return out.astype(x_BxTxNxH.dtype)


def project_in(x_BxTxD: jax.Array, w_DxM: jax.Array) -> jax.Array:
    """``x @ w`` for a weight ``[D, ...]`` (heads, head dim), as one ``[D, prod(...)]`` matmul.

    Flattening the output dimensions keeps XLA from permuting the weight before the dot (it
    did so at every decode step on CPU for the multi-axis einsum).
    """
    B, T, D = x_BxTxD.shape
    out_shape = w_DxM.shape[1:]
    y = matmul.einsum("btd,dm->btm", x_BxTxD, w_DxM.reshape(D, -1))
    return y.reshape(B, T, *out_shape)


def project_out(a_BxTxNxH: jax.Array, w_NxHxD: jax.Array) -> jax.Array:
    """``sum_{n,h} a[b,t,n,h] w[n,h,d]`` as one ``[B*T, N*H] @ [N*H, D]`` matmul (see above)."""
    B, T, N, H = a_BxTxNxH.shape
    return matmul.einsum("btm,md->btd", a_BxTxNxH.reshape(B, T, N * H),
                      w_NxHxD.reshape(N * H, w_NxHxD.shape[-1]))


def write_cache(cache_BxSxKxH: jax.Array, new_BxTxKxH: jax.Array, index) -> jax.Array:
    """Writes this call's keys or values at slot ``index`` (in place under donation)."""
    return jax.lax.dynamic_update_slice(cache_BxSxKxH, new_BxTxKxH.astype(cache_BxSxKxH.dtype),
                                        (0, index, 0, 0))


def attend(q_BxTxNxH, k_BxSxKxH, v_BxSxKxH, mask_BxTxS, *, scale: float,
           softcap: float | None = None, prefix_k=None, prefix_v=None,
           prefix_mask_BxTxP=None) -> jax.Array:
    """Masked grouped-query attention, optionally also over a shared prefix.

    The prefix (``[b, P, K, H]``, ``B = b * n``) is read by groups of ``n`` consecutive rows;
    logits over prefix and own slots share one softmax, computed in float32.
    """
    B, T, N, H = q_BxTxNxH.shape
    K = k_BxSxKxH.shape[2]
    G = N // K
    q_BxTxKxGxH = q_BxTxNxH.reshape(B, T, K, G, H)
    logits_BxKxGxTxS = jnp.einsum("btkgh,bskh->bkgts", q_BxTxKxGxH, k_BxSxKxH,
                                  preferred_element_type=jnp.float32) * scale
    parts = [logits_BxKxGxTxS]
    masks = [mask_BxTxS]
    if prefix_k is not None:
        b, P = prefix_k.shape[:2]
        q_bxnxTxKxGxH = q_BxTxKxGxH.reshape(b, B // b, T, K, G, H)
        logits_p = jnp.einsum("bntkgh,bpkh->bnkgtp", q_bxnxTxKxGxH, prefix_k,
                              preferred_element_type=jnp.float32) * scale
        parts.insert(0, logits_p.reshape(B, K, G, T, P))
        masks.insert(0, prefix_mask_BxTxP)
    logits = jnp.concatenate(parts, axis=-1) if len(parts) > 1 else parts[0]
    mask = jnp.concatenate(masks, axis=-1) if len(masks) > 1 else masks[0]
    if softcap is not None:
        logits = jnp.tanh(logits / softcap) * softcap
    logits = jnp.where(mask[:, None, None, :, :], logits, _MASKED)
    probs = jax.nn.softmax(logits, axis=-1).astype(v_BxSxKxH.dtype)
    if prefix_k is not None:
        probs_p, probs = probs[..., :P], probs[..., P:]
        out_p = jnp.einsum("bnkgtp,bpkh->bntkgh",
                           probs_p.reshape(b, B // b, K, G, T, P), prefix_v)
        out = jnp.einsum("bkgts,bskh->btkgh", probs, v_BxSxKxH) + out_p.reshape(B, T, K, G, H)
    else:
        out = jnp.einsum("bkgts,bskh->btkgh", probs, v_BxSxKxH)
    return out.reshape(B, T, N, H)

