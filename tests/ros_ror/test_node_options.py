"""Node options through real topics: compressed frames, pass_through=false, max_fps, command_timeout on sim time.

Each option is checked by what does (or does not) come back on the node's topics and by its diagnostics
counters; outputs are compared with a Remover called directly on the pixels the node decoded.
"""

from __future__ import annotations

import time

import cv2
import numpy as np
import pytest
from node_harness import COMMAND, Harness, image_msg, pixels_of, result_dict, wait_for
from rclpy.parameter import Parameter


def compressed_msg(rgb: np.ndarray, fmt: str):
    from sensor_msgs.msg import CompressedImage

    ok, buffer = cv2.imencode(".png" if fmt == "png" else ".jpg", np.ascontiguousarray(rgb[:, :, ::-1]))
    assert ok
    return CompressedImage(format=fmt, data=buffer.tobytes())


def decode_rgb(data) -> np.ndarray:
    return cv2.imdecode(np.frombuffer(bytes(data), np.uint8), cv2.IMREAD_COLOR)[:, :, ::-1]


def counter(harness: Harness, key: str) -> int:
    return int(harness.diagnostics().get(key, 0))


@pytest.fixture(scope="module")
def compressed(onnx_model_dir, permissive_thresholds):
    h = Harness(onnx_model_dir, permissive_thresholds, namespace="/compressed", compressed_input=True,
                pass_through=False)
    yield h
    h.close()


@pytest.fixture(scope="module")
def sim_time(onnx_model_dir, permissive_thresholds):
    h = Harness(onnx_model_dir, permissive_thresholds, namespace="/sim_time", use_sim_time=True, command_timeout=5.0)
    yield h
    h.close()


@pytest.mark.parametrize("fmt", ["png", "jpeg"])
def test_compressed_frames_are_removed_and_answered_in_their_own_format(compressed, scene, reference_remover, fmt):
    compressed.command(COMMAND, expect_active=COMMAND)
    msg = compressed_msg(scene(seed=3), fmt)
    cleaned, mask, result = compressed.exchange(msg)

    seen = decode_rgb(msg.data)  # what the node decoded (jpeg is lossy)
    reference_remover.set_command(COMMAND)
    reference = reference_remover.remove(seen)
    assert cleaned.format == fmt and ((cleaned.header.frame_id, cleaned.header.stamp)
                                      == (msg.header.frame_id, msg.header.stamp))
    m = pixels_of(mask)[:, :, 0]
    np.testing.assert_array_equal(m, reference.mask)
    # The node encodes its answer like cv2.imencode does: png is lossless, jpeg is deterministic.
    np.testing.assert_array_equal(decode_rgb(cleaned.data), decode_rgb(compressed_msg(reference.image, fmt).data))
    fields = result_dict(result)
    assert fields["command"] == COMMAND and fields["found"] == reference.found
    assert (fields["width"], fields["height"]) == (seen.shape[1], seen.shape[0])
    if fmt == "png":
        out = decode_rgb(cleaned.data)
        assert 0 < np.count_nonzero(m) < m.size
        np.testing.assert_array_equal(out[m == 0], seen[m == 0])  # outside the mask: the input, bit for bit


def test_without_pass_through_idle_frames_publish_nothing(compressed, scene):
    compressed.command("stop", expect_active="")
    frames_in, frames_out, stale = (counter(compressed, k) for k in ("frames_in", "frames_out", "dropped_stale"))
    idle_key = compressed.publish(compressed_msg(scene(seed=5), "png"))
    wait_for(lambda: counter(compressed, "frames_in") == frames_in + 1)
    wait_for(lambda: compressed.node._pending is None)  # the worker has taken the idle frame
    compressed.command(COMMAND, expect_active=COMMAND)
    compressed.exchange(compressed_msg(scene(seed=6), "png"))  # the worker is sequential: the idle frame is done
    assert counter(compressed, "dropped_stale") == stale  # it was processed, not dropped
    assert counter(compressed, "frames_out") == frames_out + 1  # only the commanded frame was answered
    with compressed.lock:
        assert all(idle_key not in compressed.received[k] for k in ("cleaned", "mask", "result"))


def test_max_fps_caps_the_frames_processed(compressed, scene):
    node = compressed.node
    compressed.command(COMMAND, expect_active=COMMAND)
    assert node.set_parameters([Parameter("max_fps", value=2.0)])[0].successful
    try:
        frames_in, capped = counter(compressed, "frames_in"), counter(compressed, "dropped_max_fps")
        time.sleep(0.5)  # one period after the last accepted frame: the first of the burst must pass
        start = time.monotonic()
        sent = 12
        for seed in range(sent):
            compressed.publish(compressed_msg(scene(seed=seed), "png"))
        wait_for(lambda: counter(compressed, "frames_in") - frames_in
                 + counter(compressed, "dropped_max_fps") - capped == sent)
        span = time.monotonic() - start  # an upper bound on the spread of the arrival times
        accepted = counter(compressed, "frames_in") - frames_in
        print(f"max_fps 2: {accepted} of {sent} frames accepted over {span:.2f} s")
        assert 1 <= accepted <= 1 + int(span * 2.0)
        assert counter(compressed, "dropped_max_fps") - capped == sent - accepted
    finally:
        assert node.set_parameters([Parameter("max_fps", value=0.0)])[0].successful
    compressed.command("stop", expect_active="")


def test_command_timeout_runs_on_sim_time_from_clock(sim_time, scene):
    """With use_sim_time, a 5 s command lives 5 s of /clock time, however long the wall clock takes."""
    from rosgraph_msgs.msg import Clock

    clock_pub = sim_time.tester.create_publisher(Clock, "/clock", 10)

    def set_clock(seconds: int) -> None:
        clock = Clock()
        clock.clock.sec = seconds
        clock_pub.publish(clock)
        wait_for(lambda: sim_time.node.get_clock().now().nanoseconds == seconds * 10**9)

    wait_for(lambda: clock_pub.get_subscription_count() > 0)
    set_clock(100)
    sim_time.command(COMMAND, expect_active=COMMAND)
    set_clock(104)
    # 4 s of 5: still active
    assert result_dict(sim_time.exchange(image_msg(scene(seed=7), "rgb8"))[2])["command"] == COMMAND
    wall = time.monotonic()
    set_clock(106)
    assert sim_time.diagnostics()["command"] == ""  # expired by the clock message, not by waiting
    cleaned, mask, result = sim_time.exchange(image_msg(scene(seed=7), "rgb8"))
    fields = result_dict(result)
    assert fields["command"] == "" and fields["found"] is False and not np.any(pixels_of(mask))
    assert time.monotonic() - wall < 5.0
