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


def _options(name: str) -> dict:
    if name == "TensorrtExecutionProvider":
        cache = os.environ.get("SSRL_TRT_CACHE", os.path.expanduser("~/.cache/ssrl-monitor/trt"))
        return {"trt_fp16_enable": os.environ.get("SSRL_FP16", "1") == "1",
                "trt_engine_cache_enable": True, "trt_engine_cache_path": cache}
    return {}


def create_session(path: str, providers: list[str] | str | None = None,
                   threads: int | None = None) -> ort.InferenceSession:
    """An InferenceSession on the best provider that really works, without the noise of
    the ones that do not."""
    chosen = resolve(providers)
    options = ort.SessionOptions()
    options.log_severity_level = 3
    if threads:
        options.intra_op_num_threads = threads
    quiet = any(p != "CPUExecutionProvider" for p in chosen)
    with contextlib.ExitStack() as stack:
        if quiet:
            ort.set_default_logger_severity(4)
            stack.callback(ort.set_default_logger_severity, 2)
            stack.enter_context(contextlib.redirect_stdout(io.StringIO()))
        session = ort.InferenceSession(path, options, providers=[(p, _options(p)) for p in chosen])
    got = session.get_providers()
    _failed.update(p for p in chosen if p not in got)
    return session
