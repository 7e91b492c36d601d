"""RemovalResult.msg parses (rosbags and rosidl_adapter); the launch file and params file agree with the node."""

from __future__ import annotations

import ast
import dataclasses
import importlib.util
from pathlib import Path

import pytest
import yaml

from ros_ror.remove_node import NODE_NAME, PARAMETERS
from ros_ror.result import MSG_TYPE, ResultFields, msg_definition, rosbags_types

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


def test_params_file_names_only_declared_parameters_with_matching_types():
    params = yaml.safe_load((ROOT / "config/remove.yaml").read_text())[NODE_NAME]["ros__parameters"]
    assert set(params) == set(PARAMETERS)
    for name, value in params.items():
        assert type(value) is type(PARAMETERS[name].default), name  # ROS parameters do not coerce int <-> double


def _launch_source() -> ast.Module:
    return ast.parse((ROOT / "launch/remove.launch.py").read_text())


def test_launch_file_declares_the_arguments_and_loads_the_params_file():
    tree = _launch_source()
    arguments = next(n.value for n in ast.walk(tree) if isinstance(n, ast.Assign) and getattr(n.targets[0], "id", "") == "ARGUMENTS")
    names = {k.value for k in arguments.keys}
    assert {"image_topic", "command_topic", "model_path", "backend", "use_sim_time"} <= names
    source = ast.unparse(tree)
    assert "'params_file'" in source and "'remove.yaml'" in source and "'config'" in source
    assert "FASTDDS_BUILTIN_TRANSPORTS" in source and "'LARGE_DATA'" in source
    assert f"name='{NODE_NAME}'" in source and "executable='remove_node'" in source
    assert "('~/image'" in source and "('~/command'" in source
    setup = (ROOT / "setup.py").read_text()
    assert "remove_node = ros_ror.remove_node:main" in setup  # the executable the launch file starts


@pytest.mark.skipif(importlib.util.find_spec("launch_ros") is None,
                    reason="launch_ros is not installable from PyPI here (DESIGN.md, Facts); the file is checked by reading it")
def test_launch_description_builds():
    spec = importlib.util.spec_from_file_location("remove_launch", ROOT / "launch/remove.launch.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    description = module.generate_launch_description()
    declared = {a.name for a in description.get_launch_arguments()}
    assert {"image_topic", "command_topic", "model_path", "backend", "use_sim_time", "params_file"} <= declared
