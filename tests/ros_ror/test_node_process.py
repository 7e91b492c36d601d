"""The node as a separate process, started the way a robot starts it: `--ros-args --params-file config/remove.yaml`."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
import rclpy
import yaml
from rclpy.context import Context
from rclpy.executors import SingleThreadedExecutor

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
    from rcl_interfaces.srv import GetParameters

    expected = yaml.safe_load((ROOT / "config/remove.yaml").read_text())[NODE]["ros__parameters"]
    expected.update(max_command_chars=123, model_path=str(nano_model_dir))
    context = Context()
    rclpy.init(context=context)
    client_node = rclpy.create_node("params_checker", context=context)
    executor = SingleThreadedExecutor(context=context)
    executor.add_node(client_node)
    try:
        client = client_node.create_client(GetParameters, f"/{NODE}/get_parameters")
        deadline = time.monotonic() + 60
        while not client.wait_for_service(timeout_sec=1.0):
            assert node_process.poll() is None, f"node exited: {node_process.stdout.read()}"
            assert time.monotonic() < deadline, "node's parameter service never appeared"
        future = client.call_async(GetParameters.Request(names=list(expected)))
        executor.spin_until_future_complete(future, timeout_sec=30)
        values = future.result().values
        got = {}
        for name, value in zip(expected, values):
            got[name] = {1: value.bool_value, 2: value.integer_value, 3: value.double_value,
                         4: value.string_value}[value.type]
        assert got == expected
    finally:
        executor.shutdown()  # it holds the node's handle: destroying the node first would wait forever
        client_node.destroy_node()
        rclpy.shutdown(context=context)
    assert node_process.poll() is None  # still running: the lazy model is not loaded without a command
