"""A test-sized soak (about four minutes): three cameras, an RTSP server killed and restarted, a
server paused with SIGSTOP, subscribers that never read; the monitor must recover from each,
deliver every stored alert to the subscriber that stayed, and hold its memory, threads and file
descriptors flat. benchmarks/soak.py runs the same for as long as asked."""
import pytest

from tests.soak import soak


@pytest.mark.slow
def test_soak_with_faults_on_a_schedule(tmp_path):
    result = soak(tmp_path, seconds=240, warmup_s=60)
    print(result.table())
    assert result.exit_code == 0, result.stderr_tail
    assert "Traceback" not in result.stderr_tail
    for fault in result.faults:
        assert fault.recovered, f"{fault.name}: {fault.seen}"
    assert result.alerts_stored > 0, "the synthetic camera raised no alert: nothing was tested"
    assert not result.missing, f"stored but never received: {result.missing}"
    assert result.seq_gaps == 0, "the subscriber that stayed saw gaps in seq"
    # Four minutes hold the first reconnect, which grows ONNX Runtime's arena and FFmpeg's buffers
    # once (a step of a few %, more on a loaded machine); a leak shows as well past this bound.
    # The 5 % is measured over the long soak (benchmarks/soak.py), past that step.
    assert result.rss_change() <= 0.10, result.table()
    assert result.growth("threads") <= 0, result.table()
    assert result.growth("fds") <= 0, result.table()
