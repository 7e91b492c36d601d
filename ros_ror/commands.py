"""Spoken commands: tell "stop" from a removal request, reject text that is not a command, track the active one.

A speech recogniser publishes whatever it heard. "stop", "cancel" or "clear" end
the active command, alone or inside a short sentence ("ok stop removing"); a
new removal request replaces the old one. "clear" is also a colour word
("remove the clear bottle"), so a stop word counts only when it is the first
word after fillers like "ok" or "please".
"""

from __future__ import annotations

import re
import unicodedata
from dataclasses import dataclass

STOP_WORDS = frozenset({"stop", "cancel", "clear"})
FILLER_WORDS = frozenset({"ok", "okay", "please", "hey", "now", "so", "um", "uh", "just", "alright", "and", "then",
                          "robot"})
_WORD = re.compile(r"[^\W_]+(?:'[^\W_]+)?")


class CommandError(ValueError):
    """Text that cannot be a command. `reason` is a short key for drop counters."""

    def __init__(self, reason: str, message: str):
        super().__init__(message)
        self.reason = reason


@dataclass(frozen=True)
class Command:
    stop: bool  # True: end the active command
    text: str  # normalised text: single spaces, stripped (case kept for the text encoder)


def parse_command(text: object, max_chars: int = 300) -> Command:
    """Classify one recognised utterance; raise CommandError for anything that is not usable text."""
    if not isinstance(text, str):
        raise CommandError("not_text", f"command must be text, got {type(text).__name__}")
    if any(unicodedata.category(ch) in ("Cc", "Cs", "Co", "Cn") and not ch.isspace() for ch in text):
        raise CommandError("not_text", "command contains control or unassigned characters")
    normalised = " ".join(text.split())
    if not normalised:
        raise CommandError("empty", "empty command")
    if len(normalised) > max_chars:
        raise CommandError("too_long",
                           f"command has {len(normalised)} characters, more than max_command_chars={max_chars}")
    words = [w.lower() for w in _WORD.findall(normalised)]
    if not words:
        raise CommandError("no_words", f"command {normalised[:40]!r} has no words")
    leading = next((w for w in words if w not in FILLER_WORDS), "")
    return Command(stop=leading in STOP_WORDS, text=normalised)


class CommandTracker:
    """The active command over time. Times are seconds on one clock (the node clock, or bag time in replay).

    `timeout` 0 keeps a command until a stop word; otherwise it expires `timeout` s after it arrived.
    """

    def __init__(self, timeout: float = 0.0, max_chars: int = 300):
        self.timeout = timeout
        self.max_chars = max_chars
        self._text: str | None = None
        self._since = 0.0

    def submit(self, text: object, now: float) -> Command:
        """Apply an utterance heard at `now`; CommandError leaves the active command as it was."""
        command = parse_command(text, self.max_chars)
        self._text = None if command.stop else command.text
        self._since = now
        return command

    def active(self, now: float) -> str | None:
        if self._text is not None and self.timeout > 0 and now - self._since >= self.timeout:
            self._text = None
        return self._text


def sync_command(remover, tracker: CommandTracker, now: float) -> tuple[str | None, ValueError | None]:
    """Put the command active at `now` on `remover` (a sahm_core Remover); returns (command, None).

    A command the model cannot encode is ended, so it fails once instead of on every
    frame: returns (None, the error). With no active command the remover is left
    as it is; callers pass frames through without running it.
    """
    command = tracker.active(now)
    if command is None or remover.command == command:
        return command, None
    try:
        remover.set_command(command)
    except ValueError as e:
        tracker.submit("stop", now)
        return None, e
    return command, None
