"""LoRA against full fine-tuning on the exactly solvable toy; one JSON line per run.

    python experiments/toy_lora.py                     # every variant, seeds 0-2
    python experiments/toy_lora.py --variants full,lora8_norm_embed --seeds 0

vBoN N = 4 (RLOO), 300 steps at lr 3e-3 with cosine decay (bonjax.toy.train_on_toy); each line
has the exact KL(pi || pi_BoN) at the start and the end. Variants, by what trains:

- ``full``: every parameter;
- ``lora8_norm_embed`` / ``lora32_norm_embed``: rank-8 / rank-32 adapters on every block matrix,
  with the final norm and the embeddings in full (``LoRAConfig.train_in_full``);
- ``lora32``: rank-32 adapters alone (32 is full rank for every matrix of the toy's model);
- ``block_matrices``: every block matrix in full and nothing else (the weights the adapters
  adapt; the one variant the library has no option for, so this script selects them itself);
- ``top2``: the blocks and the final norm in full, no embeddings (``train_top=2``).
"""

import argparse
import dataclasses
import json
import time

from bonjax.models.decoder import DecoderLM
from bonjax.models.lora import LoRAConfig, lora_targets
from bonjax.toy import ToyProblem, train_on_toy

_IN_FULL = ("ln_f", "wte", "wpe")


@dataclasses.dataclass(frozen=True)
class _BlockMatricesLM(DecoderLM):
    """The toy's model whose "top blocks" are ``matrices``, the dotted paths of the weights LoRA
    adapts by default (``lora_targets``): every block matrix, and nothing else."""

    matrices: frozenset[str] = frozenset()

    def top_blocks_filter(self, train_top):
        del train_top
        return lambda path: ".".join(str(getattr(k, "key", k)) for k in path) in self.matrices


def _run(variant: str, seed: int, steps: int, learning_rate: float) -> dict:
    kw: dict = {}
    toy = ToyProblem(seed=seed)
    if variant == "lora8_norm_embed":
        kw["lora"] = LoRAConfig(rank=8, alpha=16.0, train_in_full=_IN_FULL)
    elif variant == "lora32_norm_embed":
        kw["lora"] = LoRAConfig(rank=32, alpha=64.0, train_in_full=_IN_FULL)
    elif variant == "lora32":
        kw["lora"] = LoRAConfig(rank=32, alpha=64.0)
    elif variant == "top2":
        kw["train_top"] = 2
    elif variant == "block_matrices":
        matrices = frozenset(lora_targets(toy.ref_params, LoRAConfig()))
        # The same weights and reference; only which of them train differs.
        object.__setattr__(toy, "lm", _BlockMatricesLM(toy.lm.config, toy.lm.graphdef, matrices))
        kw["train_top"] = 1  # any value: the filter above ignores it
    elif variant != "full":
        raise ValueError(f"unknown variant {variant!r}; choose from {', '.join(VARIANTS)}")
    start = time.perf_counter()
    out = train_on_toy("vbon", n=4, steps=steps, learning_rate=learning_rate, seed=seed,
                       problem=toy, **kw)
    return {"variant": variant, "seed": seed, "steps": steps, "learning_rate": learning_rate,
            "kl_to_bon_start": out["kl_to_bon_start"], "kl_to_bon_end": out["kl_to_bon_end"],
            "seconds": round(time.perf_counter() - start, 1)}


VARIANTS = ("full", "lora8_norm_embed", "lora32_norm_embed", "lora32", "block_matrices", "top2")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--variants", default=",".join(VARIANTS))
    parser.add_argument("--seeds", default="0,1,2")
    parser.add_argument("--steps", type=int, default=300)
    parser.add_argument("--learning_rate", type=float, default=3e-3)
    args = parser.parse_args()
    variants = args.variants.split(",")
    unknown = sorted(set(variants) - set(VARIANTS))
    if unknown:
        parser.error(f"unknown variant {unknown[0]!r}; choose from {', '.join(VARIANTS)}")
    for seed in (int(s) for s in args.seeds.split(",")):
        for variant in variants:
            print(json.dumps(_run(variant, seed, args.steps, args.learning_rate)), flush=True)


if __name__ == "__main__":
    main()
