"""Node benchmark: a 640x480 camera stream at 30 Hz through `ros_ror_remove` in its own process, over real DDS.

    ros-ror bench --frames 10000 --model models/nano --backend onnxruntime

Publishes stamped frames (best effort, as a camera does) with a command active,
receives the cleaned stream, and reports end-to-end latency (publish stamp ->
receipt, one clock), output rate, the share of frames that never came back
(dropped as stale by the node, or lost in transport), the node's own drop
counters, and the node process's resident memory after 1k frames and at the end.
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

NODE = "ros_ror_bench_node"


def rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError(f"no VmRSS for pid {pid}")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--frames", type=int, default=1000, help="frames to publish (the issue asks for 10000)")
    parser.add_argument("--model", default=None, help="model dir / .onnx (default: bundled models/nano)")
    parser.add_argument("--backend", default="onnxruntime", choices=("auto", "tensorrt", "onnxruntime", "torch"))
    parser.add_argument("--fps", type=float, default=30.0)
    parser.add_argument("--size", default="640x480", help="WIDTHxHEIGHT")
    parser.add_argument("--command", default="remove the red cup on the left")
    parser.add_argument("--rss-every", type=int, default=1000, help="sample the node's RSS every N frames")
    parser.add_argument("--json", default=None, help="also write the figures to this file")


def main(args: argparse.Namespace) -> int:
    import rclpy
    from diagnostic_msgs.msg import DiagnosticArray
    from rclpy.executors import SingleThreadedExecutor
    from rclpy.qos import QoSProfile, ReliabilityPolicy, qos_profile_sensor_data
    from sensor_msgs.msg import Image
    from std_msgs.msg import String

    from sahm_core.data.synthetic import render_sample

    from .image_conversions import encode_image
    from .resources import bundled_model_dir

    width, height = (int(v) for v in args.size.lower().split("x"))
    model = args.model or str(bundled_model_dir())
    env = dict(os.environ, FASTDDS_BUILTIN_TRANSPORTS=os.environ.get("FASTDDS_BUILTIN_TRANSPORTS", "LARGE_DATA"))
    node_cmd = [sys.executable, "-m", "ros_ror.remove_node", "--ros-args", "-r", f"__node:={NODE}",
                "-p", f"model_path:={model}", "-p", f"backend:={args.backend}", "-p", "preload:=true", "--log-level", "warn"]
    process = subprocess.Popen(node_cmd, env=env)
    rclpy.init()
    bench = rclpy.create_node("ros_ror_bench_driver")
    latencies: list[float] = []
    received_at: list[float] = []
    diagnostics: dict[str, str] = {}
    lock = threading.Lock()

    def on_cleaned(msg: Image) -> None:
        now = time.time()
        with lock:
            latencies.append(now - (msg.header.stamp.sec + msg.header.stamp.nanosec * 1e-9))
            received_at.append(now)

    def on_diagnostics(msg: DiagnosticArray) -> None:
        for status in msg.status:
            if status.name.startswith(NODE):
                diagnostics.clear()
                diagnostics.update({kv.key: kv.value for kv in status.values})

    image_pub = bench.create_publisher(Image, f"/{NODE}/image", qos_profile_sensor_data)
    command_pub = bench.create_publisher(String, f"/{NODE}/command", QoSProfile(depth=10, reliability=ReliabilityPolicy.RELIABLE))
    bench.create_subscription(Image, f"/{NODE}/cleaned_image", on_cleaned, QoSProfile(depth=10, reliability=ReliabilityPolicy.RELIABLE))
    bench.create_subscription(DiagnosticArray, "/diagnostics", on_diagnostics, 10)
    executor = SingleThreadedExecutor()
    executor.add_node(bench)
    spinner = threading.Thread(target=executor.spin, daemon=True)
    spinner.start()
    try:
        deadline = time.monotonic() + 300
        while diagnostics.get("model_state") != "loaded" or image_pub.get_subscription_count() == 0:
            if process.poll() is not None or time.monotonic() > deadline:
                print(f"error: node did not become ready (state {diagnostics.get('model_state')!r}, last error {diagnostics.get('last_error')!r})", file=sys.stderr)
                return 1
            time.sleep(0.2)
        command_pub.publish(String(data=args.command))
        time.sleep(1.0)
        scene = render_sample(4, size=512, negative_fraction=0.0).image
        import cv2

        frame = cv2.resize(scene, (width, height), interpolation=cv2.INTER_AREA)
        data, step = encode_image(frame, "rgb8")
        msg = Image(height=height, width=width, encoding="rgb8", step=step, data=data)
        rss = [(0, rss_mib(process.pid))]
        period = 1.0 / args.fps
        start = time.monotonic()
        for i in range(args.frames):
            delay = start + i * period - time.monotonic()
            if delay > 0:
                time.sleep(delay)
            now = time.time()
            msg.header.stamp.sec, msg.header.stamp.nanosec = int(now), int((now % 1) * 1e9)
            image_pub.publish(msg)
            if (i + 1) % args.rss_every == 0:
                rss.append((i + 1, rss_mib(process.pid)))
        time.sleep(3.0)  # let the last answers and a diagnostics message arrive
        elapsed = time.monotonic() - start
        with lock:
            lat = np.array(latencies)
            got = len(received_at)
            span = received_at[-1] - received_at[0] if got > 1 else 0.0
        figures = {
            "frames_sent": args.frames, "size": f"{width}x{height}", "fps_sent": args.fps, "backend": args.backend,
            "model": model, "frames_received": got,
            "drop_rate": 1 - got / args.frames,
            "output_rate_hz": (got - 1) / span if span > 0 else 0.0,
            "latency_ms_p50": float(np.percentile(lat, 50) * 1e3) if got else None,
            "latency_ms_p99": float(np.percentile(lat, 99) * 1e3) if got else None,
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
        process.terminate()
        process.wait(timeout=20)
