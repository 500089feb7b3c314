"""Where the time goes: ONNX Runtime's own profiler (SessionOptions.enable_profiling), summed by
operator type, so a missed target names its FPS loop, its attention MatMuls or its TopK, and by stage
(host preprocessing, in-graph grouping, network), so a reader sees what grouping costs."""

from __future__ import annotations

import json
import tempfile
import time
from collections import defaultdict
from pathlib import Path
from statistics import median

import numpy as np

from foundry_edge.contracts.onnx_graph import grouping_nodes

ROUNDS = 3  # each stage's block runs this often, alternating, so slow drift of the machine hits them all
WARMUP_S = 0.2  # per stage: the first calls of a session are slower for a while, not only the first one


def profile_operators(onnx_path: str, clouds, threads: int, runs: int = 10) -> dict:
    """(B, N, 3) raw clouds through an ONNX model on the CPU provider -> {"operators", "stages"}.

    operators: [{"op_type", "ms_per_run", "percent", "nodes"}], slowest first, from ONNX Runtime's profiler
    (the first, warm-up run dropped). stages: `stage_times`.
    """
    from foundry_edge.runtimes.ort import make_session

    from foundry_edge.data.preprocess import feed_for

    session = make_session(onnx_path, threads=threads, profiling=True)
    feed = feed_for(clouds, _preprocessing(onnx_path))
    for _ in range(runs + 1):
        session.run(None, feed)
    trace = Path(session.end_profiling())
    try:
        events = json.loads(trace.read_text(encoding="utf-8"))
    finally:
        trace.unlink(missing_ok=True)
    return {"operators": summarize_trace(events, runs), "stages": stage_times(onnx_path, clouds, threads, runs)}


def stage_times(onnx_path: str, clouds, threads: int, runs: int = 10,
                providers: tuple = ("CPUExecutionProvider",), device: str = "cpu") -> dict:
    """Median ms per call of each stage, each timed on its own: host preprocessing (the feed made from raw
    clouds, host grouping where the model was exported so), the in-graph grouping and the network (the
    graph cut in two at `grouping_nodes`, each half its own session), copies (none on the CPU provider),
    and the whole call unsplit. `accounted` = stages / whole (medians): the halves lose fusions across the cut and
    pay a second session call, so a share far from 1 says the split is not what the whole does;
    `accounted_best` is the same on each stage's fastest call, which a busy machine can only slow (the stable
    form of the check).

    On a GPU provider (`providers`, `device` "cuda"), each half runs on device memory through IOBinding and the
    copies are stages of their own: the host feed to the device, and the network's outputs back."""
    import onnx

    from foundry_edge.data.preprocess import feed_for
    from foundry_edge.runtimes.ort import make_session

    model, pre = onnx.load(str(onnx_path)), _preprocessing(onnx_path)
    whole = make_session(onnx_path, providers, threads=threads)
    halves = _split(model)
    with tempfile.TemporaryDirectory() as tmp:
        sessions = {}
        for name, part in halves.items():
            onnx.save(part, str(Path(tmp) / f"{name}.onnx"))
            sessions[name] = make_session(Path(tmp) / f"{name}.onnx", providers, threads=threads)
    # Each stage in a block of its own calls: interleaved, one session's spinning threads would slow the next.
    feeds = {"host_preprocessing": None}
    feed = feed_for(clouds, pre)
    cut = dict(feed)
    for name, session in sessions.items():
        feeds[name] = {i.name: cut[i.name] for i in session.get_inputs()}
        cut = {**cut, **dict(zip((o.name for o in session.get_outputs()), session.run(None, feeds[name])))}
    calls = {"end_to_end": lambda: whole.run(None, feed_for(clouds, pre)),
             "host_preprocessing": lambda: feed_for(clouds, pre)}
    if device == "cpu":
        calls.update({name: (lambda s=session, f=feeds[name]: s.run(None, f)) for name, session in sessions.items()})
    else:
        calls.update(device_calls(sessions, cut, feed, device))
    times: dict = defaultdict(list)
    for name, call in [item for _ in range(ROUNDS) for item in calls.items()]:  # rounds: drift hits every stage
        warm_until, warm_calls = time.perf_counter() + WARMUP_S, 0
        while warm_calls < 3 or time.perf_counter() < warm_until:  # thread pools, arenas and clocks settle
            call()
            warm_calls += 1
        for _ in range(runs):
            start = time.perf_counter()
            call()
            times[name].append(time.perf_counter() - start)
    ms = {name: median(values) * 1e3 for name, values in times.items()}
    stages = {"host_preprocessing_ms": ms["host_preprocessing"], "grouping_ms": ms.get("grouping", 0.0),
              "network_ms": ms["network"], "copies_ms": ms.get("copies_in", 0.0) + ms.get("copies_out", 0.0)}
    copies = {f"{name}_ms": ms[name] for name in ("copies_in", "copies_out") if name in ms}
    total = sum(stages.values())
    best = {name: min(values) for name, values in times.items()}  # each stage's fastest call: noise only slows
    return {**stages, **copies, "end_to_end_ms": ms["end_to_end"], "stages_sum_ms": total,
            "accounted": total / ms["end_to_end"] if ms["end_to_end"] else None,
            "accounted_best": sum(v for k, v in best.items() if k != "end_to_end") / best["end_to_end"]}


def device_calls(sessions: dict, values: dict, feed: dict, device: str) -> dict:
    """{stage: call} for the halves on `device` memory: "copies_in" (the host feed to the device), each half
    run through IOBinding on device-resident inputs and outputs (ONNX Runtime synchronizes its stream at the
    end of a run), and "copies_out" (the network's outputs to the host). `values`: every tensor a half reads."""
    import onnxruntime as ort

    def on_device(array):
        return ort.OrtValue.ortvalue_from_numpy(np.ascontiguousarray(array), device, 0)

    resident = {name: on_device(value) for name, value in values.items()}
    bindings = {}
    for name, session in sessions.items():
        binding = session.io_binding()
        for spec in session.get_inputs():
            binding.bind_ortvalue_input(spec.name, resident[spec.name])
        for spec in session.get_outputs():
            binding.bind_output(spec.name, device, 0)
        bindings[name] = binding
    network = bindings["network"]
    sessions["network"].run_with_iobinding(network)  # outputs exist on the device before the first copy back
    return {"copies_in": lambda: [on_device(value) for value in feed.values()],
            **{name: (lambda s=sessions[name], b=binding: s.run_with_iobinding(b)) for name, binding in bindings.items()},
            "copies_out": network.copy_outputs_to_cpu}


def _split(model) -> dict:
    """The model cut at its grouping: {"grouping": inputs -> the tensors the network reads from it,
    "network": those tensors -> the outputs}; only {"network": model} where nothing groups in the graph."""
    import onnx

    graph = model.graph
    grouping = grouping_nodes(graph)
    made = {out for node in graph.node if node.name in grouping for out in node.output}
    if not made:
        return {"network": model}
    inputs = [i.name for i in graph.input]
    read = [name for node in graph.node if node.name not in grouping for name in node.input if name in made]
    outputs = [o.name for o in graph.output]
    boundary = list(dict.fromkeys(read + [o for o in outputs if o in made]))
    extractor = onnx.utils.Extractor(onnx.shape_inference.infer_shapes(model))
    network_inputs = list(dict.fromkeys(read + [i for i in inputs if _read_by_network(graph, grouping, i)]))
    return {"grouping": extractor.extract_model(inputs, boundary),
            "network": extractor.extract_model(network_inputs, [o for o in outputs if o not in made])}


def _read_by_network(graph, grouping: set, name: str) -> bool:
    return any(name in node.input for node in graph.node if node.name not in grouping)


def _preprocessing(onnx_path: str):
    from foundry_edge.runtimes.model_info import read_model_info

    return read_model_info(onnx_path).preprocessing



def summarize_trace(events: list[dict], runs: int) -> list[dict]:
    """Chrome-trace node events -> per operator type mean ms per run and share of the node time.

    Node events are named "<node>_kernel_time" with args.op_name; the first run's events (warm-up)
    are skipped by counting each node's calls.
    """
    seen: dict[str, int] = defaultdict(int)
    total_us: dict[str, float] = defaultdict(float)
    nodes: dict[str, set] = defaultdict(set)
    for event in _node_events(events):
        name, op_type = event["name"], event.get("args", {}).get("op_name", "?")
        seen[name] += 1
        if seen[name] == 1:  # the warm-up run
            continue
        total_us[op_type] += event.get("dur", 0)
        nodes[op_type].add(name)
    grand = sum(total_us.values()) or 1.0
    rows = [{"op_type": op, "ms_per_run": us / runs / 1e3, "percent": 100 * us / grand, "nodes": len(nodes[op])}
            for op, us in total_us.items()]
    return sorted(rows, key=lambda row: row["ms_per_run"], reverse=True)


def _node_events(events: list[dict]):
    return (e for e in events if e.get("cat") == "Node" and e.get("name", "").endswith("_kernel_time"))
