"""RemovalResult.msg parses (rosbags and rosidl_adapter); the params file agrees with the node.

The launch file is checked by running it: test_launch.py.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import yaml

from ros_ror.remove_node import NODE_NAME, PARAMETERS
from ros_ror.result import MSG_TYPE, ResultFields, msg_definition, rosbags_types
from sahm_core.found import FoundRule
from sahm_core.stream import StreamConfig

ROOT = Path(__file__).resolve().parents[2]
EXPECTED_FIELDS = {
    "header": "std_msgs/msg/Header", "command": "string", "found": "bool", "score": "float32", "mask_area": "float32",
    "mask_pixels": "uint32", "width": "uint32", "height": "uint32", "inference_time": "float32", "latency": "float32",
    "backend": "string",
}


def test_msg_parses_with_rosbags_and_has_the_expected_fields():
    types = rosbags_types()
    _, fields = types[MSG_TYPE]
    parsed = {name: (desc[1] if desc[0].name == "NAME" else desc[1][0]) for name, desc in fields}
    assert parsed == EXPECTED_FIELDS


def test_msg_parses_with_rosidl_adapter():
    from rosidl_adapter.parser import parse_message_string

    spec = parse_message_string("ros_ror", "RemovalResult", msg_definition())
    parsed = {f.name: (f"{f.type.pkg_name}/msg/{f.type.type}" if f.type.pkg_name else f.type.type) for f in spec.fields}
    assert parsed == EXPECTED_FIELDS


def test_result_fields_match_the_message():
    assert [f.name for f in dataclasses.fields(ResultFields)] == [k for k in EXPECTED_FIELDS if k != "header"]


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
