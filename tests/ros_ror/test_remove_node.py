"""The node under real rclpy pub/sub: a test node publishes frames and commands, and checks what comes back.

The node runs in this process on its own executor thread (real DDS in between);
its outputs are checked against a Remover called directly on the same pixels.
"""

from __future__ import annotations

import time
from collections import Counter

import numpy as np
import pytest
from node_harness import COMMAND, MAX_PIXELS, NODE_NAME, Harness, image_msg, pixels_of, result_dict, wait_for
from rclpy.parameter import Parameter


@pytest.fixture(scope="module")
def harness(onnx_model_dir, permissive_thresholds):
    h = Harness(onnx_model_dir, permissive_thresholds)
    yield h
    h.close()


def expected_output(cleaned_rgb: np.ndarray, encoding: str, alpha: np.ndarray | None) -> np.ndarray:
    """What the node must publish for a cleaned RGB frame, written out per encoding."""
    if encoding == "mono8":
        r, g, b = (cleaned_rgb[:, :, i].astype(np.int64) for i in range(3))
        return ((299 * r + 587 * g + 114 * b + 500) // 1000).astype(np.uint8)[:, :, None]
    out = cleaned_rgb[:, :, ::-1] if encoding.startswith("bgr") else cleaned_rgb
    return np.concatenate([out, alpha[:, :, None]], axis=2) if encoding.endswith("a8") else out


@pytest.mark.parametrize("encoding, step_pad", [("rgb8", 0), ("bgr8", 5), ("rgba8", 3), ("bgra8", 0), ("mono8", 7)])
def test_command_removes_and_matches_the_remover(harness, scene, reference_remover, encoding, step_pad):
    harness.command(COMMAND, expect_active=COMMAND)
    rgb = scene(seed=3)
    if encoding == "mono8":
        rgb = np.repeat(rgb[:, :, :1], 3, axis=2)
    alpha = np.arange(rgb.shape[0] * rgb.shape[1], dtype=np.uint32).reshape(rgb.shape[:2]).astype(np.uint8)
    msg = image_msg(rgb, encoding, step_pad, alpha)
    cleaned, mask, result = harness.exchange(msg)

    reference_remover.set_command(COMMAND)
    reference = reference_remover.remove(rgb)
    assert reference.found  # random weights + min_score 0: the invariants below are exercised on a real mask
    assert (cleaned.header.frame_id, cleaned.header.stamp) == (msg.header.frame_id, msg.header.stamp)
    assert (mask.header.frame_id, mask.header.stamp) == (msg.header.frame_id, msg.header.stamp)
    assert (cleaned.encoding, cleaned.width, cleaned.height) == (encoding, msg.width, msg.height)
    assert mask.encoding == "mono8"
    out, m = pixels_of(cleaned), pixels_of(mask)[:, :, 0]
    np.testing.assert_array_equal(m, reference.mask)
    np.testing.assert_array_equal(out, expected_output(reference.image, encoding, alpha))
    untouched = expected_output(rgb, encoding, alpha)
    assert 0 < np.count_nonzero(m) < m.size
    np.testing.assert_array_equal(out[m == 0], untouched[m == 0])  # outside the mask: the input, bit for bit
    fields = result_dict(result)
    assert fields["command"] == COMMAND and fields["found"] is True
    assert (fields["mask_pixels"] == np.count_nonzero(m)
            and (fields["width"], fields["height"]) == (msg.width, msg.height))
    assert fields["mask_area"] == pytest.approx(np.count_nonzero(m) / m.size, rel=1e-6)
    assert fields["backend"] == "onnxruntime"


def test_stop_returns_frames_unchanged(harness, scene):
    harness.command(COMMAND, expect_active=COMMAND)
    harness.command("  OK, stop removing ", expect_active="")
    msg = image_msg(scene(seed=5), "rgb8")
    cleaned, mask, result = harness.exchange(msg)
    assert bytes(cleaned.data) == bytes(msg.data)
    assert not np.any(pixels_of(mask))
    fields = result_dict(result)
    assert fields["command"] == "" and fields["found"] is False and fields["mask_pixels"] == 0


def test_parameters_are_validated_when_set(harness):
    node = harness.node
    rejected = [
        Parameter("backend", value="torch"),  # read-only
        Parameter("model_path", value="/elsewhere"),  # read-only
        Parameter("mask_threshold", value=1.0),
        Parameter("min_score", value=-0.1),
        Parameter("command_timeout", value=-1.0),
        Parameter("max_fps", value="fast"),
    ]
    for p in rejected:
        assert not node.set_parameters([p])[0].successful, p.name
    assert node.set_parameters([Parameter("command_timeout", value=30.0)])[0].successful
    assert node.set_parameters([Parameter("command_timeout", value=0.0)])[0].successful
    assert node.get_parameter("backend").value == "onnxruntime"


def test_stream_parameters_switch_the_removers_stream_mode(harness):
    node = harness.node
    remover = node._remover  # the worker's Remover: what the next frame runs with
    assert remover.stream is None and harness.diagnostics()["stream_mode"] == "off"
    assert not node.set_parameters([Parameter("stream_strength", value=1.5)])[0].successful
    assert node.set_parameters([Parameter("stream_mode", value=True), Parameter("stream_strength", value=0.5)])[0] \
        .successful
    assert remover.stream is not None and remover.stream.strength == 0.5
    assert harness.diagnostics()["stream_mode"] == "on, strength 0.5"
    assert "stream_scene_cuts" not in harness.diagnostics()  # no command: no stream is carried yet
    assert node.set_parameters([Parameter("stream_mode", value=False)])[0].successful
    assert remover.stream is None
    assert node.set_parameters([Parameter("stream_strength", value=0.9)])[0].successful


def test_set_enabled_is_a_shortcut_onto_the_lifecycle(harness, scene):
    from std_srvs.srv import SetBool

    client = harness.tester.create_client(SetBool, f"/{NODE_NAME}/set_enabled")
    assert client.wait_for_service(timeout_sec=10)
    harness.command(COMMAND, expect_active=COMMAND)
    harness.exchange(image_msg(scene(), "rgb8"))
    assert harness.diagnostics()["state"] == "active" and harness.node._remover is not None
    response = client.call(SetBool.Request(data=False), timeout_sec=60)
    assert response.success and response.message == "now unconfigured"
    assert harness.node._remover is None  # cleanup freed the model
    before = int(harness.diagnostics().get("dropped_inactive", 0))
    harness.image_pub.publish(image_msg(scene(), "rgb8"))
    wait_for(lambda: int(harness.diagnostics().get("dropped_inactive", 0)) == before + 1)
    assert client.call(SetBool.Request(data=True), timeout_sec=60).success
    cleaned, _, result = harness.exchange(image_msg(scene(), "rgb8"))
    assert result_dict(result)["command"] == COMMAND  # the command outlived the model: it is the operator's
    assert harness.diagnostics()["state"] == "active"
    harness.command("stop", expect_active="")


def malformed_images(rng: np.random.Generator):
    """(message, reason) pairs: >= 1000 frames, each wrong in one known way."""
    from sensor_msgs.msg import Image

    def img(height, width, encoding, step, size):
        data = rng.integers(0, 256, int(size), dtype=np.uint8).tobytes()
        return Image(height=int(height), width=int(width), encoding=encoding, step=int(step), data=data)

    unknown = ["yuv422", "16UC1", "32FC1", "bayer_rggb8", "RGB8", "", "rgb16", "jpeg", "mono16", "8UC3", "héllo",
               "x" * 300]
    for _ in range(180):
        h, w = rng.integers(1, 40, 2)
        yield img(h, w, str(rng.choice(unknown)), w * 3, h * w * 3), "encoding"
    for _ in range(180):
        h, w = rng.integers(1, 40, 2)
        enc, ch = [("rgb8", 3), ("bgr8", 3), ("rgba8", 4), ("mono8", 1)][rng.integers(4)]
        step = int(rng.integers(0, w * ch))
        yield img(h, w, enc, step, h * max(step, 1)), "step"
    for _ in range(180):
        h, w = rng.integers(1, 40, 2)
        pad = int(rng.integers(0, 8))
        yield img(h, w, "rgb8", w * 3 + pad, int(rng.integers(0, h * (w * 3 + pad)))), "truncated"
    for _ in range(150):
        h, w = rng.integers(1, 40, 2)
        yield img(h, w, "bgr8", w * 3, h * w * 3 + int(rng.integers(1, 100))), "data_size"
    for _ in range(180):
        h, w = [(0, int(rng.integers(0, 50))), (int(rng.integers(0, 50)), 0)][rng.integers(2)]
        yield img(h, w, "rgb8", w * 3, int(rng.integers(0, 30))), "zero_size"
    for _ in range(180):
        w = int(rng.integers(1001, 20000))
        h = MAX_PIXELS // w + int(rng.integers(1, 50))
        yield img(h, w, "rgb8", w * 3, int(rng.integers(0, 64))), "oversized"


def odd_commands(rng: np.random.Generator):
    """(text, reason or None when it is a usable command)."""
    for _ in range(40):
        yield " " * int(rng.integers(0, 10)) + "\t\n"[: int(rng.integers(0, 3))], "empty"
    for _ in range(40):
        yield "remove the cup " * int(rng.integers(21, 2000)), "too_long"
    # NUL cannot travel: ROS strings end at it, so "remove\x00the cup" arrives as "remove".
    controls = [c for c in map(chr, [*range(1, 32), 127]) if not c.isspace()]
    for _ in range(40):
        yield f"remove{rng.choice(controls)}the cup", "not_text"
    for _ in range(40):
        yield ("".join(rng.choice(list("!?.,;:-🙂🚀 ")) for _ in range(int(rng.integers(1, 30)))).strip() or "!",
               "no_words")
    for text in ["删除杯子", "entferne die rote Tasse", "убери чашку", "remove the 🍎 apple", "REMOVE THE CUP"] * 8:
        yield text, None


def test_fuzz_malformed_frames_and_odd_commands_through_real_topics(harness, scene, capsys):
    from std_msgs.msg import String

    rng = np.random.default_rng(1234)
    before = harness.diagnostics()
    expected_drops: Counter[str] = Counter()
    for msg, reason in malformed_images(rng):
        harness.image_pub.publish(msg)
        expected_drops[reason] += 1
    expected_rejects: Counter[str] = Counter()
    accepted = 0
    for text, reason in odd_commands(rng):
        harness.command_pub.publish(String(data=text))
        if reason is None:
            accepted += 1
        else:
            expected_rejects[reason] += 1
    total = sum(expected_drops.values())
    assert total >= 1000

    def dropped_since(diag, prefix):
        return Counter({k[len(prefix):]: int(v) - int(before.get(k, 0)) for k, v in diag.items()
                        if k.startswith(prefix) and k != "dropped_total"})

    try:
        wait_for(lambda: sum(dropped_since(harness.diagnostics(), "dropped_").values()) >= total
                 and sum(dropped_since(harness.diagnostics(), "rejected_commands_").values())
                 >= sum(expected_rejects.values()), timeout=60)
    finally:
        diag = harness.diagnostics()
        print("diagnostics after the fuzz:", diag)
    drops = +dropped_since(diag, "dropped_")
    rejects = +dropped_since(diag, "rejected_commands_")
    with capsys.disabled():
        print(f"\nfuzz: {total} malformed frames dropped by reason: {dict(sorted(drops.items()))}")
        print(f"fuzz: {sum(expected_rejects.values()) + accepted} odd commands: "
              f"rejected {dict(sorted(rejects.items()))}, accepted {accepted}")
    assert drops == expected_drops
    assert rejects == expected_rejects
    # Still alive: a valid command and frame are answered, with the model.
    harness.command(COMMAND, expect_active=COMMAND)
    cleaned, mask, result = harness.exchange(image_msg(scene(seed=8), "bgr8", step_pad=2))
    assert result_dict(result)["command"] == COMMAND and cleaned.encoding == "bgr8"
    harness.command("cancel", expect_active="")
    assert harness.diagnostics()["last_error"] == ""


def test_node_reads_commands_as_the_table_does(harness):
    """The node's route of test_commands' one-parser check. It lives here, with the module's harness: a node built
    and closed inside the test process before test_launch's probe left that probe unable to reach the launched node
    (its services and node name), while its publishers were seen."""
    from test_commands import EXPECTED_ACTIVE, SPOKEN

    for text, expected in zip(SPOKEN, EXPECTED_ACTIVE):
        harness.command(text, expect_active=expected)


def _mask_msg(mask: np.ndarray, stamp: tuple[int, int], encoding: str = "mono8"):
    from sensor_msgs.msg import Image

    msg = Image(height=mask.shape[0], width=mask.shape[1], encoding=encoding, step=mask.shape[1],
                data=mask.tobytes())
    msg.header.stamp.sec, msg.header.stamp.nanosec = stamp
    return msg


def _disc(shape, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[:shape[0], :shape[1]]
    cy, cx = rng.integers(10, shape[0] - 10), rng.integers(10, shape[1] - 10)
    return (((yy - cy) ** 2 + (xx - cx) ** 2) < 8 ** 2).astype(np.uint8) * 255


def _fill_graph_loaded(harness, scene) -> None:
    """The first ~/erase_mask makes the node load its fill graph; a frame after it clears that mask out as stale."""
    if harness.diagnostics()["fill_graph"] != "loaded":
        harness.erase_pub.publish(_mask_msg(_disc((48, 64), seed=0), (1, 0)))
        wait_for(lambda: harness.diagnostics()["fill_graph"] == "loaded", timeout=600)
        harness.exchange(image_msg(scene(seed=0), "rgb8"))


def test_a_mask_from_another_node_is_erased_from_the_frame_with_its_stamp(harness, scene):
    harness.command("stop", expect_active="")
    _fill_graph_loaded(harness, scene)
    for seed in (1, 2):
        rgb, given = scene(seed=seed), _disc((48, 64), seed=seed)
        stamp = harness.next_stamp()
        harness.erase_pub.publish(_mask_msg(given, (stamp[0], stamp[1] + 5_000_000)))  # 5 ms off: within tolerance
        time.sleep(0.2)  # reliable QoS delivers the mask; the frame must not overtake it on the other topic
        cleaned, mask, result = harness.exchange(image_msg(rgb, "rgb8"))
        out, erased = pixels_of(cleaned), pixels_of(mask)[:, :, 0] > 0
        assert erased[given > 0].all() and erased.sum() < erased.size
        assert np.array_equal(out[~erased], rgb[~erased])  # outside the mask: the input, bit for bit
        assert not np.array_equal(out[erased], rgb[erased])
        fields = result_dict(result)
        assert fields["command"] == "" and fields["found"] is False and fields["mask_pixels"] == erased.sum()
        (target,) = fields["targets"]
        assert (target["source"], target["text"], target["found"]) == ("mask", "", True)
        assert target["mask_area"] == pytest.approx(np.count_nonzero(given) / given.size, rel=1e-6)


def test_a_stale_misfit_or_malformed_erase_mask_is_warned_about_and_dropped(harness, scene):
    harness.command("stop", expect_active="")
    _fill_graph_loaded(harness, scene)
    dropped = lambda reason: int(harness.diagnostics().get(f"dropped_erase_mask_{reason}", 0))  # noqa: E731
    before = {r: dropped(r) for r in ("stale", "size", "encoding")}
    stamp = harness.next_stamp()
    harness.erase_pub.publish(_mask_msg(_disc((48, 64), 4), (stamp[0] - 1, stamp[1])))  # 1 s before its frame
    harness.erase_pub.publish(_mask_msg(np.full((24, 32), 255, np.uint8), stamp))  # the frame's stamp, half its size
    harness.erase_pub.publish(_mask_msg(np.zeros((48, 64 * 3), np.uint8), stamp, encoding="rgb8"))
    time.sleep(0.2)
    rgb = scene(seed=4)
    cleaned, mask, _ = harness.exchange(image_msg(rgb, "rgb8"))
    assert bytes(cleaned.data) == rgb.tobytes() and not np.any(pixels_of(mask))  # passed through, nothing erased
    counts = lambda: {r: dropped(r) - before[r] for r in before}  # noqa: E731
    # the malformed mask is counted when its callback runs, which another topic's frame may overtake
    wait_for(lambda: counts() == {"stale": 1, "size": 1, "encoding": 1}, 10)


def test_two_commands_erase_two_objects_with_one_fill_and_report_each(harness, scene, reference_remover):
    other = "the blue square at the top"
    harness.command(COMMAND, expect_active=COMMAND)
    harness.command(f"and {other}", expect_active=f"{COMMAND}; {other}")
    wait_for(lambda: harness.diagnostics()["fill_graph"] == "loaded", timeout=600)  # a second target loads it
    rgb = scene(seed=7)
    cleaned, mask, result = harness.exchange(image_msg(rgb, "rgb8"))

    reference_remover.set_commands([COMMAND, other])
    reference = reference_remover.remove(rgb)
    assert sum(t.found for t in reference.targets) == 2  # random weights, permissive thresholds: both found
    fields = result_dict(result)
    assert fields["command"] == f"{COMMAND}; {other}" and fields["found"] is True
    targets = fields["targets"]
    assert [(t["text"], t["source"], t["found"]) for t in targets] == [(COMMAND, "text", True), (other, "text", True)]
    np.testing.assert_array_equal(pixels_of(mask)[:, :, 0], reference.mask)
    np.testing.assert_array_equal(pixels_of(cleaned), reference.image)
    for t, expected in zip(targets, reference.targets):
        assert t["score"] == pytest.approx(expected.score, rel=1e-6)
        assert t["mask_area"] == pytest.approx(expected.area, rel=1e-6)

    harness.command("also the green star", expect_active=f"{COMMAND}; {other}; the green star")
    harness.node.set_parameters([Parameter("max_targets", value=3)])
    harness.command("and the red box", expect_active=f"{COMMAND}; {other}; the green star")  # a fourth: rejected
    wait_for(lambda: int(harness.diagnostics().get("rejected_commands_too_many_targets", 0)) == 1)
    harness.command("remove the red box", expect_active="remove the red box")  # a plain command replaces them
    harness.node.set_parameters([Parameter("max_targets", value=4)])
    harness.command("stop", expect_active="")


def test_confirm_targets_shows_a_candidate_until_confirmed_and_retries_a_discarded_one(harness, scene):
    from ros_ror.image_conversions import candidate_overlay

    other = "the blue square at the top"
    harness.command("stop", expect_active="")
    harness.node.set_parameters([Parameter("confirm_targets", value=True)])
    try:
        harness.command(COMMAND, expect_active=COMMAND)
        assert harness.diagnostics()["candidate"] == COMMAND
        rgb = scene(seed=8)
        msg = image_msg(rgb, "rgb8")
        cleaned, mask, result = harness.exchange(msg)
        candidate, overlay = harness.candidates(_stamp(msg))
        assert bytes(cleaned.data) == rgb.tobytes() and not np.any(pixels_of(mask))  # shown, not erased
        shown = pixels_of(candidate)[:, :, 0]
        assert 0 < np.count_nonzero(shown) < shown.size
        np.testing.assert_array_equal(pixels_of(overlay), candidate_overlay(rgb, shown))
        (target,) = result_dict(result)["targets"]
        assert (target["text"], target["found"], target["confirmed"]) == (COMMAND, True, False)

        response = harness.confirm(True)
        assert response.success and COMMAND in response.message
        wait_for(lambda: harness.diagnostics()["candidate"] == "")
        cleaned, mask, result = harness.exchange(image_msg(rgb, "rgb8"))
        np.testing.assert_array_equal(pixels_of(mask)[:, :, 0], shown)  # what was shown is what is erased
        assert result_dict(result)["targets"][0]["confirmed"] is True

        harness.command(f"and {other}", expect_active=f"{COMMAND}; {other}")
        response = harness.confirm(False)
        assert response.success and "discarded" in response.message
        wait_for(lambda: harness.diagnostics()["command"] == COMMAND)
        cleaned, mask, _ = harness.exchange(image_msg(rgb, "rgb8"))
        np.testing.assert_array_equal(pixels_of(mask)[:, :, 0], shown)  # the discarded one erases nothing
        harness.command("not that one", expect_active=f"{COMMAND}; {other}")  # back, as a candidate again
        assert harness.diagnostics()["candidate"] == other
        assert not harness.confirm(True).message.startswith("no candidate")
        assert not harness.confirm(True).success  # nothing left to confirm
    finally:
        harness.node.set_parameters([Parameter("confirm_targets", value=False)])
        harness.command("stop", expect_active="")


def test_a_click_removes_the_object_under_it_and_a_stale_or_outside_click_is_warned_about(harness, scene,
                                                                                          reference_remover):
    from sahm_core.click import pixel_click

    harness.command("stop", expect_active="")
    rgb = scene(seed=9)
    height, width = rgb.shape[:2]
    harness.exchange(image_msg(rgb, "rgb8"))  # the newest frame: where an unstamped click lands
    click = pixel_click(20, 30, width, height)
    harness.click(20, 30)
    wait_for(lambda: harness.diagnostics()["command"] == click)
    cleaned, mask, result = harness.exchange(image_msg(rgb, "rgb8"))

    reference_remover.set_commands([click])
    reference = reference_remover.remove(rgb)
    reference_remover.set_commands([COMMAND])
    assert not np.array_equal(reference.mask, reference_remover.remove(rgb).mask)  # the click is its own prompt
    np.testing.assert_array_equal(pixels_of(mask)[:, :, 0], reference.mask)
    np.testing.assert_array_equal(pixels_of(cleaned), reference.image)
    (target,) = result_dict(result)["targets"]
    assert (target["text"], target["source"], target["found"]) == (click, "click", reference.found)
    assert harness.node._clickable is True  # the fixture's prompt is random, not zero: no "click_untrained" warning

    dropped = lambda reason: int(harness.diagnostics().get(f"dropped_click_{reason}", 0))  # noqa: E731
    before = {r: dropped(r) for r in ("stale", "outside")}
    newest_sec = harness.next_stamp()[0] - 1
    harness.click(5, 5, stamp=(newest_sec - 10, 0))  # 10 s before the newest frame
    harness.click(width, 5)  # one column past the frame
    harness.click(float("nan"), 5)
    wait_for(lambda: {r: dropped(r) - before[r] for r in before} == {"stale": 1, "outside": 2}, 10)
    harness.click(3, 4, stamp=(newest_sec, 0))  # stamped with the newest frame: a second target beside the first
    wait_for(lambda: harness.diagnostics()["command"] == f"{click}; {pixel_click(3, 4, width, height)}")
    harness.command("stop", expect_active="")


def _stamp(msg) -> tuple[int, int]:
    return msg.header.stamp.sec, msg.header.stamp.nanosec
