"""A readable summary of a plan bundle, for `edge-run --inspect` on the device."""

from __future__ import annotations

from h2a.runtime.backends.frame_input import describe
from h2a.runtime.bundle import Bundle, backend_available


def summarize(bundle: Bundle) -> str:
    m = bundle.manifest
    prov = m.provenance
    lines = [
        f"bundle      {bundle.path}  ({bundle.size_bytes / 1e6:.1f} MB, {m.format} v{m.format_version})",
        f"created     {m.created} by edge-export {m.tool_version}",
        f"backend     {m.backend} ({'installed' if backend_available(m.backend) else 'NOT installed here'})",
        f"model       preset {prov.get('preset', '?')}, weights {prov.get('weights', '?')}, "
        f"sha256 {str(prov.get('model_sha256', '?'))[:16]}",
        "data        "
        + (
            f"sha256 {str(prov['data_sha256'])[:16]}"
            if prov.get("data_sha256")
            else "none recorded (not trained on a data set)"
        ),
        "graphs:",
    ]
    for name, graph in m.graphs.items():
        size = m.members[graph.member].size
        quant = f", {graph.quantization}" if graph.quantization else ""
        delta = f", delta {graph.accuracy_delta}" if graph.accuracy_delta else ""
        lines.append(f"  {name:<12} {graph.precision}{quant} {graph.format} {size / 1e6:8.2f} MB{delta}")
    p, d, h = m.preprocess, m.decoder, m.hoi
    lines += [
        f"input       {p.input_size}x{p.input_size} {p.color} {p.layout}, letterbox pad {p.pad_value}, "
        f"mean {p.mean}, std {p.std}",
        f"preprocess  {describe(m.backend)}",
        f"hoi         {h.n_inst_queries} instance / {h.n_int_queries} interaction queries, "
        f"{h.n_image_tokens} image tokens of width {h.d_model}",
        f"decoder     {d.layers} layers, {d.heads} heads x {d.head_dim}, max {d.max_len} tokens, "
        f"vocab {d.vocab_size}, {d.max_tag_tokens} tag tokens, no-repeat {d.no_repeat_ngram}-gram",
        f"objects     {', '.join(m.labels.objects)}",
        f"actions     {', '.join(m.labels.actions)}",
        "thresholds  "
        + ", ".join(f"{k} {v:.2f}" for k, v in m.thresholds.anomaly.items())
        + f"; triplet score {m.thresholds.hoi_score:.2f}, instance {m.thresholds.instance_score:.2f}",
    ]
    parity = prov.get("parity")
    if parity:
        worst = {g: max(e.values()) for g, e in parity["max_relative_error"].items()}
        lines.append(
            "parity      "
            + ", ".join(f"{g} {e:.1e}" for g, e in worst.items())
            + f"; greedy {parity['greedy_steps']} steps match: {parity['greedy_match']}"
        )
    calibration = prov.get("calibration")
    lines.append(f"calibration {calibration if calibration else 'none (float graphs)'}")
    trt = prov.get("tensorrt")
    if trt:
        lines.append(f"tensorrt    {trt}")
    return "\n".join(lines)
