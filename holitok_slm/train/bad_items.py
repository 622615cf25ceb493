"""Ledger of data items skipped during extraction or training: each id once, with its reason, merged over ranks."""
from __future__ import annotations

from collections import Counter


class BadItemLog:
    """Records (item id, reason); `reason` starts with a short category ("missing", "corrupt", ...) before ':'."""

    def __init__(self) -> None:
        self.items: dict[str, str] = {}

    def add(self, item_id: str, reason: str) -> bool:
        """Returns True the first time an id is recorded (so callers can warn once per item)."""
        if item_id in self.items:
            return False
        self.items[item_id] = reason
        return True

    def __len__(self) -> int:
        return len(self.items)

    def __contains__(self, item_id: str) -> bool:
        return item_id in self.items

    def counts(self) -> dict[str, int]:
        return dict(Counter(reason.split(":", 1)[0] for reason in self.items.values()))

    def merge(self, other: dict[str, str]) -> None:
        for item_id, reason in other.items():
            self.items.setdefault(item_id, reason)

    def state_dict(self) -> dict[str, str]:
        return dict(self.items)

    def load_state_dict(self, state: dict[str, str]) -> None:
        self.items = dict(state)

    def report(self, limit: int = 50) -> str:
        if not self.items:
            return "no bad items"
        lines = [f"{len(self.items)} bad items skipped: " + ", ".join(f"{k}={v}" for k, v in sorted(self.counts().items()))]
        for item_id, reason in sorted(self.items.items())[:limit]:
            lines.append(f"  {item_id}: {reason}")
        if len(self.items) > limit:
            lines.append(f"  ... and {len(self.items) - limit} more (see bad_items.json)")
        return "\n".join(lines)
