"""Training really learns, resumes exactly, and DDP on two CPU processes matches one process."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from h2a.export_tools.checkpoint import load_checkpoint
from h2a.export_tools.data.annotations import read_iad
from h2a.export_tools.data.dataset import Augment, HOIDataset, collate
from h2a.export_tools.data.generate import write_images
from h2a.export_tools.models import CaptionModel, HOIEncoder, make_config
from h2a.export_tools.models.backbone import resnet50
from h2a.export_tools.training.caption_loss import CaptionLM, lm_loss
from h2a.export_tools.training.hoi_loss import HOILoss
from h2a.export_tools.training.pretrained import load_torchvision_resnet
from h2a.export_tools.training.stages import hoi_step_loss
from h2a.export_tools.training.trainer import TrainConfig, Trainer
from h2a.runtime.errors import InputError

from .conftest import run_cli


@pytest.fixture(scope="module")
def small_data(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("data")
    write_images(folder, 40, 128, seed=9, progress=False)
    return folder


def test_hoi_steps_reduce_the_loss_on_a_fixed_batch(small_data: Path) -> None:
    torch.manual_seed(0)
    data = read_iad(small_data)
    cfg = make_config("tiny", 10).hoi
    model = HOIEncoder(cfg)
    ds = HOIDataset(data.split("train")[:4], data.objects, data.actions, data.anomalies, cfg.image_size)
    images, targets = collate([ds[i] for i in range(4)])
    loss_fn = HOILoss(len(data.objects))
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
    losses = []
    for _ in range(40):
        loss, _ = loss_fn(model(images), targets)
        opt.zero_grad()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        losses.append(float(loss.detach()))
    assert losses[-1] < 0.6 * losses[0], losses[::8]


def test_caption_steps_reduce_the_loss_on_a_fixed_batch() -> None:
    torch.manual_seed(0)
    cfg = make_config("tiny", 40).caption
    model = CaptionLM(CaptionModel(cfg))
    g = cfg.max_tag_tokens
    batch = (
        torch.randn(4, cfg.n_image_tokens, cfg.d_image),
        torch.randint(4, 40, (4, g)),
        torch.ones(4, g),
        torch.rand(4, g, 8),
        torch.randint(4, 40, (4, 20)),
    )
    opt = torch.optim.AdamW(model.parameters(), lr=3e-3)
    losses = []
    for _ in range(30):
        logits = model(*batch[:4], batch[4][:, :-1])
        loss = lm_loss(logits, batch[4][:, 1:], pad_id=0)
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(float(loss.detach()))
    assert losses[-1] < 0.3 * losses[0], losses[::6]


class Crash(RuntimeError):
    pass


def _trainer(small_data: Path, out: Path, crash_at: int = -1) -> Trainer:
    torch.manual_seed(0)
    data = read_iad(small_data)
    cfg = make_config("tiny", 10).hoi
    model = HOIEncoder(cfg)
    ds = HOIDataset(data.split("train"), data.objects, data.actions, data.anomalies, cfg.image_size)
    loss_fn = HOILoss(len(data.objects))
    calls = {"n": 0}

    def step(m: torch.nn.Module, batch: tuple) -> tuple[torch.Tensor, dict[str, float]]:
        if calls["n"] == crash_at:
            raise Crash("power cut")
        calls["n"] += 1
        # the trainer's step loss: its denoising noise follows the step, so a resumed run draws the same
        return hoi_step_loss(m, batch[0], batch[1], loss_fn, 0, trainer.step)

    train = TrainConfig(epochs=3, batch_size=8, lr=1e-3, warmup_steps=2, clip=1.0)
    trainer = Trainer("hoi", model, ds, collate, step, train, out, torch.device("cpu"))
    return trainer


def test_resume_after_a_crash_matches_an_uninterrupted_run(small_data: Path, tmp_path: Path) -> None:
    straight = _trainer(small_data, tmp_path / "a")
    straight.fit(progress=False)
    crashed = _trainer(small_data, tmp_path / "b", crash_at=6)  # 4 steps per epoch: dies in epoch 2
    with pytest.raises(Crash):
        crashed.fit(progress=False)
    resumed = _trainer(small_data, tmp_path / "b")
    assert resumed.load_state() and resumed.epoch == 1 and resumed.step == 4
    resumed.fit(progress=False)
    assert resumed.step == straight.step == 12
    for a, b in zip(straight.model.state_dict().values(), resumed.model.state_dict().values(), strict=True):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-5)


def _free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def test_samples_own_their_pixels_and_a_flip_mirrors_image_and_boxes(small_data: Path) -> None:
    """The preprocessor reuses one output buffer, so a sample must not be a view of it."""
    data = read_iad(small_data)
    records = data.split("train")

    def dataset(augment: Augment | None) -> HOIDataset:
        return HOIDataset(records, data.objects, data.actions, data.anomalies, 64, augment)

    plain = dataset(None)
    first, second = plain[0], plain[1]
    assert not torch.equal(first[0], second[0])
    assert torch.equal(first[0], dataset(None)[0][0])
    mirrored = dataset(Augment(flip=1.0, scale=(1.0, 1.0), shift=0.0, brightness=0.0, contrast=0.0))
    flipped = mirrored[0]
    assert torch.allclose(flipped[0], first[0].flip(-1), atol=1e-6)
    assert torch.allclose(flipped[1].boxes[:, 0], 1 - first[1].boxes[:, 0], atol=1e-5)
    assert torch.equal(flipped[1].boxes[:, 1:], first[1].boxes[:, 1:])


def test_ddp_two_cpu_processes_give_the_same_losses_as_one(small_data: Path, tmp_path: Path) -> None:
    probe = str(Path(__file__).with_name("ddp_probe.py"))
    single = subprocess.run(
        [sys.executable, probe, str(small_data), str(tmp_path / "one")],
        capture_output=True,
        text=True,
        timeout=300,
        check=True,
    )
    ddp = subprocess.run(
        [
            sys.executable,
            "-m",
            "torch.distributed.run",
            "--nproc_per_node",
            "2",
            "--master_port",
            "29517",
            probe,
            str(small_data),
            str(tmp_path / "two"),
        ],
        capture_output=True,
        text=True,
        timeout=300,
        check=True,
    )
    one, two = (
        json.loads(single.stdout.strip().splitlines()[-1]),
        json.loads(ddp.stdout.strip().splitlines()[-1]),
    )
    assert len(one) == len(two) == 3
    assert two == pytest.approx(one, rel=1e-3), (one, two)


def test_torchvision_resnet50_state_dict_maps_onto_the_backbone(tmp_path: Path) -> None:
    source = resnet50(frozen_bn=False)
    for module in source.modules():
        if isinstance(module, torch.nn.BatchNorm2d):
            assert module.running_var is not None
            module.running_var.uniform_(0.5, 2.0)
    state = dict(source.state_dict())
    state["fc.weight"], state["fc.bias"] = (
        torch.randn(1000, 2048),
        torch.randn(1000),
    )  # torchvision has a head
    path = tmp_path / "resnet50-0676ba61.pth"
    torch.save(state, path)
    target = resnet50(frozen_bn=True)
    loaded = load_torchvision_resnet(target, path)
    assert loaded == len(state) - 2
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        torch.testing.assert_close(target(x), source.eval()(x), rtol=1e-4, atol=1e-4)
    torch.save({"conv1.weight": torch.randn(64, 3, 7, 7)}, tmp_path / "partial.pth")
    with pytest.raises(InputError, match="does not fit this backbone"):
        load_torchvision_resnet(resnet50(), tmp_path / "partial.pth")


def test_edge_train_cli_runs_all_stages_and_reports_errors(
    small_data: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("OMP_NUM_THREADS", "1")  # the training processes inherit it
    out = tmp_path / "run"
    missing = run_cli(
        "h2a.export_tools.training.cli", "caption", "--data", str(small_data), "--out", str(out)
    )
    assert missing.returncode == 2 and "run `edge-train hoi" in missing.stderr
    for stage in ("hoi", "caption", "distill"):
        result = run_cli(
            "h2a.export_tools.training.cli",
            stage,
            "--data",
            str(small_data),
            "--preset",
            "tiny",
            "--out",
            str(out),
            "--max-steps",
            "3",
            "--batch-size",
            "4",
            "--quiet",
        )
        assert result.returncode == 0, result.stderr
        assert (out / f"metrics_{stage}.csv").is_file()
    assert (out / "teacher.pt").is_file()
    stages = load_checkpoint(out / "model.pt")[0].meta["stages"]
    assert {name: info["torch_threads"] for name, info in stages.items()} == {
        "hoi": 1,
        "caption": 1,
        "distill": 1,
    }
    exported = run_cli(
        "h2a.export_tools.export.cli", "--model-dir", str(out), "--out", str(tmp_path / "m.plan"), "--quiet"
    )
    assert exported.returncode == 0, exported.stderr
    evaluated = run_cli(
        "h2a.export_tools.evaluation.cli",
        "--engine",
        str(tmp_path / "m.plan"),
        "--data",
        str(small_data),
        "--json",
        str(tmp_path / "r.json"),
        "--quiet",
    )
    assert evaluated.returncode == 0, evaluated.stderr
    report = json.loads((tmp_path / "r.json").read_text())
    (only,) = report.values()
    for key in ("anomaly_auc", "anomaly_type_map", "hoi_role_map", "cider_d", "what_f1", "avg_words"):
        assert key in only


def test_distillation_makes_the_student_track_the_teacher() -> None:
    """The distil stage's loss pulls the student toward the teacher. The teacher learns a rule
    (each next token is a fixed permutation of the current one); the students see labels that
    break the rule (random tokens), so only the KL term can teach it. On inputs neither student
    saw, the one trained with the KL term picks the teacher's greedy token far more often."""
    from h2a.export_tools.training.caption_loss import distill_loss
    from h2a.export_tools.training.stages import teacher_config

    torch.manual_seed(0)
    vocab = 40
    cfg = make_config("tiny", vocab).caption
    g = cfg.max_tag_tokens
    rule = torch.randperm(vocab - 4) + 4  # next token of token t is rule[t - 4]

    def batch(n: int) -> tuple[torch.Tensor, ...]:
        return (
            torch.randn(n, cfg.n_image_tokens, cfg.d_image),
            torch.randint(4, vocab, (n, g)),
            torch.ones(n, g),
            torch.rand(n, g, 8),
            torch.randint(4, vocab, (n, 12)),
        )

    teacher = CaptionLM(CaptionModel(teacher_config(cfg)))
    opt = torch.optim.AdamW(teacher.parameters(), lr=3e-3)
    for _ in range(120):
        *inputs, tokens = batch(16)
        loss = lm_loss(teacher(*inputs, tokens), rule[tokens - 4], pad_id=0)
        opt.zero_grad()
        loss.backward()
        opt.step()
    teacher.eval()

    def agreement(alpha: float) -> float:
        torch.manual_seed(1)
        student = CaptionLM(CaptionModel(cfg))
        opt = torch.optim.AdamW(student.parameters(), lr=3e-3)
        for _ in range(120):
            *inputs, tokens = batch(16)
            with torch.no_grad():
                soft = teacher(*inputs, tokens[:, :-1])
            loss, _, _ = distill_loss(student(*inputs, tokens[:, :-1]), soft, tokens[:, 1:], 0, alpha, 2.0)
            opt.zero_grad()
            loss.backward()
            opt.step()
        torch.manual_seed(2)  # the same held-out inputs for both students
        *inputs, tokens = batch(32)
        with torch.no_grad():
            picked = student.eval()(*inputs, tokens[:, :-1]).argmax(-1)
            wanted = teacher(*inputs, tokens[:, :-1]).argmax(-1)
        return float((picked == wanted).float().mean())

    distilled, labels_only = agreement(alpha=0.9), agreement(alpha=0.0)
    assert distilled > 0.7 and distilled > labels_only + 0.4, (distilled, labels_only)
