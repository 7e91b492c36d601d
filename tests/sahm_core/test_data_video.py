"""Synthetic video clips (`sahm make-data video`): ground truth consistent with the pixels, the stored homography
against the masks of a static object, the folder and bag round trip, determinism and bad input."""

from __future__ import annotations

import cv2
import numpy as np
import pytest

from sahm_core.cli import main as sahm_main
from sahm_core.data.video import ClipConfig, read_clip, read_clip_rows, render_clip
from sahm_core.evaluate import iou

SMALL = ClipConfig(size=96, frames=(8, 8))


@pytest.fixture(scope="module")
def clips():
    """Clips with everything on: moving objects and a crossing occluder in every one."""
    cfg = ClipConfig(size=96, frames=(12, 12), moving_fraction=1.0, occlusion_fraction=1.0)
    return [render_clip(seed, cfg) for seed in range(3)]


def test_mask_is_where_image_and_target_differ(clips):
    for clip in clips:
        for t, frame in enumerate(clip.frames):
            mask = frame.mask > 0
            differs = np.any(frame.image != frame.target, axis=2)
            # the object is drawn only within a pixel of its mask: outside the mask grown by 1 px, image and target are
            # equal to the last bit (camera effects are per pixel and the same for both)
            grown = cv2.dilate(frame.mask, np.ones((3, 3), np.uint8)) > 0
            assert not np.any(differs & ~grown), f"seed {clip.seed} frame {t}"
            # and the object shows: nearly every mask pixel differs from the clean background
            if mask.sum() > 20:
                assert (differs & mask).sum() >= 0.95 * mask.sum(), f"seed {clip.seed} frame {t}"
        assert clip.occluded_frames, "occlusion_fraction=1 crosses the object in every clip"
        assert all(clip.command_frame <= t for t in clip.occluded_frames)


def test_stored_homography_carries_a_static_object_from_frame_to_frame():
    cfg = ClipConfig(size=128, frames=(10, 10), moving_fraction=0.0, occlusion_fraction=0.0)
    for seed in range(2):
        clip = render_clip(seed, cfg)
        assert np.allclose(clip.frames[0].homography, np.eye(3))
        compensated, raw = [], []
        for previous, frame in zip(clip.frames, clip.frames[1:]):
            moved = cv2.warpPerspective(previous.mask.astype(np.float32) / 255, frame.homography, (128, 128)) > 0.5
            inter, union = iou(moved, frame.mask > 0)
            compensated.append(inter / union)
            inter, union = iou(previous.mask > 0, frame.mask > 0)
            raw.append(inter / union)
            # the inter-frame motion is the ratio of the per-frame camera matrices
            expected = frame.world_to_view @ np.linalg.inv(previous.world_to_view)
            assert np.allclose(frame.homography, expected / expected[2, 2])
        assert min(compensated) > 0.93, compensated
        assert np.mean(compensated) > np.mean(raw)  # the camera does move the object in the view


def test_clip_folder_and_bag_round_trip(tmp_path):
    from rosbags.rosbag2 import Reader
    from rosbags.typesys import Stores, get_typestore

    from ros_ror.demo import COMMAND_TOPIC, IMAGE_TOPIC

    out = tmp_path / "video"
    assert sahm_main(["make-data", "video", "--out", str(out), "--n", "2", "--seed", "7", "--size", "96",
                      "--frames", "6", "8"]) == 0
    rows = read_clip_rows(out)
    assert [r["id"] for r in rows] == ["clip0000", "clip0001"]
    clip = read_clip(out, rows[0])
    again = render_clip(rows[0]["seed"], ClipConfig(size=96, frames=(6, 8)))  # same seed and config, same pixels
    assert len(clip.frames) == len(again.frames) == rows[0]["frames"]
    for stored, rendered in zip(clip.frames, again.frames):
        for key in ("image", "target", "mask"):
            assert np.array_equal(getattr(stored, key), getattr(rendered, key))
        assert np.allclose(stored.homography, rendered.homography)
    typestore = get_typestore(Stores.ROS2_KILTED)
    with Reader(out / rows[0]["bag"]) as reader:
        messages = [(c.topic, t, typestore.deserialize_cdr(raw, c.msgtype)) for c, t, raw in reader.messages()]
    images = [(t, m) for topic, t, m in messages if topic == IMAGE_TOPIC]
    commands = [(t, m.data) for topic, t, m in messages if topic == COMMAND_TOPIC]
    assert len(images) == len(clip.frames) and [text for _, text in commands] == [clip.text]
    stamps = [t for t, _ in images]
    k = clip.command_frame
    assert stamps[k - 1] < commands[0][0] < stamps[k]  # spoken between the frames before and from the command
    first = images[0][1]
    assert np.array_equal(first.data.reshape(first.height, first.width, 3), clip.frames[0].image)


def test_bad_input_is_a_clear_error(tmp_path, capsys):
    with pytest.raises(ValueError, match="frames"):
        ClipConfig(frames=(1, 4))
    with pytest.raises(ValueError, match="size"):
        ClipConfig(size=8)
    assert sahm_main(["make-data", "video", "--out", str(tmp_path), "--n", "1", "--size", "8"]) == 2
    assert "size must be at least 32" in capsys.readouterr().err
    with pytest.raises(FileNotFoundError, match="not a video dataset"):
        read_clip_rows(tmp_path)
