"""Best-of-N rollouts: sampling methods, the scan-fused sampler and the teacher-forced scorer."""

from bonjax.sampling.sampler import (
    DecodeState,
    PrefillOutput,
    Sampler,
    SampleResult,
    completion_mask,
    prefill,
)
from bonjax.sampling.scorer import CompletionScores, completion_logprobs
from bonjax.sampling.strategies import Greedy, SamplingMethod, Temperature, TopK, TopP

__all__ = [
    "CompletionScores",
    "DecodeState",
    "Greedy",
    "PrefillOutput",
    "SampleResult",
    "Sampler",
    "SamplingMethod",
    "Temperature",
    "TopK",
    "TopP",
    "completion_logprobs",
    "completion_mask",
    "prefill",
]
