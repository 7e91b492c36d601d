"""Fixtures for the ROS side: an isolated DDS domain, an ONNX-ready random model, a running rclpy context."""

from __future__ import annotations

import gc
import os
import random

import cv2
import numpy as np
import pytest

# A DDS domain of our own, so parallel test runs (or a robot on the network) never hear each other.
os.environ.setdefault("ROS_DOMAIN_ID", str(random.Random(os.getpid()).randint(1, 100)))


COMMAND = "remove the red cup on the left"


@pytest.fixture(autouse=True)
def collect_rclpy_garbage():
    """Finalise a test's leftover rclpy objects as soon as the test is over.

    A closed node, its context, loggers, services and QoS event handlers stay in reference cycles (found by
    gc.DEBUG_SAVEALL after test_lifecycle), so the cycle collector finalises them, inside rclpy and DDS, at
    whatever allocation comes next: in a later test, on any thread, while that test's executor threads are
    inside rclpy. Full-suite runs hung that way: the collector running on the main thread, every other thread
    waiting on a lock. Collecting here, after the test's own fixtures are torn down, finalises them while nothing
    of theirs runs.
    """
    yield
    gc.collect()


@pytest.fixture(scope="module", autouse=True)
def collect_rclpy_garbage_of_module():
    """The same for the module-scoped nodes, torn down after the module's last test."""
    yield
    gc.collect()


def synthetic_frame(height: int = 48, width: int = 64, seed: int = 0) -> np.ndarray:
    """A small synthetic camera frame (RGB uint8)."""
    from sahm_core.data.synthetic import render_sample

    return cv2.resize(render_sample(seed, size=64).image, (width, height), interpolation=cv2.INTER_AREA)


@pytest.fixture(scope="session")
def scene():
    return synthetic_frame


@pytest.fixture(scope="session")
def onnx_model_dir(nano_model_dir):
    """nano_model_dir with its ONNX graph exported into the runtime's cache (once per weights file)."""
    from sahm_core.runtime import Remover

    Remover.load(nano_model_dir, backend="onnxruntime")
    return nano_model_dir


@pytest.fixture(scope="session")
def permissive_thresholds(onnx_model_dir):
    """Thresholds under which the random-weight model removes about half of a test frame.

    No score or area floor, and the mask threshold bisected to the median mask probability,
    so removal really happens and "outside the mask" is a real region in every check.
    """
    from sahm_core.runtime import Remover

    remover = Remover.load(onnx_model_dir, backend="onnxruntime", min_score=0.0, min_mask_area=0.0)
    remover.set_command(COMMAND)
    frame = synthetic_frame(seed=3)
    low, high = 0.0, 1.0
    for _ in range(10):
        remover.mask_threshold = (low + high) / 2
        area = np.count_nonzero(remover.remove(frame).mask) / (frame.shape[0] * frame.shape[1])
        low, high = (remover.mask_threshold, high) if area > 0.5 else (low, remover.mask_threshold)
    return {"mask_threshold": round((low + high) / 2, 6), "min_score": 0.0, "min_mask_area": 0.0}


@pytest.fixture(scope="session")
def reference_remover(onnx_model_dir, permissive_thresholds):
    """A Remover outside any ROS code: the independent reference for node and replay outputs."""
    from sahm_core.runtime import Remover

    return Remover.load(onnx_model_dir, backend="onnxruntime", **permissive_thresholds)
