"""The fields every decoder config shares: how the model computes and what its backward keeps.

Each architecture's config (``GPT2Config``, ``Gemma3Config``, ``LlamaConfig``, ...) is a frozen
dataclass derived from :class:`ComputePolicy`, so the dtype policy, the rematerialisation policy
and the name of the final norm are declared and checked once.
"""

from __future__ import annotations

import dataclasses
from typing import ClassVar

from bonjax.models.remat import check_remat

__all__ = ["ComputePolicy"]


@dataclasses.dataclass(frozen=True)
class ComputePolicy:
    """The dtype and rematerialisation policies of a decoder config.

    Attributes:
      dtype: matmul inputs, activations between blocks and the KV cache (matmuls accumulate in
        float32); norms, softmax and logits are float32 whatever it is. "bfloat16" is the
        accelerator setting.
      param_dtype: how the parameters are stored.
      remat: what the backward pass keeps of each block (``bonjax.models.remat``): "none"
        (everything), "block" (only the block's input; the block is recomputed) or "dots" (also
        the outputs of the weight matmuls). Forward values are the same under every policy.
    """

    dtype: str = "float32"
    param_dtype: str = "float32"
    remat: str = "none"
    # The module attribute of the final norm (``top_blocks_filter`` trains it with the top blocks).
    final_norm_name: ClassVar[str] = "final_norm"

    def __post_init__(self):
        check_remat(self.remat)
