"""`ros2 launch ros_ror remove.launch.py` for real: the upstream CLI in a subprocess, checked through the ROS graph.

The launch tools come from ../shared/ros2-launch (wheels of the upstream sources, installed by `make setup`);
without them these tests skip and say so. The package is found through AMENT_PREFIX_PATH = the virtualenv, the
prefix `ros-ror ament-prefix` writes (README, "Running the node"). `launch_ros` imports composition_interfaces,
which is not on PyPI: tests/ros_ror/launch_support satisfies that import alone (its README says why).
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest
import yaml
from node_harness import COMMAND, Probe, image_msg, pixels_of, result_dict, wait_for
from rclpy.qos import QoSProfile, ReliabilityPolicy

ROOT = Path(__file__).resolve().parents[2]
LAUNCH_FILE = ROOT / "launch/remove.launch.py"
BIN = Path(sys.executable).parent
NODE = "/ros_ror_remove"

pytestmark = pytest.mark.skipif(
    not (BIN / "ros2").is_file() or subprocess.run([sys.executable, "-c", "import ros2launch"]).returncode != 0,
    reason="the ROS 2 launch tools are not installed: `make setup` installs them from ../shared/ros2-launch, "
           "which is absent here",
)


def launch_env() -> dict[str, str]:
    marker = Path(sys.prefix) / "share/ament_index/resource_index/packages/ros_ror"
    assert marker.is_file(), f"{marker} missing: `make setup` (or `ros-ror ament-prefix`) writes the ament prefix"
    support = str(ROOT / "tests/ros_ror/launch_support")
    return dict(os.environ, AMENT_PREFIX_PATH=sys.prefix, PATH=f"{BIN}{os.pathsep}{os.environ['PATH']}",
                PYTHONPATH=os.pathsep.join(filter(None, [support, os.environ.get("PYTHONPATH")])))


class Launch:
    """`ros2 launch ...` as a subprocess; its output is collected on a thread so the pipe never fills."""

    def __init__(self, *arguments: str):
        # PYTHONFAULTHANDLER: a launch that hangs on SIGINT is sent SIGABRT and prints every thread's stack
        self.process = subprocess.Popen([str(BIN / "ros2"), "launch", *arguments],
                                        env=dict(launch_env(), PYTHONFAULTHANDLER="1"), text=True,
                                        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, start_new_session=True)
        self.lines: list[str] = []
        self.reader = threading.Thread(target=lambda: self.lines.extend(self.process.stdout), daemon=True)
        self.reader.start()

    @property
    def output(self) -> str:
        return "".join(self.lines)

    def interrupt(self, timeout: float = 30.0) -> int:
        """SIGINT, as Ctrl-C in a terminal; the exit status of `ros2 launch`."""
        self.process.send_signal(signal.SIGINT)
        try:
            code = self.process.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            import psutil  # installed with the launch tools (Makefile)

            # the launched processes first, so their stacks reach launch's output before launch's own
            for child in psutil.Process(self.process.pid).children(recursive=True):
                child.send_signal(signal.SIGABRT)
            time.sleep(3)
            self.process.send_signal(signal.SIGABRT)
            time.sleep(2)
            os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait()
            self.reader.join(timeout=5)
            raise AssertionError(f"`ros2 launch` still running {timeout} s after SIGINT:\n{self.output}") from None
        self.reader.join(timeout=5)
        return code

    def kill(self) -> None:
        if self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait()


def wait_for_launched_node(probe: Probe, launch: Launch, timeout: float = 120.0) -> None:
    """Until the launched node's publishers are in this probe's graph; on failure, who sees what."""
    try:
        wait_for(lambda: launch.process.poll() is not None or probe.node.count_publishers(f"{NODE}/mask") > 0,
                 timeout)
    except AssertionError:
        # Discovery failed: tell the probe's view from a fresh participant's, so the failure names its side.
        fresh = subprocess.run([str(BIN / "ros2"), "topic", "list", "--no-daemon", "--spin-time", "10"],
                               env=launch_env(), text=True, capture_output=True, timeout=60)
        raise AssertionError(
            f"the probe saw no {NODE}/mask publisher in {timeout} s; the probe sees nodes "
            f"{probe.node.get_node_names_and_namespaces()} and topics "
            f"{sorted(n for n, _ in probe.node.get_topic_names_and_types())}; a fresh `ros2 topic list` sees "
            f"{fresh.stdout.split()} {fresh.stderr[-500:]}") from None
    assert launch.process.poll() is None, launch.output


@pytest.fixture(scope="module")
def probe():
    p = Probe("launch_probe")
    yield p
    p.close()


def params_file(tmp_path: Path, thresholds: dict, **values) -> Path:
    path = tmp_path / "params.yaml"
    path.write_text(yaml.safe_dump({"ros_ror_remove": {"ros__parameters": {**thresholds, **values}}}))
    return path


def test_launch_by_package_applies_every_argument_and_round_trips_a_frame(tmp_path, probe, scene, onnx_model_dir,
                                                                          permissive_thresholds, reference_remover):
    from sensor_msgs.msg import CameraInfo, Image
    from std_msgs.msg import String

    from ros_ror.result import generated_message_class

    params = params_file(tmp_path, permissive_thresholds, use_sim_time=True, max_command_chars=123)
    launch = Launch("ros_ror", "remove.launch.py", "image_topic:=/rig/camera/image_raw", "command_topic:=/rig/speech",
                    f"model_path:={onnx_model_dir}", "backend:=onnxruntime", f"params_file:={params}")
    try:
        wait_for_launched_node(probe, launch)
        wait_for(lambda: {"/rig/camera/image_raw", "/rig/camera/camera_info", "/rig/speech"}
                 <= probe.subscribed_topics())
        got = probe.parameters(["model_path", "backend", "use_sim_time", "max_command_chars", "autostart"])
        # use_sim_time was not given to launch, so the params file's value stands.
        assert got == {"model_path": str(onnx_model_dir), "backend": "onnxruntime", "use_sim_time": True,
                       "max_command_chars": 123, "autostart": True}
        wait_for(lambda: probe.lifecycle_state() == "active", 120)

        received: dict[str, object] = {}
        reliable = QoSProfile(depth=5, reliability=ReliabilityPolicy.RELIABLE)
        result_type = generated_message_class() or String
        for topic, msg_type in (("cleaned/image", Image), ("cleaned/camera_info", CameraInfo), ("mask", Image),
                                ("result", result_type)):
            probe.node.create_subscription(msg_type, f"{NODE}/{topic}", lambda m, t=topic: received.setdefault(t, m),
                                           reliable)
        command_pub = probe.node.create_publisher(String, "/rig/speech", reliable)
        image_pub = probe.node.create_publisher(Image, "/rig/camera/image_raw", reliable)
        info_pub = probe.node.create_publisher(CameraInfo, "/rig/camera/camera_info", reliable)
        wait_for(lambda: command_pub.get_subscription_count() and image_pub.get_subscription_count()
                 and info_pub.get_subscription_count())
        command_pub.publish(String(data=COMMAND))
        wait_for(lambda: f"remove: {COMMAND!r}" in launch.output)

        rgb = scene(seed=3)
        frame = image_msg(rgb, "rgb8")
        frame.header.stamp.sec, frame.header.frame_id = 42, "rig_camera"
        info = CameraInfo(header=frame.header, width=rgb.shape[1], height=rgb.shape[0], distortion_model="plumb_bob",
                          d=[0.1, 0.0, 0.0, 0.0, 0.0], k=[50.0, 0, 32, 0, 50.0, 24, 0, 0, 1])
        info_pub.publish(info)
        time.sleep(0.5)  # the info first, as a camera driver publishes it with (or before) its frame
        image_pub.publish(frame)
        wait_for(lambda: len(received) == 4, 60)

        reference_remover.set_command(COMMAND)
        reference = reference_remover.remove(rgb)
        cleaned, mask = received["cleaned/image"], received["mask"]
        np.testing.assert_array_equal(pixels_of(mask)[:, :, 0], reference.mask)
        np.testing.assert_array_equal(pixels_of(cleaned), reference.image)
        camera_info = received["cleaned/camera_info"]
        assert camera_info.header == frame.header and list(camera_info.k) == list(info.k)
        assert camera_info.distortion_model == "plumb_bob" and list(camera_info.d) == list(info.d)
        fields = result_dict(received["result"])
        assert fields["command"] == COMMAND and fields["found"] is True and fields["backend"] == "onnxruntime"
    except BaseException:
        print(launch.output)
        launch.kill()
        raise
    code = launch.interrupt()
    assert code == 0, launch.output
    assert "Traceback" not in launch.output, launch.output
    assert re.search(r"\[remove_node-1\]: process has finished cleanly", launch.output), launch.output


def test_launch_by_path_waits_unconfigured_and_follows_ros2_lifecycle(tmp_path, probe, onnx_model_dir,
                                                                      permissive_thresholds):
    params = params_file(tmp_path, permissive_thresholds, use_sim_time=True)
    launch = Launch(str(LAUNCH_FILE), f"model_path:={onnx_model_dir}", "backend:=onnxruntime", "autostart:=false",
                    "use_sim_time:=false", f"params_file:={params}")
    env = launch_env()

    def ros2(*args: str) -> str:
        # --spin-time: discovery on a loaded machine takes longer than the CLI's default half second. A second try:
        # the CLI waits for a service's reply without a time limit (ros2param's spin_until_future_complete), and a
        # request sent as the service is discovered can lose its reply under load (a CI run waited 120 s on
        # `ros2 param describe` after two `ros2 lifecycle set` calls had been answered).
        command = [str(BIN / "ros2"), *args, "--no-daemon", "--spin-time", "5"]
        for attempt in (1, 2):
            try:
                done = subprocess.run(command, env=env, text=True, capture_output=True, timeout=60)
                break
            except subprocess.TimeoutExpired:
                assert attempt == 1, f"ros2 {' '.join(args)}: no answer in 60 s, twice"
        assert done.returncode == 0, f"ros2 {' '.join(args)}: {done.stdout}{done.stderr}"
        return done.stdout

    try:
        wait_for_launched_node(probe, launch)
        # The launch argument, when given, wins over the params file.
        assert probe.parameters(["use_sim_time", "autostart"]) == {"use_sim_time": False, "autostart": False}
        assert probe.lifecycle_state() == "unconfigured"
        assert "unconfigured [1]" in ros2("lifecycle", "get", NODE)
        ros2("lifecycle", "set", NODE, "configure")
        assert probe.lifecycle_state() == "inactive"
        ros2("lifecycle", "set", NODE, "activate")
        assert probe.lifecycle_state() == "active"
        described = ros2("param", "describe", NODE, "mask_threshold")
        assert "mask probability above which a pixel is removed" in described
        assert re.search(r"Min value: 0\.0\s+Max value: 1\.0", described), described
    except BaseException:
        print(launch.output)
        launch.kill()
        raise
    assert launch.interrupt() == 0, launch.output
    assert "Traceback" not in launch.output, launch.output


def test_show_args_lists_every_argument_with_its_description():
    import importlib.util

    spec = importlib.util.spec_from_file_location("remove_launch", LAUNCH_FILE)
    env = launch_env()
    shown = subprocess.run([str(BIN / "ros2"), "launch", "ros_ror", "remove.launch.py", "--show-args"], env=env,
                           text=True, capture_output=True, timeout=120)
    assert shown.returncode == 0, shown.stdout + shown.stderr
    sys.path.insert(0, env["PYTHONPATH"].split(os.pathsep)[0])
    try:
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
    finally:
        sys.path.pop(0)
    for name, (_, description) in {**module.ARGUMENTS, "params_file": (None, "node parameters (YAML)")}.items():
        assert re.search(rf"'{name}':\n\s+{re.escape(description)}\n", shown.stdout), (name, shown.stdout)
