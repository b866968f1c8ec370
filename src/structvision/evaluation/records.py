"""Helpers shared by the evaluators' per-image ``records``."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

__all__ = ["unique_by_image_id"]


def unique_by_image_id(records: Iterable[dict[str, Any]]) -> list[dict[str, Any]]:
    """The first record of each ``image_id``, in order.

    A distributed sampler pads the last shard by repeating images; gathered records may then
    hold an image twice, and it must count once.
    """
    seen: set[int] = set()
    unique = []
    for record in records:
        if record["image_id"] not in seen:
            seen.add(record["image_id"])
            unique.append(record)
    return unique
