"""Datasets: IMDB reviews with a fixed held-out split, and the vBoN sentiment prompts."""

from bonjax.data.imdb import (
    LABELS,
    TEST_PER_LABEL,
    BonjaxImdbReviews,
    Prompts,
    Reviews,
    Source,
    clean_review,
    default_data_dir,
    imdb_prompts,
    load_reviews,
    prompt_length,
    split_reviews,
)

__all__ = [
    "LABELS",
    "TEST_PER_LABEL",
    "BonjaxImdbReviews",
    "Prompts",
    "Reviews",
    "Source",
    "clean_review",
    "default_data_dir",
    "imdb_prompts",
    "load_reviews",
    "prompt_length",
    "split_reviews",
]
