"""Helpers for the core's progress generators (long work yields typed events, returns a result)."""

from __future__ import annotations

from collections.abc import Callable, Generator
from typing import Any, TypeVar

R = TypeVar("R")


def drain(
    generator: Generator[Any, None, R], on_event: Callable[[Any], None] | None = None
) -> R:
    """Run a progress generator to the end and return its result.

    ``on_event`` sees every yielded event (the CLI feeds tqdm with it; tests collect them).
    """
    while True:
        try:
            event = next(generator)
        except StopIteration as stop:
            return stop.value
        if on_event is not None:
            on_event(event)
