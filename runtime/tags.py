"""HOI tag tokens for the caption model, from triplets: one definition for training and runtime.

Triplets are written as words ("person aim gun"), best first, concatenated up to the graph's
fixed number of tag tokens; each token carries its triplet's subject and object boxes.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol

import numpy as np

from h2a.runtime.postprocess import Triplet


class Encoder(Protocol):
    def encode(self, text: str) -> list[int]: ...


def build_tag_inputs(
    triplets: Sequence[Triplet], tokenizer: Encoder, max_tokens: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """-> tag_ids (1, G) int64, tag_mask (1, G) float32, tag_boxes (1, G, 8) float32."""
    ids = np.zeros((1, max_tokens), np.int64)
    mask = np.zeros((1, max_tokens), np.float32)
    boxes = np.zeros((1, max_tokens, 8), np.float32)
    used = 0
    for t in triplets:
        words = tokenizer.encode(t.words)
        if used + len(words) > max_tokens:
            break
        end = used + len(words)
        ids[0, used:end] = words
        mask[0, used:end] = 1.0
        boxes[0, used:end] = (*t.subject_box, *t.object_box)
        used = end
    return ids, mask, boxes
