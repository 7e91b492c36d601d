"""The node as a managed node: transitions through the real lifecycle services, and start-up errors.

configure loads and warms the model, activate starts answering, deactivate stops publishing, cleanup frees the
model; a model that cannot load fails configure and leaves the node up, unconfigured, saying why. A bad
parameter or params file ends the process with one line that names it.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
from node_harness import COMMAND, NODE_NAME, Harness, image_msg, result_dict
from rclpy.parameter import Parameter

ROOT = Path(__file__).resolve().parents[2]


def transition(harness: Harness, label: str) -> bool:
    from lifecycle_msgs.msg import Transition
    from lifecycle_msgs.srv import ChangeState

    client = harness.tester.create_client(ChangeState, f"/{NODE_NAME}/change_state")
    assert client.wait_for_service(timeout_sec=10)
    response = client.call(ChangeState.Request(transition=Transition(label=label)), timeout_sec=120)
    harness.tester.destroy_client(client)
    return response.success


def state(harness: Harness) -> str:
    from lifecycle_msgs.srv import GetState

    client = harness.tester.create_client(GetState, f"/{NODE_NAME}/get_state")
    assert client.wait_for_service(timeout_sec=10)
    label = client.call(GetState.Request(), timeout_sec=30).current_state.label
    harness.tester.destroy_client(client)
    return label


def nothing_comes_back(harness: Harness, scene, seconds: float = 1.0) -> bool:
    """Publish a frame; True when no output of any kind answers it within `seconds`."""
    key = harness.publish(image_msg(scene(), "rgb8"))
    time.sleep(seconds)
    with harness.lock:
        return all(key not in harness.received[kind] for kind in ("cleaned", "mask", "result"))


@pytest.fixture
def managed(onnx_model_dir, permissive_thresholds):
    h = Harness(onnx_model_dir, permissive_thresholds, autostart=False)
    yield h
    h.close()


def test_transitions_load_answer_silence_and_free(managed, scene):
    from sahm_core.text import shared_encoder

    assert state(managed) == "unconfigured" and managed.node._remover is None
    managed.command(COMMAND, expect_active=COMMAND)  # commands are kept in every state
    assert nothing_comes_back(managed, scene)
    assert int(managed.diagnostics()["dropped_inactive"]) == 1

    shared_encoder.cache_clear()
    assert transition(managed, "configure") and state(managed) == "inactive"
    remover = managed.node._remover
    assert remover is not None and remover.command == COMMAND  # warmed up, and the command heard earlier encoded
    assert shared_encoder.cache_info().currsize == 1  # the text encoder and tagger are loaded before any command
    assert nothing_comes_back(managed, scene)

    assert transition(managed, "activate") and state(managed) == "active"
    cleaned, mask, result = managed.exchange(image_msg(scene(), "rgb8"))
    assert result_dict(result)["command"] == COMMAND
    rejected = managed.node.set_parameters([Parameter("model_path", value="/elsewhere")])[0]
    assert not rejected.successful and "clean the node up" in rejected.reason

    assert transition(managed, "deactivate") and state(managed) == "inactive"
    assert nothing_comes_back(managed, scene)
    assert managed.node._remover is remover  # deactivate keeps the model: activate is instant

    assert transition(managed, "cleanup") and state(managed) == "unconfigured"
    assert managed.node._remover is None
    with pytest.raises(RuntimeError):
        remover.remove(scene())  # closed: its sessions are gone
    assert managed.node.set_parameters([Parameter("backend", value="torch")])[0].successful
    assert transition(managed, "configure") and managed.node._remover.backend == "torch"


def test_a_model_that_cannot_load_fails_configure_and_the_node_stays_up(tmp_path, onnx_model_dir, permissive_thresholds,
                                                                        scene):
    missing = tmp_path / "no_such_model"
    h = Harness(missing, permissive_thresholds)  # autostart: configure runs at start-up and fails
    try:
        assert state(h) == "unconfigured"
        status = h.node.diagnostics()
        assert status.level == status.ERROR and str(missing) in status.message
        assert h.node.set_parameters([Parameter("model_path", value=str(onnx_model_dir))])[0].successful
        assert transition(h, "configure") and transition(h, "activate")
        h.command(COMMAND, expect_active=COMMAND)
        _, _, result = h.exchange(image_msg(scene(), "rgb8"))
        assert result_dict(result)["found"] is True
        assert h.node.diagnostics().level == status.OK
    finally:
        h.close()


def run_node(*ros_args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "ros_ror.remove_node", "--ros-args", *ros_args], text=True,
                          capture_output=True, timeout=120, env=dict(os.environ))


@pytest.mark.parametrize("ros_args, named", [
    (("-p", "backend:=gpu"), "backend must be one of auto, tensorrt, onnxruntime, torch, got 'gpu'"),
    (("-p", "mask_threshold:=high"), "mask_threshold"),
    (("-p", "max_fps:=-3.0"), "max_fps"),
    (("--params-file", "/nonexistent/remove.yaml"), "/nonexistent/remove.yaml"),
])
def test_a_bad_parameter_or_params_file_ends_start_up_with_one_line(ros_args, named):
    done = run_node(*ros_args, "-p", "autostart:=false")
    output = done.stdout + done.stderr
    assert done.returncode == 2, output
    assert "Traceback" not in output, output
    errors = [line for line in output.splitlines() if "cannot start" in line]
    assert len(errors) == 1 and named in errors[0], output


def rss_mib() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError("no VmRSS")


def test_fifty_enable_disable_cycles_do_not_grow_memory(onnx_model_dir, permissive_thresholds, capsys):
    """Each cycle closes the Remover (sessions, buffers, GPU contexts where there are any) and loads a new one."""
    from std_srvs.srv import SetBool

    h = Harness(onnx_model_dir, permissive_thresholds)
    try:
        client = h.tester.create_client(SetBool, f"/{NODE_NAME}/set_enabled")
        assert client.wait_for_service(timeout_sec=10)
        samples = []
        for cycle in range(50):
            assert client.call(SetBool.Request(data=False), timeout_sec=60).success
            assert client.call(SetBool.Request(data=True), timeout_sec=120).success
            samples.append(rss_mib())
        with capsys.disabled():
            print(f"\nRSS after enable/disable cycles 1, 5, 50: {samples[0]:.1f}, {samples[4]:.1f}, "
                  f"{samples[-1]:.1f} MiB")
        # after warm-up; one leaked nano session per cycle would be ~1 GB
        assert samples[-1] - samples[4] < 100, samples
    finally:
        h.close()
