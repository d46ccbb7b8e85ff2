"""Choosing ONNX Runtime execution providers by what a session actually gets.

onnxruntime-gpu lists TensorRT and CUDA as available even on a machine without a GPU or
without their libraries; asking for them then prints loud errors and falls back to the CPU.
We ask quietly, look at `get_providers()`, and remember a GPU provider that failed so that
later sessions do not pay (or print) the failure again.
"""
from __future__ import annotations

import contextlib
import io
import os

import onnxruntime as ort

PREFERENCE = ("TensorrtExecutionProvider", "CUDAExecutionProvider", "CPUExecutionProvider")
SHORT_NAMES = {"tensorrt": "TensorrtExecutionProvider", "trt": "TensorrtExecutionProvider",
               "cuda": "CUDAExecutionProvider", "cpu": "CPUExecutionProvider"}
_failed: set[str] = set()


class ProviderError(ValueError):
    pass


def resolve(requested: list[str] | str | None = None) -> list[str]:
    """The provider list to ask for: `requested` (short or full names, in order) or the
    preferred available ones; the CPU always last as the fallback."""
    if requested is None:
        requested = os.environ.get("SSRL_PROVIDERS") or None
    if isinstance(requested, str):
        requested = [r for r in requested.replace(",", " ").split() if r]
    available = ort.get_available_providers()
    if requested:
        chosen = []
        for name in requested:
            full = SHORT_NAMES.get(name.lower(), name)
            if full not in available:
                raise ProviderError(f"execution provider {name!r} is not available here (available: {', '.join(available)})")
            chosen.append(full)
    else:
        chosen = [p for p in PREFERENCE if p in available]
    chosen = [p for p in chosen if p not in _failed or p == "CPUExecutionProvider"]
    if "CPUExecutionProvider" not in chosen:
        chosen.append("CPUExecutionProvider")
    return chosen


def from_flag(text: str, flag: str = "--providers") -> list[str]:
    """A `--providers` value ('cuda,cpu') -> its names, refused here naming the flag, so that a
    typo is not reported later as a graph that cannot load."""
    names = [n for n in text.replace(",", " ").split() if n]
    try:
        resolve(names)
    except ProviderError as exc:
        raise ProviderError(f"command line: {flag}: {exc}") from exc
    return names


GPU_PROVIDERS = ("TensorrtExecutionProvider", "CUDAExecutionProvider")


def trt_cache_dir(graph_key: str | None, fp16: bool) -> str:
    """Where TensorRT keeps the engines it built for one graph, between runs.

    ONNX Runtime names cached engines after the model's path, not its content, so a graph
    replaced at the same path (an int8 or fp16 re-export, a retrained bundle) would load a
    stale engine; a directory per graph content (its SHA-256), precision and ONNX Runtime
    version cannot. Base: $SSRL_TRT_CACHE, else ~/.cache/ssrl-monitor/trt."""
    base = os.environ.get("SSRL_TRT_CACHE") or os.path.expanduser("~/.cache/ssrl-monitor/trt")
    key = (graph_key or "unknown")[:16]
    return os.path.join(base, f"{key}-{'fp16' if fp16 else 'fp32'}-ort{ort.__version__}")


def _options(name: str, precision: str = "fp32", graph_key: str | None = None) -> dict:
    if name == "TensorrtExecutionProvider":
        # TensorRT's fp16 kernels for fp16 bundles; SSRL_FP16=1 asks for them on fp32 graphs
        # too (TensorRT then picks per layer), SSRL_FP16=0 refuses them.
        fp16 = {"1": True, "0": False}.get(os.environ.get("SSRL_FP16", ""), precision == "fp16")
        cache = trt_cache_dir(graph_key, fp16)
        return {"trt_fp16_enable": fp16, "trt_engine_cache_enable": True, "trt_engine_cache_path": cache,
                "trt_timing_cache_enable": True, "trt_timing_cache_path": cache}
    return {}


def physical_cores() -> int:
    """Physical cores this process may run on (hyper-threads of one core count once): what
    ONNX Runtime's intra-op threads are matched to."""
    cpus = os.sched_getaffinity(0) if hasattr(os, "sched_getaffinity") else range(os.cpu_count() or 1)
    cores = set()
    for cpu in cpus:
        topology = f"/sys/devices/system/cpu/cpu{cpu}/topology"
        try:
            with open(f"{topology}/physical_package_id") as a, open(f"{topology}/core_id") as b:
                cores.add((a.read().strip(), b.read().strip()))
        except OSError:
            cores.add(("", str(cpu)))
    return max(1, len(cores))


def cpu_only(providers: list[str] | str | None = None) -> bool:
    """Whether graphs asked to run on `providers` end up on the CPU alone: a one-node probe
    session says (onnxruntime-gpu lists GPU providers that then fail to start)."""
    chosen = resolve(providers)
    if chosen == ["CPUExecutionProvider"]:
        return True
    from onnx import TensorProto, helper  # only where a GPU provider is in question
    graph = helper.make_graph([helper.make_node("Identity", ["x"], ["y"])], "probe",
                              [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1])])
    probe = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    probe.ir_version = 8
    return create_session(probe.SerializeToString(), chosen, 1).get_providers() == ["CPUExecutionProvider"]


# A snippet with this much backbone input (I3D at the published size: 142 MB) keeps every core
# busy within one run, and a second run at once would double the working memory.
LARGE_SNIPPET_BYTES = 16 << 20


def scoring_layout(providers: list[str] | str | None = None, threads: int | None = None,
                   workers: int | None = None, snippet_bytes: int = 0) -> tuple[int, int]:
    """(graph runs at once, ONNX Runtime intra-op threads per run) for the live engine.

    On the CPU the default is one run per physical core, each on one thread: a small backbone's
    operators (a demo snippet is 50 clips of 16 x 96 x 96 and 24 x 24) are too small to split
    well, each split costs a barrier per operator, and whole batches side by side pay none
    (demo bundle, 2 cores: 1.3 times the snippets per second of one run on 2 threads). A large
    snippet (LARGE_SNIPPET_BYTES) gets one run on every core, as does a GPU; given threads
    alone, one run on that many threads, as asked."""
    if workers:
        return workers, threads or max(1, physical_cores() // workers)
    if threads or snippet_bytes >= LARGE_SNIPPET_BYTES or not cpu_only(providers):
        return 1, threads or physical_cores()
    return physical_cores(), 1


def create_session(path: str | bytes, providers: list[str] | str | None = None,
                   threads: int | None = None, precision: str = "fp32",
                   graph_key: str | None = None, spinning: bool = False) -> ort.InferenceSession:
    """An InferenceSession (from a file, or a serialised graph) on the best provider that
    really works, without the noise of the ones that do not. `precision` and `graph_key` (the
    graph's SHA-256) set TensorRT's fp16 mode and its engine cache.

    CPU threads: `threads` intra-op threads (default: one per physical core), one inter-op
    thread, sequential execution: a graph's nodes run one after another, each across all
    cores. Spinning (threads busy-waiting for the next parallel section) is off by default:
    on a box whose cores also decode video and prepare snippets, a spinning thread takes a
    core from them for nothing."""
    chosen = resolve(providers)
    options = ort.SessionOptions()
    options.log_severity_level = 3
    options.intra_op_num_threads = threads or physical_cores()
    options.inter_op_num_threads = 1
    options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    options.add_session_config_entry("session.intra_op.allow_spinning", "1" if spinning else "0")
    quiet = any(p != "CPUExecutionProvider" for p in chosen)
    with contextlib.ExitStack() as stack:
        if quiet:
            ort.set_default_logger_severity(4)
            stack.callback(ort.set_default_logger_severity, 2)
            stack.enter_context(contextlib.redirect_stdout(io.StringIO()))
        session = ort.InferenceSession(path, options, providers=[(p, _options(p, precision, graph_key)) for p in chosen])
    got = session.get_providers()
    _failed.update(p for p in chosen if p not in got)
    return session
