"""The runtime from pixels to caption equals the torch reference, token for token."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from h2a.export_tools.checkpoint import Checkpoint
from h2a.export_tools.export.exporter import export_bundle
from h2a.export_tools.export.torch_cli import random_checkpoint
from h2a.export_tools.models.decoding import greedy_decode
from h2a.export_tools.taxonomy import ACTIONS, ANOMALIES, OBJECTS
from h2a.runtime.bundle import load_bundle
from h2a.runtime.caption_text import parse_caption
from h2a.runtime.engine import Engine
from h2a.runtime.manifest import Labels
from h2a.runtime.postprocess import anomaly_probabilities, decode_triplets
from h2a.runtime.tags import build_tag_inputs


@pytest.fixture(scope="module")
def pair(tmp_path_factory: pytest.TempPathFactory) -> tuple[Checkpoint, Engine]:
    ckpt = random_checkpoint("tiny", seed=5)
    path = tmp_path_factory.mktemp("engine") / "m.plan"
    export_bundle(
        ckpt, path, Labels(list(OBJECTS), list(ACTIONS), list(ANOMALIES)), check=False, progress=False
    )
    return ckpt, Engine(load_bundle(path))


@pytest.mark.parametrize("shape", [(120, 160, 3), (300, 200, 3)])
def test_pixels_to_caption_equals_torch(pair: tuple[Checkpoint, Engine], shape: tuple[int, int, int]) -> None:
    ckpt, engine = pair
    frame = np.random.default_rng(shape[0]).integers(0, 256, shape, dtype=np.uint8)
    det = engine.detect(frame, min_triplet_score=1e-4)
    explanation = engine.explain(det)

    images, _ = engine.preprocess(frame)  # the same letterbox the runtime used
    with torch.no_grad():
        out = ckpt.hoi(torch.from_numpy(images.copy()))
    ref = {
        k: v.numpy()
        for k, v in zip(
            ("boxes", "obj_logits", "act_logits", "sub_ptr", "obj_ptr", "anomaly_logits"),
            out.as_tuple()[:6],
            strict=True,
        )
    }
    ref_triplets = decode_triplets(ref, list(OBJECTS), list(ACTIONS), 1e-4)
    assert [t.words for t in ref_triplets] == [t.words for t in det.triplets]
    for a, b in zip(ref_triplets, det.triplets, strict=True):
        np.testing.assert_allclose(a.subject_box, b.subject_box, atol=1e-4)
    ref_probs = anomaly_probabilities(ref, list(ANOMALIES))
    assert ref_probs == pytest.approx(det.anomaly, abs=1e-5)

    d = engine.manifest.decoder
    ids, mask, boxes = build_tag_inputs(ref_triplets, engine.tokenizer, d.max_tag_tokens)
    with torch.no_grad():
        memory, bias = ckpt.caption.encode(
            out.image_tokens, torch.from_numpy(ids), torch.from_numpy(mask), torch.from_numpy(boxes)
        )
    tokens = greedy_decode(ckpt.caption, memory, bias, d.bos_id, d.eos_id, d.no_repeat_ngram)
    assert explanation.tokens == tokens
    assert explanation.text == engine.tokenizer.decode(tokens)
    assert explanation.fields == parse_caption(explanation.text)


def test_preprocess_shares_the_training_letterbox(pair: tuple[Checkpoint, Engine], tmp_path: Path) -> None:
    from h2a.export_tools.data.annotations import read_iad
    from h2a.export_tools.data.dataset import HOIDataset
    from h2a.export_tools.data.generate import write_images

    _, engine = pair
    write_images(tmp_path, 2, 128, seed=1, progress=False)
    data = read_iad(tmp_path)
    ds = HOIDataset(data.records, data.objects, data.actions, data.anomalies, engine.preprocess.size)
    image, _ = ds[0]
    import cv2

    photo = cv2.imread(str(data.records[0].file))
    assert photo is not None
    runtime, _ = engine.preprocess(photo)
    np.testing.assert_array_equal(image.numpy(), runtime[0])


def test_spinning_sessions_stop_spinning_after_each_run() -> None:
    """Spinning past a run would steal the caption worker's core (shared note); it must be
    switched on only together with the stop."""
    from h2a.runtime.backends.onnxruntime_backend import session_options

    spinning, sleeping = session_options(2, True), session_options(1, False)
    assert spinning.get_session_config_entry("session.intra_op.allow_spinning") == "1"
    assert sleeping.get_session_config_entry("session.intra_op.allow_spinning") == "0"
    for options in (spinning, sleeping):
        assert options.get_session_config_entry("session.force_spinning_stop") == "1"
