"""`ros_ror_remove`: camera frames + spoken command (+ masks found by other nodes) in; cleaned frames, masks,
results and diagnostics out.

    remove_node --ros-args --params-file config/remove.yaml -r ~/image:=/camera/image_raw -r ~/command:=/speech/text

A managed (lifecycle) node, like the GPU perception nodes it runs beside:

- configure loads the model on its backend and warms it up (text encoder, tagger,
  one encode and one frame), so the first command is as fast as every later one;
- activate starts processing and publishing; deactivate stops both;
- cleanup frees the model and its GPU memory; shutdown does too.

With `autostart` (the default) the node configures and activates itself once it
spins; `~/set_enabled` is a shortcut onto the same transitions. Callback groups
keep it answering while a model loads (minutes, the first time a TensorRT engine
is built): transitions run in one group, camera / command / diagnostics in
another, parameter and lifecycle services in the default one. Subscriptions only
decode and validate; one worker thread owns the model (load, warm-up, command
encoding, inference, unload: GPU contexts are per thread) and runs it on the
newest frame, so a busy model drops stale frames instead of queueing them.

`~/erase_mask` takes masks another node found: each waits (a few, in arrival order) for the frame stamped within
`erase_mask_tolerance` of it and is erased there by the model's fill graph, loaded when the first mask is heard.

A click on `~/click` (geometry_msgs/PointStamped in pixels, what rqt_image_view publishes on
`<image topic>_mouse_left`) adds the object under it as a target, placed on the newest frame; a click stamped more
than `click_max_age` before that frame, or outside it, is warned about and dropped.

"also ..." / "and the ..." add a target (up to `max_targets`); all run as one batch and everything found is erased by
one fill. With `confirm_targets` a new target is first a candidate on `~/candidate_mask` / `~/candidate_overlay`,
erased once `~/confirm` keeps it; "not that one" looks again away from what it found.
"""

from __future__ import annotations

import copy
import signal
import sys
import threading
from collections import Counter, deque
from concurrent.futures import Future
from dataclasses import dataclass
from typing import Callable

import numpy as np
import rclpy
from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus, KeyValue
from geometry_msgs.msg import PointStamped
from rcl_interfaces.msg import FloatingPointRange, IntegerRange, ParameterDescriptor, SetParametersResult
from rclpy.callback_groups import MutuallyExclusiveCallbackGroup
from rclpy.clock import Clock, ClockType
from rclpy.exceptions import ParameterException
from rclpy.executors import ExternalShutdownException, MultiThreadedExecutor
from rclpy.impl.implementation_singleton import rclpy_implementation
from rclpy.lifecycle import LifecycleNode, LifecycleState, TransitionCallbackReturn
from rclpy.qos import DurabilityPolicy, QoSProfile, ReliabilityPolicy
from rclpy.qos_overriding_options import QoSOverridingOptions
from rclpy.signals import SignalHandlerOptions
from rclpy.time import Time
from sensor_msgs.msg import CameraInfo, CompressedImage, Image
from std_msgs.msg import Header, String
from std_srvs.srv import SetBool

from sahm_core.backends import AUTO, BACKEND_CHOICES  # argparse only: torch loads at configure
from sahm_core.found import DEFAULT_RULE, RULE_HELP, FoundRule  # numpy only: torch loads at configure, not here
from sahm_core.stream import DEFAULT_STREAM, STRENGTH_HELP, StreamConfig  # numpy + OpenCV

from .clicks import DEFAULT_CLICK_MAX_AGE, ClickDropped, NewestFrame, place_click
from .commands import DEFAULT_MAX_TARGETS, CommandError, CommandTracker, Intent, sync_command
from .given_masks import DEFAULT_TOLERANCE, GivenMasks
from .image_conversions import (
    DecodedFrame,
    ImageError,
    candidate_overlay,
    decode_compressed,
    decode_image,
    decode_mask,
    encode_compressed,
    encode_image,
    mask_fields,
)
from .resources import bundled_model_dir
from .result import COMMAND_SEPARATOR, ResultFields, ResultPublisher, fields_from_removal
from .topics import CANDIDATE_MASK, CANDIDATE_OVERLAY, CLEANED_IMAGE, CLEANED_INFO, MASK, NODE_NAME, RESULT

# Any command in the model's vocabulary: encoding it loads the tokenizer, the text encoder and the tagger.
WARM_UP_COMMAND = "remove the red box on the left"
STOP_POLL_S = 0.1  # how often the spinning main thread looks at the SIGINT / SIGTERM flag: the stop's latency
_FRACTION = FloatingPointRange(from_value=0.0, to_value=1.0, step=0.0)
_SECONDS = FloatingPointRange(from_value=0.0, to_value=3600.0, step=0.0)


@dataclass(frozen=True)
class _Param:
    default: object
    description: str
    read_only: bool = False
    float_range: FloatingPointRange | None = None
    integer_range: IntegerRange | None = None


PARAMETERS: dict[str, _Param] = {
    "model_path": _Param("", "model dir, .safetensors, .onnx or TensorRT .engine; empty = bundled models/nano. "
                             "Read at configure; settable while unconfigured"),
    "backend": _Param(AUTO, f"inference backend: {' | '.join(BACKEND_CHOICES)}. "
                              "Read at configure; settable while unconfigured"),
    "device": _Param("", "device for the backend, e.g. cpu or cuda:0; empty = the backend's default. "
                         "Read at configure; settable while unconfigured"),
    # the found rule: defaults and meaning from sahm_core's FoundRule, shared with the Remover, sahm eval and replay
    **{name: _Param(getattr(DEFAULT_RULE, name), help_text, float_range=_FRACTION)
       for name, help_text in RULE_HELP.items()},
    # stream mode (sahm_core.stream): defaults and meaning from its StreamConfig, shared with replay and sahm remove
    "stream_mode": _Param(False, "carry mask evidence and fill from frame to frame, warped by the camera's motion, so "
                                 "an erased object stays erased through a weak frame; reset by a new command or a "
                                 "scene cut. Applies from the next frame"),
    "stream_strength": _Param(DEFAULT_STREAM.strength, f"{STRENGTH_HELP}. Applies from the next frame",
                              float_range=_FRACTION),
    "autostart": _Param(True, "configure and activate at start-up (false: wait for lifecycle transitions)",
                        read_only=True),
    "command_timeout": _Param(0.0, "seconds a command stays active; 0 = until ended (stop, cancel, never mind)",
                              float_range=_SECONDS),
    "pass_through": _Param(True, "with no active command, republish frames unchanged (false: publish nothing)"),
    "max_fps": _Param(0.0, "cap on processed frames per second; 0 = no cap",
                      float_range=FloatingPointRange(from_value=0.0, to_value=1000.0, step=0.0)),
    "max_frame_pixels": _Param(3840 * 2160, "frames with more pixels (width x height) are dropped",
                               integer_range=IntegerRange(from_value=1, to_value=2**31 - 1, step=0)),
    "max_command_chars": _Param(300, "longer commands are rejected",
                                integer_range=IntegerRange(from_value=1, to_value=100_000, step=0)),
    "max_targets": _Param(DEFAULT_MAX_TARGETS, "most objects removed at once (\"also remove ...\", \"and the ...\" "
                                               "add one; a plain command replaces them): each is a row of the "
                                               "per-frame graph's batch. Applies to the next added target",
                          integer_range=IntegerRange(from_value=1, to_value=32, step=0)),
    "confirm_targets": _Param(False, f"a new target is a candidate, shown on ~/{CANDIDATE_MASK} and "
                                     f"~/{CANDIDATE_OVERLAY} and not erased, until ~/confirm true keeps it (false "
                                     "discards it; \"not that one\" then looks for the next most likely object). "
                                     "Applies to the next target"),
    "compressed_input": _Param(False, "also subscribe ~/image/compressed (jpeg/png) and publish "
                                      f"~/{CLEANED_IMAGE}/compressed", read_only=True),
    "diagnostics_period": _Param(1.0, "seconds between /diagnostics messages", read_only=True,
                                 float_range=FloatingPointRange(from_value=0.05, to_value=60.0, step=0.0)),
    "warn_throttle": _Param(5.0, "seconds between repeated warnings of one kind", float_range=_SECONDS),
    "click_max_age": _Param(DEFAULT_CLICK_MAX_AGE, "a ~/click stamped more than this many seconds before the "
                                                   "newest frame is dropped (the scene it pointed at may have "
                                                   "changed); an unstamped click (stamp 0, as rqt_image_view sends) "
                                                   "is placed on the newest frame", float_range=_SECONDS),
    "erase_mask_tolerance": _Param(DEFAULT_TOLERANCE, "a ~/erase_mask (mono8, the frame's size) is erased from the "
                                                      "frame whose header stamp is within this many seconds of its own",
                                   float_range=FloatingPointRange(from_value=0.0, to_value=10.0, step=0.0)),
}
_THRESHOLDS = tuple(RULE_HELP)  # the FoundRule fields
_MODEL_PARAMETERS = ("model_path", "backend", "device")  # read by configure, so only changed while unconfigured
_STREAM_PARAMETERS = ("stream_mode", "stream_strength")
# Drops that are the node working as configured (a busy model, the fps cap, not active), not bad input.
_ROUTINE_DROPS = ("stale", "max_fps", "inactive")
_CAMERA_INFOS_KEPT = 30  # ~1 s of a 30 Hz camera: enough for the info of the frame being processed to be here
_FILL_NOT_LOADED, _FILL_LOADED = "not loaded", "loaded"  # or "failed: <reason>"
@dataclass
class _PendingFrame:
    header: Header
    frame: DecodedFrame
    compressed: bool
    received: Time  # node clock at arrival: the latency origin of a frame whose header has no stamp


class _Stats:
    """Counters and recent timings; shared by the callbacks, the worker and the diagnostics timer."""

    def __init__(self):
        self.lock = threading.Lock()
        self.frames_in = 0
        self.frames_out = 0
        self.dropped: Counter[str] = Counter()  # reason -> frames
        self.rejected_commands: Counter[str] = Counter()  # reason -> commands
        self.inference_s: deque[float] = deque(maxlen=300)
        self.latency_s: deque[float] = deque(maxlen=300)
        self.last_error = ""

    def drop(self, reason: str) -> None:
        with self.lock:
            self.dropped[reason] += 1


def warm_up(remover) -> None:
    """Run everything the first command needs once (encoder, tagger, one encode, one frame), then forget it."""
    size = remover.config.image_size
    remover.set_command(WARM_UP_COMMAND)
    remover.remove(np.zeros((size, size, 3), np.uint8))
    remover.clear_command()


class RemoveNode(LifecycleNode):
    """Referring object removal on a camera stream, driven by spoken commands."""

    _worker: threading.Thread | None = None  # None until __init__ has started it: destroy_node may come first

    def __init__(self, **node_kwargs):
        super().__init__(NODE_NAME, **node_kwargs)
        self.add_on_set_parameters_callback(self._validate_parameters)
        for name, spec in PARAMETERS.items():
            self.declare_parameter(name, spec.default, self._descriptor(name, spec))
        self.add_post_set_parameters_callback(self._apply_parameters)

        self._stats = _Stats()
        self._commands = CommandTracker(self._param("command_timeout"), self._param("max_command_chars"),
                                        self._param("max_targets"), self._param("confirm_targets"))
        self._command_lock = threading.Lock()
        self._steady = Clock(clock_type=ClockType.STEADY_TIME)
        self._last_warned: dict[str, float] = {}
        self._active = False
        self._remover = None  # owned by the worker thread
        self._configure_error = ""
        self._last_accepted: Time | None = None
        self._reported = (self.get_clock().now(), 0, 0, Counter())  # (time, frames_in, frames_out, dropped) last sent
        self._camera_infos: deque[CameraInfo] = deque(maxlen=_CAMERA_INFOS_KEPT)
        self._newest_frame: NewestFrame | None = None  # where a click lands
        self._clickable: bool | None = None  # whether the loaded weights were trained with clicks (None: unknown)
        self._erase_masks = GivenMasks()
        self._erase_lock = threading.Lock()
        self._fill_state = _FILL_NOT_LOADED  # worker-owned: the fill graph loads on the first ~/erase_mask

        self._pending: _PendingFrame | None = None
        self._jobs: deque[tuple[Callable[[], object], Future]] = deque()
        self._command_changed = False
        self._stopping = False
        self._wake = threading.Condition()
        self.autostarted = threading.Event()  # set once autostart's configure + activate has been tried

        io = MutuallyExclusiveCallbackGroup()  # frames, commands, diagnostics: never behind a model load
        transitions = MutuallyExclusiveCallbackGroup()
        overridable = QoSOverridingOptions.with_default_policies()
        # Sensor-data QoS (best effort, volatile) with depth 1: DDS itself keeps only the newest frame.
        camera = QoSProfile(depth=1, reliability=ReliabilityPolicy.BEST_EFFORT, durability=DurabilityPolicy.VOLATILE)
        camera_info = QoSProfile(depth=5, reliability=ReliabilityPolicy.BEST_EFFORT)
        reliable = QoSProfile(depth=5, reliability=ReliabilityPolicy.RELIABLE)
        publisher = self.create_lifecycle_publisher  # silent unless active
        self._image_pub = publisher(Image, f"~/{CLEANED_IMAGE}", reliable, qos_overriding_options=overridable)
        self._info_pub = publisher(CameraInfo, f"~/{CLEANED_INFO}", reliable, qos_overriding_options=overridable)
        self._mask_pub = publisher(Image, f"~/{MASK}", reliable, qos_overriding_options=overridable)
        self._candidate_mask_pub = publisher(Image, f"~/{CANDIDATE_MASK}", reliable, qos_overriding_options=overridable)
        self._candidate_overlay_pub = publisher(Image, f"~/{CANDIDATE_OVERLAY}", reliable,
                                                qos_overriding_options=overridable)
        self._result_pub = ResultPublisher(self, f"~/{RESULT}", reliable)
        self._diagnostics_pub = self.create_publisher(DiagnosticArray, "/diagnostics", 10)  # in every state
        self.create_subscription(Image, "~/image", self._on_image, camera, qos_overriding_options=overridable,
                                 callback_group=io)
        self.create_subscription(CameraInfo, "~/camera_info", self._on_camera_info, camera_info, callback_group=io)
        # masks from another node (a segmentation or detection node): reliable, a few kept until their frame comes
        self.create_subscription(Image, "~/erase_mask", self._on_erase_mask, reliable,
                                 qos_overriding_options=overridable, callback_group=io)
        commands = QoSProfile(depth=10, reliability=ReliabilityPolicy.RELIABLE)
        self.create_subscription(String, "~/command", self._on_command, commands, qos_overriding_options=overridable,
                                 callback_group=io)
        self.create_subscription(PointStamped, "~/click", self._on_click, commands, qos_overriding_options=overridable,
                                 callback_group=io)
        self._compressed_pub = None
        if self._param("compressed_input"):
            self._compressed_pub = publisher(CompressedImage, f"~/{CLEANED_IMAGE}/compressed", reliable,
                                             qos_overriding_options=overridable)
            self.create_subscription(CompressedImage, "~/image/compressed", self._on_compressed, camera,
                                     qos_overriding_options=overridable, callback_group=io)
        self.create_service(SetBool, "~/set_enabled", self._on_set_enabled, callback_group=transitions)
        self.create_service(SetBool, "~/confirm", self._on_confirm, callback_group=io)
        self.create_timer(self._param("diagnostics_period"), self._publish_diagnostics, callback_group=io)
        if self._param("autostart"):
            self._autostart_timer = self.create_timer(0.0, self._autostart, callback_group=transitions)

        self._worker = threading.Thread(target=self._work, name="ros_ror_inference", daemon=True)
        self._worker.start()
        self.get_logger().info(f"model {self._model_path()} ({self._param('backend')}), "
                               f"results as {self._result_pub.type_name}")

    # ---------------------------------------------------------------- parameters
    @staticmethod
    def _descriptor(name: str, spec: _Param) -> ParameterDescriptor:
        descriptor = ParameterDescriptor(name=name, description=spec.description, read_only=spec.read_only)
        if spec.float_range is not None:
            descriptor.floating_point_range = [spec.float_range]
        if spec.integer_range is not None:
            descriptor.integer_range = [spec.integer_range]
        return descriptor

    def _param(self, name: str):
        return self.get_parameter(name).value

    def _validate_parameters(self, params) -> SetParametersResult:
        # Ranges and read_only come from the descriptors; this checks what a range cannot express.
        for p in params:
            if p.name in _MODEL_PARAMETERS and self.lifecycle_state() != "unconfigured":
                return self._rejected(f"{p.name} is read at configure: clean the node up "
                                      f"(it is {self.lifecycle_state()}) before changing it")
            if p.name == "backend" and p.value not in BACKEND_CHOICES:
                return self._rejected(f"backend must be one of {', '.join(BACKEND_CHOICES)}, got {p.value!r}")
            if p.name == "device" and p.value and not (p.value == "cpu" or p.value.startswith("cuda")):
                return self._rejected(f"device must be empty, 'cpu' or 'cuda[:N]', got {p.value!r}")
        thresholds = {p.name: p.value for p in params if p.name in _THRESHOLDS}
        if thresholds:  # the rule's own range check (mask_threshold below 1), on the rule as it would become
            current = {name: self._param(name) if self.has_parameter(name) else getattr(DEFAULT_RULE, name)
                       for name in _THRESHOLDS}
            try:
                FoundRule(**{**current, **thresholds})
            except ValueError as e:
                return self._rejected(str(e))
        for p in params:
            if p.name == "stream_strength":
                try:
                    StreamConfig(strength=p.value)  # the config's own check, as for the found rule
                except (TypeError, ValueError) as e:
                    return self._rejected(str(e))
        return SetParametersResult(successful=True)

    @staticmethod
    def _rejected(reason: str) -> SetParametersResult:
        return SetParametersResult(successful=False, reason=reason)

    def _apply_parameters(self, params) -> None:
        names = {p.name for p in params}
        with self._command_lock:
            self._commands.timeout = self._param("command_timeout")
            self._commands.max_chars = self._param("max_command_chars")
            self._commands.max_targets = self._param("max_targets")
            self._commands.confirm = self._param("confirm_targets")
        remover = self._remover
        if names & set(_THRESHOLDS) and remover is not None:
            # Remover reads its thresholds per frame: setting them applies from the next frame, no reload.
            for name in _THRESHOLDS:
                setattr(remover, name, self._param(name))
        if names & set(_STREAM_PARAMETERS) and remover is not None:
            remover.stream = self._stream_config()  # one assignment, read once per frame: the next frame uses it

    def _stream_config(self) -> StreamConfig | None:
        return StreamConfig(strength=self._param("stream_strength")) if self._param("stream_mode") else None

    def _model_path(self) -> str:
        return self._param("model_path") or str(bundled_model_dir())

    # ---------------------------------------------------------------- lifecycle
    def lifecycle_state(self) -> str:
        """unconfigured | inactive | active | finalized, or a transition state (configuring, ...)."""
        return self._state_machine.current_state[1]  # what the get_state service answers; rclpy has no public getter

    def on_configure(self, state: LifecycleState) -> TransitionCallbackReturn:
        self._configure_error = self._in_worker(self._load) or ""
        if self._configure_error:
            self.get_logger().error(f"configure failed: {self._configure_error}")
            return TransitionCallbackReturn.FAILURE
        return TransitionCallbackReturn.SUCCESS

    def on_activate(self, state: LifecycleState) -> TransitionCallbackReturn:
        self._active = True
        self.get_logger().info("active: removing on command")
        return super().on_activate(state)  # enables the lifecycle publishers

    def on_deactivate(self, state: LifecycleState) -> TransitionCallbackReturn:
        self._active = False
        with self._wake:
            self._pending = None
        self.get_logger().info("inactive: frames are dropped, nothing is published")
        return super().on_deactivate(state)

    def on_cleanup(self, state: LifecycleState) -> TransitionCallbackReturn:
        self._in_worker(self._unload)
        return TransitionCallbackReturn.SUCCESS

    def on_shutdown(self, state: LifecycleState) -> TransitionCallbackReturn:
        self._active = False
        self._in_worker(self._unload)
        return TransitionCallbackReturn.SUCCESS

    def on_error(self, state: LifecycleState) -> TransitionCallbackReturn:
        self._active = False
        self._in_worker(self._unload)
        return TransitionCallbackReturn.SUCCESS  # back to unconfigured: configure may be tried again

    def _autostart(self) -> None:
        """configure + activate, once. A failed configure is logged; the node stays up, unconfigured, with an
        ERROR diagnostic, and a later configure (after fixing model_path) may succeed."""
        self._autostart_timer.cancel()  # one shot
        if self.trigger_configure() == TransitionCallbackReturn.SUCCESS:
            self.trigger_activate()
        self.autostarted.set()

    def _on_set_enabled(self, request: SetBool.Request, response: SetBool.Response) -> SetBool.Response:
        """true: configure (if needed) and activate; false: deactivate and clean up, which frees the model."""
        forward = {"unconfigured": (self.trigger_configure, self.trigger_activate),
                   "inactive": (self.trigger_activate,)}
        back = {"active": (self.trigger_deactivate, self.trigger_cleanup), "inactive": (self.trigger_cleanup,)}
        for transition in (forward if request.data else back).get(self.lifecycle_state(), ()):
            if transition() != TransitionCallbackReturn.SUCCESS:
                break
        response.success = self.lifecycle_state() == ("active" if request.data else "unconfigured")
        response.message = f"now {self.lifecycle_state()}"
        if not response.success:
            response.message += f": {self._configure_error}"
        self.get_logger().info(f"~/set_enabled {request.data}: {response.message}")
        return response

    def _on_confirm(self, request: SetBool.Request, response: SetBool.Response) -> SetBool.Response:
        """true: the candidate is erased from the next frame on; false: it is discarded ("not that one" retries)."""
        with self._command_lock:
            target = self._commands.confirm_candidate(request.data)
        response.success = target is not None
        response.message = (f"{'kept' if request.data else 'discarded'}: {target!r}" if target is not None
                            else "no candidate to confirm (confirm_targets is "
                                 f"{str(self._param('confirm_targets')).lower()})")
        if target is not None:
            self._wake_for_commands()
        self.get_logger().info(f"~/confirm {request.data}: {response.message}")
        return response

    # ---------------------------------------------------------------- input
    def _warn(self, reason: str, message: str) -> None:
        """One warning per reason per `warn_throttle` seconds (steady clock: sim time may stand still)."""
        now = self._steady.now().nanoseconds * 1e-9
        if now - self._last_warned.get(reason, -1e18) >= self._param("warn_throttle"):
            self._last_warned[reason] = now
            self.get_logger().warning(f"{message} (dropped; further '{reason}' warnings are throttled)")

    def _on_image(self, msg: Image) -> None:
        try:
            frame = decode_image(msg.height, msg.width, msg.encoding, msg.step, msg.data,
                                 self._param("max_frame_pixels"))
        except ImageError as e:
            self._reject_frame(e)
            return
        self._accept(_PendingFrame(msg.header, frame, compressed=False, received=self.get_clock().now()))

    def _on_compressed(self, msg: CompressedImage) -> None:
        try:
            frame = decode_compressed(msg.format, msg.data, self._param("max_frame_pixels"))
        except ImageError as e:
            self._reject_frame(e)
            return
        self._accept(_PendingFrame(msg.header, frame, compressed=True, received=self.get_clock().now()))

    def _on_camera_info(self, msg: CameraInfo) -> None:
        self._camera_infos.append(msg)

    def _on_erase_mask(self, msg: Image) -> None:
        try:
            mask = decode_mask(msg.height, msg.width, msg.encoding, msg.step, msg.data, self._param("max_frame_pixels"))
        except ImageError as e:
            self._stats.drop(f"erase_mask_{e.reason}")
            self._warn(f"erase_mask_{e.reason}", f"bad ~/erase_mask: {e}")
            return
        if self._fill_state.startswith("failed"):
            self._stats.drop("erase_mask_no_fill")
            self._warn("erase_mask_no_fill", f"~/erase_mask cannot be served: the fill graph {self._fill_state}")
            return
        with self._erase_lock:
            self._erase_masks.add(Time.from_msg(msg.header.stamp).nanoseconds, mask)
        with self._wake:  # the worker loads the fill graph now, not at the mask's frame
            self._wake.notify()

    def _given_mask(self, header: Header, shape: tuple[int, ...]) -> np.ndarray | None:
        """The ~/erase_mask stamped nearest the frame, within erase_mask_tolerance; masks older than the frame by more
        than that can no longer match (warned, dropped), and so cannot one of the wrong size (warned, dropped)."""
        with self._erase_lock:
            best, stale = self._erase_masks.match(Time.from_msg(header.stamp).nanoseconds,
                                                  self._param("erase_mask_tolerance"))
        for _ in range(stale):
            self._stats.drop("erase_mask_stale")
        if stale:
            self._warn("erase_mask_stale", f"{stale} ~/erase_mask(s) stamped more than erase_mask_tolerance="
                                           f"{self._param('erase_mask_tolerance')} s before the frame being processed "
                                           "matched no frame")
        if best is not None and best.mask.shape != shape[:2]:
            self._stats.drop("erase_mask_size")
            self._warn("erase_mask_size", f"~/erase_mask is {best.mask.shape[1]}x{best.mask.shape[0]}, its frame is "
                                          f"{shape[1]}x{shape[0]}: a mask must be its frame's size")
            return None
        return None if best is None else best.mask

    def _reject_frame(self, error: ImageError) -> None:
        self._stats.drop(error.reason)
        self._warn(error.reason, f"bad frame: {error}")

    def _accept(self, pending: _PendingFrame) -> None:
        height, width = pending.frame.rgb.shape[:2]
        self._newest_frame = NewestFrame(Time.from_msg(pending.header.stamp).nanoseconds, width, height)
        if not self._active:
            self._stats.drop("inactive")
            return
        now = self.get_clock().now()
        max_fps = self._param("max_fps")
        if max_fps > 0 and self._last_accepted is not None and (now - self._last_accepted).nanoseconds < 1e9 / max_fps:
            self._stats.drop("max_fps")
            return
        self._last_accepted = now
        with self._stats.lock:
            self._stats.frames_in += 1
        with self._wake:
            if self._pending is not None:
                self._stats.drop("stale")  # the worker was busy: the newer frame wins
            self._pending = pending
            self._wake.notify()

    def _on_command(self, msg: String) -> None:
        now = self.get_clock().now().nanoseconds * 1e-9
        try:
            with self._command_lock:
                command = self._commands.submit(msg.data, now)
        except CommandError as e:
            with self._stats.lock:
                self._stats.rejected_commands[e.reason] += 1
            self._warn(f"command_{e.reason}", f"ignored command: {e}")
            return
        self._wake_for_commands()
        said = {Intent.END: "command ended", Intent.RETRY: "not that one: looking again"}
        self.get_logger().info(said.get(command.intent) or f"{command.intent.value}: {command.target!r}")

    def _on_click(self, msg: PointStamped) -> None:
        try:
            target = place_click(msg.point.x, msg.point.y, Time.from_msg(msg.header.stamp).nanoseconds,
                                 self._newest_frame, self._param("click_max_age"))
        except ClickDropped as e:
            self._stats.drop(e.reason)
            self._warn(e.reason, f"~/click dropped: {e}")
            return
        try:
            with self._command_lock:
                self._commands.add(target, self.get_clock().now().nanoseconds * 1e-9)
        except CommandError as e:
            with self._stats.lock:
                self._stats.rejected_commands[e.reason] += 1
            self._warn(f"command_{e.reason}", f"ignored ~/click: {e}")
            return
        self._wake_for_commands()
        self.get_logger().info(f"click at ({msg.point.x:g}, {msg.point.y:g}): {target}")
        if self._clickable is False:
            self._warn("click_untrained", f"model {self._model_path()} was not trained with clicks: a click finds "
                                          "only what the word 'this' does (models/nano_click was)")

    # ---------------------------------------------------------------- worker
    def _wake_for_commands(self) -> None:
        """The targets changed: the worker syncs them now (encodes, suppresses), before the next frame arrives."""
        with self._wake:
            self._command_changed = True
            self._wake.notify()

    def _in_worker(self, job: Callable[[], object]) -> object:
        """Run `job` on the worker thread (the model's only thread) and wait for its result."""
        done: Future = Future()
        with self._wake:
            if self._stopping:  # the worker is gone (node being destroyed): nothing else can run the model now
                return job()
            self._jobs.append((job, done))
            self._wake.notify()
        return done.result()

    def _work(self) -> None:
        while True:
            with self._wake:
                while not (self._stopping or self._jobs or self._pending or self._command_changed
                           or (self._erase_masks and self._fill_state == _FILL_NOT_LOADED
                               and self._remover is not None)):
                    self._wake.wait()
                if self._stopping:
                    break
                jobs, self._jobs = list(self._jobs), deque()
                pending, self._pending = self._pending, None
                self._command_changed = False
            for job, done in jobs:
                try:
                    done.set_result(job())
                except Exception as e:  # noqa: BLE001 - re-raised in the waiting transition, which fails with it
                    done.set_exception(e)
            try:
                if self._remover is not None:
                    self._sync_command()
                    self._load_fill()
                if pending is not None and self._active:
                    self._process(pending)
            except Exception as e:  # noqa: BLE001 - the node must outlive any single frame
                self._stats.drop("processing_error")
                self._stats.last_error = f"{type(e).__name__}: {e}"
                self._warn("processing_error", f"frame failed: {self._stats.last_error}")
        self._unload()

    def _load(self) -> str | None:
        """Load and warm up the model; None, or the error in one line."""
        from sahm_core.checkpoint import has_point_prompt
        from sahm_core.runtime import Remover

        path, backend = self._model_path(), self._param("backend")
        self.get_logger().info(f"loading model {path} (backend {backend})")
        try:
            remover = Remover.load(path, backend=backend, device=self._param("device") or None,
                                   stream=self._stream_config(), **{name: self._param(name) for name in _THRESHOLDS})
            warm_up(remover)
        except Exception as e:  # noqa: BLE001 - a bad model must fail the transition, not kill the node
            self._stats.last_error = f"model {path} ({backend}) cannot be loaded: {type(e).__name__}: {e}"
            return self._stats.last_error
        self._remover = remover
        self._clickable = has_point_prompt(path)
        self._sync_command()  # a command heard while unconfigured is encoded now, not at the first frame
        self.get_logger().info(f"model loaded and warmed up: {remover.config.name} on {remover.backend}")
        return None

    def _load_fill(self) -> None:
        """The fill graph, once the first ~/erase_mask or a second target has come: one fill over the union of what
        is erased. Tried once per configure: a model that cannot fill (a bare TensorRT engine) says why; masks are then
        dropped, and several found targets are erased one after another, each with its own fill."""
        if self._fill_state != _FILL_NOT_LOADED or not (self._erase_masks or len(self._remover.commands) > 1):
            return
        self.get_logger().info("loading the fill graph (a second target, or a mask on ~/erase_mask)")
        try:
            self._remover.load_fill()
        except Exception as e:  # noqa: BLE001 - the node goes on removing on command without the fill graph
            self._fill_state = f"failed: {type(e).__name__}: {e}"
            self.get_logger().error(f"no fill graph: ~/erase_mask cannot be served, and several targets are each "
                                    f"filled on their own: {self._fill_state}")
            return
        self._fill_state = _FILL_LOADED
        self.get_logger().info("fill graph loaded: masks on ~/erase_mask and several targets get one fill")

    def _unload(self) -> None:
        if self._remover is not None:
            self._fill_state = _FILL_NOT_LOADED
            remover, self._remover = self._remover, None  # gone even if closing it fails
            remover.close()
            self.get_logger().info("model unloaded")

    def _sync_command(self) -> None:
        now = self.get_clock().now().nanoseconds * 1e-9
        with self._command_lock:
            _, rejected = sync_command(self._remover, self._commands, now)
        if rejected is not None:
            with self._stats.lock:
                self._stats.rejected_commands["encoder"] += 1
            self._warn("command_encoder", f"the model rejected a command: {rejected}")

    def _process(self, pending: _PendingFrame) -> None:
        given = self._given_mask(pending.header, pending.frame.rgb.shape) if self._fill_state == _FILL_LOADED else None
        if not self._remover.commands and given is None:
            self._pass_through(pending)
            return
        removal = self._remover.remove(pending.frame.rgb, erase=given)
        fields = fields_from_removal(removal, self._remover.backend)
        with self._stats.lock:
            self._stats.inference_s.append(removal.latency_s)
        if removal.candidates is not None:
            self._publish_candidates(pending, removal.candidates)
        self._publish(pending, removal.image, removal.mask, fields)

    def _publish_candidates(self, pending: _PendingFrame, candidates: np.ndarray) -> None:
        header, (height, width) = pending.header, candidates.shape
        data, step = mask_fields(candidates)
        self._candidate_mask_pub.publish(Image(header=header, height=height, width=width, encoding="mono8", step=step,
                                               data=data))
        data, step = encode_image(candidate_overlay(pending.frame.rgb, candidates), "rgb8", None)
        self._candidate_overlay_pub.publish(Image(header=header, height=height, width=width, encoding="rgb8",
                                                  step=step, data=data))

    def _pass_through(self, pending: _PendingFrame) -> None:
        if self._param("pass_through"):
            rgb = pending.frame.rgb
            nothing = np.zeros(rgb.shape[:2], np.uint8)
            self._publish(pending, rgb, nothing, ResultFields(width=rgb.shape[1], height=rgb.shape[0]))

    def _publish(self, pending: _PendingFrame, rgb: np.ndarray, mask: np.ndarray, fields: ResultFields) -> None:
        header = pending.header
        height, width = mask.shape
        if pending.compressed:
            data = encode_compressed(rgb, pending.frame.encoding)
            self._compressed_pub.publish(CompressedImage(header=header, format=pending.frame.encoding, data=data))
        else:
            data, step = encode_image(rgb, pending.frame.encoding, pending.frame.alpha)
            self._image_pub.publish(Image(header=header, height=height, width=width, encoding=pending.frame.encoding,
                                          step=step, data=data))
        self._publish_camera_info(header)
        mask_data, mask_step = mask_fields(mask)
        self._mask_pub.publish(Image(header=header, height=height, width=width, encoding="mono8", step=mask_step,
                                     data=mask_data))
        stamped = header.stamp.sec != 0 or header.stamp.nanosec != 0
        origin = Time.from_msg(header.stamp, clock_type=self.get_clock().clock_type) if stamped else pending.received
        fields.latency = (self.get_clock().now() - origin).nanoseconds * 1e-9
        self._result_pub.publish(header, fields)
        with self._stats.lock:
            self._stats.frames_out += 1
            self._stats.latency_s.append(fields.latency)

    def _publish_camera_info(self, header: Header) -> None:
        """The camera's model beside the cleaned frame, under the frame's own header (exact-time pairs stay pairs).

        The info stamped like the frame when it came, else the newest one: the calibration is the camera's, not
        the frame's, and a driver that stamps its info a little off must not cost the stream its camera model.
        """
        infos = list(self._camera_infos)
        if not infos:
            return
        info = copy.copy(next((i for i in reversed(infos) if i.header.stamp == header.stamp), infos[-1]))
        info.header = header
        self._info_pub.publish(info)

    # ---------------------------------------------------------------- diagnostics
    def diagnostics(self) -> DiagnosticStatus:
        """The node's health as one DiagnosticStatus (what /diagnostics carries); rates since the last message sent."""
        now = self.get_clock().now()
        stats = self._stats
        with stats.lock:
            frames_in, frames_out = stats.frames_in, stats.frames_out
            dropped, rejected = Counter(stats.dropped), dict(stats.rejected_commands)
            inference, latency = list(stats.inference_s), list(stats.latency_s)
        then, then_in, then_out, dropped_then = self._reported
        elapsed = (now - then).nanoseconds * 1e-9
        with self._command_lock:
            targets = self._commands.active(now.nanoseconds * 1e-9)
            candidate = self._commands.candidate
        remover, state = self._remover, self.lifecycle_state()
        values = {
            "state": state,
            "model": self._model_path(),
            "backend": remover.backend if remover is not None else self._param("backend"),
            "command": COMMAND_SEPARATOR.join(targets),
            "targets": len(targets),
            "candidate": candidate or "",
            **self._stream_values(remover),
            "fill_graph": self._fill_state,
            "input_rate_hz": f"{(frames_in - then_in) / elapsed if elapsed > 0 else 0.0:.2f}",
            "output_rate_hz": f"{(frames_out - then_out) / elapsed if elapsed > 0 else 0.0:.2f}",
            "inference_ms_mean": f"{1e3 * float(np.mean(inference)):.1f}" if inference else "",
            "inference_ms_p99": f"{1e3 * float(np.percentile(inference, 99)):.1f}" if inference else "",
            "latency_ms_mean": f"{1e3 * float(np.mean(latency)):.1f}" if latency else "",
            "frames_in": frames_in,
            "frames_out": frames_out,
            "dropped_total": sum(dropped.values()),
            **{f"dropped_{reason}": n for reason, n in sorted(dropped.items())},
            **{f"rejected_commands_{reason}": n for reason, n in sorted(rejected.items())},
            "result_type": self._result_pub.type_name,
            "last_error": stats.last_error,
        }
        bad_inputs = {r: n for r, n in (dropped - dropped_then).items() if r not in _ROUTINE_DROPS}
        if self._configure_error and state == "unconfigured":
            level, message = DiagnosticStatus.ERROR, f"configure failed: {self._configure_error}"
        elif state != "active":
            level, message = DiagnosticStatus.OK, state
        elif bad_inputs:
            counts = ", ".join(f"{n} {r}" for r, n in sorted(bad_inputs.items()))
            level, message = DiagnosticStatus.WARN, f"dropping bad frames: {counts}"
        else:
            level, message = DiagnosticStatus.OK, "removing" if targets else "idle (no command)"
        return DiagnosticStatus(
            level=level,
            name=f"{self.get_name()}: referring object removal",
            message=message,
            hardware_id=str(values["backend"]),
            values=[KeyValue(key=k, value=str(v)) for k, v in values.items()],
        )

    def _stream_values(self, remover) -> dict[str, str]:
        """Stream mode as configured, and (once a model runs) its scene cuts since the last reset."""
        values = {"stream_mode": f"on, strength {self._param('stream_strength'):g}" if self._param("stream_mode")
                  else "off"}
        state = remover.stream_state if remover is not None else None
        if state is not None:
            values["stream_scene_cuts"] = str(state.cuts)
        return values

    def _publish_diagnostics(self) -> None:
        status = self.diagnostics()
        now = self.get_clock().now()
        self._diagnostics_pub.publish(DiagnosticArray(header=Header(stamp=now.to_msg()), status=[status]))
        stats = self._stats
        with stats.lock:
            self._reported = (now, stats.frames_in, stats.frames_out, Counter(stats.dropped))

    def destroy_node(self) -> None:
        if self._worker is not None:
            with self._wake:
                self._stopping = True
                self._wake.notify()
            self._worker.join(timeout=10.0)  # the worker unloads the model on its way out
        super().destroy_node()


def main(args=None) -> int:
    """Exit status 0 after a clean stop, 2 when the node cannot start (a bad parameter or params file)."""
    logger = rclpy.logging.get_logger(NODE_NAME)
    try:
        # rclpy's own handlers wake executors from a native thread that walks its list of guard conditions
        # unlocked; an executor shut down on the same SIGINT frees that list under it (a rare segfault on Ctrl-C).
        # The signals only set a flag here, and the executor polls it.
        initialized = rclpy.init(args=args, signal_handler_options=SignalHandlerOptions.NO)
    except rclpy_implementation.RCLError as e:  # unreadable --params-file, malformed --ros-args
        logger.fatal(f"cannot start: {str(e).split(', at ')[0]}")
        return 2
    stop = threading.Event()
    for signum in (signal.SIGINT, signal.SIGTERM):
        if signal.getsignal(signum) is not signal.SIG_IGN:  # e.g. SIGINT, for a process a shell put in the background
            signal.signal(signum, lambda *_: stop.set())
    with initialized:
        try:
            node = RemoveNode()
        except ParameterException as e:
            logger.fatal(f"cannot start: {e}")
            return 2
        executor = MultiThreadedExecutor(num_threads=3)  # one per callback group: see the module docstring
        executor.add_node(node)
        try:
            while rclpy.ok() and not stop.is_set():
                executor.spin_once(timeout_sec=STOP_POLL_S)
        except ExternalShutdownException:
            pass
        finally:
            executor.shutdown()
            node.destroy_node()
    return 0


if __name__ == "__main__":
    sys.exit(main())
