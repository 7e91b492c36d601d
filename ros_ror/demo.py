"""The one-command demo: a synthetic camera bag, replayed through the bundled model, with a picture of the result.

    ros-ror demo --out out/demo

1. `sample.bag/`: one synthetic scene (sahm_core.data.synthetic) seen by a
   slowly panning 30 Hz camera; the scene's referring expression is "spoken"
   part-way through, and "ok stop removing" later.
2. `output.bag/`: that bag replayed through the model (`ros-ror replay`).
3. `sheet.png`: before / after / mask for a frame before the command, one
   while it is active and one after "stop", read back from the output bag.
4. `stream.gif`: a synthetic moving-camera clip (`sahm make-data video`: pan,
   zoom, shake, moving objects, an occluder crossing the named one, lighting
   drift, noise, the command part-way) through the same model twice, per-frame
   and in stream mode, as before / after / mask rows, so the difference shows.
"""

from __future__ import annotations

import argparse
import shutil
import sys
from pathlib import Path

import cv2
import numpy as np

from sahm_core.backends import add_backend_arguments
from sahm_core.stream import add_stream_arguments

from .commands import parse_command
from .image_conversions import encode_image
from .replay import ReplayError, bag_writer, replay
from .resources import bundled_model_dir
from .topics import CLEANED_IMAGE, MASK, NODE_NAME, RESULT

IMAGE_TOPIC = "/camera/image_raw"
COMMAND_TOPIC = "/speech/text"
STOP_TEXT = "ok stop removing"
FRAME_ID = "camera"
START_NS = 1_700_000_000 * 10**9  # a fixed wall-clock-like start so every demo bag is identical


def camera_frames(scene: np.ndarray, count: int, width: int, height: int) -> list[np.ndarray]:
    """A camera panning across `scene` (square RGB): `count` width x height views, moving evenly top to bottom."""
    side = max(width, height)
    big = cv2.resize(scene, (side, side), interpolation=cv2.INTER_LINEAR)  # (side, side, 3)
    span_y, span_x = side - height, side - width
    views = []
    for i in range(count):
        progress = i / max(1, count - 1)
        top, left = round(span_y * progress), round(span_x * progress)
        views.append(np.ascontiguousarray(big[top:top + height, left:left + width]))
    return views


def write_camera_bag(path: Path, frames: list[np.ndarray], spoken: list[tuple[float, str]], fps: float = 30.0,
                     storage: str = "sqlite3", encoding: str = "rgb8") -> None:
    """A camera + speech bag: `frames` (HxWx3 uint8 RGB) as Images in `encoding` (image_conversions.ENCODINGS) on
    IMAGE_TOPIC at `fps` from START_NS, and each (seconds after the first frame, text) of `spoken` as a String on
    COMMAND_TOPIC."""
    from rosbags.typesys import Stores, get_typestore

    typestore = get_typestore(Stores.ROS2_KILTED)
    Image, String = typestore.types["sensor_msgs/msg/Image"], typestore.types["std_msgs/msg/String"]
    Header, Time = typestore.types["std_msgs/msg/Header"], typestore.types["builtin_interfaces/msg/Time"]
    spoken = sorted(spoken)
    with bag_writer(path, storage) as writer:
        image_conn = writer.add_connection(IMAGE_TOPIC, "sensor_msgs/msg/Image", typestore=typestore)
        command_conn = writer.add_connection(COMMAND_TOPIC, "std_msgs/msg/String", typestore=typestore)
        for i, frame in enumerate(frames):
            t = START_NS + round(i * 1e9 / fps)
            while spoken and spoken[0][0] * 1e9 <= t - START_NS:
                at, text = spoken.pop(0)
                writer.write(command_conn, START_NS + round(at * 1e9),
                             typestore.serialize_cdr(String(data=text), "std_msgs/msg/String"))
            height, width = frame.shape[:2]
            header = Header(stamp=Time(sec=t // 10**9, nanosec=t % 10**9), frame_id=FRAME_ID)
            data, step = encode_image(frame, encoding)
            msg = Image(header=header, height=height, width=width, encoding=encoding, is_bigendian=0, step=step,
                        data=np.frombuffer(data, np.uint8))
            writer.write(image_conn, t, typestore.serialize_cdr(msg, "sensor_msgs/msg/Image"))


def write_sample_bag(path: Path, seed: int = 4, seconds: float = 3.0, fps: float = 30.0, width: int = 320,
                     height: int = 240, command_at: float = 0.7, stop_at: float = 2.3,
                     storage: str = "sqlite3") -> str:
    """Write the demo camera + speech bag; returns the spoken command."""
    from sahm_core.data.synthetic import render_sample

    sample = render_sample(seed, size=256, negative_fraction=0.0)
    frames = camera_frames(sample.image, round(seconds * fps), width, height)
    write_camera_bag(path, frames, [(command_at, sample.text), (stop_at, STOP_TEXT)], fps, storage)
    return sample.text


def read_outputs(bag: Path, namespace: str = f"/{NODE_NAME}") -> list[dict]:
    """Per frame of the output bag: input, cleaned and mask as arrays, and the result fields (time order)."""
    from rosbags.rosbag2 import Reader

    from .image_conversions import decode_image
    from .replay import replay_typestore

    typestore = replay_typestore()
    frames: dict[int, dict] = {}
    wanted = {IMAGE_TOPIC: "input", f"{namespace}/{CLEANED_IMAGE}": "cleaned", f"{namespace}/{MASK}": "mask",
              f"{namespace}/{RESULT}": "result"}
    with Reader(bag) as reader:
        conns = [c for c in reader.connections if c.topic in wanted]
        for conn, timestamp, raw in reader.messages(connections=conns):
            msg = typestore.deserialize_cdr(raw, conn.msgtype)
            key = wanted[conn.topic]
            entry = frames.setdefault(timestamp, {"t": timestamp})
            if key == "result":
                entry[key] = msg
            else:
                decoded = decode_image(msg.height, msg.width, msg.encoding, msg.step, msg.data)
                entry[key] = decoded.rgb[:, :, 0] if key == "mask" else decoded.rgb
    return [frames[t] for t in sorted(frames)]


def write_sheet(frames: list[dict], path: Path) -> None:
    """Before / after / mask for a frame before the command, the middle of the command, and after "stop"."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    active = [i for i, f in enumerate(frames) if f["result"].command]
    if active:
        picks = [max(0, active[0] - 5), active[len(active) // 2], min(len(frames) - 1, active[-1] + 5)]
    else:
        picks = [0, len(frames) // 2, len(frames) - 1]
    fig, axes = plt.subplots(len(picks), 3, figsize=(10, 2.7 * len(picks)), squeeze=False)
    for row, index in zip(axes, picks):
        frame, result = frames[index], frames[index]["result"]
        seconds = (frame["t"] - frames[0]["t"]) * 1e-9
        said = f'"{result.command}"' if result.command else "no command"
        state = (f"found, score {result.score:.2f}, {100 * result.mask_area:.1f}% of frame" if result.found
                 else "nothing removed")
        for ax, key, title in zip(row, ("input", "cleaned", "mask"),
                                  (f"t={seconds:.2f}s  before", f"after: {state}", f"mask ({said})")):
            ax.imshow(frame[key], cmap="gray" if key == "mask" else None, vmin=0, vmax=255)
            ax.set_title(title, fontsize=9)
            ax.axis("off")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


ANIMATION_TILE = 160  # pixels per picture in the animation


def _label(image: np.ndarray, text: str, origin: tuple[int, int], scale: float = 0.45) -> None:
    """White text on a dark box, in place."""
    (w, h), base = cv2.getTextSize(text, cv2.FONT_HERSHEY_SIMPLEX, scale, 1)
    x, y = origin
    cv2.rectangle(image, (x - 2, y - h - 3), (x + w + 2, y + base), (20, 20, 20), cv2.FILLED)
    cv2.putText(image, text, (x, y), cv2.FONT_HERSHEY_SIMPLEX, scale, (255, 255, 255), 1, cv2.LINE_AA)


def write_animation(path: Path, clip, remover, stream, fps: float = 10.0) -> None:
    """GIF of `clip` (sahm_core.data.video.Clip) through `remover` per-frame and with stream mode `stream`
    (a StreamConfig): per row, before / after / mask; the command applies from clip.command_frame, as spoken."""
    from PIL import Image

    outputs = {}
    command = parse_command(clip.text).target
    for mode, config in (("per-frame", None), ("stream", stream)):
        remover.stream = config
        remover.clear_command()
        removals = []
        for t, frame in enumerate(clip.frames):
            if t == clip.command_frame:
                remover.set_command(command)
            removals.append(remover.remove(frame.image))
        outputs[mode] = removals
    remover.clear_command()
    remover.stream = None
    side, header = ANIMATION_TILE, 44
    pictures = []
    for t, frame in enumerate(clip.frames):
        canvas = np.full((header + 2 * side, 3 * side, 3), 40, np.uint8)
        said = f'removing "{command}"' if t >= clip.command_frame else "no command yet"
        _label(canvas, f"t={t / clip.fps:.2f}s  {said}", (6, 17))
        for x, title in zip(range(0, 3 * side, side), ("before", "after", "mask")):
            _label(canvas, title, (x + 6, header - 6))
        for row, (mode, removals) in enumerate(outputs.items()):
            removal, top = removals[t], header + row * side
            tiles = (frame.image, removal.image, np.repeat(removal.mask[..., None], 3, axis=2))
            for x, tile in zip(range(0, 3 * side, side), tiles):
                canvas[top:top + side, x:x + side] = cv2.resize(tile, (side, side), interpolation=cv2.INTER_AREA)
            _label(canvas, mode, (6, top + side - 8))
        pictures.append(Image.fromarray(canvas))
    pictures[0].save(path, save_all=True, append_images=pictures[1:], duration=round(1000 / fps), loop=0)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--out", default="out/demo", help="folder for sample.bag, output.bag and sheet.png (replaced)")
    parser.add_argument("--model", default=None,
                        help="model dir / .safetensors / .onnx / .engine (default: bundled models/nano)")
    add_backend_arguments(parser, device=False)
    parser.add_argument("--seed", type=int, default=4, help="synthetic scene")
    parser.add_argument("--seconds", type=float, default=3.0)
    parser.add_argument("--size", default="320x240", help="camera WIDTHxHEIGHT")
    parser.add_argument("--storage", default="sqlite3", choices=("sqlite3", "mcap"))
    parser.add_argument("--animation-seed", type=int, default=4, help="synthetic moving-camera clip of stream.gif")
    parser.add_argument("--animation-frames", type=int, default=36, help="frames in stream.gif; 0 = no animation")
    parser.add_argument("--animation-fps", type=float, default=10.0,
                        help="stream.gif playback rate (the clip is filmed at 30 Hz: 10 = three times slower)")
    add_stream_arguments(parser, switch=False)  # stream.gif always shows both modes


def main(args: argparse.Namespace) -> int:
    from sahm_core.runtime import Remover
    from sahm_core.stream import StreamConfig

    try:
        width, height = (int(v) for v in args.size.lower().split("x"))
        model = Path(args.model) if args.model else bundled_model_dir()
    except ValueError:
        print(f"error: --size must look like 320x240, got {args.size!r}", file=sys.stderr)
        return 2
    except FileNotFoundError as e:
        print(f"error: no bundled model ({e}); pass --model DIR", file=sys.stderr)
        return 1
    out = Path(args.out)
    for name in ("sample.bag", "output.bag", "sheet.png", "stream.gif"):
        target = out / name
        shutil.rmtree(target, ignore_errors=True) if target.is_dir() else target.unlink(missing_ok=True)
    out.mkdir(parents=True, exist_ok=True)
    command = write_sample_bag(out / "sample.bag", seed=args.seed, seconds=args.seconds, width=width, height=height,
                               command_at=0.25 * args.seconds, stop_at=0.75 * args.seconds, storage=args.storage)
    print(f"sample bag: {out / 'sample.bag'} ({args.seconds:g} s of {width}x{height} at 30 Hz, "
          f"command {command!r}, then {STOP_TEXT!r})")
    remover = Remover.load(model, backend=args.backend)
    print(f"model: {model} on {remover.backend}")
    try:
        summary = replay(out / "sample.bag", out / "output.bag", IMAGE_TOPIC, COMMAND_TOPIC, remover)
    except ReplayError as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    write_sheet(read_outputs(out / "output.bag"), out / "sheet.png")
    print(summary)
    print(f"sheet             {out / 'sheet.png'}")
    if args.animation_frames > 0:
        from sahm_core.data.video import ClipConfig, render_clip

        frames = (args.animation_frames, args.animation_frames)
        clip = render_clip(args.animation_seed, ClipConfig(frames=frames))
        write_animation(out / "stream.gif", clip, remover, StreamConfig(strength=args.stream_strength),
                        args.animation_fps)
        print(f"animation         {out / 'stream.gif'} ({len(clip.frames)} frames, per-frame vs stream mode, "
              f"command {clip.text!r} from frame {clip.command_frame})")
    return 0
