"""Stream mode (sahm_core.stream): the camera motion estimate against known homographies, scene cuts, evidence carried
across a dropout to where the camera moved it, the fill carried with it, a click's point following its object, and
the reset on a new command."""

from __future__ import annotations

import cv2
import numpy as np
import pytest
import skimage.data

from sahm_core.cli import main as sahm_main
from sahm_core.found import FoundRule, found_decision
from sahm_core.runtime import Remover
from sahm_core.stream import (
    FOLLOW_PULL,
    StreamConfig,
    StreamState,
    estimate_motion,
    follow_point,
    grow_probabilities,
    grown_in_box,
)

SIDE = 96  # StreamConfig.motion_side


def _shift(dx: float, dy: float) -> np.ndarray:
    return np.array([[1, 0, dx], [0, 1, dy], [0, 0, 1.0]])


@pytest.fixture(scope="module")
def photo() -> np.ndarray:
    """A textured RGB scene (scikit-image's bundled astronaut), 384 px: room for a camera to move over it."""
    return cv2.resize(skimage.data.astronaut(), (384, 384), interpolation=cv2.INTER_AREA)


def _view(scene: np.ndarray, world_to_view: np.ndarray, side: int) -> np.ndarray:
    return cv2.warpPerspective(scene, world_to_view, (side, side), flags=cv2.INTER_LINEAR)


def _true_motion(angle_deg: float, zoom: float, dx: float, dy: float, tilt: float) -> np.ndarray:
    """previous view -> current view: a roll and zoom about the centre, a pan and a little perspective."""
    c, s = np.cos(np.deg2rad(angle_deg)) * zoom, np.sin(np.deg2rad(angle_deg)) * zoom
    about_centre = _shift(SIDE / 2, SIDE / 2) @ np.array([[c, -s, 0], [s, c, 0], [0, 0, 1.0]]) @ _shift(-SIDE / 2,
                                                                                                      -SIDE / 2)
    perspective = np.array([[1, 0, 0], [0, 1, 0], [tilt, -tilt, 1.0]])
    return _shift(dx, dy) @ perspective @ about_centre


@pytest.mark.parametrize("motion", [(0.0, 1.0, 2.5, -1.5, 0.0), (2.0, 1.04, -3.0, 1.0, 2e-4),
                                    (-1.0, 0.97, 0.5, 3.0, 0.0)])
def test_motion_estimate_recovers_a_known_homography(photo, motion):
    grey = cv2.cvtColor(photo, cv2.COLOR_RGB2GRAY)
    previous_view = _shift(-144, -144)  # world -> previous view: a 96 px window in the middle of the photo
    truth = _true_motion(*motion)
    previous = _view(grey, previous_view, SIDE)
    current = _view(grey, truth @ previous_view, SIDE)  # the same world seen after the camera moved
    estimate, why = estimate_motion(previous, current)
    assert estimate is not None, why
    # Compare where the two matrices send a grid of points over the whole view, corners included (the matrices'
    # entries have mixed units): within half a pixel of the 96 px motion frame, ~1.3 px at 256 px model resolution.
    grid = np.stack(np.meshgrid(np.linspace(0, SIDE, 7), np.linspace(0, SIDE, 7)), -1).reshape(1, -1, 2)
    error = np.linalg.norm(cv2.perspectiveTransform(grid, estimate) - cv2.perspectiveTransform(grid, truth), axis=-1)
    assert error.max() < 0.5, f"max point error {error.max():.3f} px"
    assert np.median(error) < 0.25


def test_unrelated_views_are_a_scene_cut(photo):
    grey = cv2.cvtColor(photo, cv2.COLOR_RGB2GRAY)
    previous = _view(grey, _shift(-10, -10), SIDE)
    other = _view(np.ascontiguousarray(grey[::-1, ::-1].T), _shift(-200, -40), SIDE)  # elsewhere, turned
    estimate, why = estimate_motion(previous, other)
    assert estimate is None and why


def test_stream_config_is_validated():
    with pytest.raises(ValueError, match="strength"):
        StreamConfig(strength=1.5)
    with pytest.raises(ValueError):
        StreamConfig(motion_side=8)


# ---------------------------------------------------------------- the state, frame by frame

SIZE = 128  # model resolution of the state tests
FILL = np.array([0.2, 0.6, 0.2], np.float32)  # what the "network" paints into the hole


def _frames(photo: np.ndarray, count: int, step=(4.0, 2.0)):
    """(image (3,S,S) float, disc mask (S,S) bool) per frame: a camera panning by `step` px per frame over the photo,
    an object fixed in the world (so it moves by -step in the view)."""
    yy, xx = np.mgrid[:SIZE, :SIZE]
    out = []
    for t in range(count):
        to_view = _shift(-120 - step[0] * t, -120 - step[1] * t)
        image = _view(photo, to_view, SIZE).astype(np.float32).transpose(2, 0, 1) / 255.0
        centre = np.array([64.0, 60.0]) - np.array(step) * t
        out.append((np.ascontiguousarray(image), (xx - centre[0]) ** 2 + (yy - centre[1]) ** 2 < 14**2))
    return out


def _network(image: np.ndarray, disc: np.ndarray, confidence: float):
    """What a per-frame graph would answer: mask probabilities `confidence` on the disc, 0.02 elsewhere, and the frame
    with FILL blended in by those probabilities (its soft hole; margin 0 here)."""
    prob = np.where(disc, confidence, 0.02).astype(np.float32)
    cleaned = image * (1 - prob) + FILL[:, None, None] * prob
    return prob, cleaned.astype(np.float32)


def test_evidence_survives_a_dropout_where_the_camera_moved_it(photo):
    frames = _frames(photo, 5)
    state = StreamState(StreamConfig(strength=0.9))
    for t, (image, disc) in enumerate(frames):
        confidence = 0.3 if t == 4 else 0.99  # frame 4: the network loses the object
        prob, cleaned = _network(image, disc, confidence)
        fused, _, fill = state.fuse(image, prob, cleaned, 0.5, 0, (SIZE, SIZE, 3))
        state.record(True)
    assert state.cuts == 0 and state.frames == 5
    inner = cv2.erode(disc.view(np.uint8), np.ones((5, 5), np.uint8)).astype(bool)
    outer = cv2.dilate(disc.view(np.uint8), np.ones((5, 5), np.uint8)).astype(bool)
    # per-frame, frame 4 would show the object (0.3 < 0.5); the carried evidence keeps it masked, at its moved place
    assert (prob[inner] < 0.5).all() and (fused[inner] > 0.5).all()
    assert (fused[~outer] < 0.5).all()
    # the graph's "fill" there is mostly the frame, object included; the stream fills it with the previous fill, moved
    assert np.abs(fill[:, inner] - FILL[:, None]).max() < 0.03
    assert np.abs(cleaned[:, inner] - FILL[:, None]).max() > 0.1


def _decide(state: StreamState, image, prob, cleaned, rule: FoundRule):
    """One frame as Remover.remove runs stream mode: fuse, the found decision, hold when not found, record."""
    fused = state.fuse(image, prob, cleaned, rule.mask_threshold, 0, (SIZE, SIZE, 3))
    found = found_decision(fused.mask, rule)[0]
    held = None if found else state.hold(rule)
    if held is not None:
        (fused, _), found = held, True
    state.record(found)
    return found, fused


def test_a_lost_object_is_held_for_hold_frames_where_the_camera_moved_it(photo):
    """The network finds the object on frames 0-2, then is sure it is gone on 3-6 (an occlusion it gets wrong), and
    finds it again on 7. With hold_frames 3, frames 3-5 publish the carried mask at the disc's moved place, with the
    carried fill; frame 6 lets it go; frame 7 is the network's again."""
    frames = _frames(photo, 8)
    rule = FoundRule()
    state = StreamState(StreamConfig(strength=0.9, hold_frames=3))
    outcomes = []
    for t, (image, disc) in enumerate(frames):
        prob, cleaned = _network(image, disc, 0.99)
        if 3 <= t <= 6:
            prob = np.full_like(prob, 1e-4)  # sure: no object anywhere
            cleaned = image.copy()
        found, fused = _decide(state, image, prob, cleaned, rule)
        outcomes.append((found, state.held))
        inner = cv2.erode(disc.view(np.uint8), np.ones((5, 5), np.uint8)).astype(bool)
        outer = cv2.dilate(disc.view(np.uint8), np.ones((7, 7), np.uint8)).astype(bool)
        if 3 <= t <= 5:
            assert (fused.mask[inner] > 0.5).all() and (fused.mask[~outer] < 0.5).all(), t
            # the fill, not the object (the carried fill's weight, 0.98 from the network's 0.99 hole, is squared per
            # frame it is carried without a fill of the network's: 0.92 on frame 5)
            assert np.abs(fused.cleaned[:, inner] - FILL[:, None]).max() < 0.1, t
    assert outcomes == [(True, 0)] * 3 + [(True, 1), (True, 2), (True, 3), (False, 0), (True, 0)]
    assert state.cuts == 0
    # hold_frames 0: the network's word, as before
    state = StreamState(StreamConfig(strength=0.9, hold_frames=0))
    founds = [_decide(state, image, *(_network(image, disc, 0.99) if t < 3 else
                                     (np.full((SIZE, SIZE), 1e-4, np.float32), image)), rule)[0]
              for t, (image, disc) in enumerate(frames[:5])]
    assert founds == [True] * 3 + [False] * 2


def _point(col: float, row: float, side: int = SIZE) -> np.ndarray:
    return np.array([[(col + 0.5) / side, (row + 0.5) / side, 1.0]], np.float32)


@pytest.mark.parametrize("seed", range(6))
def test_follow_point_is_the_brute_force_best(seed):
    """Against every pixel scored by hand: depth = the distance to the nearest pixel outside the region (the frame's
    border outside too), minus FOLLOW_PULL times the distance from the point."""
    rng = np.random.default_rng(seed)
    rows, cols = 21, 26
    removed = cv2.dilate((rng.random((rows, cols)) < 0.04).astype(np.uint8), np.ones((5, 7), np.uint8)).astype(bool)
    point = np.array([[rng.uniform(0, 1), rng.uniform(0, 1), 1.0]], np.float32)
    outside = [(r, c) for r in range(-1, rows + 1) for c in range(-1, cols + 1)
               if not (0 <= r < rows and 0 <= c < cols) or not removed[r, c]]
    px, py = point[0, 0] * cols - 0.5, point[0, 1] * rows - 0.5
    best = max(min(np.hypot(r - o_r, c - o_c) for o_r, o_c in outside) - FOLLOW_PULL * np.hypot(r - py, c - px)
               for r in range(rows) for c in range(cols) if removed[r, c])
    moved = follow_point(point, removed)
    col, row = moved[0, 0] * cols - 0.5, moved[0, 1] * rows - 0.5  # a pixel's centre
    assert moved[0, 2] == 1.0 and abs(col - round(col)) < 1e-3 and abs(row - round(row)) < 1e-3
    col, row = round(col), round(row)
    assert removed[row, col]
    depth = min(np.hypot(row - o_r, col - o_c) for o_r, o_c in outside)
    assert depth - FOLLOW_PULL * np.hypot(row - py, col - px) == pytest.approx(best, abs=1e-4)
    assert np.array_equal(follow_point(point, np.zeros_like(removed)), point)  # nothing removed: it stays


def test_a_followed_point_keeps_to_its_object_not_a_bigger_neighbour():
    yy, xx = np.mgrid[:SIZE, :SIZE]
    disc = (xx - 30) ** 2 + (yy - 40) ** 2 < 10**2
    neighbour = (xx - 95) ** 2 + (yy - 40) ** 2 < 30**2  # three times as deep, a mask that spilled onto it
    moved = follow_point(_point(38, 40), disc | neighbour)  # clicked near the small disc's rim
    assert np.allclose(moved[0, :2] * SIZE - 0.5, (30, 40))  # its centre


def _click_network(image, disc, point):
    """A network that reads a click: it finds the disc when the point lies on it, and nothing otherwise."""
    col, row = (int(v) for v in point[0, :2] * SIZE)
    if disc[row, col]:
        return _network(image, disc, 0.99)
    return np.full((SIZE, SIZE), 1e-4, np.float32), image.copy()


@pytest.mark.parametrize("follow", [True, False])
def test_a_click_follows_its_object_as_the_camera_pans(photo, follow):
    """The disc slides 4.5 px a frame across the view; the click was on its rim. Left where it was clicked, the point
    is off the disc from frame 1 on; followed, it stays on it (and climbs to its centre)."""
    frames = _frames(photo, 8)
    state = StreamState(StreamConfig(hold_frames=0, follow_clicks=follow))  # no hold: the click alone decides
    click = _point(76, 60)
    founds = []
    for image, disc in frames:
        point = click if state.point is None else state.point
        found, _ = _decide(state, image, *_click_network(image, disc, point), FoundRule())
        if found:
            state.follow(point)
        founds.append(found)
    assert founds == ([True] * 8 if follow else [True] + [False] * 7)
    if follow:
        centre = np.array([64.0, 60.0]) - np.array([4.0, 2.0]) * 7
        assert np.hypot(*(state.point[0, :2] * SIZE - 0.5 - centre)) <= 5.0
    state.reset()
    assert state.point is None  # a new command, or "not that one": the click's own point again


def test_grown_in_box_is_the_full_dilation_cropped():
    rng = np.random.default_rng(0)
    prob = rng.random((40, 50), dtype=np.float32)
    for box in [(slice(0, 40), slice(0, 50)), (slice(5, 12), slice(30, 50)), (slice(0, 3), slice(7, 8))]:
        for margin in (0, 2):
            assert np.array_equal(grown_in_box(prob, box, margin), grow_probabilities(prob, margin)[box])


def test_an_occluder_that_passed_leaves_no_ghost_in_the_fill(photo):
    """Pixels the output showed as the camera saw them (here an occluder over the object, rightly not removed) are not
    carried into a later fill: once the occluder has passed, the hole there gets the network's fill, not red."""
    frames = _frames(photo, 3, step=(0.0, 0.0))
    state = StreamState(StreamConfig(strength=0.9))
    red = np.array([0.9, 0.05, 0.05], np.float32)[:, None]
    occluded = frames[0][1].copy()
    occluded[:, :64] = False  # the occluder covers the disc's right half
    occluded &= frames[0][1]
    for t, (image, disc) in enumerate(frames):
        if t == 1:
            image = image.copy()
            image[:, occluded] = red
        prob, cleaned = _network(image, disc & ~occluded if t == 1 else disc, 0.99)
        if t == 1:
            prob[occluded] = 1e-4  # sure the occluder is not the object: outweighs the evidence carried there
        _, _, fill = state.fuse(image, prob, cleaned, 0.5, 0, (SIZE, SIZE, 3))
        state.record(True)
    inner = cv2.erode(occluded.view(np.uint8), np.ones((5, 5), np.uint8)).astype(bool)
    assert inner.sum() > 50
    assert np.abs(fill[:, inner] - FILL[:, None]).max() < 0.03


def test_without_history_the_stream_passes_the_graph_through(photo):
    (image, disc), = _frames(photo, 1)
    prob, cleaned = _network(image, disc, 0.8)
    fused, grown, fill = StreamState().fuse(image, prob, cleaned, 0.5, 2, (SIZE, SIZE, 3))
    assert np.array_equal(fused, prob) and np.array_equal(fill, cleaned)
    assert np.array_equal(grown, cv2.dilate(prob, np.ones((5, 5), np.uint8)))  # grown once, here, by the margin


def test_a_new_frame_size_starts_afresh(photo):
    frames = _frames(photo, 3)
    state = StreamState()
    for t, (image, disc) in enumerate(frames):
        prob, cleaned = _network(image, disc, 0.8)
        fused, _, fill = state.fuse(image, prob, cleaned, 0.5, 0, (480, 640, 3) if t < 2 else (240, 320, 3))
        state.record(True)
    assert np.array_equal(fused, prob) and np.array_equal(fill, cleaned)  # frame 2: another camera, no history used


# ---------------------------------------------------------------- in the Remover

def test_remover_resets_the_stream_on_a_new_command(nano_model_dir, photo):
    remover = Remover.load(nano_model_dir, backend="torch", device="cpu", min_score=0.0, min_mask_area=0.0,
                           stream=StreamConfig())
    frames = [cv2.resize(photo[40 + 3 * t:296 + 3 * t, 60:316], (160, 120)) for t in range(3)]
    remover.set_command("the red circle")
    for frame in frames[:2]:
        assert remover.remove(frame).stream_s > 0
    state = remover.stream_state
    assert state.frames == 2
    remover.set_command("the blue square")
    assert remover.stream_state is not state and remover.stream_state.frames == 0
    after_reset = remover.remove(frames[2])
    # the first frame of a stream is the per-frame answer, bit for bit
    remover.stream = None
    remover.set_command("the blue square")
    alone = remover.remove(frames[2])
    assert np.array_equal(after_reset.image, alone.image) and np.array_equal(after_reset.mask, alone.mask)
    assert after_reset.score == alone.score and alone.stream_s == 0.0
    remover.stream = StreamConfig()
    remover.remove(frames[0])
    assert remover.stream_state.frames == 1
    remover.clear_command()
    assert remover.stream_state is None  # nothing to carry without a command
    with pytest.raises(ValueError, match="StreamConfig"):
        remover.stream = 0.5


def test_remover_gives_the_graph_a_click_moved_with_what_it_removed(nano_model_dir, photo):
    """Stream mode at strength 0 carries nothing but the followed point: its second frame is the graph on the point
    `follow_point` takes from the first frame's removal (the random model reads the point: its prompt is random)."""
    from sahm_core.click import click_command, parse_click, pixel_click

    permissive = dict(backend="torch", device="cpu", min_score=0.0, min_mask_area=0.0)
    streaming = Remover.load(nano_model_dir, stream=StreamConfig(strength=0.0), **permissive)
    alone = Remover.load(nano_model_dir, **permissive)
    side = streaming.config.image_size  # frames at the model's side: the published mask is the model's removal
    frames = [np.ascontiguousarray(photo[40 + 5 * t:40 + 5 * t + side, 60:60 + side]) for t in range(2)]
    click = pixel_click(100, 120, side, side)
    streaming.set_command(click)
    alone.set_command(click)
    first, same = streaming.remove(frames[0]), alone.remove(frames[0])
    assert first.found and np.array_equal(first.mask, same.mask) and np.array_equal(first.image, same.image)
    moved = follow_point(np.array([[*parse_click(click), 1.0]], np.float32), first.mask > 0)
    assert np.array_equal(streaming.stream_state.point, moved) and not np.allclose(moved[0, :2], parse_click(click))
    got, fixed = streaming.remove(frames[1]), alone.remove(frames[1])
    alone.set_command(click_command(*moved[0, :2]))  # its text keeps 4 decimals: a point 0.01 px away
    expected = alone.remove(frames[1])
    # the point moved 50 px changes a few hundred pixels of this model's mask; 0.01 px, next to none
    assert np.count_nonzero(got.mask != expected.mask) * 20 < np.count_nonzero(got.mask != fixed.mask)
    image_error = np.abs(got.image.astype(np.float32) - expected.image).mean()
    assert image_error * 20 < np.abs(got.image.astype(np.float32) - fixed.image).mean()
    assert streaming.commands == (click,)  # the target is still the click the operator made


def test_sahm_remove_streams_a_video_file_and_a_folder(tmp_path, nano_model_dir, photo, capsys):
    frames = [cv2.cvtColor(cv2.resize(photo[40 + 3 * t:296 + 3 * t, 60:316], (64, 48)), cv2.COLOR_RGB2BGR)
              for t in range(4)]
    video = cv2.VideoWriter(str(tmp_path / "walk.mp4"), cv2.VideoWriter_fourcc(*"mp4v"), 10, (64, 48))
    for frame in frames:
        video.write(frame)
    video.release()
    folder = tmp_path / "stills"
    folder.mkdir()
    for t, frame in enumerate(frames[:2]):
        cv2.imwrite(str(folder / f"f{t}.png"), frame)
    out = tmp_path / "out"
    assert sahm_main(["remove", "--model", str(nano_model_dir), "--backend", "torch", "--command", "the red circle",
                      "--out", str(out), "--stream", str(tmp_path / "walk.mp4"), str(folder)]) == 0
    assert "stream mode (strength 0.9)" in capsys.readouterr().out
    names = sorted(p.name for p in out.iterdir())
    assert names == sorted([f"walk_{t:05d}{kind}.png" for t in range(4) for kind in ("", "_mask")]
                           + [f"f{t}{kind}.png" for t in range(2) for kind in ("", "_mask")])
    (tmp_path / "empty.mp4").write_bytes(b"not a video")
    assert sahm_main(["remove", "--model", str(nano_model_dir), "--backend", "torch", "--command", "the red circle",
                      "--out", str(out), str(tmp_path / "empty.mp4")]) == 1
    assert "cannot read as an image or video" in capsys.readouterr().out



def test_several_targets_share_one_motion_estimate_and_the_first_is_unchanged(nano_model_dir, photo, monkeypatch):
    """Each target carries its own stream, but the camera's motion is estimated once a frame (by the first target's
    stream) and shared: the first target's answers are exactly those it gets alone."""
    import sahm_core.stream as stream

    frames = [cv2.resize(photo[40 + 3 * t:296 + 3 * t, 60 + 2 * t:316 + 2 * t], (160, 120)) for t in range(4)]
    commands = ["the red circle", "the blue square"]
    rule = dict(mask_threshold=0.95, min_score=0.0, min_mask_area=0.0)  # small masks: corners left to track
    alone = Remover.load(nano_model_dir, backend="torch", device="cpu", stream=StreamConfig(), **rule)
    alone.set_command(commands[0])
    expected = [alone.remove(f) for f in frames]
    calls = []
    monkeypatch.setattr(stream, "estimate_motion", lambda *a, **k: calls.append(1) or estimate_motion(*a, **k))
    both = Remover.load(nano_model_dir, backend="torch", device="cpu", stream=StreamConfig(), **rule)
    both.set_commands(commands)
    got = [both.remove(f) for f in frames]
    assert len(calls) == len(frames) - 1  # once a frame after the first (nothing to compare the first with)
    for e, g in zip(expected, got):
        assert g.targets[0] == e.targets[0]  # the first target's stream saw the same frames and the same motion
    first, second = (c.stream.last_camera for c in both._commands)
    assert second.motion is not None and np.array_equal(first.motion, second.motion)
    assert np.array_equal(first.grey, second.grey)
