"""Per-graph INT8 search: which recipe, and which layer groups must stay in float.

Post-training INT8 is known to break transformers in a few places (attention products, the
layers before LayerNorm/softmax, the LM head), and which ones depends on the weights. So it is
measured, not assumed: each recipe quantizes the whole graph; if the output error on held-out
inputs is over budget, every layer group is quantized alone to rank the groups by the error they
cause, and the worst are left in float, one at a time, until the error fits. Among the recipes
that fit, the fastest (measured here, in this run) wins; when none fits, the graph stays FP32
and the result says what was tried.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from statistics import median
from typing import Any

import numpy as np
import onnx
import onnxruntime as ort

from h2a.calibration.instance_match import worst_output_error
from h2a.calibration.qdq import QUANTIZED_OP_TYPES, GraphQuantizer, Recipe, quantizable_nodes
from h2a.calibration.traces import Feed
from h2a.calibration.weight_store import GraphModel, StoredGraph
from h2a.runtime.backends.onnxruntime_backend import session_options

#: Matrix products between two activations (attention scores, pointer logits) have no module
#: path in the exported names; they form one group.
ACTIVATION_PRODUCTS = "attention-products"
#: Relative latency difference below which two recipes count as equally fast.
SAME_SPEED = 0.05


def group_of(node_name: str) -> str:
    """Layer group of an exported node, one transformer layer or one backbone stage:
    '/model/backbone/layer2/layer2.1/conv1/Conv' -> 'backbone.layer2',
    '/model/inst_decoder/layers.0/cross_attn/..' -> 'inst_decoder.layers.0'. Finer groups make the
    ranking cost one quantization each (~100 for the base HOI encoder)."""
    parts = [p for p in node_name.split("/") if p][:-1]
    if parts and parts[0] == "model":
        parts = parts[1:]
    if not parts:
        return ACTIVATION_PRODUCTS
    return ".".join(parts[:2])


def node_groups(model: onnx.ModelProto, op_types: Sequence[str] = QUANTIZED_OP_TYPES) -> dict[str, list[str]]:
    groups: dict[str, list[str]] = {}
    for name in quantizable_nodes(model, op_types):
        groups.setdefault(group_of(name), []).append(name)
    return groups


@dataclass(frozen=True)
class Threading:
    """How the runtime threads a graph's session; recipes are timed the same way, because the
    fastest recipe depends on it (the INT8 transformer's many short ops gain from spinning)."""

    threads: int = 0
    spin: bool = False


def session(model: GraphModel, threading: Threading = Threading()) -> ort.InferenceSession:
    options = session_options(threading.threads, threading.spin)
    if isinstance(model, StoredGraph):
        model.add_weights(options)
        model = model.structure
    return ort.InferenceSession(model, sess_options=options, providers=["CPUExecutionProvider"])


def _inputs(sess: Any, feed: Feed) -> Feed:
    names = {i.name for i in sess.get_inputs()}
    return {k: v for k, v in feed.items() if k in names}


class ReferenceRuns:
    """The FP32 graph's outputs per input, computed once. Every try of a search compares against
    the same outputs, and re-running the FP32 graph for each try was most of its cost (base `hoi`:
    ~345 ms FP32 against ~135 ms INT8 per input)."""

    def __init__(self, reference: ort.InferenceSession) -> None:
        self.session = reference
        self.names = [o.name for o in reference.get_outputs()]
        self._runs: dict[int, tuple[Feed, dict[str, np.ndarray]]] = {}  # id(feed) -> (feed, outputs)

    def outputs(self, feed: Feed) -> dict[str, np.ndarray]:
        run = self._runs.get(id(feed))
        if run is None:  # the feed is held with its outputs, so its id cannot be reused by another
            f = _inputs(self.session, feed)
            run = (feed, dict(zip(self.names, self.session.run(self.names, f), strict=True)))
            self._runs[id(feed)] = run
        return run[1]


def output_error(
    reference: ort.InferenceSession | ReferenceRuns, candidate: Any, feeds: Sequence[Feed]
) -> float:
    """Mean over inputs of the worst output's relative L2 error ||q - f|| / ||f||; the HOI
    encoder's instance slots are compared as sets (`instance_match.py`)."""
    runs = reference if isinstance(reference, ReferenceRuns) else ReferenceRuns(reference)
    errors = []
    for feed in feeds:
        got = candidate.run(runs.names, _inputs(candidate, feed))
        errors.append(worst_output_error(runs.outputs(feed), dict(zip(runs.names, got, strict=True))))
    return float(np.mean(errors))


def latency_ms(sess: Any, feed: Feed, repeats: int) -> float:
    f = _inputs(sess, feed)
    sess.run(None, f)
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        sess.run(None, f)
        times.append(time.perf_counter() - t0)
    return median(times) * 1000


#: Opens a model as a session of the runtime that will run it: ONNX Runtime's `session` here, or
#: one with its `get_inputs()` and `run(names, feed)` (`openvino_session.OvSession`).
Opener = Callable[[GraphModel, Threading], Any]


def fp32_session(
    quantizer: GraphQuantizer, reference: ort.InferenceSession, opener: Opener, threading: Threading
) -> Any:
    """The FP32 graph where its INT8 candidates run, for timing: `reference` (ONNX Runtime, threaded
    as the runtime runs it) unless another runtime opens the candidates."""
    return reference if opener is session else opener(quantizer.fp32_path.read_bytes(), threading)


#: Alternating runs of FP32 and the chosen INT8 graph behind the speed-up check.
PAIRED_REPEATS = 5
#: Alternating runs behind the check that ends a recipe's search early (`NoFasterFit`): fewer,
#: because it only has to see a variant that is clearly too slow.
PRUNE_REPEATS = 3


class NoFasterFit(Exception):
    """A variant over budget already runs no `min_speedup` times faster than FP32. A bisection
    over a ranked list only finds fits that keep more groups float than it does, and float is not
    faster than INT8, so no fit of this recipe can be fast enough: its search ends here instead of
    bisecting on. On the base `hoi` with random weights (2-core AMD Zen 3), whose fits were all
    rejected as no faster than FP32 in the end, the search took 25 tries instead of 55 and the
    whole `edge-calibrate quantize` 2:33 instead of 4:57, with the same bundle."""

    def __init__(self, error: float, latency_ms: float, fp32_ms: float) -> None:
        super().__init__(
            f"error {error:.4f}, {latency_ms:.2f} ms vs FP32 {fp32_ms:.2f} ms (timed alternately)"
        )
        self.error, self.latency_ms = error, latency_ms


def paired_latency_ms(a: Any, b: Any, feed: Feed, repeats: int) -> tuple[float, float]:
    """Two sessions timed in one loop, a run of each in turn. This machine's speed drifts by tens
    of percent over minutes (the base `hoi`'s FP32 graph measured 217 and 304 ms in runs an hour
    apart; one INT8 configuration 204 and 260 ms), so figures taken minutes apart, as the FP32 one
    at the start of a search and a fit's at its end, can reverse a close speed-up; alternating
    runs see the same machine."""
    feeds = _inputs(a, feed), _inputs(b, feed)
    a.run(None, feeds[0])
    b.run(None, feeds[1])
    times: tuple[list[float], list[float]] = ([], [])
    for _ in range(repeats):
        for k, sess in enumerate((a, b)):
            started = time.perf_counter()
            sess.run(None, feeds[k])
            times[k].append(time.perf_counter() - started)
    return median(times[0]) * 1000, median(times[1]) * 1000


@dataclass
class Attempt:
    recipe: str
    error: float
    kept_float: list[str]
    latency_ms: float | None = None
    within_budget: bool = False


@dataclass
class GraphResult:
    graph: str
    budget: float
    fp32_ms: float
    chosen: Attempt | None  # None: the graph stays FP32
    model: GraphModel | None
    attempts: list[Attempt] = field(default_factory=list)
    group_errors: dict[str, dict[str, float]] = field(default_factory=dict)  # recipe -> group -> error
    out_of_time: bool = False  # the time budget ended a search or kept one from starting
    # no INT8 variant is fast enough: the graph stays FP32, either because the fastest fit ran no
    # faster than FP32, or because every search ended on a variant over budget that was already too
    # slow (`NoFasterFit`; then `rejected_over_budget`)
    not_faster: bool = False
    rejected_ms: float | None = None  # when not_faster: that variant's latency, timed with FP32's
    rejected_over_budget: bool = False

    def summary(self) -> dict[str, Any]:
        return {
            "graph": self.graph,
            "budget": self.budget,
            "fp32_ms": self.fp32_ms,
            "chosen": None if self.chosen is None else vars(self.chosen),
            "attempts": [vars(a) for a in self.attempts],
            "group_errors": self.group_errors,
            "out_of_time": self.out_of_time,
            "not_faster": self.not_faster,
            "rejected_ms": self.rejected_ms,
            "rejected_over_budget": self.rejected_over_budget,
        }


@dataclass
class SearchClock:
    """The time budget of one `edge-calibrate quantize`, shared by its graphs' searches. Once it is
    spent, searches stop ranking and bisecting and keep the best model that fits so far."""

    seconds: float | None = None
    started: float = field(default_factory=time.monotonic)

    def spent(self) -> bool:
        return self.seconds is not None and time.monotonic() - self.started > self.seconds


#: Held-out inputs the ranking measures each group on (the bisection and the final error use all).
RANK_FEEDS = 2


def search_graph(
    quantizer: GraphQuantizer,
    recipes: Sequence[Recipe],
    held_out: Sequence[Feed],
    budget: float,
    threading: Threading = Threading(),
    repeats: int = 10,
    say: Callable[[str], None] = lambda _: None,
    clock: SearchClock | None = None,
    progress: bool = False,
    min_speedup: float = 0.0,
    opener: Opener = session,
) -> GraphResult:
    """`threading`: as the runtime runs this graph; latencies are measured that way. `opener`:
    where candidates run, for their errors and latencies (ONNX Runtime unless the target runs the
    graph elsewhere); the FP32 reference outputs always come from ONNX Runtime, the FP32 latency
    from the opener.
    `min_speedup`: the fastest fit must run at least this many times faster than FP32, or the
    graph stays FP32 (`not_faster`); 0 keeps any fit (latencies measured here say nothing about
    the target's, e.g. TensorRT's). When it is set, a variant over budget (quantized whole, or a
    bisection's try) is also timed alternately with FP32, and one already too slow ends that
    recipe's search (`NoFasterFit`).

    Every recipe is first quantized whole and timed. Those over budget are then searched in order:
    rank the coarse layer groups (`coarse_group`) by the error each causes alone (once per
    graph: later recipes with the same groups reuse the ranking), bisect over how many of the worst
    stay in float, then rank the fine groups of the last one needed and keep only as many of them
    as the budget needs. If even all coarse groups but the mildest in float miss the budget, more
    float cannot help and the recipe is dropped. A later recipe whose whole-graph latency is no
    better than a fit already found is not searched: its fallbacks only put float layers back (an
    assumption: a graph where INT8 runs slower than float could break it). A later recipe's
    bisection starts where the previous one ended (same ranking, usually the same answer)."""
    clock = clock or SearchClock()
    reference_session = session(quantizer.fp32_path.read_bytes(), threading)

    fp32_timed = fp32_session(quantizer, reference_session, opener, threading)
    fp32_ms = latency_ms(fp32_timed, held_out[0], repeats)
    reference = ReferenceRuns(reference_session)
    result = GraphResult(quantizer.name, budget, fp32_ms, None, None)
    bar = Progress(quantizer.name, progress)
    best: tuple[Attempt, GraphModel] | None = None

    def keep(attempt: Attempt, model: GraphModel) -> None:
        nonlocal best
        result.attempts.append(attempt)
        if attempt.within_budget and (best is None or _better(attempt, best[0])):
            best = (attempt, model)

    too_slow: list[tuple[float, float]] = []  # (ms, FP32 ms) of the variants over budget that ended a search

    def check_speed(candidate: Any, error: float) -> None:
        """Raise `NoFasterFit` when `candidate`, over budget, is already too slow to be worth a fit."""
        if min_speedup <= 0:
            return
        fp32, ms = paired_latency_ms(fp32_timed, candidate, held_out[0], PRUNE_REPEATS)
        if ms * min_speedup > fp32:
            too_slow.append((ms, fp32))
            raise NoFasterFit(error, ms, fp32)

    over: list[tuple[float, Recipe, float]] = []  # (whole-graph ms, recipe, error) of recipes to search
    for recipe in recipes:
        model = quantizer.quantize(recipe)
        candidate = opener(model, threading)  # one session measures both (spinning changes no output)
        error = output_error(reference, candidate, held_out)
        bar.step(error if error <= budget else None)
        whole_ms = latency_ms(candidate, held_out[0], repeats)
        say(f"{quantizer.name} {recipe.name}: error {error:.4f} (budget {budget}), {whole_ms:.2f} ms")
        if error <= budget:
            keep(Attempt(recipe.name, error, [], whole_ms, True), model)
            continue
        try:
            if not clock.spent():  # (a spent budget searches nothing anyway)
                check_speed(candidate, error)
            over.append((whole_ms, recipe, error))
        except NoFasterFit as slow:
            say(f"  {recipe.name}: not searched, quantized whole it already runs {slow}")
            result.attempts.append(Attempt(recipe.name, error, [], slow.latency_ms))

    rankings: dict[tuple[str, ...], dict[str, float]] = {}
    fine_rankings: dict[str, dict[str, float]] = {}
    hint: int | None = None  # coarse groups the previous bisection kept float
    for whole_ms, recipe, error in over:
        groups = node_groups(quantizer.model, recipe.op_types)
        if best is not None and whole_ms >= best[0].latency_ms * (1 - SAME_SPEED):  # type: ignore[operator]
            say(f"  {recipe.name}: not searched, no faster quantized whole than the fit found")
            result.attempts.append(Attempt(recipe.name, error, []))
            continue
        if len(groups) <= 1 or clock.spent():
            if clock.spent():
                result.out_of_time = True
                say(f"  {recipe.name}: not searched, the time budget is spent")
            result.attempts.append(Attempt(recipe.name, error, []))
            continue
        coarse: dict[str, list[str]] = {}  # coarse group -> its fine groups
        for g in groups:
            coarse.setdefault(coarse_group(g), []).append(g)

        def measure(
            kept: Sequence[str], recipe: Recipe = recipe, groups: dict[str, list[str]] = groups
        ) -> tuple[float, GraphModel]:
            """`kept`: fine groups left in float."""
            model = quantizer.quantize(recipe, [n for g in kept for n in groups[g]])
            error = output_error(reference, opener(model, Threading()), held_out)
            bar.step(error if error <= budget else None)
            return error, model

        def probe(kept: Sequence[str]) -> tuple[float, GraphModel]:
            """A bisection's try (a prefix of a ranked list in float): `measure`, then, over
            budget, `check_speed`."""
            error, model = measure(kept)
            if error > budget:
                check_speed(opener(model, threading), error)
            return error, model

        def probe_coarse(
            kept: Sequence[str], coarse: dict[str, list[str]] = coarse
        ) -> tuple[float, GraphModel]:
            return probe([f for c in kept for f in coarse[c]])

        key = tuple(sorted(groups))
        if key not in rankings:
            nodes = {c: [n for f in fs for n in groups[f]] for c, fs in coarse.items()}
            rankings[key] = _rank_groups(quantizer, recipe, nodes, reference, held_out, clock, bar, opener)
        ranked = rankings[key]
        result.group_errors[recipe.name] = ranked
        order = sorted(ranked, key=ranked.__getitem__, reverse=True)
        try:
            error, model, kept_coarse = _bisect_float_groups(order, probe_coarse, budget, clock, say, hint)
            kept = [f for c in kept_coarse for f in coarse[c]]
            if error <= budget:
                hint = len(kept_coarse)
                if kept_coarse and len(coarse[kept_coarse[-1]]) > 1 and not clock.spent():
                    base = [f for c in kept_coarse[:-1] for f in coarse[c]]
                    error, model, kept = _refine(
                        base, coarse[kept_coarse[-1]], (error, model), measure, budget, clock, say,
                        fine_rankings.setdefault(kept_coarse[-1], {}), probe,
                    )  # fmt: skip
        except NoFasterFit as slow:
            say(
                f"  {recipe.name}: search ended, a try over budget ({slow}) is already too slow for a fit "
                f"to be {min_speedup:g}x faster"
            )
            result.attempts.append(Attempt(recipe.name, slow.error, [], slow.latency_ms))
            continue
        attempt = Attempt(recipe.name, error, kept, within_budget=error <= budget)
        if attempt.within_budget:
            attempt.latency_ms = latency_ms(opener(model, threading), held_out[0], repeats)
            say(f"  {attempt.latency_ms:.2f} ms vs FP32 {fp32_ms:.2f} ms")
        keep(attempt, model)
        if clock.spent():
            result.out_of_time = True
    bar.close()
    if best is not None and min_speedup > 0:  # the speed-up decided on figures of the same moment
        fp32_ms, best[0].latency_ms = paired_latency_ms(
            fp32_timed, opener(best[1], threading), held_out[0], PAIRED_REPEATS
        )
        result.fp32_ms = fp32_ms
        say(
            f"  {quantizer.name} timed alternately with FP32: {best[0].latency_ms:.2f} ms vs {fp32_ms:.2f} ms"
        )
    if best is not None and best[0].latency_ms is not None and best[0].latency_ms * min_speedup > fp32_ms:
        result.not_faster, result.rejected_ms = True, best[0].latency_ms
        say(
            f"  {quantizer.name}: the fastest fit ({best[0].latency_ms:.2f} ms) is not {min_speedup:g}x "
            f"faster than FP32 ({fp32_ms:.2f} ms): kept FP32"
        )
    elif best is not None:
        result.chosen, result.model = best
    elif too_slow:  # the fastest of them, with the FP32 time it was measured beside
        result.rejected_ms, result.fp32_ms = min(too_slow)
        result.not_faster = result.rejected_over_budget = True
    return result


def coarse_group(group: str) -> str:
    """The unit the search ranks first: 'encoder.0.self_attn' -> 'encoder.0', 'backbone.layer2' ->
    'backbone', 'inst_decoder.layers.3' -> 'inst_decoder' (~18 on the base HOI encoder, where its
    70 fine groups at 4.4 s per try made ranking alone take five minutes)."""
    parts = group.split(".")
    if len(parts) > 2 and parts[1].isdigit():
        return ".".join(parts[:2])
    return parts[0]


def _refine(
    base: list[str],
    boundary: list[str],
    fit: tuple[float, GraphModel],
    measure: Callable[[Sequence[str]], tuple[float, GraphModel]],
    budget: float,
    clock: SearchClock,
    say: Callable[[str], None],
    errors: dict[str, float] | None = None,
    probe: Callable[[Sequence[str]], tuple[float, GraphModel]] | None = None,
) -> tuple[float, GraphModel, list[str]]:
    """Within the last coarse group the bisection had to keep float (`boundary`; `base` and all of
    it in float is the known `fit`), rank its fine groups and keep only as many as the budget needs.
    `errors`: the fine groups' ranking, filled here and reused when a later recipe of the graph
    ends at the same boundary. `probe`: measures the bisection's tries (default `measure`, which
    ranks). -> (error, model, fine groups kept float)."""
    errors = {} if errors is None else errors
    probe = probe or measure
    for fine in boundary:  # `fine` quantized, the rest of the boundary float
        if fine in errors:
            continue
        if clock.spent():
            return fit[0], fit[1], base + boundary
        errors[fine] = measure(base + [g for g in boundary if g != fine])[0]
    order = sorted(boundary, key=errors.__getitem__, reverse=True)
    lo, hi, best = 0, len(order), fit  # base alone does not fit (the coarse bisection said so)
    while hi - lo > 1 and not clock.spent():
        mid = (lo + hi) // 2
        error, model = probe(base + order[:mid])
        if error <= budget:
            hi, best = mid, (error, model)
        else:
            lo = mid
    say(f"  within {coarse_group(boundary[0])}: {hi} of {len(order)} fine groups float, error {best[0]:.4f}")
    return best[0], best[1], base + order[:hi]


def _bisect_float_groups(
    order: list[str],
    measure: Callable[[Sequence[str]], tuple[float, GraphModel]],
    budget: float,
    clock: SearchClock,
    say: Callable[[str], None],
    hint: int | None = None,
) -> tuple[float, GraphModel, list[str]]:
    """The fewest of the worst-ranked groups to keep in float so the error fits, by bisection
    (the error falls, not always monotonically, as groups go float). `hint`: where an earlier
    recipe's bisection over the same ranking ended; tried first with its neighbour, it usually
    settles the answer in two tries instead of log2(groups). -> (error, model, kept)."""
    top = len(order) - 1  # all but the mildest group in float
    lo, hi = 0, top  # lo: known not to fit (nothing float); hi: fits, once checked
    fit: tuple[float, GraphModel] | None = None

    def probe(count: int) -> None:
        nonlocal lo, hi, fit
        error, model = measure(order[:count])
        say(f"  {count} groups in float: error {error:.4f}")
        if error <= budget:
            hi, fit = count, (error, model)
        else:
            lo = count

    if hint is not None and 0 < hint < top:
        for count in (hint, hint - 1, hint + 1):
            if lo < count < hi and not clock.spent() and not (count == hint + 1 and fit is not None):
                probe(count)
    if fit is None:
        error, model = measure(order[:top])
        say(f"  {top} of {len(order)} groups in float: error {error:.4f}")
        if error > budget:
            say("  more float does not bring it within budget: recipe dropped")
            return error, model, order[:top]
        fit = (error, model)
    while hi - lo > 1 and not clock.spent():
        probe((lo + hi) // 2)
    if clock.spent() and hi - lo > 1:
        say(f"  time budget spent: keeping {hi} groups in float")
    return fit[0], fit[1], order[:hi]


class Progress:
    """A progress bar over quantizations tried, with the best in-budget error so far."""

    def __init__(self, name: str, enabled: bool) -> None:
        from tqdm import tqdm

        self._bar = tqdm(desc=f"quantize {name}", unit="try", disable=not enabled, leave=False)
        self.best: float | None = None

    def step(self, fitting_error: float | None) -> None:
        if fitting_error is not None and (self.best is None or fitting_error < self.best):
            self.best = fitting_error
        self._bar.set_postfix_str("best within budget: " + ("-" if self.best is None else f"{self.best:.4f}"))
        self._bar.update(1)

    def close(self) -> None:
        self._bar.close()


def _better(candidate: Attempt, incumbent: Attempt) -> bool:
    """Faster wins, but latencies within `SAME_SPEED` of each other count as equal (timing noise on
    a shared machine) and then the smaller error wins, so the choice does not flip between runs."""
    assert candidate.latency_ms is not None and incumbent.latency_ms is not None
    if abs(candidate.latency_ms - incumbent.latency_ms) <= SAME_SPEED * incumbent.latency_ms:
        return candidate.error < incumbent.error
    return candidate.latency_ms < incumbent.latency_ms


def _rank_groups(
    quantizer: GraphQuantizer,
    recipe: Recipe,
    groups: dict[str, list[str]],  # group -> its node names
    reference: ReferenceRuns,
    held_out: Sequence[Feed],
    clock: SearchClock,
    bar: Progress,
    opener: Opener = session,
) -> dict[str, float]:
    """Error caused by quantizing each group alone (everything else float), on the first
    `RANK_FEEDS` held-out inputs. Groups not reached before the time budget ends rank last."""
    everything = [n for names in groups.values() for n in names]
    errors = dict.fromkeys(groups, 0.0)
    for group, names in groups.items():
        if clock.spent():
            break
        only = set(names)
        model = quantizer.quantize(recipe, [n for n in everything if n not in only])
        errors[group] = output_error(reference, opener(model, Threading()), held_out[:RANK_FEEDS])
        bar.step(None)
    return errors
