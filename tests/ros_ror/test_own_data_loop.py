"""The loop a robot team runs on its own recordings (README, "Your own objects"), end to end on a simulated room:
record -> `sahm make-data from-bag` -> `multiply` -> `sahm train --init` -> `ros-ror replay` with the new weights.

A few training steps only (CI): the checks are that every stage reads what the one before wrote, that the run
started from the given weights, and that the replayed masks are the fine-tuned weights' own (a Remover on the run
directory, outside any ROS code, is the reference)."""

from __future__ import annotations

import numpy as np


def test_record_extract_multiply_finetune_replay(tmp_path, nano_model_dir):
    from ros_ror.cli import main as ros_ror_main
    from ros_ror.demo import COMMAND_TOPIC, IMAGE_TOPIC, read_outputs, write_camera_bag
    from sahm_core.checkpoint import read_metadata
    from sahm_core.cli import main as sahm_main
    from sahm_core.data.layout import read_refs
    from sahm_core.data.room_sim import RoomConfig, render_room, write_room
    from sahm_core.runtime import Remover

    room = RoomConfig(size=192, events=(3, 3))
    write_room(tmp_path / "recording", render_room(21, 0, room))
    mine = tmp_path / "mine"
    assert sahm_main(["make-data", "from-bag", str(tmp_path / "recording" / "bag"), "--image-topic", IMAGE_TOPIC,
                      "--label-topic", COMMAND_TOPIC, "--out", str(mine)]) == 0
    extracted = len(read_refs(mine))
    assert extracted > 0
    assert sahm_main(["make-data", "multiply", str(mine), "--n", "8", "--seed", "1"]) == 0
    assert len(read_refs(mine)) > extracted

    run = tmp_path / "run"
    assert sahm_main(["train", "--init", str(nano_model_dir), "--data", str(mine), "--out", str(run), "--steps", "2",
                      "--batch-size", "2", "--num-workers", "0"]) == 0
    assert read_metadata(run / "model.safetensors")["sahm_init"] == str(nano_model_dir / "model.safetensors")

    # The same room with objects elsewhere (a new placement timeline), and a command naming one of them.
    later = render_room(21, 1, room)
    command = f"remove {later.objects[later.placements[0].object].label}"
    write_camera_bag(tmp_path / "later", later.frames[:4], [(0.0, command)], fps=room.fps)
    rule = ["--min-score", "0", "--min-mask-area", "0", "--mask-threshold", "0.5"]
    assert ros_ror_main(["replay", str(tmp_path / "later"), str(tmp_path / "replayed"), "--image-topic", IMAGE_TOPIC,
                         "--command-topic", COMMAND_TOPIC, "--model", str(run), "--backend", "torch", *rule]) == 0

    frames = read_outputs(tmp_path / "replayed")
    assert len(frames) == 4 and all("mask" in f for f in frames)
    reference = Remover.load(run, backend="torch", min_score=0.0, min_mask_area=0.0, mask_threshold=0.5)
    reference.set_command(command)
    for frame in frames:
        expected = reference.remove(frame["input"])
        np.testing.assert_array_equal(frame["mask"], expected.mask)
        np.testing.assert_array_equal(frame["cleaned"], expected.image)
