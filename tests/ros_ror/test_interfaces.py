"""RemovalResult.msg parses (rosbags and rosidl_adapter); the params file agrees with the node.

The launch file is checked by running it: test_launch.py.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import yaml

from ros_ror.remove_node import NODE_NAME, PARAMETERS
from ros_ror.result import (
    MSG_FILE,
    MSG_TYPE,
    TARGET_FILE,
    TARGET_TYPE,
    ResultFields,
    TargetFields,
    msg_definition,
    rosbags_types,
)
from sahm_core.found import FoundRule
from sahm_core.stream import StreamConfig

ROOT = Path(__file__).resolve().parents[2]
EXPECTED_FIELDS = {
    "header": "std_msgs/msg/Header", "command": "string", "found": "bool", "score": "float32", "mask_area": "float32",
    "mask_pixels": "uint32", "width": "uint32", "height": "uint32", "inference_time": "float32", "latency": "float32",
    "backend": "string", "targets": "ros_ror/msg/Target[]",
}
TARGET_FIELDS = {"text": "string", "source": "string", "found": "bool", "score": "float32", "mask_area": "float32",
                 "confirmed": "bool"}


def _rosbags_field(desc) -> str:
    kind, value = desc
    if kind.name == "SEQUENCE":
        return _rosbags_field(value[0]) + "[]"
    return value if kind.name == "NAME" else value[0]


def test_msgs_parse_with_rosbags_and_have_the_expected_fields():
    types = rosbags_types()
    for msg_type, expected in ((MSG_TYPE, EXPECTED_FIELDS), (TARGET_TYPE, TARGET_FIELDS)):
        assert {name: _rosbags_field(desc) for name, desc in types[msg_type][1]} == expected


def test_msgs_parse_with_rosidl_adapter():
    from rosidl_adapter.parser import parse_message_string

    for msg_file, expected in ((MSG_FILE, EXPECTED_FIELDS), (TARGET_FILE, TARGET_FIELDS)):
        spec = parse_message_string("ros_ror", Path(msg_file).stem, msg_definition(msg_file))
        parsed = {f.name: (f"{f.type.pkg_name}/msg/{f.type.type}" if f.type.pkg_name else f.type.type)
                  + ("[]" if f.type.is_array else "") for f in spec.fields}
        assert parsed == expected


def test_result_fields_match_the_messages():
    assert [f.name for f in dataclasses.fields(ResultFields)] == [k for k in EXPECTED_FIELDS if k != "header"]
    assert [f.name for f in dataclasses.fields(TargetFields)] == list(TARGET_FIELDS)


def test_params_file_names_only_declared_parameters_with_matching_types_and_values():
    params = yaml.safe_load((ROOT / "config/remove.yaml").read_text())[NODE_NAME]["ros__parameters"]
    assert set(params) == set(PARAMETERS)
    for name, value in params.items():
        assert type(value) is type(PARAMETERS[name].default), name  # ROS parameters do not coerce int <-> double
        # the file documents the defaults: a value that differs is a second source (e.g. of the found rule)
        assert value == PARAMETERS[name].default, name


def test_found_rule_parameters_are_sahm_cores_rule():
    rule = FoundRule()
    for field in dataclasses.fields(FoundRule):
        assert PARAMETERS[field.name].default == getattr(rule, field.name), field.name


def test_stream_parameters_are_sahm_cores_stream_config():
    assert PARAMETERS["stream_mode"].default is False  # per-frame unless asked: the behaviour every figure so far had
    assert PARAMETERS["stream_strength"].default == StreamConfig().strength
