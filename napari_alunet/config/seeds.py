"""The range of seeds every config accepts."""

from __future__ import annotations

from typing import Any

#: Seeds are handed to numpy and torch, which take 0 .. 2**63 - 1 (``round_seed`` multiplies
#: by 1000 and adds the round).
MAX_SEED: int = 2**53


def _check_seed(seed: Any) -> None:
    if isinstance(seed, bool) or not isinstance(seed, int) or not 0 <= seed <= MAX_SEED:
        raise ValueError(f"seed must be a whole number in [0, {MAX_SEED}], got {seed!r}")
