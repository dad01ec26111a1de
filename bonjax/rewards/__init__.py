"""Rewards over (prompt, completion) token arrays, and the IMDB sentiment reward model."""

from bonjax.rewards.classifier import (
    ClassifierOutput,
    ClassifierScorer,
    SequenceClassifier,
    token_reward,
)
from bonjax.rewards.interface import (
    RetokenizedReward,
    Reward,
    TextReward,
    TokenReward,
    decode_texts,
)
from bonjax.rewards.lexicon import vader_compound, vader_reward
from bonjax.rewards.sentiment import (
    DEFAULT_REWARD_DIR,
    TRAIN_COMMAND,
    SentimentTrainConfig,
    accuracy,
    default_reward_dir,
    load_sentiment_classifier,
    load_sentiment_reward,
    save_sentiment_classifier,
    train_sentiment_classifier,
)
from bonjax.rewards.synthetic import token_residue_reward

__all__ = [
    "DEFAULT_REWARD_DIR",
    "TRAIN_COMMAND",
    "ClassifierOutput",
    "ClassifierScorer",
    "RetokenizedReward",
    "Reward",
    "SentimentTrainConfig",
    "SequenceClassifier",
    "TextReward",
    "TokenReward",
    "accuracy",
    "decode_texts",
    "default_reward_dir",
    "load_sentiment_classifier",
    "load_sentiment_reward",
    "save_sentiment_classifier",
    "token_residue_reward",
    "token_reward",
    "train_sentiment_classifier",
    "vader_compound",
    "vader_reward",
]
