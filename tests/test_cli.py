"""The command line as a user meets it: usage lines name the command that was typed, and a bad
flag is reported as that flag, not as whatever failed later because of it."""
import shutil
import subprocess
import sys
import sysconfig
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[1]
DEMO = ROOT / "monitor" / "demo_bundle"


def monitor(*args, timeout=120):
    return subprocess.run([sys.executable, str(ROOT / "run_monitor.py"), *map(str, args)], cwd=ROOT,
                          capture_output=True, text=True, timeout=timeout)


def test_an_unknown_provider_names_the_flag(tmp_path):
    done = monitor("--providers", "foo", "--no-dashboard", "--duration", "1", "--events", tmp_path / "e.db")
    assert done.returncode == 2
    assert done.stderr.strip().splitlines() == [done.stderr.strip()]  # one line
    assert "--providers" in done.stderr and "'foo'" in done.stderr and "backbone.onnx" not in done.stderr
    np.save(tmp_path / "f.npy", np.zeros((2, 50, 64), np.float32))
    done = monitor("score-features", "--model", DEMO, "--features", tmp_path / "f.npy", "--out", tmp_path / "s.npy",
                   "--providers", "cpu,foo")
    assert done.returncode == 2 and "--providers" in done.stderr and ".onnx" not in done.stderr


def test_a_provider_in_the_config_file_names_the_file_and_key(tmp_path):
    config = tmp_path / "monitor.toml"
    config.write_text('[model]\nproviders = ["nonesuch"]\n')
    done = monitor("--config", config, "--no-dashboard", "--duration", "1")
    assert done.returncode == 2
    assert f"{config}: [model] providers" in done.stderr and "'nonesuch'" in done.stderr


def test_usage_names_the_command_that_was_typed():
    assert "usage: run_monitor.py score-features" in monitor("score-features", "--help").stdout
    script = Path(sysconfig.get_path("scripts")) / "ssrl-monitor"
    script = script if script.exists() else shutil.which("ssrl-monitor")
    if not script:
        pytest.skip("the ssrl-monitor console script is not installed (pip install -e .)")
    done = subprocess.run([str(script), "score-features", "--help"], capture_output=True, text=True, timeout=60,
                          cwd=ROOT)
    assert done.returncode == 0 and "usage: ssrl-monitor score-features" in done.stdout
    assert "run_monitor.py" not in done.stdout
    listing = subprocess.run([str(script), "--help"], capture_output=True, text=True, timeout=60, cwd=ROOT).stdout
    assert listing.startswith("usage: ssrl-monitor [COMMAND]")
