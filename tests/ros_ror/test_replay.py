"""`ros-ror replay` on rosbag2 files written here, in both storage formats, and its error cases."""

from __future__ import annotations

import dataclasses
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
import yaml
from rosbags.rosbag2 import Reader, StoragePlugin, Writer
from rosbags.typesys import Stores, get_typestore

from ros_ror.replay import ReplayError, replay

TYPES = get_typestore(Stores.ROS2_KILTED)
IMAGE, COMMAND = "/cam/image", "/speech"
COMMAND_TEXT = "remove the red cup on the left"  # as in conftest.py
# (bag time in ns, what): frames every 100 ms; the command lands between frames 2 and 3, "stop" between 5 and 6.
FRAME_TIMES = [100_000_000 * i + 5 for i in range(8)]
SPOKEN = [(250_000_000, COMMAND_TEXT), (550_000_000, "ok stop removing")]
WITH_COMMAND = {3, 4, 5}


def image(rgb: np.ndarray, i: int, encoding: str = "rgb8", step_pad: int = 0):
    Header, Time, Image = (TYPES.types[t] for t in ("std_msgs/msg/Header", "builtin_interfaces/msg/Time",
                                                    "sensor_msgs/msg/Image"))
    h, w, _ = rgb.shape
    pixels = rgb[:, :, ::-1] if encoding == "bgr8" else rgb
    rows = np.concatenate([pixels.reshape(h, -1), np.zeros((h, step_pad), np.uint8)], axis=1)
    header = Header(stamp=Time(sec=50 + i, nanosec=i), frame_id=f"cam{i}")
    return Image(header=header, height=h, width=w, encoding=encoding, is_bigendian=0, step=rows.shape[1],
                 data=rows.reshape(-1))


def write_bag(path: Path, frames: list[np.ndarray], storage: StoragePlugin, bad_frame: int | None = None) -> None:
    String = TYPES.types["std_msgs/msg/String"]
    with Writer(path, version=9, storage_plugin=storage) as writer:
        images = writer.add_connection(IMAGE, "sensor_msgs/msg/Image", typestore=TYPES)
        commands = writer.add_connection(COMMAND, "std_msgs/msg/String", typestore=TYPES)
        for t, text in SPOKEN:
            writer.write(commands, t, TYPES.serialize_cdr(String(data=text), "std_msgs/msg/String"))
        for i, (t, rgb) in enumerate(zip(FRAME_TIMES, frames)):  # written after the commands: replay must order by time
            msg = image(rgb, i, "bgr8" if i % 2 else "rgb8", step_pad=3 * (i % 3))
            if i == bad_frame:
                msg.encoding = "yuv422"
            writer.write(images, t, TYPES.serialize_cdr(msg, "sensor_msgs/msg/Image"))


def read_bag(path: Path, typestore) -> dict[str, list[tuple[int, object]]]:
    out: dict[str, list] = {}
    with Reader(path) as reader:
        for conn, t, raw in reader.messages():
            out.setdefault(conn.topic, []).append((t, typestore.deserialize_cdr(raw, conn.msgtype)))
    return out


def rgb_of(msg) -> np.ndarray:
    h, w = msg.height, msg.width
    channels = 1 if msg.encoding == "mono8" else 3
    pixels = msg.data.reshape(h, msg.step)[:, : w * channels].reshape(h, w, channels)
    return pixels[:, :, ::-1] if msg.encoding == "bgr8" else pixels


@pytest.fixture(scope="module")
def replay_remover(onnx_model_dir, permissive_thresholds):
    from sahm_core.runtime import Remover

    return Remover.load(onnx_model_dir, backend="onnxruntime", **permissive_thresholds)


@pytest.mark.parametrize("storage", [StoragePlugin.SQLITE3, StoragePlugin.MCAP], ids=["sqlite3", "mcap"])
def test_replay_writes_cleaned_masks_and_results_with_original_timestamps(tmp_path, scene, replay_remover,
                                                                          reference_remover, storage):
    from ros_ror.replay import replay_typestore

    frames = [scene(seed=i % 3) for i in range(len(FRAME_TIMES))]
    write_bag(tmp_path / "in", frames, storage, bad_frame=7)
    summary = replay(tmp_path / "in", tmp_path / "out", IMAGE, COMMAND, replay_remover, progress=False)

    assert (summary.frames, summary.passed_through, summary.commands, summary.stops) == (8, 4, 2, 1)
    assert summary.removed + summary.not_found == len(WITH_COMMAND) and dict(summary.skipped) == {"encoding": 1}
    suffix = ".mcap" if storage == StoragePlugin.MCAP else ".db3"
    assert any(p.suffix == suffix for p in (tmp_path / "out").iterdir())  # same storage as the input
    assert not list(tmp_path.glob(".out*"))  # no partial folder left behind
    bag = read_bag(tmp_path / "out", replay_typestore())
    ns = "/ros_ror_remove"
    counts = {topic: len(msgs) for topic, msgs in bag.items()}
    assert counts == {IMAGE: 8, COMMAND: 2, f"{ns}/cleaned/image": 7, f"{ns}/mask": 7, f"{ns}/result": 7}
    for topic in (f"{ns}/cleaned/image", f"{ns}/mask", f"{ns}/result"):
        assert [t for t, _ in bag[topic]] == FRAME_TIMES[:7]  # the input frames' timestamps; frame 7 was unusable
    assert [t for t, _ in bag[IMAGE]] == FRAME_TIMES

    reference_remover.set_command(COMMAND_TEXT)
    for i, ((_, cleaned), (_, mask), (_, result)) in enumerate(zip(bag[f"{ns}/cleaned/image"], bag[f"{ns}/mask"],
                                                                   bag[f"{ns}/result"])):
        assert ((cleaned.header.stamp.sec, cleaned.header.stamp.nanosec, cleaned.header.frame_id)
                == (50 + i, i, f"cam{i}"))
        assert result.header.frame_id == mask.header.frame_id == f"cam{i}"
        assert cleaned.encoding == ("bgr8" if i % 2 else "rgb8") and mask.encoding == "mono8"
        m = rgb_of(mask)[:, :, 0]
        if i in WITH_COMMAND:
            expected = reference_remover.remove(frames[i])
            assert result.command == COMMAND_TEXT and result.found == expected.found
            np.testing.assert_array_equal(rgb_of(cleaned), expected.image)
            np.testing.assert_array_equal(m, expected.mask)
            assert result.mask_pixels == np.count_nonzero(m)
        else:
            assert result.command == "" and not result.found
            np.testing.assert_array_equal(rgb_of(cleaned), frames[i])
            assert not m.any()
        np.testing.assert_array_equal(rgb_of(cleaned)[m == 0], frames[i][m == 0])


@pytest.fixture(scope="module")
def small_bag(tmp_path_factory, scene):
    path = tmp_path_factory.mktemp("bags") / "small"
    write_bag(path, [scene(height=8, width=8)] * len(FRAME_TIMES), StoragePlugin.SQLITE3)
    return path


class WatchingRemover:
    """A remover that, at every frame it is asked to clean (mid-replay), notes what `folder` holds."""

    def __init__(self, remover, folder: Path, interrupt_at: int | None = None):
        self.remover, self.folder, self.interrupt_at = remover, folder, interrupt_at
        self.seen: list[list[str]] = []

    def __getattr__(self, name):
        return getattr(self.remover, name)

    def remove(self, rgb):
        self.seen.append(sorted(p.name for p in self.folder.iterdir()))
        if len(self.seen) == self.interrupt_at:
            raise KeyboardInterrupt  # as Ctrl-C mid-replay
        return self.remover.remove(rgb)


@pytest.mark.parametrize("storage, suffix", [("sqlite3", ".db3"), ("mcap", ".mcap")])
def test_output_is_laid_out_as_rosbag2_lays_it_out_and_appears_only_when_complete(tmp_path, small_bag, replay_remover,
                                                                                   storage, suffix):
    out = tmp_path / "run.bag"
    stale = tmp_path / ".run.bag.partial" / "run.bag_0"  # what a killed replay leaves
    stale.mkdir(parents=True)
    (stale / "run.bag_0.db3").write_bytes(b"half a bag")
    watcher = WatchingRemover(replay_remover, tmp_path)
    summary = replay(small_bag, out, IMAGE, COMMAND, watcher, storage=storage, progress=False)

    assert len(watcher.seen) == len(WITH_COMMAND) and all(names == [".run.bag.partial"] for names in watcher.seen)
    assert [p.name for p in tmp_path.iterdir()] == ["run.bag"]  # no hidden or partial folder left
    data_file = "run.bag_0" + suffix  # rosbag2: <bag folder name>_<split index>.<storage extension>
    assert sorted(p.name for p in out.iterdir()) == sorted(["metadata.yaml", data_file])
    info = yaml.safe_load((out / "metadata.yaml").read_text())["rosbag2_bagfile_information"]
    assert info["storage_identifier"] == storage
    assert info["relative_file_paths"] == [data_file] and [f["path"] for f in info["files"]] == [data_file]
    with Reader(out) as reader:
        read = Counter(conn.topic for conn, _, _ in reader.messages())
    assert read == summary.written and sum(read.values()) == info["message_count"] == len(SPOKEN) + 4 * len(FRAME_TIMES)


def test_interrupted_replay_leaves_nothing_behind(tmp_path, small_bag, replay_remover):
    interrupted = WatchingRemover(replay_remover, tmp_path, interrupt_at=2)
    with pytest.raises(KeyboardInterrupt):
        replay(small_bag, tmp_path / "out", IMAGE, COMMAND, interrupted, progress=False)
    assert not list(tmp_path.iterdir())


def assert_same_fields(reference, decoded, where: str) -> None:
    """`reference` (a rosbags message) and `decoded` (an mcap_ros2 one) hold equal values in all fields, recursively."""
    for f in dataclasses.fields(reference):
        if f.name == "__msgtype__":  # rosbags' type tag, not a message field
            continue
        expected, got = getattr(reference, f.name), getattr(decoded, f.name)
        if dataclasses.is_dataclass(expected):
            assert_same_fields(expected, got, f"{where}.{f.name}")
        elif isinstance(expected, list) and expected and dataclasses.is_dataclass(expected[0]):  # Target[]
            assert len(got) == len(expected), f"{where}.{f.name}: {len(got)} elements, expected {len(expected)}"
            for i, (e, g) in enumerate(zip(expected, got)):
                assert_same_fields(e, g, f"{where}.{f.name}[{i}]")
        elif isinstance(expected, np.ndarray):
            got = np.frombuffer(got, expected.dtype) if isinstance(got, bytes) else np.asarray(got)
            np.testing.assert_array_equal(got, expected, err_msg=f"{where}.{f.name}")
        else:
            assert got == expected, f"{where}.{f.name}: {got!r} != {expected!r}"


@pytest.mark.parametrize("input_storage", [StoragePlugin.SQLITE3, StoragePlugin.MCAP], ids=["sqlite3_in", "mcap_in"])
def test_mcap_output_decodes_with_the_official_mcap_ros2_reader(tmp_path, scene, replay_remover, input_storage):
    """How Foxglove reads a bag: every message of every topic decodes with mcap_ros2, to what rosbags reads."""
    from mcap.reader import make_reader
    from mcap_ros2.decoder import DecoderFactory

    from ros_ror.replay import replay_typestore
    from ros_ror.result import MSG_TYPE

    frames = [scene(height=12, width=16, seed=i % 3) for i in range(len(FRAME_TIMES))]
    write_bag(tmp_path / "in", frames, input_storage, bad_frame=7)
    replay(tmp_path / "in", tmp_path / "out", IMAGE, COMMAND, replay_remover, storage="mcap", progress=False)

    typestore = replay_typestore()
    reference = {(topic, t): msg for topic, msgs in read_bag(tmp_path / "out", typestore).items() for t, msg in msgs}
    with (tmp_path / "out" / "out_0.mcap").open("rb") as stream:
        reader = make_reader(stream, validate_crcs=True, decoder_factories=[DecoderFactory()])
        assert reader.get_header().profile == "ros2"
        decoded = {}
        for schema, channel, message, msg in reader.iter_decoded_messages(log_time_order=True):
            assert channel.message_encoding == "cdr" and schema.encoding == "ros2msg"
            decoded[channel.topic, message.log_time] = (schema.name, msg)
    assert decoded.keys() == reference.keys()
    assert len(decoded) == len(SPOKEN) + len(FRAME_TIMES) + 3 * (len(FRAME_TIMES) - 1)  # frame 7 is unusable
    assert {name for name, _ in decoded.values()} == {"sensor_msgs/msg/Image", "std_msgs/msg/String", MSG_TYPE}
    for key, (_, msg) in decoded.items():
        assert_same_fields(reference[key], msg, f"{key[0]}@{key[1]}")
    results = [reference[key] for key in reference if key[0].endswith("/result")]
    assert any(r.found or r.command for r in results)  # the RemovalResults compared include commanded frames


def test_missing_input_and_existing_output_are_refused(tmp_path, small_bag, replay_remover):
    with pytest.raises(ReplayError, match="does not exist"):
        replay(tmp_path / "nope", tmp_path / "out", IMAGE, COMMAND, replay_remover)
    (tmp_path / "taken").mkdir()
    with pytest.raises(ReplayError, match="already exists"):
        replay(small_bag, tmp_path / "taken", IMAGE, COMMAND, replay_remover)


@pytest.mark.parametrize(
    "image_topic, command_topic, message",
    [("/camera/missing", COMMAND,
      r"image topic '/camera/missing' is not in the bag; topics: /cam/image \[sensor_msgs/msg/Image\]"),
     (IMAGE, "/nobody/speaks", "command topic '/nobody/speaks' is not in the bag"),
     (COMMAND, COMMAND, "image topic '/speech' has type"),
     (IMAGE, IMAGE, "command topic '/cam/image' has type")],
)
def test_missing_topics_and_wrong_types_are_clear_errors(tmp_path, small_bag, replay_remover, image_topic,
                                                         command_topic, message):
    with pytest.raises(ReplayError, match=message):
        replay(small_bag, tmp_path / "out", image_topic, command_topic, replay_remover, progress=False)
    assert not (tmp_path / "out").exists() and not list(tmp_path.glob(".out*"))


@pytest.mark.parametrize("damage", ["garbage_db", "no_metadata", "bad_metadata", "truncated_mcap"])
def test_corrupt_bags_fail_cleanly_without_a_partial_output(tmp_path, scene, replay_remover, damage):
    storage = StoragePlugin.MCAP if damage == "truncated_mcap" else StoragePlugin.SQLITE3
    bag = tmp_path / "in"
    write_bag(bag, [scene(height=8, width=8)] * len(FRAME_TIMES), storage)
    data_file = next(p for p in bag.iterdir() if p.suffix in (".db3", ".mcap"))
    if damage == "garbage_db":
        data_file.write_bytes(b"this is not sqlite" * 100)
    elif damage == "no_metadata":
        (bag / "metadata.yaml").unlink()
    elif damage == "bad_metadata":
        (bag / "metadata.yaml").write_text("rosbag2_bagfile_information: [unbalanced")
    else:
        data_file.write_bytes(data_file.read_bytes()[: data_file.stat().st_size // 2])
    with pytest.raises(ReplayError, match="cannot replay"):
        replay(bag, tmp_path / "out", IMAGE, COMMAND, replay_remover, progress=False)
    assert not (tmp_path / "out").exists() and not list(tmp_path.glob(".out*"))


def test_cli_replay_reports_errors_without_a_traceback(tmp_path, small_bag, onnx_model_dir, capsys):
    from ros_ror.cli import main

    code = main(["replay", str(small_bag), str(tmp_path / "out"), "--image-topic", "/wrong", "--command-topic", COMMAND,
                 "--model", str(onnx_model_dir), "--backend", "onnxruntime"])
    assert code == 1
    assert "error: image topic '/wrong' is not in the bag" in capsys.readouterr().err


def test_cli_replay_in_stream_mode_on_a_video_clip(tmp_path, onnx_model_dir, capsys):
    """`sahm make-data video` bags replay as they are; --stream runs the Remover in stream mode on them."""
    from ros_ror.cli import main
    from ros_ror.demo import COMMAND_TOPIC, IMAGE_TOPIC
    from ros_ror.replay import replay_typestore
    from sahm_core.data.video import ClipConfig, make_video_dataset, read_clip_rows

    make_video_dataset(tmp_path / "clips", 1, seed=2, cfg=ClipConfig(size=64, frames=(5, 5), command_at=(0.3, 0.3)))
    row = read_clip_rows(tmp_path / "clips")[0]
    out = tmp_path / "out"
    code = main(["replay", str(tmp_path / "clips" / row["bag"]), str(out), "--image-topic", IMAGE_TOPIC,
                 "--command-topic", COMMAND_TOPIC, "--model", str(onnx_model_dir), "--backend", "onnxruntime",
                 "--stream", "--stream-strength", "0.5", "--min-score", "0", "--min-mask-area", "0"])
    assert code == 0
    printed = capsys.readouterr().out
    assert f"frames            {row['frames']}" in printed
    assert f"no command      {row['command_frame']}" in printed  # the command is spoken part-way
    results = [m for _, m in read_bag(out, replay_typestore())["/ros_ror_remove/result"]]
    assert [bool(r.command) for r in results] == [i >= row["command_frame"] for i in range(row["frames"])]
    assert main(["replay", str(tmp_path / "clips" / row["bag"]), str(tmp_path / "out2"), "--image-topic", IMAGE_TOPIC,
                 "--command-topic", COMMAND_TOPIC, "--model", str(onnx_model_dir), "--stream",
                 "--stream-strength", "2"]) == 1
    assert "stream strength must be in [0, 1]" in capsys.readouterr().err


def test_replay_erases_recorded_masks_from_their_frames(tmp_path, scene, replay_remover, reference_remover):
    """A segmentation node's masks recorded beside the camera: each is erased from the frame stamped within the
    tolerance of it, as the node does with ~/erase_mask; a mask of another size and a stale one are dropped."""
    Image, Header, Time = (TYPES.types[t] for t in ("sensor_msgs/msg/Image", "std_msgs/msg/Header",
                                                    "builtin_interfaces/msg/Time"))
    frames = [scene(seed=10 + i) for i in range(4)]
    given = np.zeros(frames[0].shape[:2], np.uint8)
    given[10:30, 20:44] = 255

    def mask_msg(mask, i, offset_ns=0):
        h, w = mask.shape
        sec, nanosec = divmod((50 + i) * 10**9 + i + offset_ns, 10**9)  # the frame's stamp (see image()) + offset
        header = Header(stamp=Time(sec=sec, nanosec=nanosec), frame_id=f"cam{i}")
        return Image(header=header, height=h, width=w, encoding="mono8", is_bigendian=0, step=w, data=mask.reshape(-1))

    masks = {0: mask_msg(given, 0, offset_ns=5_000_000),  # 5 ms off: within the 20 ms tolerance
             1: mask_msg(given[:20], 1),  # another size: dropped
             2: mask_msg(given, 2, offset_ns=-900_000_000)}  # 0.9 s before its frame: stale by frame 2
    with Writer(tmp_path / "in", version=9, storage_plugin=StoragePlugin.SQLITE3) as writer:
        images = writer.add_connection(IMAGE, "sensor_msgs/msg/Image", typestore=TYPES)
        writer.add_connection(COMMAND, "std_msgs/msg/String", typestore=TYPES)  # nothing said
        erase = writer.add_connection("/seg/mask", "sensor_msgs/msg/Image", typestore=TYPES)
        for i, rgb in enumerate(frames):
            t = FRAME_TIMES[i]
            if i in masks:  # recorded just before its frame is handled
                writer.write(erase, t - 1, TYPES.serialize_cdr(masks[i], "sensor_msgs/msg/Image"))
            writer.write(images, t, TYPES.serialize_cdr(image(rgb, i), "sensor_msgs/msg/Image"))
    summary = replay(tmp_path / "in", tmp_path / "out", IMAGE, COMMAND, replay_remover, progress=False,
                     erase_mask_topic="/seg/mask")
    assert (summary.frames, summary.given_masks, summary.passed_through) == (4, 1, 3)
    assert dict(summary.dropped_masks) == {"size": 1, "stale": 1}
    from ros_ror.replay import replay_typestore

    out = read_bag(tmp_path / "out", replay_typestore())
    cleaned = [rgb_of(m) for _, m in out["/ros_ror_remove/cleaned/image"]]
    written_masks = [m.data.reshape(m.height, m.width) for _, m in out["/ros_ror_remove/mask"]]
    reference_remover.clear_command()
    expected = reference_remover.remove(frames[0], erase=given)
    np.testing.assert_array_equal(written_masks[0], expected.mask)
    np.testing.assert_array_equal(cleaned[0], expected.image)
    assert (written_masks[0][given > 0] > 0).all()
    for i in (1, 2, 3):  # no usable mask, no command: passed through
        assert not written_masks[i].any() and np.array_equal(cleaned[i], frames[i])
    result = out["/ros_ror_remove/result"][0][1]
    assert [(t.source, t.found) for t in result.targets] == [("mask", True)]
    with pytest.raises(ReplayError, match="erase mask topic '/nowhere'"):
        replay(tmp_path / "in", tmp_path / "out2", IMAGE, COMMAND, replay_remover, progress=False,
               erase_mask_topic="/nowhere")


def test_replay_adds_recorded_clicks_on_the_newest_frame(tmp_path, scene, replay_remover, reference_remover):
    """rqt_image_view's clicks recorded beside the camera: each becomes a target from the frame after it, placed on
    the newest frame before it, as ~/click does; one before any frame, a stale one and one outside are dropped."""
    from ros_ror.replay import replay_typestore
    from sahm_core.click import pixel_click

    PointStamped, Point, Header, Time = (TYPES.types[t] for t in ("geometry_msgs/msg/PointStamped",
                                                                  "geometry_msgs/msg/Point", "std_msgs/msg/Header",
                                                                  "builtin_interfaces/msg/Time"))
    frames = [scene(seed=20 + i) for i in range(5)]
    height, width = frames[0].shape[:2]

    def click_msg(u, v, sec=0):
        return PointStamped(header=Header(stamp=Time(sec=sec, nanosec=0), frame_id=""), point=Point(x=u, y=v, z=0.0))

    clicks = {0: click_msg(5, 5),  # before frame 0: no frame to place it in
              2: click_msg(20, 30),  # unstamped, as rqt sends: frame 1's; a target from frame 2 on
              3: click_msg(5, 5, sec=50 + 2 - 10),  # stamped 10 s before frame 2
              4: click_msg(width, 5)}  # one column past the frame
    with Writer(tmp_path / "in", version=9, storage_plugin=StoragePlugin.MCAP) as writer:
        images = writer.add_connection(IMAGE, "sensor_msgs/msg/Image", typestore=TYPES)
        writer.add_connection(COMMAND, "std_msgs/msg/String", typestore=TYPES)  # nothing said
        pointer = writer.add_connection(IMAGE + "_mouse_left", "geometry_msgs/msg/PointStamped", typestore=TYPES)
        for i, rgb in enumerate(frames):
            if i in clicks:  # clicked just before frame i is handled, after frame i - 1
                writer.write(pointer, FRAME_TIMES[i] - 1,
                             TYPES.serialize_cdr(clicks[i], "geometry_msgs/msg/PointStamped"))
            writer.write(images, FRAME_TIMES[i], TYPES.serialize_cdr(image(rgb, i), "sensor_msgs/msg/Image"))
    summary = replay(tmp_path / "in", tmp_path / "out", IMAGE, COMMAND, replay_remover, progress=False,
                     click_topic=IMAGE + "_mouse_left")
    assert (summary.frames, summary.clicks, summary.passed_through) == (5, 1, 2)
    assert dict(summary.dropped_clicks) == {"click_no_frame": 1, "click_stale": 1, "click_outside": 1}
    assert "clicks            1, dropped: 1 click_no_frame, 1 click_outside, 1 click_stale" in str(summary)
    out = read_bag(tmp_path / "out", replay_typestore())
    cleaned = [rgb_of(m) for _, m in out["/ros_ror_remove/cleaned/image"]]
    written_masks = [m.data.reshape(m.height, m.width) for _, m in out["/ros_ror_remove/mask"]]
    click = pixel_click(20, 30, width, height)
    reference_remover.set_commands([click])
    for i in (2, 3, 4):
        expected = reference_remover.remove(frames[i])
        np.testing.assert_array_equal(written_masks[i], expected.mask)
        np.testing.assert_array_equal(cleaned[i], expected.image)
        result = out["/ros_ror_remove/result"][i][1]
        assert [(t.text, t.source) for t in result.targets] == [(click, "click")]
    for i in (0, 1):
        assert not written_masks[i].any() and np.array_equal(cleaned[i], frames[i])
    reference_remover.clear_command()
    with pytest.raises(ReplayError, match="click topic '/nowhere'"):
        replay(tmp_path / "in", tmp_path / "out2", IMAGE, COMMAND, replay_remover, progress=False,
               click_topic="/nowhere")
