"""Spoken commands: intent (end / remove / switch) and target against a hand-written table, validation, the
active command over time, and the node, `ros-ror replay` and `sahm remove` reading commands the same way."""

from __future__ import annotations

import re

import cv2
import numpy as np
import pytest

from ros_ror.commands import CommandError, CommandTracker, Intent, parse_command

END, REMOVE, SWITCH, ADD, RETRY = "end", "remove", "switch", "add", "retry"

# utterance -> (intent, the text the model gets). Written by hand from what the words mean: the reference.
INTENTS = {
    # the issue's cases
    "stop": (END, None),
    # one more target
    "also remove the green star": (ADD, "remove the green star"),
    "and the cup": (ADD, "the cup"),
    "ok and also the red cup please": (ADD, "the red cup"),
    "remove the bottle too": (ADD, "remove the bottle"),
    "the bottle as well, thanks": (ADD, "the bottle"),
    "plus sign on the left": (REMOVE, "plus sign on the left"),  # "plus" is a shape's name, not "and"
    "and, uh, stop": (END, None),  # an end after an add opener still ends
    "also, no, the bottle": (SWITCH, "the bottle"),
    "remove the salt and pepper shaker": (REMOVE, "remove the salt and pepper shaker"),  # "and" inside a name
    "remove the bottle and the tooth brush": (REMOVE, "remove the bottle and the tooth brush"),
    # the newest target found the wrong object
    "not that one": (RETRY, None),
    "No, not that one!": (RETRY, None),
    "the other one please": (RETRY, None),
    "wrong one": (RETRY, None),
    "not that": (END, None),  # as "not the cup": a negation ends
    "the other bottle": (REMOVE, "the other bottle"),
    "cancel that": (END, None),
    "ok stop removing": (END, None),
    "never mind": (END, None),
    "clear away the box": (REMOVE, "clear away the box"),
    "remove the stop sign": (REMOVE, "remove the stop sign"),
    "clear away the red box": (REMOVE, "clear away the red box"),
    "stop removing the cup and remove the bottle": (SWITCH, "remove the bottle"),
    "Clear away the red box.": (REMOVE, "clear away the red box"),  # a generator opening (lexicon.COMMAND_OPENINGS)
    "clear the table of the cup": (REMOVE, "clear the table of the cup"),
    "stop sign": (REMOVE, "stop sign"),
    "Stop sign, please.": (REMOVE, "stop sign please"),
    # ending, said in many ways
    "STOP": (END, None),
    "  Stop!  ": (END, None),
    "cancel": (END, None),
    "Cancel it.": (END, None),
    "halt": (END, None),
    "please stop": (END, None),
    "stop now please": (END, None),
    "ok stop right now": (END, None),
    "stop stop": (END, None),
    "no no stop": (END, None),
    "Okay, please cancel that.": (END, None),
    "hey robot, clear": (END, None),
    "clear": (END, None),
    "\tclear\n": (END, None),
    "nevermind": (END, None),
    "uh never mind thanks": (END, None),
    "forget it": (END, None),
    "That's enough, thanks.": (END, None),
    "thats enough": (END, None),
    "ok that's enough": (END, None),
    "enough": (END, None),
    "that'll do": (END, None),
    "leave it": (END, None),
    "no": (END, None),
    "wait": (END, None),
    "could you please stop": (END, None),
    "can you stop removing the cup": (END, None),
    "stop removing the cup": (END, None),
    "stop erasing the red box on the left": (END, None),
    "stop, uh, removing the cup": (END, None),
    "cancel the removal": (END, None),
    "stop the stop sign": (END, None),  # stop + a determiner phrase: the verb's object
    "stop removing the stop sign": (END, None),
    "stop removing the clear bottle": (END, None),  # "clear" inside the object is a colour, not a new request
    "stop removing the salt and pepper": (END, None),  # "and" + a name continues the object
    "don't remove it": (END, None),
    "please don't erase anything": (END, None),
    "not the cup": (END, None),
    "actually, stop": (END, None),
    "remove the cup, no, stop": (END, None),  # a later sentence that ends wins
    # removal requests, with names that hold end words, and the recogniser's noise
    "cancel button": (REMOVE, "cancel button"),
    "the stop sign": (REMOVE, "the stop sign"),
    "clear box": (REMOVE, "clear box"),
    "end table": (REMOVE, "end table"),
    "no parking sign": (REMOVE, "no parking sign"),
    "remove the clear bottle": (REMOVE, "remove the clear bottle"),
    "hide the cancel button": (REMOVE, "hide the cancel button"),
    "make the stop sign go away": (REMOVE, "make the stop sign go away"),
    "REMOVE THE CUP": (REMOVE, "remove the cup"),
    "  remove   the\tRed\ncup ": (REMOVE, "remove the red cup"),
    "Um, uh, remove the, uh, red box.": (REMOVE, "remove the red box"),
    "Hey robot, can you get rid of the dog’s bowl?": (REMOVE, "hey robot can you get rid of the dog's bowl"),
    "I don't want to see the red box": (REMOVE, "i don't want to see the red box"),
    "Remove the T-shirt on the left.": (REMOVE, "remove the t-shirt on the left"),
    "remove the 🍎 apple": (REMOVE, "remove the apple"),
    "the cup on the left": (REMOVE, "the cup on the left"),
    "erase the stop sign": (REMOVE, "erase the stop sign"),
    "remove the stop sign, please": (REMOVE, "remove the stop sign please"),
    "remove the box, stop sign": (REMOVE, "remove the box stop sign"),  # a later name, not an end
    "remove the cup, not the bottle": (REMOVE, "remove the cup not the bottle"),
    "删除杯子": (REMOVE, "删除杯子"),
    "entferne die Tasse": (REMOVE, "entferne die tasse"),
    # switching to a new target
    "Stop removing the cup. Remove the bottle.": (SWITCH, "remove the bottle"),
    "stop removing the cup remove the bottle": (SWITCH, "remove the bottle"),
    "stop removing the cup, clear the bottle": (SWITCH, "clear the bottle"),
    "stop removing the cup and the bottle instead": (SWITCH, "the bottle"),
    "stop it and remove the bottle": (SWITCH, "remove the bottle"),
    "cancel that, remove the bottle please": (SWITCH, "remove the bottle please"),
    "stop. the bottle.": (SWITCH, "the bottle"),
    "don't remove the cup, remove the bottle": (SWITCH, "remove the bottle"),
    "please stop removing the stop sign and erase the cancel button instead": (SWITCH, "erase the cancel button"),
    "no, the bottle instead": (SWITCH, "the bottle"),
    "no the bottle": (SWITCH, "the bottle"),
    "wait, remove the bottle": (SWITCH, "remove the bottle"),
    "actually the bottle": (SWITCH, "the bottle"),
    "not the cup, the bottle": (SWITCH, "the bottle"),
    "not the cup but the bottle": (SWITCH, "the bottle"),
    "remove the bottle instead": (SWITCH, "remove the bottle"),
    "remove the bottle instead of the cup": (SWITCH, "remove the bottle"),
    "instead, remove the bottle": (SWITCH, "remove the bottle"),
    "remove the red box, no wait the blue one": (SWITCH, "the blue one"),
    "remove the cup. stop, remove the bottle": (SWITCH, "remove the bottle"),
    "stop, please stop removing the cup and remove the bottle": (SWITCH, "remove the bottle"),
}


@pytest.mark.parametrize("text, expected", INTENTS.items(), ids=list(INTENTS))
def test_intent_and_target_of_each_utterance(text, expected):
    command = parse_command(text)
    assert (command.intent, command.target) == expected


def test_the_table_covers_every_intent_and_the_issue():
    assert len(INTENTS) >= 60
    assert {intent for intent, _ in INTENTS.values()} == {END, REMOVE, SWITCH, ADD, RETRY}


@pytest.mark.parametrize(
    "text, reason",
    [("", "empty"), ("   \n\t ", "empty"), ("x" * 301, "too_long"), ("remove\x00 the cup", "not_text"),
     ("\x1b[31m", "not_text"), ("!!! ???", "no_words"), ("🙂🙂", "no_words"), (b"remove the cup", "not_text"),
     (None, "not_text"), (42, "not_text"), ("ok, thanks!", "no_target"), ("um... uh", "no_target"),
     ("could you please", "no_target")],
)
def test_non_commands_are_rejected_with_a_reason(text, reason):
    with pytest.raises(CommandError) as err:
        parse_command(text, max_chars=300)
    assert err.value.reason == reason


def test_lower_case_and_dropped_punctuation_lose_nothing_the_model_reads():
    """The text encoder (uncased MiniLM) and the tagger lower-case anyway, so the model's features for the text as
    heard and for the normalised target agree (punctuation aside: the generator never writes any)."""
    import torch

    from sahm_core.text import CommandEncoder

    encoder = CommandEncoder()
    heard = "Remove The RED Box On The LEFT"
    target = parse_command(heard).target
    assert target == "remove the red box on the left"
    for a, b in zip(encoder.encode(heard), encoder.encode(target)):
        torch.testing.assert_close(a, b)


def test_tracker_replaces_ends_and_times_out():
    tracker = CommandTracker(timeout=0.0)
    assert tracker.active(0.0) == ()
    tracker.submit("remove the cup", 1.0)
    tracker.submit("Remove the ball.", 2.0)
    assert tracker.active(1000.0) == ("remove the ball",)  # timeout 0: until ended
    for rejected in ("", "ok thanks", "and", "too"):
        with pytest.raises(CommandError):
            tracker.submit(rejected, 3.0)
    assert tracker.active(3.0) == ("remove the ball",)  # a rejected utterance changes nothing
    assert tracker.submit("stop removing the ball and remove the cup", 3.5).intent is Intent.SWITCH
    assert tracker.active(3.5) == ("remove the cup",)
    tracker.submit("ok stop removing", 4.0)
    assert tracker.active(4.0) == ()
    tracker.submit("clear away the red box", 5.0)
    assert tracker.active(5.0) == ("clear away the red box",)
    tracker.end(6.0)
    assert tracker.active(6.0) == ()
    timed = CommandTracker(timeout=2.0)
    timed.submit("remove the cup", 10.0)
    assert timed.active(11.9) == ("remove the cup",)
    assert timed.active(12.0) == ()


# Each said after the one before; the active targets after it, worked by hand.
ADDED = [("remove the cup", ("remove the cup",)),
         ("also remove the green star", ("remove the cup", "remove the green star")),
         ("and the bottle, please", ("remove the cup", "remove the green star", "the bottle")),
         ("the cup too", ("remove the cup", "remove the green star", "the bottle", "the cup")),
         ("and the bowl", None),  # a fifth target: over max_targets=4, rejected, nothing changes
         ("the bottle as well", ("remove the cup", "remove the green star", "the cup", "the bottle")),  # moved last
         ("remove the red box", ("remove the red box",)),  # a plain command replaces the set
         ("and the lamp", ("remove the red box", "the lamp")),
         ("and stop", ()),  # an end after an add opener still ends
         ("also the mug", ("the mug",))]  # an add with nothing active starts the set


def test_tracker_adds_targets_up_to_max_targets():
    tracker = CommandTracker(max_targets=4)
    before = ()
    for t, (said, expected) in enumerate(ADDED):
        if expected is None:
            with pytest.raises(CommandError, match="max_targets=4") as e:
                tracker.submit(said, float(t))
            assert e.value.reason == "too_many_targets"
            expected = before
        else:
            tracker.submit(said, float(t))
        assert tracker.active(float(t)) == expected, said
        before = expected
    timed = CommandTracker(timeout=2.0, max_targets=2)
    timed.submit("remove the cup", 0.0)
    timed.submit("and the bottle", 1.0)
    assert timed.active(2.0) == ("the bottle",)  # each target times out on its own
    timed.submit("the cup too", 2.5)
    timed.end(2.5, "the bottle")
    assert timed.active(2.5) == ("the cup",)


def test_tracker_confirms_discards_and_retries_candidates():
    """confirm_targets, worked by hand: (said or done, active targets, the candidate, (regions forgotten, texts to
    suppress))."""
    tracker = CommandTracker(confirm=True)
    steps = [("remove the cup", ("remove the cup",), "remove the cup", (True, [])),  # a new start
             (True, ("remove the cup",), None, (False, [])),
             ("and the bottle", ("remove the cup", "the bottle"), "the bottle", (False, [])),
             ("also the mug", ("remove the cup", "the mug"), "the mug", (False, [])),  # the newer candidate wins
             (False, ("remove the cup",), None, (False, ["the mug"])),  # discarded, its region to be kept out of
             ("not that one", ("remove the cup", "the mug"), "the mug", (False, ["the mug"])),  # back, checked again
             (True, ("remove the cup", "the mug"), None, (False, [])),
             ("not that one", ("remove the cup", "the mug"), "the mug", (False, ["the mug"])),  # the newest again
             (True, ("remove the cup", "the mug"), None, (False, [])),
             (True, ("remove the cup", "the mug"), None, (False, []))]  # nothing to confirm: nothing changes
    for t, (action, active, candidate, suppressions) in enumerate(steps):
        if isinstance(action, bool):
            tracker.confirm_candidate(action)
        else:
            tracker.submit(action, float(t))
        assert (tracker.active(float(t)), tracker.candidate) == (active, candidate), action
        assert tracker.take_suppressions() == suppressions, action
    tracker.submit("stop", 20.0)
    assert tracker.active(20.0) == () and tracker.take_suppressions() == (True, [])  # a new start forgets regions
    with pytest.raises(CommandError) as e:
        tracker.submit("not that one", 21.0)
    assert e.value.reason == "nothing_to_retry"
    plain = CommandTracker()  # without confirm_targets a retry looks again at once, with nothing to confirm
    plain.submit("remove the cup", 0.0)
    plain.submit("not that one", 1.0)
    assert (plain.active(1.0), plain.candidate, plain.take_suppressions()) == (("remove the cup",), None,
                                                                             (True, ["remove the cup"]))
    assert plain.confirm_candidate(True) is None


# ---------------------------------------------------------------- one code path: node, replay, CLI

# Said one after another; each changes the active command, so every step is seen. Expected from INTENTS.
SPOKEN = ["Clear away the red box.", "stop removing the cup and remove the bottle", "Stop sign, please.",
          "ok stop removing", "remove the stop sign", "no, the bottle instead", "That's enough, thanks."]
EXPECTED_ACTIVE = [INTENTS[text][1] or "" for text in SPOKEN]


def test_replay_reads_commands_as_the_table_does(tmp_path, onnx_model_dir, permissive_thresholds, scene):
    from rosbags.rosbag2 import Reader, Writer
    from rosbags.typesys import Stores, get_typestore

    from ros_ror.replay import replay, replay_typestore
    from sahm_core.runtime import Remover

    types = get_typestore(Stores.ROS2_KILTED)
    String, Image, Header = (types.types[t] for t in ("std_msgs/msg/String", "sensor_msgs/msg/Image",
                                                      "std_msgs/msg/Header"))
    rgb = scene(height=8, width=8)
    with Writer(tmp_path / "in", version=9) as writer:
        speech = writer.add_connection("/speech", "std_msgs/msg/String", typestore=types)
        camera = writer.add_connection("/cam", "sensor_msgs/msg/Image", typestore=types)
        for i, text in enumerate(SPOKEN):  # an utterance at 100 ms * i + 10, a frame 40 ms after it
            t = 100_000_000 * i + 10
            writer.write(speech, t, types.serialize_cdr(String(data=text), "std_msgs/msg/String"))
            header = Header(stamp=types.types["builtin_interfaces/msg/Time"](sec=i, nanosec=0), frame_id="cam")
            frame = Image(header=header, height=8, width=8, encoding="rgb8", is_bigendian=0, step=24,
                          data=rgb.reshape(-1))
            writer.write(camera, t + 40_000_000, types.serialize_cdr(frame, "sensor_msgs/msg/Image"))
    remover = Remover.load(onnx_model_dir, backend="onnxruntime", **permissive_thresholds)
    summary = replay(tmp_path / "in", tmp_path / "out", "/cam", "/speech", remover, progress=False)

    assert (summary.commands, summary.stops) == (len(SPOKEN), sum(INTENTS[t][0] == END for t in SPOKEN))
    typestore = replay_typestore()
    with Reader(tmp_path / "out") as reader:
        said = [typestore.deserialize_cdr(raw, conn.msgtype).command
                for conn, _, raw in reader.messages() if conn.topic.endswith("/result")]
    assert said == EXPECTED_ACTIVE


def test_sahm_remove_reads_commands_as_the_table_does(tmp_path, onnx_model_dir, scene, capsys):
    from sahm_core.cli import main as sahm_main

    image = tmp_path / "frame.png"
    cv2.imwrite(str(image), cv2.cvtColor(scene(height=16, width=16), cv2.COLOR_RGB2BGR))
    for text, expected in zip(SPOKEN, EXPECTED_ACTIVE):
        code = sahm_main(["remove", "--model", str(onnx_model_dir), "--backend", "onnxruntime", "--command", text,
                          "--out", str(tmp_path / "out"), str(image)])
        printed = capsys.readouterr().out
        if expected:
            assert code == 0 and re.search(r"commands \['(.*)'\]\n", printed)[1] == expected
        else:
            assert code == 1 and "ends a command; say what to remove" in printed
    assert sahm_main(["remove", "--model", str(onnx_model_dir), "--command", "uh, ok", "--out", str(tmp_path / "o"),
                      str(image)]) == 1
    assert "names nothing to remove" in capsys.readouterr().out
    assert np.asarray(cv2.imread(str(tmp_path / "out" / "frame_mask.png"))).shape[:2] == (16, 16)
