"""Counted nouns in messages: "1 photo", "2 photos", never "1 photos"."""

from __future__ import annotations


def plural(count: int, noun: str, many: str | None = None) -> str:
    """``count`` and ``noun``, the noun in the plural unless ``count`` is 1.

    Args:
        count: how many.
        noun: the singular ("photo").
        many: the plural when it is not ``noun + "s"`` ("searches", "copies").
    """
    return f"{count} {noun if count == 1 else (many or noun + 's')}"
