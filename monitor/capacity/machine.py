"""The machine itself: its fp32 peak as ONNX Runtime reaches it (a large matrix product on
the bench's provider and threads, so that every fraction of peak is a ratio of one moment on
one machine), what it is, how loaded it was, and the bench process's peak memory."""
from __future__ import annotations

import platform
import resource

import numpy as np
import onnx
from onnx import helper, numpy_helper

from monitor.capacity.context import Bench, best_seconds, load_average
from monitor.model.providers import create_session

KEYS = {
    "machine_peak_gflops": "fp32 GFLOP/s of a 2048 x 2048 matrix product through ONNX Runtime, same provider and threads",
    "cpu": "the processor",
    "cores": "physical cores ONNX Runtime's threads are matched to",
    "load_before": "1-minute load average when the bench started (other work on the machine)",
}
MEMORY_KEYS = {
    "peak_rss_mb": "peak resident memory of the bench process (the engine with the most cameras tried included)",
    "load_after": "1-minute load average when the bench ended",
}
SIZE = 2048


def _cpu_name() -> str:
    try:
        with open("/proc/cpuinfo") as fh:
            for line in fh:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def gemm_graph(n: int) -> bytes:
    """x [n, n] @ W [n, n], W a constant (ONNX Runtime packs it once, as it does weights)."""
    w = np.random.default_rng(0).standard_normal((n, n), dtype=np.float32)
    graph = helper.make_graph([helper.make_node("MatMul", ["x", "w"], ["y"])], "peak",
                              [helper.make_tensor_value_info("x", onnx.TensorProto.FLOAT, [n, n])],
                              [helper.make_tensor_value_info("y", onnx.TensorProto.FLOAT, [n, n])],
                              [numpy_helper.from_array(w, "w")])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    return model.SerializeToString()


def measure(bench: Bench) -> dict:
    from monitor.model.providers import physical_cores
    session = create_session(gemm_graph(SIZE), bench.providers, bench.threads)
    x = np.random.default_rng(1).standard_normal((SIZE, SIZE), dtype=np.float32)
    seconds = best_seconds(lambda: session.run(None, {"x": x}), budget_s=min(3.0, bench.seconds / 4), at_least=3)
    return {"machine_peak_gflops": round(2 * SIZE ** 3 / seconds / 1e9, 1), "cpu": _cpu_name(),
            "cores": bench.threads or physical_cores(), "load_before": load_average()}


def measure_memory(bench: Bench) -> dict:
    peak_kb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # kilobytes on Linux
    return {"peak_rss_mb": round(peak_kb / 1024, 1), "load_after": load_average()}

