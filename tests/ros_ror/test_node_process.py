"""The node as a separate process, started the way a robot starts it: `--ros-args --params-file config/remove.yaml`."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from node_harness import Probe, wait_for

ROOT = Path(__file__).resolve().parents[2]
NODE = "ros_ror_remove"


@pytest.fixture
def node_process(tmp_path, nano_model_dir):
    """The real params file, then a second file that changes two values (proof the files are read)."""
    override = tmp_path / "override.yaml"
    override.write_text(yaml.safe_dump({NODE: {"ros__parameters": {"max_command_chars": 123,
                                                                    "model_path": str(nano_model_dir)}}}))
    cmd = [sys.executable, "-m", "ros_ror.remove_node", "--ros-args",
           "--params-file", str(ROOT / "config/remove.yaml"), "--params-file", str(override)]
    process = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=dict(os.environ))
    yield process
    process.terminate()
    try:
        process.wait(timeout=20)
    except subprocess.TimeoutExpired:
        process.kill()


def test_params_file_loads_with_pip_only_ros(node_process, nano_model_dir):
    expected = yaml.safe_load((ROOT / "config/remove.yaml").read_text())[NODE]["ros__parameters"]
    expected.update(max_command_chars=123, model_path=str(nano_model_dir))
    probe = Probe("params_checker")
    try:
        wait_for(lambda: node_process.poll() is not None or probe.node.count_publishers(f"/{NODE}/mask") > 0, 60)
        assert node_process.poll() is None, f"node exited: {node_process.stdout.read()}"
        assert probe.parameters(list(expected)) == expected
    finally:
        probe.close()
    assert node_process.poll() is None  # still running after start-up (autostart loads the model)


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM], ids=["SIGINT", "SIGTERM"])
def test_a_signal_stops_it_cleanly(node_process, signum):
    """Ctrl-C, or `ros2 launch` / systemd stopping the robot: exit status 0 after the model is unloaded."""
    probe = Probe("stop_checker")
    try:
        wait_for(lambda: probe.lifecycle_state() == "active", 120)
    finally:
        probe.close()
    assert node_process.poll() is None, f"node exited: {node_process.stdout.read()}"
    node_process.send_signal(signum)
    output, _ = node_process.communicate(timeout=30)
    assert node_process.returncode == 0, output
    assert "Traceback" not in output and "Fatal Python error" not in output, output
