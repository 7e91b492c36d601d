"""A RemoveNode under real rclpy pub/sub, and the tester node that talks to it (shared by the node tests).

The node runs in the test process on its own executor thread, with real DDS in between.
"""

from __future__ import annotations

import json
import threading
import time

import numpy as np
import rclpy
from geometry_msgs.msg import PointStamped
from rclpy.context import Context
from rclpy.executors import MultiThreadedExecutor, SingleThreadedExecutor
from rclpy.parameter import Parameter
from rclpy.qos import HistoryPolicy, QoSProfile, ReliabilityPolicy

from ros_ror.remove_node import NODE_NAME, RemoveNode
from ros_ror.result import generated_message_class

MAX_PIXELS = 1_000_000
FUZZ_DEPTH = 3000
COMMAND = "remove the red cup on the left"  # as in conftest.py


class Harness:
    """The node under test, a tester node with publishers / subscribers, and an executor spinning both."""

    def __init__(self, model_dir, thresholds: dict, namespace: str = "", **parameters):
        """parameters: more node parameters; with compressed_input=True, ~/cleaned/image/compressed stands in for
        ~/cleaned/image and `exchange` takes sensor_msgs/CompressedImage frames. Harnesses alive at the same time
        need their own `namespace` ("/a"): in one process they share the DDS topics, and a node hearing another
        harness's command would answer its frames too."""
        from sensor_msgs.msg import CompressedImage, Image
        from std_msgs.msg import String

        self.context = Context()
        rclpy.init(context=self.context)
        base = f"{namespace}/{NODE_NAME}"
        image_topic = f"{base}/image"
        overrides = [
            Parameter("model_path", value=str(model_dir)),
            Parameter("backend", value="onnxruntime"),
            Parameter("max_frame_pixels", value=MAX_PIXELS),
            *(Parameter(k, value=v) for k, v in {**thresholds, **parameters}.items()),
            # Reliable, deep input queue: in this test every published message must reach the node,
            # so drops can be counted.
            Parameter(f"qos_overrides.{image_topic}.subscription.reliability", value="reliable"),
            Parameter(f"qos_overrides.{image_topic}.subscription.depth", value=FUZZ_DEPTH),
            Parameter(f"qos_overrides.{image_topic}/compressed.subscription.reliability", value="reliable"),
            Parameter(f"qos_overrides.{image_topic}/compressed.subscription.depth", value=FUZZ_DEPTH),
            Parameter(f"qos_overrides.{base}/command.subscription.depth", value=FUZZ_DEPTH),
        ]
        self.node = RemoveNode(context=self.context, parameter_overrides=overrides, namespace=namespace or None)
        self.tester = rclpy.create_node("ros_ror_tester", context=self.context, namespace=namespace or None)
        deep = QoSProfile(depth=FUZZ_DEPTH, reliability=ReliabilityPolicy.RELIABLE, history=HistoryPolicy.KEEP_LAST)
        self.compressed = bool(parameters.get("compressed_input"))
        frame_type, cleaned_topic = ((CompressedImage, "cleaned/image/compressed") if self.compressed
                                     else (Image, "cleaned/image"))
        self.image_pub = self.tester.create_publisher(
            frame_type, f"{image_topic}/compressed" if self.compressed else image_topic, deep
        )
        self.command_pub = self.tester.create_publisher(String, f"{base}/command", deep)
        self.erase_pub = self.tester.create_publisher(Image, f"{base}/erase_mask", deep)
        self.click_pub = self.tester.create_publisher(PointStamped, f"{base}/click", deep)
        self.received: dict[str, dict] = {"cleaned": {}, "mask": {}, "result": {}, "candidate_mask": {},
                                          "candidate_overlay": {}}
        self.lock = threading.Lock()
        self.tester.create_subscription(frame_type, f"{base}/{cleaned_topic}",
                                        lambda m: self._store("cleaned", m), 50)
        self.tester.create_subscription(Image, f"{base}/mask", lambda m: self._store("mask", m), 50)
        for kind in ("candidate_mask", "candidate_overlay"):
            self.tester.create_subscription(Image, f"{base}/{kind}", lambda m, k=kind: self._store(k, m), 50)
        from std_srvs.srv import SetBool

        self.confirm_client = self.tester.create_client(SetBool, f"{base}/confirm")
        result_class = generated_message_class() or String
        self.tester.create_subscription(result_class, f"{base}/result", lambda m: self._store("result", m), 50)
        self.executor = MultiThreadedExecutor(num_threads=4, context=self.context)
        self.executor.add_node(self.node)
        self.executor.add_node(self.tester)
        self.thread = threading.Thread(target=self.executor.spin, daemon=True)
        self.thread.start()
        if self.node.get_parameter("autostart").value:
            assert self.node.autostarted.wait(timeout=600), "autostart never finished"
        wait_for(lambda: self.image_pub.get_subscription_count() > 0 and self.command_pub.get_subscription_count() > 0
                 and self.erase_pub.get_subscription_count() > 0 and self.click_pub.get_subscription_count() > 0
                 and all(self.tester.count_publishers(f"{base}/{t}") > 0
                         for t in (cleaned_topic, "mask", "result")))
        self.sent = 0

    def _store(self, kind, msg):
        with self.lock:
            self.received[kind][_stamp_key(msg)] = msg

    def diagnostics(self) -> dict[str, str]:
        return {kv.key: kv.value for kv in self.node.diagnostics().values}

    def command(self, text: str, expect_active: str) -> None:
        from std_msgs.msg import String

        self.command_pub.publish(String(data=text))
        wait_for(lambda: self.diagnostics()["command"] == expect_active)

    def click(self, u: float, v: float, stamp: tuple[int, int] = (0, 0)) -> None:
        """Publish a click on pixel (u, v), as rqt_image_view does (unstamped unless `stamp` is given)."""
        msg = PointStamped()
        msg.header.stamp.sec, msg.header.stamp.nanosec = stamp
        msg.point.x, msg.point.y = float(u), float(v)
        self.click_pub.publish(msg)

    def confirm(self, keep: bool):
        """Call ~/confirm (the node is in this process: no discovery race) and return its response."""
        from std_srvs.srv import SetBool

        assert self.confirm_client.wait_for_service(timeout_sec=30)
        future = self.confirm_client.call_async(SetBool.Request(data=keep))
        wait_for(future.done, 30)
        return future.result()

    def candidates(self, key, timeout: float = 30.0) -> tuple:
        """The candidate mask and overlay published for the frame stamped `key` (another pair of topics: they may
        come after the frame's own outputs)."""
        kinds = ("candidate_mask", "candidate_overlay")
        wait_for(lambda: all(key in self.received[k] for k in kinds), timeout)
        with self.lock:
            return tuple(self.received[k].pop(key) for k in kinds)

    def publish(self, msg) -> tuple[int, int]:
        """Stamp a frame uniquely and publish it; returns its stamp key."""
        self.sent += 1
        msg.header.stamp.sec, msg.header.stamp.nanosec = 1000 + self.sent, 123
        msg.header.frame_id = f"camera_{self.sent}"
        self.image_pub.publish(msg)
        return _stamp_key(msg)

    def next_stamp(self) -> tuple[int, int]:
        """The stamp `publish` gives the next frame."""
        return 1000 + self.sent + 1, 123

    def exchange(self, msg, timeout: float = 60.0):
        """Publish one frame; its cleaned image, mask and result (matched by stamp)."""
        key = self.publish(msg)
        wait_for(lambda: all(key in self.received[k] for k in ("cleaned", "mask", "result")), timeout)
        with self.lock:
            return tuple(self.received[k].pop(key) for k in ("cleaned", "mask", "result"))

    def close(self):
        self.executor.shutdown()
        self.thread.join()
        self.node.destroy_node()
        self.tester.destroy_node()
        rclpy.shutdown(context=self.context)


class Probe:
    """A test node in its own context, for a node in another process: parameter and lifecycle queries, pub/sub,
    graph queries. The executor spins on its own thread."""

    def __init__(self, name: str):
        self.context = Context()
        rclpy.init(context=self.context)
        self.node = rclpy.create_node(name, context=self.context)
        self.executor = SingleThreadedExecutor(context=self.context)
        self.executor.add_node(self.node)
        self.thread = threading.Thread(target=self.executor.spin, daemon=True)
        self.thread.start()

    def call(self, srv_type, name: str, request, timeout: float = 60.0, resend_after: float = 10.0):
        """An idempotent query. The service can be discovered before it has matched this client's response
        reader; DDS then drops the response (rmw_fastrtps waits 100 ms for the match), so a request unanswered
        after `resend_after` seconds is sent again."""
        client = self.node.create_client(srv_type, name)
        try:
            assert client.wait_for_service(timeout_sec=timeout), f"service {name} never appeared"
            deadline = time.monotonic() + timeout
            while True:
                future = client.call_async(request)
                try:
                    wait_for(future.done, min(resend_after, max(deadline - time.monotonic(), 0.0)))
                    return future.result()
                except AssertionError:
                    client.remove_pending_request(future)
                    if time.monotonic() >= deadline:
                        raise AssertionError(f"{name} never answered in {timeout} s") from None
        finally:
            self.node.destroy_client(client)

    def parameters(self, names: list[str]) -> dict:
        from rcl_interfaces.srv import GetParameters
        from rclpy.parameter import parameter_value_to_python

        values = self.call(GetParameters, f"/{NODE_NAME}/get_parameters", GetParameters.Request(names=names)).values
        return {name: parameter_value_to_python(v) for name, v in zip(names, values)}

    def lifecycle_state(self) -> str:
        from lifecycle_msgs.srv import GetState

        return self.call(GetState, f"/{NODE_NAME}/get_state", GetState.Request()).current_state.label

    def subscribed_topics(self) -> set[str]:
        from rclpy.node import NodeNameNonExistentError

        try:
            names = self.node.get_subscriber_names_and_types_by_node(NODE_NAME, "/")
        except NodeNameNonExistentError:  # its publishers were seen first: the graph fills in over discovery
            return set()
        return {name for name, _ in names}

    def close(self):
        self.executor.shutdown()
        self.thread.join()
        self.node.destroy_node()
        rclpy.shutdown(context=self.context)


def _stamp_key(msg):
    header = msg.header if hasattr(msg, "header") else None
    if header is None:  # JSON fallback result
        stamp = json.loads(msg.data)["header"]["stamp"]
        return stamp["sec"], stamp["nanosec"]
    return header.stamp.sec, header.stamp.nanosec


def result_dict(msg) -> dict:
    """A RemovalResult, or its JSON fallback, as the fallback's dict (targets as a list of dicts)."""
    if hasattr(msg, "data"):
        return json.loads(msg.data)
    fields = {k: getattr(msg, k)
              for k in ("command", "found", "score", "mask_area", "mask_pixels", "width", "height", "backend")}
    target_fields = ("text", "source", "found", "score", "mask_area", "confirmed")
    return {**fields, "targets": [{k: getattr(t, k) for k in target_fields} for t in msg.targets]}


def wait_for(predicate, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"condition not met within {timeout} s")
        time.sleep(0.02)



def image_msg(rgb: np.ndarray, encoding: str, step_pad: int = 0, alpha: np.ndarray | None = None):
    """A sensor_msgs/Image built by hand from RGB: channel order per encoding, `step_pad` zero bytes after each row."""
    from sensor_msgs.msg import Image

    height, width, _ = rgb.shape
    if encoding == "mono8":
        pixels = rgb[:, :, :1]
    else:
        pixels = rgb[:, :, ::-1] if encoding.startswith("bgr") else rgb
        if encoding.endswith("a8"):
            pixels = np.concatenate([pixels, alpha[:, :, None]], axis=2)
    rows = pixels.reshape(height, -1)
    padded = np.concatenate([rows, np.zeros((height, step_pad), np.uint8)], axis=1)
    return Image(height=height, width=width, encoding=encoding, step=padded.shape[1], data=padded.tobytes())


def pixels_of(msg) -> np.ndarray:
    """(H, W, C) view of a tightly packed output image."""
    channels = msg.step // msg.width
    assert msg.step == msg.width * channels
    return np.frombuffer(bytes(msg.data), np.uint8).reshape(msg.height, msg.width, channels)


