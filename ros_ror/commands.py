"""Spoken commands: what an utterance asks for (end, remove, switch, add), the text the model gets, the active
targets.

A speech recogniser publishes whatever it heard. `parse_command` reads the whole utterance:

- end: it is made only of end clauses ("stop", "cancel that", "never mind", "ok stop removing the cup",
  "don't remove it", "not the cup"), with politeness and sentence breaks around them;
- switch: an end clause, a connective and a new request ("stop removing the cup and remove the bottle",
  "no, the bottle instead"), a correction ("actually the bottle"), or a request marked "instead";
- add: a request that opens with "also" or "and", or closes with "too", "as well" or "also" ("also remove
  the green star", "and the cup", "the bottle too"): one more target beside the active ones;
- retry: "not that one", "no, the other one", "wrong one": the newest target found the wrong object; its region is
  suppressed and it looks again (the next most likely object), or a target just discarded comes back so;
- remove: anything else, as heard. It replaces every active target. "remove the cup and the bottle" stays one
  request: "and" inside a name ("salt and pepper shaker") cannot be told from "and" between two names.

Names that hold an end word are told apart by the sentence's structure, not by a list of exceptions. An end
verb's object is an action: a gerund ("stop removing ..."), a pronoun ("stop it") or a determiner phrase
("cancel the removal"); "stop" straight before a noun is part of a compound name ("stop sign", "cancel button").
"clear" ends a command only when it is the whole request: with anything after it, it is a removal verb
("clear away the box", "clear the table of the cup") or a colour ("clear bottle"). After an end clause whose
object runs on ("stop removing the salt and pepper"), a new request needs a connective and a removal verb or a
request opener ("... and remove the bottle"), or the marker "instead".

Normalisation comes first: Unicode NFKC, lower case, fillers ("uh", "um") dropped, punctuation dropped (a
sentence break is kept for the grammar only), single spaces. The model gets the request in this form: its text
encoder (MiniLM, uncased) and the syntax tagger lower-case anyway, and the synthetic generator trains it on
unpunctuated text, so punctuation would only spend tokens of the fixed length T on marks it never saw. Fillers
are not words of any description. Everything else said (politeness, restarts, dropped articles) reaches the
model unchanged, which learns it by augmentation.
"""

from __future__ import annotations

import re
import unicodedata
from dataclasses import dataclass
from enum import Enum

# ---- the word lists (the only place they are written)
FILLERS = ("uh", "uhm", "um", "umm", "er", "erm", "hmm", "mm")  # dropped before anything else
# Politeness, address and discourse words: allowed around end clauses; an utterance of nothing else is no command.
COURTESY = ("ok", "okay", "alright", "all right", "hey", "hi", "hey robot", "ok robot", "okay robot", "please",
            "thanks", "thank you", "so", "just", "now", "right now", "oh", "well", "sorry", "actually", "oops")
END_VERBS = ("stop", "cancel", "halt", "abort", "quit", "pause", "end")
# What an end verb may take as its whole object ("stop it", "cancel that now").
END_OBJECTS = ("it", "that", "this", "everything", "all", "all that", "now", "there", "for now")
# Gerunds that may begin an end verb's object that runs on ("stop removing the cup", "stop, uh, erasing it").
END_GERUNDS = ("removing", "erasing", "deleting", "hiding", "clearing", "wiping", "taking", "getting", "making",
               "masking", "doing")
# End clauses said as a whole.
END_PHRASES = ("never mind", "nevermind", "forget it", "forget that", "forget about it", "that's enough",
               "that is enough", "enough", "that'll do", "that will do", "that's all", "leave it", "leave it alone",
               "leave it be", "done", "all done", "no", "nope", "wait", "clear")
REMOVAL_VERBS = ("remove", "erase", "delete", "hide", "clear", "wipe", "take", "get", "make", "lose")
ALSO_ADJECTIVES = ("clear",)  # removal verbs that can sit inside a name ("the clear bottle")
REQUEST_OPENERS = ("can you", "could you", "would you", "will you", "please", "i want you to", "i'd like you to",
                   "i want", "i'd like", "i don't want", "go ahead and", "let's")
NEGATIONS = ("don't", "do not", "please don't")  # + a removal verb: "don't remove it" ends the command
CONNECTIVES = ("and", "then", "and then", "but", "so", "now", "and now", "instead", "and instead")
CORRECTIONS = ("no", "nope", "wait", "actually", "i mean", "sorry", "oops", "rather")  # "no, the bottle"
DETERMINERS = ("the", "a", "an", "that", "this", "these", "those", "my", "your")
SWITCH_MARKER = "instead"
# "also remove the star", "and the cup"; not "plus": it names a shape (lexicon.SHAPE_WORDS, "the plus")
ADD_OPENERS = ("also", "and", "and also", "and then also")
ADD_CLOSERS = ("too", "as well", "also")  # "remove the bottle too"
RETRY_PHRASES = ("not that one", "not this one", "the other one", "the other", "wrong one", "the wrong one",
                 "a different one", "the next one")  # not "not that": it ends a command, as "not the cup" does

BREAK = "|"  # a sentence break (. , ; ! ? and dashes), kept only while classifying
_TOKEN = re.compile(r"[^\W_]+(?:['-][^\W_]+)*|[.,;:!?…—–。！？]+")
_APOSTROPHES = str.maketrans({"’": "'", "‘": "'", "`": "'"})


def _any(phrases) -> str:
    """One of `phrases` as whole words, in the parser's form: every word preceded by a space.

    An apostrophe is optional ("that's" or "thats"): recognisers drop them.
    """
    alternatives = sorted(phrases, key=len, reverse=True)  # longest first: "hey robot" before "hey"
    return r"(?: (?:" + "|".join(re.escape(p).replace("'", "'?") for p in alternatives) + r")(?= |$))"


_WORDS = r"(?: \S+)"
_PAD_WORD = rf"(?:{_any(COURTESY)}| \{BREAK})"
_PAD = rf"{_PAD_WORD}*"
_SEPARATOR = rf"(?:{_any(CONNECTIVES)}| \{BREAK})"
_OPENER = rf"(?:{_any(REQUEST_OPENERS)}{_PAD})?"  # "could you please stop"
_REQUEST_START = rf"(?:{_PAD}(?:{_any(REQUEST_OPENERS)}|{_any(REMOVAL_VERBS)}))"
_VERB_ONLY = _any(set(REMOVAL_VERBS) - set(ALSO_ADJECTIVES))
_TO_THE_END = rf"(?P<target>{_WORDS}+)$"
# An end clause whose object is closed: nothing may follow it inside the clause ("stop it", "never mind").
_CLOSED_END = rf"(?:{_OPENER}(?:{_any(END_VERBS)}{_any(END_OBJECTS)}*|{_any(END_PHRASES)}))"


def _open_end(object_words: str) -> str:
    """An end clause whose object runs on for `object_words`: a greedy (to the end) or lazy (to a new request) run.

    "stop removing the cup" (the gerund may follow a break the recogniser put after a filler), "cancel the
    removal", "don't remove it", "not the cup".
    """
    return (rf"(?:{_OPENER}(?:{_any(END_VERBS)}(?:(?: \{BREAK})?{_any(END_GERUNDS)}|{_any(DETERMINERS)})"
            rf"|{_any(NEGATIONS)}(?:{_any(REMOVAL_VERBS)}|{_any(['do'])})|{_any(['not'])}{_any(DETERMINERS)})"
            rf"{object_words})")


# Grammars over the parser's form (" w1 w2 | w3": every word after a space, BREAK for a sentence break).
END = re.compile(rf"^(?:{_PAD}(?:{_CLOSED_END}|{_open_end(_WORDS + '*')}))+{_PAD}$")
# End clauses, then a new request in one of four ways:
_END_THEN_REQUEST = (
    # a connective and a request verb or "instead": "stop removing the cup and remove the bottle"
    rf"(?:{_CLOSED_END}|{_open_end(_WORDS + '*?')}){_SEPARATOR}+(?={_REQUEST_START}|.* {SWITCH_MARKER}(?= |$))",
    # a closed end and a break: "stop. the bottle" (but "stop, uh, removing the cup" is one clause)
    rf"{_CLOSED_END}{_PAD_WORD}* \{BREAK}(?:{_SEPARATOR}|{_PAD_WORD})*(?!{_any(END_GERUNDS)})",
    # a closed end and a request verb: "stop it remove the bottle"
    rf"{_CLOSED_END}(?={_REQUEST_START})",
    # a verb cannot be part of the object before it: "stop removing the cup remove the bottle"
    rf"{_open_end(_WORDS + '*?')}(?={_VERB_ONLY})",
)
SWITCH = re.compile(rf"^(?:{_PAD}{_CLOSED_END}(?:{_SEPARATOR}|{_PAD_WORD})*)*{_PAD}(?:{'|'.join(_END_THEN_REQUEST)})"
                    + _TO_THE_END)
# A correction: "actually the bottle", "no the bottle", "not the cup, the bottle", "not the cup but the bottle".
CORRECTION = re.compile(rf"^{_PAD}(?:{_any(CORRECTIONS)}+|{_any(['not'])}{_any(DETERMINERS)}{_WORDS}*?"
                        rf"(?= \{BREAK}| but )(?: but)?)"
                        rf"(?:{_PAD} \{BREAK}{_PAD}|{_PAD}(?={_any(DETERMINERS)}|{_REQUEST_START}))" + _TO_THE_END)
# "remove the bottle instead", "the bottle instead of the cup", "instead, remove the bottle"
INSTEAD = re.compile(rf"^(?:{_PAD} {SWITCH_MARKER}(?P<after>{_WORDS}+)|(?P<before>{_WORDS}+?) {SWITCH_MARKER}"
                     rf"(?: of{_WORDS}*?)?{_PAD})$")
# A later sentence that opens with an end word or a correction overrides what came before:
# "remove the cup, no, stop", "remove the cup. stop, remove the bottle".
LATER_SENTENCE = re.compile(rf"^{_WORDS}+? \{BREAK}(?P<target>{_PAD}(?:{_any(END_VERBS)}|{_any(END_PHRASES)}"
                            rf"|{_any(NEGATIONS)}|{_any(CORRECTIONS)}){_WORDS}*)$")
# The newest target is the wrong object: "not that one", "no, the other one please".
RETRY = re.compile(rf"^{_PAD}(?:{_any(CORRECTIONS)}{_PAD})?{_any(RETRY_PHRASES)}{_PAD}$")
# One more target: "also remove the star", "and the cup please", "the bottle too".
ADD = re.compile(rf"^(?:{_PAD}{_any(ADD_OPENERS)}{_PAD}(?P<opened>{_WORDS}+?)|(?P<closed>{_WORDS}+?)"
                 rf"{_any(ADD_CLOSERS)}){_PAD}$")
# "ok thanks", "could you please", "and", "too"
_NOTHING_SAID = re.compile(rf"^(?:{_PAD_WORD}|{_any(REQUEST_OPENERS + ADD_OPENERS + ADD_CLOSERS)})*$")


class CommandError(ValueError):
    """Text that cannot be a command. `reason` is a short key for drop counters."""

    def __init__(self, reason: str, message: str):
        super().__init__(message)
        self.reason = reason


class Intent(str, Enum):
    END = "end"  # end the active command
    REMOVE = "remove"  # a removal request
    SWITCH = "switch"  # end the active command and start `target` in its place
    ADD = "add"  # `target` joins the active targets
    RETRY = "retry"  # the newest target (or the one just discarded) looks again, away from what it found


@dataclass(frozen=True)
class Command:
    intent: Intent
    target: str | None  # the request as the model gets it (normalised, see the module docstring); None for END


def normalise(text: str) -> list[str]:
    """Lower-case words, fillers dropped, with BREAK where punctuation broke the sentence (none at either end)."""
    tokens = [BREAK if not t[0].isalnum() else t
              for t in _TOKEN.findall(unicodedata.normalize("NFKC", text).lower().translate(_APOSTROPHES))]
    kept: list[str] = []
    for t in tokens:
        if t in FILLERS or (t == BREAK and (not kept or kept[-1] == BREAK)):
            continue
        kept.append(t)
    while kept and kept[-1] == BREAK:
        kept.pop()
    return kept


def _spoken(said: str) -> str:
    """The parser's form (" w1 w2 | w3") -> the model's text ("w1 w2 w3")."""
    return " ".join(w for w in said.split() if w != BREAK)


def classify(said: str) -> Command:
    """Intent and target of an utterance in the parser's form, which must name something (see `parse_command`)."""
    if RETRY.match(said):
        return Command(Intent.RETRY, None)
    if (m := ADD.match(said)) and not _NOTHING_SAID.match(rest := m["opened"] or m["closed"]):
        then = classify(rest)  # "and stop" ends, "also, no, the bottle" switches
        return Command(Intent.ADD, then.target) if then.intent is Intent.REMOVE else then
    for grammar in (SWITCH, CORRECTION):
        # the new request is read as an utterance of its own: "stop, please stop" is no switch
        if (m := grammar.match(said)) and not _NOTHING_SAID.match(m["target"]):
            then = classify(m["target"])
            if then.intent is not Intent.END:
                return Command(Intent.SWITCH, then.target)
    if END.match(said):
        return Command(Intent.END, None)
    if m := INSTEAD.match(said):
        return Command(Intent.SWITCH, _spoken(m["after"] or m["before"]))
    if (m := LATER_SENTENCE.match(said)) and (later := classify(m["target"])).intent is not Intent.REMOVE:
        return later
    return Command(Intent.REMOVE, _spoken(said))


def parse_command(text: object, max_chars: int = 300) -> Command:
    """Classify one recognised utterance; raise CommandError for anything that is not a usable command."""
    if not isinstance(text, str):
        raise CommandError("not_text", f"command must be text, got {type(text).__name__}")
    if any(unicodedata.category(ch) in ("Cc", "Cs", "Co", "Cn") and not ch.isspace() for ch in text):
        raise CommandError("not_text", "command contains control or unassigned characters")
    heard = " ".join(text.split())
    if not heard:
        raise CommandError("empty", "empty command")
    if len(heard) > max_chars:
        raise CommandError("too_long", f"command has {len(heard)} characters, more than max_command_chars={max_chars}")
    if not any(ch.isalnum() for ch in heard):
        raise CommandError("no_words", f"command {heard[:40]!r} has no words")
    said = "".join(f" {t}" for t in normalise(heard))
    if _NOTHING_SAID.match(said):
        raise CommandError("no_target", f"command {heard[:40]!r} names nothing to remove")
    return classify(said)


DEFAULT_MAX_TARGETS = 4  # the node's max_targets parameter and replay's --max-targets


class CommandTracker:
    """The active targets over time. Times are seconds on one clock (the node clock, or bag time in replay).

    A removal or a switch replaces every target, an add joins one (at most `max_targets`), an end clears them.
    `timeout` 0 keeps a target until an end command; otherwise each expires `timeout` s after it was last asked for.
    With `confirm` a new target is a candidate, shown and not erased, until `confirm(True)` keeps it or
    `confirm(False)` discards it (one candidate at a time: a newer one replaces it). A retry suppresses the newest
    target's region (the candidate's, else the one just discarded, which comes back, else the newest target's) and
    looks again; `take_suppressions` hands the texts to suppress to whoever holds the model.
    """

    def __init__(self, timeout: float = 0.0, max_chars: int = 300, max_targets: int = DEFAULT_MAX_TARGETS,
                 confirm: bool = False):
        if max_targets < 1:
            raise ValueError(f"max_targets must be at least 1, got {max_targets}")
        self.timeout = timeout
        self.max_chars = max_chars
        self.max_targets = max_targets
        self.confirm = confirm
        self._targets: dict[str, float] = {}  # target -> when it was asked for, in the order asked
        self._candidate: str | None = None  # a target waiting for confirm() (always one of _targets)
        self._discarded: str | None = None  # the last target confirm(False) dropped, for a retry
        self._suppress: list[str] = []  # targets whose last region the model must keep out of, oldest first
        self.fresh = False  # set by a command that starts over: suppressed regions are forgotten

    def submit(self, text: object, now: float) -> Command:
        """Apply an utterance heard at `now`; CommandError leaves the active targets as they were."""
        command = parse_command(text, self.max_chars)
        if command.intent is Intent.RETRY:
            self._retry(now)
        elif command.intent is Intent.ADD:
            self.add(command.target, now)
        else:
            self._targets = {} if command.target is None else {command.target: now}
            self._candidate = command.target if self.confirm else None
            self._discarded, self._suppress, self.fresh = None, [], True
        return command

    def add(self, target: str, now: float) -> None:
        """One more target beside the active ones (a spoken "also ...", or a click); CommandError past max_targets."""
        active = self.active(now)
        if self._candidate is not None and self._candidate != target:  # one candidate at a time
            active = tuple(t for t in active if t != self._candidate)
        if target not in active and len(active) >= self.max_targets:
            raise CommandError("too_many_targets", f"{target!r} would be target {len(active) + 1}, more than "
                                                   f"max_targets={self.max_targets}; a plain command replaces them")
        if self._candidate is not None and self._candidate != target:
            self._targets.pop(self._candidate)
        self._targets.pop(target, None)  # asked again: it moves to the end, its timeout starts over
        self._targets[target] = now
        self._discarded = None
        if self.confirm and target != self._candidate:
            self._candidate = target

    def _retry(self, now: float) -> None:
        active = self.active(now)
        target = self._candidate or self._discarded or (active[-1] if active else None)
        if target is None:
            raise CommandError("nothing_to_retry", "nothing to look for again: no target, none discarded")
        self._suppress.append(target)
        self._targets.setdefault(target, now)  # the one just discarded comes back
        if self.confirm:
            self._candidate = target  # what it finds next is checked again before it is erased
        self._discarded = None

    def confirm_candidate(self, keep: bool) -> str | None:
        """Keep (erase from now on) or discard the candidate; returns its text, None when there is none."""
        target, self._candidate = self._candidate, None
        if target is not None:
            self._discarded = None if keep else target
            if not keep:
                self._targets.pop(target, None)
                self._suppress.append(target)  # so a retry looks elsewhere
        return target

    def take_suppressions(self) -> tuple[bool, list[str]]:
        """(whether suppressed regions are to be forgotten first, the targets to suppress), once each."""
        taken = (self.fresh, self._suppress)
        self.fresh, self._suppress = False, []
        return taken

    def end(self, now: float, target: str | None = None) -> None:
        """End one target, or (None) all of them."""
        if target is None or target == self._candidate:
            self._candidate = None
        if target is None:
            self._targets = {}
        else:
            self._targets.pop(target, None)

    def active(self, now: float) -> tuple[str, ...]:
        if self.timeout > 0:
            self._targets = {t: since for t, since in self._targets.items() if now - since < self.timeout}
            if self._candidate not in self._targets:
                self._candidate = None
        return tuple(self._targets)

    @property
    def candidate(self) -> str | None:
        return self._candidate

    @property
    def candidates(self) -> tuple[str, ...]:
        """The candidate as `Remover.set_commands` takes them: () or (text,)."""
        return () if self._candidate is None else (self._candidate,)


def sync_command(remover, tracker: CommandTracker, now: float) -> tuple[tuple[str, ...], ValueError | None]:
    """Put the targets active at `now` on `remover` (a sahm_core Remover); returns (targets, None).

    A target the model cannot encode is ended, so it fails once instead of on every frame: returns (the targets
    left, the error). Targets set already keep their encoding (and their stream), so only new ones are encoded. With
    no active target the remover has none either (a given mask alone must not erase an ended command's object).
    Regions a retry or a discard asked to suppress are suppressed first, from the frame the operator saw.
    """
    forget, suppress = tracker.take_suppressions()
    if forget:
        remover.unsuppress()
    for target in suppress:
        remover.suppress(target)
    targets = tracker.active(now)
    if remover.commands == targets and remover.candidates == tracker.candidates:
        return targets, None
    error = None
    kept = [t for t in remover.commands if t in targets]
    for target in targets:
        if target not in kept:
            try:
                remover.set_commands(kept + [target], tracker.candidates)
                kept.append(target)
            except ValueError as e:
                tracker.end(now, target)
                error = e
    targets = tracker.active(now)
    remover.set_commands(targets, tracker.candidates)  # encoded already: the order as asked
    return targets, error
