"""Caption-stage samples: frozen HOI encoder features, tag tokens from ground-truth and from
detected triplets, and the tokenised target text.

Features are computed once (the HOI encoder is frozen), so caption epochs cost only the caption
model. Each sample picks detected triplets with probability `mix` (per epoch, seeded), so the
decoder learns to explain what the detector will really hand it at run time.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset
from tqdm import tqdm

from h2a.export_tools.data.dataset import HOIDataset, Target, collate
from h2a.export_tools.models import HOIEncoder
from h2a.export_tools.taxonomy import DEFAULT_HOI_SCORE
from h2a.runtime.postprocess import Triplet, decode_triplets
from h2a.runtime.tags import build_tag_inputs
from h2a.runtime.tokenizer import CaptionTokenizer

DETECTION_SCORE = DEFAULT_HOI_SCORE  # the caption stage sees the triplets run time will hand it


def _box(row: torch.Tensor) -> tuple[float, float, float, float]:
    a, b, c, d = (float(v) for v in row.tolist())
    return (a, b, c, d)


def gt_triplets(target: Target, objects: list[str], actions: list[str]) -> list[Triplet]:
    out = []
    for (s, o), acts in zip(target.pairs.tolist(), target.actions, strict=True):
        for a in torch.nonzero(acts).flatten().tolist():
            out.append(
                Triplet(
                    _box(target.boxes[s]),
                    _box(target.boxes[o]),
                    objects[int(target.labels[s])],
                    objects[int(target.labels[o])],
                    actions[a],
                    1.0,
                )
            )
    return out


@dataclass
class CaptionFeatures:
    image_tokens: torch.Tensor  # (n, T, D)
    gt_tags: tuple[torch.Tensor, torch.Tensor, torch.Tensor]  # ids (n, G), mask (n, G), boxes (n, G, 8)
    det_tags: tuple[torch.Tensor, torch.Tensor, torch.Tensor]
    tokens: torch.Tensor  # (n, P) BOS + text + EOS, padded with PAD


def _stack_tags(
    tags: list[tuple[np.ndarray, np.ndarray, np.ndarray]],
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    ids, mask, boxes = (torch.from_numpy(np.concatenate([t[i] for t in tags])) for i in range(3))
    return ids, mask, boxes


@torch.no_grad()
def compute_features(
    hoi: HOIEncoder,
    dataset: HOIDataset,
    tokenizer: CaptionTokenizer,
    objects: list[str],
    actions: list[str],
    max_tag_tokens: int,
    max_len: int,
    special: tuple[int, int, int],
    device: torch.device,
    progress: bool = True,
) -> CaptionFeatures:
    pad, bos, eos = special
    hoi.eval().to(device)
    loader = DataLoader(dataset, batch_size=32, shuffle=False, collate_fn=collate)
    tokens_all, gt_all, det_all, token_rows = [], [], [], []
    for images, targets in tqdm(loader, desc="HOI features", unit="batch", disable=not progress):
        out = hoi(images.to(device))
        outputs = {
            k: v.float().cpu().numpy()
            for k, v in zip(
                ("boxes", "obj_logits", "act_logits", "sub_ptr", "obj_ptr"),
                (out.boxes, out.obj_logits, out.act_logits, out.sub_ptr, out.obj_ptr),
                strict=True,
            )
        }
        tokens_all.append(out.image_tokens.float().cpu())
        for b, target in enumerate(targets):
            gt_all.append(build_tag_inputs(gt_triplets(target, objects, actions), tokenizer, max_tag_tokens))
            detected = decode_triplets(outputs, objects, actions, DETECTION_SCORE, index=b)
            det_all.append(build_tag_inputs(detected, tokenizer, max_tag_tokens))
            ids = [*[bos, *tokenizer.encode(target.caption)][: max_len - 1], eos]
            row = np.full(max_len, pad, np.int64)
            row[: len(ids)] = ids
            token_rows.append(row)
    return CaptionFeatures(
        torch.cat(tokens_all),
        _stack_tags(gt_all),
        _stack_tags(det_all),
        torch.from_numpy(np.stack(token_rows)),
    )


class CaptionDataset(Dataset[tuple[torch.Tensor, ...]]):
    def __init__(self, feats: CaptionFeatures, mix: float, seed: int = 0) -> None:
        self.f, self.mix, self.seed, self.epoch = feats, mix, seed, 0

    def __len__(self) -> int:
        return len(self.f.tokens)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, ...]:
        use_det = np.random.default_rng((self.seed, self.epoch, i)).random() < self.mix
        ids, mask, boxes = self.f.det_tags if use_det else self.f.gt_tags
        return self.f.image_tokens[i], ids[i], mask[i], boxes[i], self.f.tokens[i]


def caption_collate(batch: list[tuple[torch.Tensor, ...]]) -> tuple[torch.Tensor, ...]:
    return tuple(torch.stack(column) for column in zip(*batch, strict=True))
