"""Stop detection, rejection of non-commands, and the active command over time."""

from __future__ import annotations

import pytest

from ros_ror.commands import CommandError, CommandTracker, parse_command


@pytest.mark.parametrize(
    "text",
    ["stop", "STOP", "  Stop  ", "cancel", "clear", "ok stop removing", "Okay, please cancel that.",
     "stop removing the cup", "hey robot, clear", "\tclear\n"],
)
def test_stop_words_end_the_command(text):
    assert parse_command(text).stop


@pytest.mark.parametrize(
    "text",
    ["remove the red cup", "remove the clear bottle", "erase the stop sign", "the cup on the left", "删除杯子",
     "entferne die Tasse"],
)
def test_removal_requests_are_not_stops(text):
    command = parse_command(text)
    assert not command.stop
    assert command.text == " ".join(text.split())


def test_whitespace_is_normalised_and_case_kept():
    assert parse_command("  remove   the\tRed\ncup ").text == "remove the Red cup"


@pytest.mark.parametrize(
    "text, reason",
    [("", "empty"), ("   \n\t ", "empty"), ("x" * 301, "too_long"), ("remove\x00 the cup", "not_text"),
     ("\x1b[31m", "not_text"), ("!!! ???", "no_words"), ("🙂🙂", "no_words"), (b"remove the cup", "not_text"),
     (None, "not_text"), (42, "not_text")],
)
def test_non_commands_are_rejected_with_a_reason(text, reason):
    with pytest.raises(CommandError) as err:
        parse_command(text, max_chars=300)
    assert err.value.reason == reason


def test_tracker_replaces_stops_and_times_out():
    tracker = CommandTracker(timeout=0.0)
    assert tracker.active(0.0) is None
    tracker.submit("remove the cup", 1.0)
    tracker.submit("remove the ball", 2.0)
    assert tracker.active(1000.0) == "remove the ball"  # timeout 0: until stopped
    with pytest.raises(CommandError):
        tracker.submit("", 3.0)
    assert tracker.active(3.0) == "remove the ball"  # a rejected utterance changes nothing
    tracker.submit("ok stop removing", 4.0)
    assert tracker.active(4.0) is None
    timed = CommandTracker(timeout=2.0)
    timed.submit("remove the cup", 10.0)
    assert timed.active(11.9) == "remove the cup"
    assert timed.active(12.0) is None
