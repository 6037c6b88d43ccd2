"""CIDEr-D (Vedantam et al. 2015, as in coco-caption): TF-IDF weighted n-gram (1-4) cosine
similarity between candidate and references, with clipped candidate counts and a Gaussian
length penalty (sigma 6), scaled by 10. Document frequencies come from the references."""

from __future__ import annotations

import math
import re
from collections import Counter
from collections.abc import Sequence

N = 4
SIGMA = 6.0


def tokenize(text: str) -> list[str]:
    return re.findall(r"[a-z0-9]+", text.lower())


def ngrams(words: list[str], n: int) -> Counter[tuple[str, ...]]:
    return Counter(tuple(words[i : i + n]) for i in range(len(words) - n + 1))


def _vector(
    counts: Counter[tuple[str, ...]], df: Counter[tuple[str, ...]], log_docs: float
) -> tuple[dict[tuple[str, ...], float], float]:
    vec = {g: tf * (log_docs - math.log(max(1.0, df[g]))) for g, tf in counts.items()}
    return vec, math.sqrt(sum(v * v for v in vec.values()))


def cider_d(candidates: Sequence[str], references: Sequence[Sequence[str]]) -> tuple[float, list[float]]:
    """Corpus CIDEr-D and the per-image scores."""
    cands = [tokenize(c) for c in candidates]
    refs = [[tokenize(r) for r in rs] for rs in references]
    log_docs = math.log(float(len(refs)))
    df: list[Counter[tuple[str, ...]]] = []
    for n in range(1, N + 1):
        counter: Counter[tuple[str, ...]] = Counter()
        for rs in refs:
            counter.update({g for r in rs for g in ngrams(r, n)})
        df.append(counter)
    scores = []
    for cand, rs in zip(cands, refs, strict=True):
        total = 0.0
        for n in range(1, N + 1):
            vc, norm_c = _vector(ngrams(cand, n), df[n - 1], log_docs)
            per_ref = 0.0
            for r in rs:
                vr, norm_r = _vector(ngrams(r, n), df[n - 1], log_docs)
                dot = sum(min(v, vr[g]) * vr[g] for g, v in vc.items() if g in vr)  # clipped counts
                if norm_c and norm_r:
                    delta = len(cand) - len(r)
                    per_ref += dot / (norm_c * norm_r) * math.exp(-(delta**2) / (2 * SIGMA**2))
            total += per_ref / len(rs)
        scores.append(total / N * 10.0)
    return (sum(scores) / len(scores) if scores else 0.0), scores
