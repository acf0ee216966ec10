"""Counts in log lines and summaries read as English: "1 call", "2 calls"."""

from __future__ import annotations


def plural(count: int, one: str, many: str | None = None) -> str:
    """``count`` followed by ``one`` when it is 1, else by ``many`` (default:
    ``one`` + "s"): plural(1, "room") is "1 room", plural(0, "room") "0 rooms"."""
    return f"{count} {one if count == 1 else (many if many is not None else one + 's')}"
