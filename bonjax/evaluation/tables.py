"""The results table of an evaluation, in Markdown: one row per method and setting."""

from __future__ import annotations

import os
from collections.abc import Sequence

from bonjax.checks import is_int
from bonjax.evaluation.metrics import Estimate, EvalPoint

__all__ = ["DEFAULT_NOTE", "results_table", "write_results_table"]

_HEADER = ("Method", "Setting", "Reward", "KL (nats)", "Win rate vs ref")

DEFAULT_NOTE = (
    "Values are mean ± standard error across prompts; a value without ± has no sampling error "
    "(the analytic BoN KL log N - (N-1)/N). Win rate: against one reference sample per prompt, "
    "ties counting half."
)


def _cell(text: str) -> str:
    return text.replace("|", r"\|")


def _format(estimate: Estimate | None, digits: int) -> str:
    if estimate is None:
        return "n/a"
    mean, stderr = estimate
    if stderr == 0:
        return f"{mean:.{digits}f}"
    return f"{mean:.{digits}f} ± {stderr:.{digits}f}"


def results_table(
    points: Sequence[EvalPoint], *, digits: int = 3, note: str | None = DEFAULT_NOTE
) -> str:
    """A Markdown table with one row per point, in the given order, then ``note`` (if any).

    Values read ``mean ± standard error`` (standard errors across prompts); a value whose standard
    error is exactly 0 (the analytic BoN KL ``log N - (N - 1) / N``) is printed alone, a win rate
    not measured as ``n/a``. Pass a different ``note`` when win rates count ties otherwise.
    """
    if not points:
        raise ValueError("points is empty: a results table needs at least one row")
    if not is_int(digits) or not 0 <= digits <= 12:
        raise ValueError(f"digits must be an integer in [0, 12], got {digits!r}")
    rows = [_HEADER, ("---",) * len(_HEADER)]
    for p in points:
        if not isinstance(p, EvalPoint):
            raise ValueError(f"every row must be an EvalPoint, got {type(p).__name__}: {p!r}")
        rows.append(
            (
                _cell(p.method),
                _cell(p.setting),
                _format(p.reward, digits),
                _format(p.kl, digits),
                _format(p.win_rate, digits),
            )
        )
    lines = ["| " + " | ".join(row) + " |" for row in rows]
    table = "\n".join(lines) + "\n"
    return table + f"\n{note}\n" if note else table


def write_results_table(
    path: str | os.PathLike,
    points: Sequence[EvalPoint],
    *,
    digits: int = 3,
    note: str | None = DEFAULT_NOTE,
) -> str:
    """Write :func:`results_table` to ``path`` (directories created); returns the path."""
    text = results_table(points, digits=digits, note=note)
    path = os.fspath(path)
    if os.path.dirname(path):
        os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "w") as f:
        f.write(text)
    return path
