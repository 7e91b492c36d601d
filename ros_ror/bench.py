"""Node benchmark: a 640x480 camera stream at 30 Hz through `ros_ror_remove` in its own process, over real DDS.

    ros-ror bench --frames 10000 --model models/nano --backend onnxruntime
    ros-ror bench --frames 300 --camera-transports DEFAULT --node-transports LARGE_DATA   # a mixed system

Starts the node (autostart: configure + warm-up + activate), streams stamped
frames (best effort, as a camera does), says a command one second in and a
second command half-way, and reports: delivery (cleaned frames back / frames
sent), end-to-end latency (publish stamp -> receipt, one clock), output rate, the
time from each command to its first removed frame, the node's own drop counters,
and its resident memory. The camera side and the node can run on different Fast
DDS transports (FASTDDS_BUILTIN_TRANSPORTS), to measure what a mixed system gets.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np

from sahm_core.backends import add_backend_arguments

NODE = "ros_ror_bench_node"
COMMANDS = ("remove the red cup on the left", "remove the blue box")
READY_LINE = "active: removing on command"  # what the node logs when activated
TRANSPORTS = ("DEFAULT", "LARGE_DATA", "SHM", "UDPv4")  # Fast DDS builtin transport sets


def rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError(f"no VmRSS for pid {pid}")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    environment = os.environ.get("FASTDDS_BUILTIN_TRANSPORTS", "DEFAULT")
    parser.add_argument("--frames", type=int, default=1000, help="frames to publish (the issue asks for 10000)")
    parser.add_argument("--model", default=None, help="model dir / .onnx (default: bundled models/nano)")
    add_backend_arguments(parser, default="onnxruntime", device=False)
    parser.add_argument("--fps", type=float, default=30.0)
    parser.add_argument("--size", default="640x480", help="WIDTHxHEIGHT")
    parser.add_argument("--rss-every", type=int, default=1000, help="sample the node's RSS every N frames")
    parser.add_argument("--camera-transports", default=environment, choices=TRANSPORTS,
                        help="FASTDDS_BUILTIN_TRANSPORTS of the camera side (default: the environment's)")
    parser.add_argument("--node-transports", default=environment, choices=TRANSPORTS,
                        help="FASTDDS_BUILTIN_TRANSPORTS of the node (default: the environment's)")
    parser.add_argument("--settle", type=float, default=1.0, help="seconds of stream before the first command")
    parser.add_argument("--json", default=None, help="also write the figures to this file")


class _NodeProcess:
    """The node in a subprocess on its own transports; its log is read on a thread to see it become active."""

    def __init__(self, model: str, backend: str, transports: str):
        command = [sys.executable, "-m", "ros_ror.remove_node", "--ros-args", "-r", f"__node:={NODE}",
                   "-p", f"model_path:={model}", "-p", f"backend:={backend}"]
        env = dict(os.environ, FASTDDS_BUILTIN_TRANSPORTS=transports)
        self.process = subprocess.Popen(command, env=env, text=True, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
        self.active = threading.Event()
        self.log: list[str] = []
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        for line in self.process.stdout:
            self.log.append(line)
            if READY_LINE in line:
                self.active.set()

    def stop(self) -> None:
        self.process.terminate()
        try:
            self.process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            self.process.kill()


def main(args: argparse.Namespace) -> int:
    import cv2

    width, height = (int(v) for v in args.size.lower().split("x"))
    # Fast DDS reads the variable when this process's participant is created: set before rclpy starts.
    os.environ["FASTDDS_BUILTIN_TRANSPORTS"] = args.camera_transports
    import rclpy
    from diagnostic_msgs.msg import DiagnosticArray
    from rclpy.executors import SingleThreadedExecutor
    from rclpy.qos import QoSProfile, ReliabilityPolicy, qos_profile_sensor_data
    from sensor_msgs.msg import Image
    from std_msgs.msg import String

    from sahm_core.data.synthetic import render_sample

    from .image_conversions import encode_image
    from .resources import bundled_model_dir
    from .result import generated_message_class
    from .topics import CLEANED_IMAGE, RESULT

    model = args.model or str(bundled_model_dir())
    node = _NodeProcess(model, args.backend, args.node_transports)
    rclpy.init()
    bench = rclpy.create_node("ros_ror_bench_driver")
    latencies: list[float] = []
    received_at: list[float] = []
    first_answer: dict[str, float] = {}  # command -> receipt time of its first result
    diagnostics: dict[str, str] = {}
    lock = threading.Lock()

    def on_cleaned(msg: Image) -> None:
        now = time.time()
        with lock:
            latencies.append(now - (msg.header.stamp.sec + msg.header.stamp.nanosec * 1e-9))
            received_at.append(now)

    def on_result(msg) -> None:
        command = json.loads(msg.data)["command"] if isinstance(msg, String) else msg.command
        first_answer.setdefault(command, time.monotonic())

    def on_diagnostics(msg: DiagnosticArray) -> None:
        for status in msg.status:
            if status.name.startswith(NODE):
                diagnostics.clear()
                diagnostics.update({kv.key: kv.value for kv in status.values})

    reliable = QoSProfile(depth=10, reliability=ReliabilityPolicy.RELIABLE)
    image_pub = bench.create_publisher(Image, f"/{NODE}/image", qos_profile_sensor_data)
    command_pub = bench.create_publisher(String, f"/{NODE}/command", reliable)
    bench.create_subscription(Image, f"/{NODE}/{CLEANED_IMAGE}", on_cleaned, reliable)
    bench.create_subscription(generated_message_class() or String, f"/{NODE}/{RESULT}", on_result, reliable)
    bench.create_subscription(DiagnosticArray, "/diagnostics", on_diagnostics, 10)
    executor = SingleThreadedExecutor()
    executor.add_node(bench)
    spinner = threading.Thread(target=executor.spin, daemon=True)
    spinner.start()
    try:
        if not node.active.wait(timeout=300) or node.process.poll() is not None:
            print("error: the node did not become active:\n" + "".join(node.log[-20:]), file=sys.stderr)
            return 1
        deadline = time.monotonic() + 10  # discovery; on mismatched transports it never comes, and that is measured
        while image_pub.get_subscription_count() == 0 and time.monotonic() < deadline:
            time.sleep(0.1)
        matched = image_pub.get_subscription_count() > 0
        scene = render_sample(4, size=512, negative_fraction=0.0).image
        frame = cv2.resize(scene, (width, height), interpolation=cv2.INTER_AREA)
        data, step = encode_image(frame, "rgb8")
        msg = Image(height=height, width=width, encoding="rgb8", step=step, data=data)
        first = round(args.settle * args.fps)
        second = max(first + round(args.fps), args.frames // 2)  # at least a second after the first
        said_at = {first: COMMANDS[0], second: COMMANDS[1]}
        command_sent: dict[str, float] = {}
        rss = [(0, rss_mib(node.process.pid))]
        period = 1.0 / args.fps
        start = time.monotonic()
        for i in range(args.frames):
            delay = start + i * period - time.monotonic()
            if delay > 0:
                time.sleep(delay)
            if i in said_at:
                command_sent[said_at[i]] = time.monotonic()
                command_pub.publish(String(data=said_at[i]))
            now = time.time()
            msg.header.stamp.sec, msg.header.stamp.nanosec = int(now), int((now % 1) * 1e9)
            image_pub.publish(msg)
            if (i + 1) % args.rss_every == 0:
                rss.append((i + 1, rss_mib(node.process.pid)))
        time.sleep(3.0)  # let the last answers and a diagnostics message arrive
        elapsed = time.monotonic() - start
        with lock:
            lat = np.array(latencies)
            got = len(received_at)
            span = received_at[-1] - received_at[0] if got > 1 else 0.0
        figures = {
            "frames_sent": args.frames, "size": f"{width}x{height}", "fps_sent": args.fps, "backend": args.backend,
            "model": model, "camera_transports": args.camera_transports, "node_transports": args.node_transports,
            "discovered": matched, "frames_received": got, "delivery": got / args.frames,
            "delivered_to_node": int(diagnostics["frames_in"]) / args.frames if diagnostics else None,
            "output_rate_hz": (got - 1) / span if span > 0 else 0.0,
            "latency_ms_p50": float(np.percentile(lat, 50) * 1e3) if got else None,
            "latency_ms_p99": float(np.percentile(lat, 99) * 1e3) if got else None,
            **{f"command_{n}_to_first_removed_frame_ms": (first_answer[c] - command_sent[c]) * 1e3
               if c in first_answer and c in command_sent else None for n, c in enumerate(COMMANDS, 1)},
            "inference_ms_mean_node": diagnostics.get("inference_ms_mean"),
            "node_frames_in": diagnostics.get("frames_in"), "node_frames_out": diagnostics.get("frames_out"),
            "node_dropped": {k: v for k, v in diagnostics.items() if k.startswith("dropped_")},
            "rss_mib": rss, "wall_s": elapsed, "cpu_count": os.cpu_count(),
        }
        print(json.dumps(figures, indent=2))
        if args.json:
            Path(args.json).write_text(json.dumps(figures, indent=2))
        return 0
    finally:
        executor.shutdown()
        bench.destroy_node()
        rclpy.shutdown()
        node.stop()
