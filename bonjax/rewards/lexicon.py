"""Lexicon sentiment rewards: VADER (Hutto & Gilbert 2014), a fast model-free alternative."""

from __future__ import annotations

import functools

from bonjax.rewards.interface import TextReward

__all__ = ["vader_compound", "vader_reward"]


@functools.cache
def _analyzer():
    try:
        from vaderSentiment.vaderSentiment import SentimentIntensityAnalyzer
    except ModuleNotFoundError as err:
        raise ModuleNotFoundError("the VADER reward needs vaderSentiment: "
                                  "pip install 'vaderSentiment==3.3.2'") from err
    return SentimentIntensityAnalyzer()


def vader_compound(text: str) -> float:
    """VADER's compound score in ``[-1, 1]``: the normalised sum ``s / sqrt(s^2 + 15)`` of the
    rule-adjusted lexicon valences ``s`` of the text's words."""
    return float(_analyzer().polarity_scores(text)["compound"])


def vader_reward(policy_tokenizer, include_prompt: bool = True) -> TextReward:
    """The VADER compound score of the decoded ``prompt + completion`` as a reward."""
    return TextReward(fn=vader_compound, policy_tokenizer=policy_tokenizer,
                      include_prompt=include_prompt)
