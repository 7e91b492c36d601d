"""`ros-ror demo`: sample bag, replay, sheet, animation and summary, end to end on a random-weight model."""

from __future__ import annotations

import cv2
from PIL import Image

from ros_ror.cli import main
from ros_ror.demo import ANIMATION_TILE, COMMAND_TOPIC, IMAGE_TOPIC, STOP_TEXT, read_outputs


def test_demo_writes_bags_sheet_and_summary(tmp_path, onnx_model_dir, capsys):
    out = tmp_path / "demo"
    code = main(["demo", "--out", str(out), "--model", str(onnx_model_dir), "--backend", "onnxruntime",
                 "--seconds", "0.5", "--size", "64x48", "--storage", "mcap", "--animation-frames", "4"])
    assert code == 0
    printed = capsys.readouterr().out
    assert "frames            15" in printed and "commands          2 (1 stop)" in printed
    assert sorted(p.name for p in out.iterdir()) == ["output.bag", "sample.bag", "sheet.png", "stream.gif"]
    with Image.open(out / "stream.gif") as gif:  # before / after / mask, per-frame and stream rows, 4 frames
        assert gif.n_frames == 4 and gif.width == 3 * ANIMATION_TILE and gif.height > 2 * ANIMATION_TILE
    for bag in ("output.bag", "sample.bag"):  # as rosbag2 names a bag's files
        assert sorted(p.name for p in (out / bag).iterdir()) == ["metadata.yaml", f"{bag}_0.mcap"]
    frames = read_outputs(out / "output.bag")
    assert len(frames) == 15
    assert all(f["input"].shape == (48, 64, 3) and f["cleaned"].shape == (48, 64, 3) for f in frames)
    spoken = [f["result"].command for f in frames]
    # command at 25 % of the clip, "stop" at 75 %: silence, the command, silence again
    first, last = (spoken.index(next(c for c in spoken if c)),
                   len(spoken) - 1 - spoken[::-1].index(next(c for c in spoken if c)))
    assert (first > 0 and last < len(spoken) - 1 and all(spoken[first:last + 1])
            and not any(spoken[:first] + spoken[last + 1:]))
    sheet = cv2.imread(str(out / "sheet.png"))
    assert sheet is not None and sheet.shape[0] > 300 and sheet.shape[1] > 300
    assert IMAGE_TOPIC in printed and COMMAND_TOPIC in printed and STOP_TEXT in printed
