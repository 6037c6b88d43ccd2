"""The INT8 search's decisions (`calibration/sensitivity.py`) on graphs whose error and speed are
known: each candidate is a real ONNX graph run by ONNX Runtime, `y = x * (1 + error)`, so its
measured output error is the error its quantized groups were given; its latency travels in the
graph's metadata, so the search's timing decisions can be checked without a noisy clock."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pytest
from onnx import TensorProto, helper

from h2a.calibration import sensitivity
from h2a.calibration.qdq import Recipe
from h2a.calibration.sensitivity import SearchClock, _bisect_float_groups, search_graph

#: fine group -> error it causes when quantized; 'layer0' and 'layer1' hold two fine groups each
HARM = {
    **{"layer0.a": 0.30, "layer0.b": 0.01, "layer1.a": 0.08, "layer1.b": 0.02},
    **{"layer2.a": 0.005, "layer3.a": 0.001, "layer4.a": 0.001},
}


def scaled_graph(error: float, ms: float) -> bytes:
    """y = x * (1 + error): relative L2 error `error` against the identity; `ms` as its latency."""
    scale = helper.make_tensor("scale", TensorProto.FLOAT, [], [1.0 + error])
    graph = helper.make_graph(
        [helper.make_node("Mul", ["x", "scale"], ["y"])],
        "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 4])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 4])],
        [scale],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    helper.set_model_props(model, {"latency_ms": str(ms)})
    return model.SerializeToString()


class FakeQuantizer:
    """A graph of five MatMuls (the groups of HARM); `quantize` returns y = x * (1 + error) with
    the error of the groups it quantizes, and the latency `speed` gives: each group left float
    costs `float_ms` on top of the recipe's whole-graph latency."""

    def __init__(self, tmp: Path, whole_ms: dict[str, float], float_ms: float = 1.0) -> None:
        self.name = "g"
        self.fp32_path = tmp / "g.fp32.onnx"
        self.fp32_path.write_bytes(scaled_graph(0.0, 100.0))
        nodes = [
            helper.make_node(
                "MatMul", ["x", "w"], [f"y{i}"], name="/model/" + g.replace(".", "/") + "/MatMul"
            )
            for i, g in enumerate(HARM)
        ]
        self.model = helper.make_model(helper.make_graph(nodes, "g", [], []))
        self.whole_ms, self.float_ms = whole_ms, float_ms
        self.calls: list[tuple[str, int]] = []  # (recipe, nodes kept float) per quantization

    def quantize(self, recipe: Recipe, exclude: Sequence[str] = ()) -> bytes:
        kept = {sensitivity.group_of(n) for n in exclude}
        self.calls.append((recipe.name, len(kept)))
        error = sum(h for g, h in HARM.items() if g not in kept)
        return scaled_graph(error, self.whole_ms[recipe.name] + self.float_ms * len(kept))


def _metadata_ms(sess: object) -> float:
    return float(sess.get_modelmeta().custom_metadata_map["latency_ms"])  # type: ignore[attr-defined]


@pytest.fixture
def metadata_latency(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(sensitivity, "latency_ms", lambda sess, feed, repeats: _metadata_ms(sess))
    monkeypatch.setattr(
        sensitivity, "paired_latency_ms", lambda a, b, feed, repeats: (_metadata_ms(a), _metadata_ms(b))
    )


FEEDS = [{"x": np.full((1, 4), v, np.float32)} for v in (1.0, 2.0, 3.0)]
FAST, SLOW = Recipe("fast", static_ops=("MatMul",)), Recipe("slow", static_ops=("MatMul",))


@pytest.mark.usefixtures("metadata_latency")
def test_search_finds_the_fewest_float_groups_and_prunes_a_recipe_that_cannot_be_faster(
    tmp_path: Path,
) -> None:
    q = FakeQuantizer(tmp_path, {"fast": 20.0, "slow": 60.0})
    result = search_graph(q, [FAST, SLOW], FEEDS, 0.05)  # type: ignore[arg-type]
    assert result.chosen is not None and result.chosen.recipe == "fast"
    # coarse: layer0 float alone leaves 0.107, layer0 + layer1 float 0.007; within layer1, the
    # boundary, only layer1.a must stay float: 0.02 + 0.007 = 0.027 <= 0.05
    assert result.chosen.kept_float == ["layer0.a", "layer0.b", "layer1.a"]
    assert result.chosen.error == pytest.approx(0.027, abs=1e-5)
    assert result.chosen.latency_ms == pytest.approx(23.0)
    # whole, 5 coarse rankings, bisection (4, 2, 1 coarse groups float), 2 fine rankings, 1 fine try
    assert len([c for c in q.calls if c[0] == "fast"]) == 1 + 5 + 3 + 2 + 1
    # 'slow' quantized whole runs 60 ms, slower than the 23 ms fit: tried whole, never searched
    slow = [a for a in result.attempts if a.recipe == "slow"]
    assert len(slow) == 1 and not slow[0].within_budget and slow[0].kept_float == []
    assert [c for c in q.calls if c[0] == "slow"] == [("slow", 0)]


@pytest.mark.usefixtures("metadata_latency")
def test_a_second_recipe_reuses_the_ranking_and_starts_where_the_first_ended(tmp_path: Path) -> None:
    # float costs 5 ms a group: 'fast' fits at 35 ms, so 'slow' (25 ms whole) is worth a search
    q = FakeQuantizer(tmp_path, {"fast": 20.0, "slow": 25.0}, float_ms=5.0)
    result = search_graph(q, [FAST, SLOW], FEEDS, 0.05)  # type: ignore[arg-type]
    assert len([c for c in q.calls if c[0] == "fast"]) == 12
    # the second: whole, the hint (2 coarse groups float = 4 fine) and its neighbour (1 coarse = 2
    # fine), then the boundary's fine bisection on the fine ranking already made (3 fine): nothing
    # ranked again, and no try with 4 coarse groups float as a bisection from scratch starts with
    assert [n for r, n in q.calls if r == "slow"] == [0, 4, 2, 3]
    kept = {a.recipe: a.kept_float for a in result.attempts}
    assert kept["fast"] == kept["slow"] == ["layer0.a", "layer0.b", "layer1.a"]
    assert result.chosen is not None and result.chosen.recipe == "fast"


@pytest.mark.usefixtures("metadata_latency")
def test_a_spent_time_budget_stops_the_search_and_says_so(tmp_path: Path) -> None:
    q = FakeQuantizer(tmp_path, {"fast": 20.0})
    result = search_graph(q, [FAST], FEEDS, 0.05, clock=SearchClock(seconds=0.0))  # type: ignore[arg-type]
    assert result.chosen is None and result.out_of_time
    assert q.calls == [("fast", 0)]  # quantized whole, nothing ranked or bisected
    assert result.summary()["out_of_time"] is True


def test_bisection_hint_settles_in_two_tries_and_survives_a_wrong_hint() -> None:
    order = [f"g{i}" for i in range(40)]  # worst first

    def run(hint: int) -> tuple[list[str], list[int]]:
        tried: list[int] = []

        def measure(kept: Sequence[str]) -> tuple[float, bytes]:
            tried.append(len(kept))
            return 0.5 / (1 + len(kept)), b""  # fits from 9 groups float on

        return _bisect_float_groups(order, measure, 0.05, SearchClock(), lambda _: None, hint)[2], tried

    assert run(9) == (order[:9], [9, 8])
    assert run(8) == (order[:9], [8, 9])
    for wrong in (2, 30, 38):
        kept, tried = run(wrong)
        assert kept == order[:9] and len(tried) <= 2 + 7


@pytest.mark.usefixtures("metadata_latency")
def test_a_fit_no_faster_than_fp32_keeps_the_graph_fp32(tmp_path: Path) -> None:
    # the fit, 3 groups float, runs 98 ms against FP32's 100; the tries over budget (2 groups
    # float: 92 ms) were fast enough for the search to go on
    q = FakeQuantizer(tmp_path, {"fast": 80.0}, float_ms=6.0)
    result = search_graph(q, [FAST], FEEDS, 0.05, min_speedup=1.05)  # type: ignore[arg-type]
    assert result.chosen is None and result.model is None and result.not_faster
    assert not result.rejected_over_budget
    assert result.attempts[-1].within_budget and result.attempts[-1].latency_ms == pytest.approx(98.0)
    assert result.rejected_ms == pytest.approx(98.0)
    kept = search_graph(q, [FAST], FEEDS, 0.05, min_speedup=0.0)  # type: ignore[arg-type]
    assert kept.chosen is not None and not kept.not_faster
    faster = FakeQuantizer(tmp_path, {"fast": 50.0})  # 53 ms: 1.9x
    assert search_graph(faster, [FAST], FEEDS, 0.05, min_speedup=1.05).chosen is not None  # type: ignore[arg-type]


@pytest.mark.usefixtures("metadata_latency")
def test_a_try_over_budget_that_is_already_too_slow_ends_the_search_early(tmp_path: Path) -> None:
    """Each group left float costs 40 ms on a 20 ms whole graph; FP32 runs 100 ms. The bisection's
    try with layer0 float (2 fine groups: 100 ms) is over budget and already no faster than FP32,
    and every fit keeps more float, so the search ends there instead of refining a fit of 140 ms."""
    q = FakeQuantizer(tmp_path, {"fast": 20.0}, float_ms=40.0)
    result = search_graph(q, [FAST], FEEDS, 0.05, min_speedup=1.05)  # type: ignore[arg-type]
    assert result.chosen is None and result.not_faster and result.rejected_over_budget
    assert result.rejected_ms == pytest.approx(100.0) and result.fp32_ms == pytest.approx(100.0)
    # fine groups float per try: whole (0), the 5 coarse groups ranked one by one, then the
    # bisection: 4 coarse groups float (6 fine, fits), 2 (4, fits), 1 (2, over budget, too slow)
    assert [n for _, n in q.calls] == [0, 5, 5, 6, 6, 6, 6, 4, 2]
    assert result.summary()["rejected_over_budget"] is True
    # without a required speed-up nothing is timed early: the search refines to its fit
    full = search_graph(q, [FAST], FEEDS, 0.05, min_speedup=0.0)  # type: ignore[arg-type]
    assert full.chosen is not None and full.chosen.latency_ms == pytest.approx(140.0)
    assert not full.not_faster and not full.rejected_over_budget


@pytest.mark.usefixtures("metadata_latency")
def test_a_recipe_quantized_whole_over_budget_and_too_slow_is_not_searched(tmp_path: Path) -> None:
    q = FakeQuantizer(tmp_path, {"fast": 97.0})  # INT8 throughout yet 97 ms against FP32's 100
    result = search_graph(q, [FAST], FEEDS, 0.05, min_speedup=1.05)  # type: ignore[arg-type]
    assert q.calls == [("fast", 0)]
    assert result.chosen is None and result.not_faster and result.rejected_ms == pytest.approx(97.0)
    assert result.attempts[0].latency_ms == pytest.approx(97.0) and not result.attempts[0].within_budget


def test_the_speed_up_is_judged_on_fp32_and_the_fit_timed_together(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The machine slows down by half during the search: FP32, timed at its start, reads 100 ms and
    the fit (truly 80 ms), timed at its end, 120 ms. Judged on those the fit would not be faster;
    timed alternately with FP32 at the end (both 1.5x slower), it is 1.25x faster and kept."""
    slowdown = {"factor": 1.0}

    def drifting(sess: object, feed: object, repeats: int) -> float:
        ms = _metadata_ms(sess) * slowdown["factor"]
        slowdown["factor"] = 1.5  # every later measurement sees the slower machine
        return ms

    def paired(a: object, b: object, feed: object, repeats: int) -> tuple[float, float]:
        return _metadata_ms(a) * slowdown["factor"], _metadata_ms(b) * slowdown["factor"]

    monkeypatch.setattr(sensitivity, "latency_ms", drifting)
    monkeypatch.setattr(sensitivity, "paired_latency_ms", paired)
    q = FakeQuantizer(tmp_path, {"fast": 77.0})  # the fit keeps 3 groups float: 80 ms
    result = search_graph(q, [FAST], FEEDS, 0.05, min_speedup=1.05)  # type: ignore[arg-type]
    assert result.chosen is not None and not result.not_faster
    assert result.fp32_ms == pytest.approx(150.0) and result.chosen.latency_ms == pytest.approx(120.0)
