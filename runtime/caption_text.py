"""Parse a generated caption into the paper's What / Who / Where / Total fields."""

from __future__ import annotations

import re
from dataclasses import dataclass

_FIELD = re.compile(r"\b(what|who|where|total caption)\s*:", re.IGNORECASE)


@dataclass(frozen=True)
class CaptionFields:
    what: str
    who: str
    where: str
    total: str

    def as_dict(self) -> dict[str, str]:
        return {"what": self.what, "who": self.who, "where": self.where, "total": self.total}


def _tidy(text: str) -> str:
    text = re.sub(r'"\s*([^"]*?)\s*"', r'"\1"', text)  # WordPiece decoding spaces out quotes ...
    text = re.sub(r"\s+([.,:;!?])", r"\1", text)  # ... and punctuation
    return text.strip().strip(".").strip()


def parse_caption(text: str) -> CaptionFields:
    """Fields missing from `text` come back empty; text before the first field is ignored."""
    found: dict[str, str] = {}
    marks = list(_FIELD.finditer(text))
    for i, mark in enumerate(marks):
        end = marks[i + 1].start() if i + 1 < len(marks) else len(text)
        key = mark.group(1).lower().split()[0]
        found.setdefault(key, _tidy(text[mark.end() : end]))
    return CaptionFields(
        found.get("what", ""), found.get("who", ""), found.get("where", ""), found.get("total", "")
    )
