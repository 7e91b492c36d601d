"""The RemovalResult message (with its Target elements): fields, definitions (msg/), and how it is published.

In a colcon workspace the message is generated and `ros_ror.msg.RemovalResult`
imports; the node then publishes it on ~/result. With pip-only ROS (no rosidl
build) it cannot exist, and the node says so and publishes the same fields on
~/result as a std_msgs/String holding JSON, with `"type"` set to
FALLBACK_TYPE so no consumer can mistake it for the real message. Bags never
need generated code: replay registers the type from the .msg file with rosbags.
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass

import numpy as np

from sahm_core.click import parse_click

from .resources import shared_path

MSG_TYPE = "ros_ror/msg/RemovalResult"
MSG_FILE = "msg/RemovalResult.msg"
TARGET_TYPE = "ros_ror/msg/Target"
TARGET_FILE = "msg/Target.msg"
FALLBACK_TYPE = "ros_ror/msg/RemovalResult as JSON in std_msgs/String"
SOURCE_TEXT, SOURCE_CLICK, SOURCE_MASK = "text", "click", "mask"  # Target.source
COMMAND_SEPARATOR = "; "  # RemovalResult.command joins the active commands with it


@dataclass
class TargetFields:
    """Every field of Target."""

    text: str = ""
    source: str = SOURCE_TEXT
    found: bool = False
    score: float = 0.0
    mask_area: float = 0.0
    confirmed: bool = True


@dataclass
class ResultFields:
    """Every field of RemovalResult except the header."""

    command: str = ""
    found: bool = False
    score: float = 0.0
    mask_area: float = 0.0
    mask_pixels: int = 0
    width: int = 0
    height: int = 0
    inference_time: float = 0.0
    latency: float = 0.0
    backend: str = ""
    targets: list[TargetFields] = dataclasses.field(default_factory=list)


def msg_definition(msg_file: str = MSG_FILE) -> str:
    return shared_path(msg_file).read_text()


def rosbags_types() -> dict:
    """RemovalResult and Target for a rosbags Typestore (`typestore.register(rosbags_types())`)."""
    from rosbags.typesys import get_types_from_msg

    return {**get_types_from_msg(msg_definition(TARGET_FILE), TARGET_TYPE),
            **get_types_from_msg(msg_definition(), MSG_TYPE)}


def _message(result_class, target_class, header, fields: ResultFields):
    """A RemovalResult of `result_class` holding `target_class` elements (rclpy's generated classes or rosbags')."""
    targets = [target_class(**dataclasses.asdict(t)) for t in fields.targets]
    return result_class(header=header, **{**dataclasses.asdict(fields), "targets": targets})


def rosbags_message(typestore, header, fields: ResultFields):
    """A RemovalResult of a rosbags Typestore holding `rosbags_types()`, for writing into a bag."""
    return _message(typestore.types[MSG_TYPE], typestore.types[TARGET_TYPE], header, fields)


def generated_message_class():
    """`ros_ror.msg.RemovalResult` when a rosidl build made it, else None."""
    try:
        from ros_ror.msg import RemovalResult
    except ImportError:
        return None
    return RemovalResult


class ResultPublisher:
    """Publishes ResultFields on one topic of a lifecycle node as RemovalResult, or as the JSON fallback."""

    def __init__(self, node, topic: str, qos):
        from std_msgs.msg import String

        self._message_class = generated_message_class()
        self.type_name = MSG_TYPE if self._message_class else FALLBACK_TYPE
        # A lifecycle publisher: silent unless the node is active.
        self._publisher = node.create_lifecycle_publisher(self._message_class or String, topic, qos)

    def publish(self, header, fields: ResultFields) -> None:
        if self._message_class is not None:
            from ros_ror.msg import Target  # generated with RemovalResult

            self._publisher.publish(_message(self._message_class, Target, header, fields))
            return
        from std_msgs.msg import String

        stamp = {"sec": header.stamp.sec, "nanosec": header.stamp.nanosec}
        body = {"type": FALLBACK_TYPE, "header": {"stamp": stamp, "frame_id": header.frame_id},
                **dataclasses.asdict(fields)}
        self._publisher.publish(String(data=json.dumps(body)))


def fields_from_removal(removal, backend: str) -> ResultFields:
    """ResultFields of one `Remover.remove` answer (latency is left for the caller, who knows the origin): a Target
    per command, then one for a given mask that erased pixels (its area: those pixels)."""
    mask_pixels = int(np.count_nonzero(removal.mask))
    height, width = removal.mask.shape
    targets = [TargetFields(t.text, SOURCE_TEXT if parse_click(t.text) is None else SOURCE_CLICK, bool(t.found),
                            float(t.score), float(t.area), bool(t.confirmed)) for t in removal.targets]
    if removal.given_pixels:
        targets.append(TargetFields("", SOURCE_MASK, True, 1.0, removal.given_pixels / removal.mask.size))
    return ResultFields(
        command=COMMAND_SEPARATOR.join(t.text for t in removal.targets),
        found=bool(removal.found),
        score=float(removal.score),
        mask_area=mask_pixels / removal.mask.size,
        mask_pixels=mask_pixels,
        width=width,
        height=height,
        inference_time=float(removal.latency_s),
        backend=backend,
        targets=targets,
    )
