"""Every command that runs a model takes the same --backend names, the ones the runtime and the node accept."""

import argparse

import pytest

from ros_ror import bench as ros_bench
from ros_ror import demo, replay
from sahm_core import eval_video, runtime
from sahm_core.backends import BACKEND_CHOICES, BACKENDS

COMMANDS = {"sahm remove": runtime, "sahm eval-video": eval_video, "ros-ror replay": replay, "ros-ror demo": demo,
            "ros-ror bench": ros_bench}


def backend_action(module) -> argparse.Action:
    parser = argparse.ArgumentParser()
    module.add_arguments(parser)
    return next(a for a in parser._actions if "--backend" in a.option_strings)


@pytest.mark.parametrize("command", COMMANDS)
def test_every_command_offers_the_runtime_backends(command):
    action = backend_action(COMMANDS[command])
    assert tuple(action.choices) == BACKEND_CHOICES == ("auto", "tensorrt", "onnxruntime", "torch")
    assert action.default in BACKEND_CHOICES


def test_the_runtime_rejects_a_name_outside_the_list():
    assert set(BACKENDS) < set(BACKEND_CHOICES)
    with pytest.raises(ValueError, match="unknown backend 'gpu'"):
        runtime.load_backend(None, "gpu", "cpu")
