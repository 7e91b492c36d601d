"""Offline replay: run the remover over a rosbag2 (sqlite3 or mcap) and write a new bag with the results.

    ros-ror replay IN_BAG OUT_BAG --image-topic /camera/image_raw --command-topic /speech/text

Messages are read in time order; a command applies to every frame stamped at or
after it (bag receive time), and every frame is processed: no DDS, nothing is
lost to transport. The output holds every input topic plus, under
`--namespace` (default /ros_ror_remove, the node's topics): cleaned/image,
mask and result (RemovalResult, registered from msg/), all at the input
frame's timestamp and with its header. With `--erase-mask-topic`, masks another node
recorded (mono8, the frame's size) are erased from the frame stamped within
`--erase-mask-tolerance` of them, as the node does with `~/erase_mask`. With `--click-topic`, recorded clicks
(geometry_msgs/PointStamped in pixels, rqt_image_view's `<image topic>_mouse_left`) add targets as `~/click` does:
each placed on the newest frame before it (ros_ror.clicks). The bag is laid out as rosbag2 lays
it out (metadata.yaml and OUT_BAG_0.db3 / .mcap) and appears under its name
only when complete (`bag_writer`).
"""

from __future__ import annotations

import shutil
import sqlite3
import time
from collections import Counter
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from tqdm import tqdm

from sahm_core.backends import add_backend_arguments
from sahm_core.found import add_rule_arguments
from sahm_core.stream import add_stream_arguments, stream_from_args

from .clicks import DEFAULT_CLICK_MAX_AGE, ClickDropped, NewestFrame, place_click
from .commands import DEFAULT_MAX_TARGETS, CommandError, CommandTracker, Intent, sync_command
from .given_masks import DEFAULT_TOLERANCE, GivenMasks
from .image_conversions import (
    ImageError,
    decode_compressed,
    decode_image,
    decode_mask,
    encode_compressed,
    encode_image,
    mask_fields,
)
from .result import MSG_TYPE, ResultFields, fields_from_removal, rosbags_message, rosbags_types
from .topics import CLEANED_IMAGE, MASK, NODE_NAME, RESULT

IMAGE_TYPES = ("sensor_msgs/msg/Image", "sensor_msgs/msg/CompressedImage")
COMMAND_TYPE = "std_msgs/msg/String"
CLICK_TYPE = "geometry_msgs/msg/PointStamped"
MASK_TYPE = "sensor_msgs/msg/Image"
STORAGES = ("sqlite3", "mcap")


class ReplayError(RuntimeError):
    """A bag that cannot be replayed as asked (missing, corrupt, wrong topics or types)."""


@dataclass
class ReplaySummary:
    out_bag: Path
    frames: int = 0  # image messages read
    removed: int = 0  # frames with a command where the object was found and erased
    not_found: int = 0  # frames with a command where nothing was removed
    passed_through: int = 0  # frames with no active command (and no given mask)
    given_masks: int = 0  # frames a recorded erase mask was erased from
    dropped_masks: Counter = field(default_factory=Counter)  # erase masks not used, by reason
    skipped: Counter = field(default_factory=Counter)  # unusable frames by reason
    commands: int = 0
    stops: int = 0
    clicks: int = 0  # clicks that became targets
    dropped_clicks: Counter = field(default_factory=Counter)  # clicks not placed, by reason (ros_ror.clicks)
    rejected_commands: Counter = field(default_factory=Counter)
    inference_s: list[float] = field(default_factory=list)
    written: Counter = field(default_factory=Counter)  # topic -> messages written

    def __str__(self) -> str:
        mean = f"{1e3 * float(np.mean(self.inference_s)):.1f} ms" if self.inference_s else "n/a"
        lines = [
            f"output bag        {self.out_bag}",
            f"frames            {self.frames}",
            f"  removed         {self.removed}",
            f"  not found       {self.not_found}",
            f"  no command      {self.passed_through}",
            f"  given mask      {self.given_masks}"
            + (f", masks dropped: {_counts(self.dropped_masks)}" if self.dropped_masks else ""),
            f"  skipped         {sum(self.skipped.values())}" + (f" ({_counts(self.skipped)})" if self.skipped else ""),
            f"commands          {self.commands} ({self.stops} stop)"
            + (f", rejected: {_counts(self.rejected_commands)}" if self.rejected_commands else ""),
            f"clicks            {self.clicks}"
            + (f", dropped: {_counts(self.dropped_clicks)}" if self.dropped_clicks else ""),
            f"mean latency      {mean} per frame with a command",
            "topics written    " + ", ".join(f"{t} ({n})" for t, n in sorted(self.written.items())),
        ]
        return "\n".join(lines)


def _counts(counter: Counter) -> str:
    return ", ".join(f"{n} {reason}" for reason, n in sorted(counter.items()))


def replay(
    in_bag: str | Path,
    out_bag: str | Path,
    image_topic: str,
    command_topic: str,
    remover,
    *,
    namespace: str = f"/{NODE_NAME}",
    storage: str | None = None,
    command_timeout: float = 0.0,
    max_targets: int = DEFAULT_MAX_TARGETS,
    erase_mask_topic: str | None = None,
    erase_mask_tolerance: float = DEFAULT_TOLERANCE,
    click_topic: str | None = None,
    click_max_age: float = DEFAULT_CLICK_MAX_AGE,
    pass_through: bool = True,
    progress: bool = True,
) -> ReplaySummary:
    """Replay `in_bag` through `remover` (a sahm_core.runtime.Remover) into `out_bag`; `storage` None = the input's."""
    from rosbags.rosbag2 import Reader, ReaderError, WriterError

    in_bag, out_bag = Path(in_bag), Path(out_bag)
    if not in_bag.exists():
        raise ReplayError(f"input bag {in_bag} does not exist")
    summary = ReplaySummary(out_bag=out_bag)
    try:
        with bag_writer(out_bag, storage or _storage_of(in_bag)) as writer, Reader(in_bag) as reader:
            image_conn = _only_connection(reader, image_topic, IMAGE_TYPES, "image")
            command_conn = _only_connection(reader, command_topic, (COMMAND_TYPE,), "command")
            mask_conn = None if erase_mask_topic is None else _only_connection(reader, erase_mask_topic, (MASK_TYPE,),
                                                                                "erase mask")
            click_conn = None if click_topic is None else _only_connection(reader, click_topic, (CLICK_TYPE,), "click")
            newest = None  # the newest frame decoded: where a click lands
            masks = GivenMasks()
            typestore = replay_typestore()
            copies = {c.id: _copy_connection(writer, c, typestore) for c in reader.connections}
            outputs = {
                "cleaned": writer.add_connection(f"{namespace}/{CLEANED_IMAGE}", image_conn.msgtype,
                                                 typestore=typestore),
                "mask": writer.add_connection(f"{namespace}/{MASK}", "sensor_msgs/msg/Image", typestore=typestore),
                "result": writer.add_connection(f"{namespace}/{RESULT}", MSG_TYPE, typestore=typestore),
            }
            tracker = CommandTracker(timeout=command_timeout, max_targets=max_targets)
            bar = tqdm(total=reader.message_count, unit="msg", desc="replay", disable=not progress)
            for conn, timestamp, raw in reader.messages():
                bar.update(1)
                writer.write(copies[conn.id], timestamp, raw)
                now = timestamp * 1e-9
                if conn.id == command_conn.id:
                    _apply_command(tracker, typestore, raw, now, summary)
                elif mask_conn is not None and conn.id == mask_conn.id:
                    _add_mask(masks, typestore, raw, summary)
                elif click_conn is not None and conn.id == click_conn.id:
                    _add_click(tracker, typestore, raw, now, newest, click_max_age, summary)
                elif conn.id == image_conn.id:
                    summary.frames += 1
                    targets, rejected = sync_command(remover, tracker, now)
                    if rejected is not None:
                        summary.rejected_commands["encoder"] += 1
                    newest = _process_frame(remover, targets, (masks, erase_mask_tolerance), typestore, conn.msgtype,
                                            raw, timestamp, writer, outputs, pass_through, summary) or newest
            bar.close()
            summary.written.update({c.topic: writer.counts[c.id] for c in writer.connections})
    except (ReaderError, WriterError, FileNotFoundError, sqlite3.DatabaseError) as e:
        raise ReplayError(f"cannot replay {in_bag}: {e}") from e
    return summary


@contextmanager
def bag_writer(path: str | Path, storage: str):
    """A rosbags Writer (rosbag2 version 9) for a new bag at `path` that appears there only once closed after success.

    rosbag2 names the storage file `<bag folder name>_0.db3` / `.mcap`; rosbags names it after the writer's folder. So
    the writer works in `.<name>.partial/<name>_0/` next to `path`, and that folder, whose file and metadata.yaml
    already carry the final names, is renamed to `path` when complete. A failed or killed write never leaves anything
    under `path`; only the hidden folder, which the next write to `path` clears.
    """
    from rosbags.rosbag2 import StoragePlugin, Writer

    path = Path(path)
    if path.exists():
        raise ReplayError(f"output bag {path} already exists; not overwriting it")
    if storage not in STORAGES:
        raise ReplayError(f"unknown storage {storage!r}; choose {' or '.join(STORAGES)}")
    staging = path.parent / f".{path.name}.partial"
    shutil.rmtree(staging, ignore_errors=True)  # left by a write that was killed
    finished = staging / f"{path.name}_0"
    try:
        with Writer(finished, version=9, storage_plugin=StoragePlugin[storage.upper()]) as writer:
            yield writer
        finished.rename(path)
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def replay_typestore():
    """ROS 2 Kilted message types plus RemovalResult and Target from msg/."""
    from rosbags.typesys import Stores, get_typestore

    typestore = get_typestore(Stores.ROS2_KILTED)
    typestore.register(rosbags_types())
    return typestore


def _only_connection(reader, topic: str, types: tuple[str, ...], role: str):
    conns = [c for c in reader.connections if c.topic == topic]
    if not conns:
        available = ", ".join(f"{c.topic} [{c.msgtype}]" for c in reader.connections) or "none"
        raise ReplayError(f"{role} topic {topic!r} is not in the bag; topics: {available}")
    wrong = [c.msgtype for c in conns if c.msgtype not in types]
    if wrong or len(conns) > 1:
        raise ReplayError(f"{role} topic {topic!r} has type(s) {', '.join(c.msgtype for c in conns)}; "
                          f"expected one of {', '.join(types)}")
    return conns[0]


def _storage_of(bag: Path) -> str:
    files = [bag] if bag.is_file() else list(bag.iterdir())
    return "mcap" if any(f.suffix == ".mcap" for f in files) else "sqlite3"


def _copy_connection(writer, conn, typestore):
    """Same topic, type and QoS in the output; the bag's own definition when it has one."""
    qos = conn.ext.offered_qos_profiles
    if conn.msgdef.data and conn.digest:
        return writer.add_connection(conn.topic, conn.msgtype, msgdef=conn.msgdef.data, rihs01=conn.digest,
                                     offered_qos_profiles=qos)
    if conn.msgtype in typestore.fielddefs:
        return writer.add_connection(conn.topic, conn.msgtype, typestore=typestore, offered_qos_profiles=qos)
    raise ReplayError(f"topic {conn.topic!r} has type {conn.msgtype!r} with no definition in the bag "
                      "and none known here")


def _apply_command(tracker: CommandTracker, typestore, raw, now: float, summary: ReplaySummary) -> None:
    try:
        text = typestore.deserialize_cdr(raw, COMMAND_TYPE).data
        command = tracker.submit(text, now)
    except CommandError as e:
        summary.rejected_commands[e.reason] += 1
        return
    except Exception:  # noqa: BLE001 - one undecodable message is reported, not fatal
        summary.rejected_commands["corrupt_message"] += 1
        return
    summary.commands += 1
    summary.stops += command.intent is Intent.END


def _add_click(tracker: CommandTracker, typestore, raw, now: float, newest: NewestFrame | None, max_age: float,
               summary: ReplaySummary) -> None:
    try:
        msg = typestore.deserialize_cdr(raw, CLICK_TYPE)
        tracker.add(place_click(msg.point.x, msg.point.y, _stamp_ns(msg.header), newest, max_age), now)
    except ClickDropped as e:
        summary.dropped_clicks[e.reason] += 1
        return
    except CommandError as e:
        summary.rejected_commands[e.reason] += 1
        return
    except Exception:  # noqa: BLE001 - one undecodable message is reported, not fatal
        summary.dropped_clicks["corrupt_message"] += 1
        return
    summary.clicks += 1


def _add_mask(masks: GivenMasks, typestore, raw, summary: ReplaySummary) -> None:
    try:
        msg = typestore.deserialize_cdr(raw, MASK_TYPE)
        mask = decode_mask(msg.height, msg.width, msg.encoding, msg.step, msg.data)
    except ImageError as e:
        summary.dropped_masks[e.reason] += 1
        return
    except Exception:  # noqa: BLE001 - one undecodable message is reported, not fatal
        summary.dropped_masks["corrupt_message"] += 1
        return
    masks.add(_stamp_ns(msg.header), mask)


def _stamp_ns(header) -> int:
    return header.stamp.sec * 10**9 + header.stamp.nanosec


def _given_mask(masks: GivenMasks, tolerance: float, header, shape, summary: ReplaySummary) -> np.ndarray | None:
    """The recorded mask for this frame, as the node matches ~/erase_mask; stale and misfit ones are counted."""
    best, stale = masks.match(_stamp_ns(header), tolerance)
    if stale:
        summary.dropped_masks["stale"] += stale
    if best is not None and best.mask.shape != shape[:2]:
        summary.dropped_masks["size"] += 1
        return None
    return None if best is None else best.mask


def _process_frame(remover, targets, given_masks, typestore, msgtype, raw, timestamp, writer, outputs, pass_through,
                   summary) -> NewestFrame | None:
    """Remove from one recorded frame and write the outputs; the frame (None when it cannot be decoded)."""
    try:
        msg = typestore.deserialize_cdr(raw, msgtype)
    except Exception:  # noqa: BLE001 - one undecodable message is reported, not fatal
        summary.skipped["corrupt_message"] += 1
        return None
    compressed = msgtype.endswith("CompressedImage")
    try:
        frame = (decode_compressed(msg.format, msg.data) if compressed
                 else decode_image(msg.height, msg.width, msg.encoding, msg.step, msg.data))
    except ImageError as e:
        summary.skipped[e.reason] += 1
        return None
    rgb = frame.rgb
    newest = NewestFrame(_stamp_ns(msg.header), rgb.shape[1], rgb.shape[0])
    given = _given_mask(*given_masks, msg.header, rgb.shape, summary)
    if not targets and given is None:
        if not pass_through:
            return newest
        summary.passed_through += 1
        image, mask = rgb, np.zeros(rgb.shape[:2], np.uint8)
        fields = ResultFields(width=rgb.shape[1], height=rgb.shape[0])
    else:
        started = time.perf_counter()
        removal = remover.remove(rgb) if given is None else remover.remove(rgb, erase=given)
        summary.given_masks += given is not None
        image, mask = removal.image, removal.mask
        fields = fields_from_removal(removal, remover.backend)
        fields.latency = time.perf_counter() - started  # offline: the only latency is processing
        summary.inference_s.append(removal.latency_s)
        summary.removed += removal.found
        summary.not_found += bool(targets) and not removal.found
    types = typestore.types
    height, width = mask.shape
    if compressed:
        cleaned = types["sensor_msgs/msg/CompressedImage"](
            header=msg.header, format=msg.format, data=np.frombuffer(encode_compressed(image, frame.encoding), np.uint8)
        )
    else:
        data, step = encode_image(image, frame.encoding, frame.alpha)
        cleaned = types["sensor_msgs/msg/Image"](header=msg.header, height=height, width=width, encoding=frame.encoding,
                                                 is_bigendian=0, step=step, data=np.frombuffer(data, np.uint8))
    mask_data, mask_step = mask_fields(mask)
    mask_msg = types["sensor_msgs/msg/Image"](header=msg.header, height=height, width=width, encoding="mono8",
                                              is_bigendian=0, step=mask_step, data=np.frombuffer(mask_data, np.uint8))
    result = rosbags_message(typestore, msg.header, fields)
    for key, message in (("cleaned", cleaned), ("mask", mask_msg), ("result", result)):
        writer.write(outputs[key], timestamp, typestore.serialize_cdr(message, outputs[key].msgtype))
    return newest


def add_arguments(parser) -> None:
    parser.add_argument("in_bag", help="input rosbag2 folder (or .db3 / .mcap file)")
    parser.add_argument("out_bag", help="output rosbag2 folder (must not exist)")
    parser.add_argument("--image-topic", required=True, help="sensor_msgs/Image or CompressedImage topic")
    parser.add_argument("--command-topic", required=True, help="std_msgs/String topic with the spoken commands")
    parser.add_argument("--model", default=None,
                        help="model dir / .safetensors / .onnx / .engine (default: bundled models/nano)")
    add_backend_arguments(parser)
    add_rule_arguments(parser)  # sahm_core's found / not-found rule, the node's defaults
    add_stream_arguments(parser)  # stream mode, as the node's stream_mode / stream_strength
    parser.add_argument("--storage", default=None, choices=STORAGES, help="output storage (default: the input's)")
    parser.add_argument("--namespace", default=f"/{NODE_NAME}", help="prefix of the output topics")
    parser.add_argument("--command-timeout", type=float, default=0.0, help="seconds a command lasts; 0 = until stop")
    parser.add_argument("--max-targets", type=int, default=DEFAULT_MAX_TARGETS,
                        help=f"most targets at once (\"also ...\", \"and the ...\"; default {DEFAULT_MAX_TARGETS})")
    parser.add_argument("--erase-mask-topic", default=None,
                        help="sensor_msgs/Image (mono8) masks another node recorded: each is erased from the frame "
                             "stamped within --erase-mask-tolerance of it, as the node does with ~/erase_mask")
    parser.add_argument("--erase-mask-tolerance", type=float, default=DEFAULT_TOLERANCE,
                        help=f"seconds between a mask's and its frame's stamps (default {DEFAULT_TOLERANCE})")
    parser.add_argument("--click-topic", default=None,
                        help="geometry_msgs/PointStamped clicks in pixels (rqt_image_view's <image topic>_mouse_left): "
                             "each adds the object under it as a target, as the node's ~/click does")
    parser.add_argument("--click-max-age", type=float, default=DEFAULT_CLICK_MAX_AGE,
                        help="a click stamped more than this many seconds before the newest frame is dropped "
                             f"(default {DEFAULT_CLICK_MAX_AGE:g})")
    parser.add_argument("--no-pass-through", action="store_true", help="write nothing for frames without a command")


def main(args) -> int:
    import sys

    from sahm_core.runtime import Remover

    from .resources import bundled_model_dir

    try:
        model = args.model or bundled_model_dir()
        remover = Remover.load(model, backend=args.backend, device=args.device, mask_threshold=args.mask_threshold,
                               min_mask_area=args.min_mask_area, min_score=args.min_score,
                               stream=stream_from_args(args))
        summary = replay(args.in_bag, args.out_bag, args.image_topic, args.command_topic, remover,
                         namespace=args.namespace, storage=args.storage, command_timeout=args.command_timeout,
                         max_targets=args.max_targets, erase_mask_topic=args.erase_mask_topic,
                         erase_mask_tolerance=args.erase_mask_tolerance, click_topic=args.click_topic,
                         click_max_age=args.click_max_age, pass_through=not args.no_pass_through)
    except (ReplayError, FileNotFoundError, ValueError, RuntimeError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    print(summary)
    return 0
