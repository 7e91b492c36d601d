"""`ros_ror_remove`: camera frames + spoken command in; cleaned frames, masks, results and diagnostics out.

    remove_node --ros-args --params-file config/remove.yaml -r ~/image:=/camera/image_raw -r ~/command:=/speech/text

Subscriptions only decode and validate; one worker thread runs the model on the
newest frame (a busy model drops stale frames instead of queueing them). The
model is loaded lazily and unloaded when the node is disabled.
"""

from __future__ import annotations

import threading
from collections import Counter, deque
from dataclasses import dataclass

import numpy as np
import rclpy
from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus, KeyValue
from rcl_interfaces.msg import FloatingPointRange, IntegerRange, ParameterDescriptor, SetParametersResult
from rclpy.clock import Clock, ClockType
from rclpy.executors import ExternalShutdownException
from rclpy.node import Node
from rclpy.qos import DurabilityPolicy, QoSProfile, ReliabilityPolicy
from rclpy.qos_overriding_options import QoSOverridingOptions
from rclpy.time import Time
from sensor_msgs.msg import CompressedImage, Image
from std_msgs.msg import Header, String
from std_srvs.srv import SetBool

from .commands import CommandError, CommandTracker, sync_command
from .image_conversions import DecodedFrame, ImageError, decode_compressed, decode_image, encode_compressed, encode_image, mask_fields
from .resources import bundled_model_dir
from .result import ResultFields, ResultPublisher, fields_from_removal

NODE_NAME = "ros_ror_remove"
BACKENDS = ("auto", "tensorrt", "onnxruntime", "torch")
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
    "model_path": _Param("", "model dir, .safetensors, .onnx or TensorRT .engine; empty = bundled models/nano", read_only=True),
    "backend": _Param("auto", f"inference backend: {' | '.join(BACKENDS)}", read_only=True),
    "device": _Param("", "device for the backend, e.g. cpu or cuda:0; empty = the backend's default", read_only=True),
    "mask_threshold": _Param(0.5, "mask probability above which a pixel is removed", float_range=_FRACTION),
    "min_mask_area": _Param(0.002, "masks smaller than this fraction of the frame count as not found", float_range=_FRACTION),
    "min_score": _Param(0.6, "object score below which the command counts as not found", float_range=_FRACTION),
    "enabled": _Param(True, "start enabled; toggle at run time with the ~/set_enabled service", read_only=True),
    "preload": _Param(False, "load the model at start-up instead of at the first frame that needs it", read_only=True),
    "command_timeout": _Param(0.0, "seconds a command stays active; 0 = until stop / cancel / clear", float_range=_SECONDS),
    "pass_through": _Param(True, "with no active command, republish frames unchanged (false: publish nothing)"),
    "max_fps": _Param(0.0, "cap on processed frames per second; 0 = no cap", float_range=FloatingPointRange(from_value=0.0, to_value=1000.0, step=0.0)),
    "max_frame_pixels": _Param(3840 * 2160, "frames with more pixels (width x height) are dropped", integer_range=IntegerRange(from_value=1, to_value=2**31 - 1, step=0)),
    "max_command_chars": _Param(300, "longer commands are rejected", integer_range=IntegerRange(from_value=1, to_value=100_000, step=0)),
    "compressed_input": _Param(False, "also subscribe ~/image/compressed (jpeg/png) and publish ~/cleaned_image/compressed", read_only=True),
    "diagnostics_period": _Param(1.0, "seconds between /diagnostics messages", read_only=True, float_range=FloatingPointRange(from_value=0.05, to_value=60.0, step=0.0)),
    "warn_throttle": _Param(5.0, "seconds between repeated warnings of one kind", float_range=_SECONDS),
}
_THRESHOLDS = ("mask_threshold", "min_mask_area", "min_score")
# Drops that are the node working as configured (a busy model, the fps cap, disabled), not bad input.
_ROUTINE_DROPS = ("stale", "max_fps", "disabled")


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


class RemoveNode(Node):
    """Referring object removal on a camera stream, driven by spoken commands."""

    def __init__(self, **node_kwargs):
        super().__init__(NODE_NAME, **node_kwargs)
        self.add_on_set_parameters_callback(self._validate_parameters)
        for name, spec in PARAMETERS.items():
            self.declare_parameter(name, spec.default, self._descriptor(name, spec))
        self.add_post_set_parameters_callback(self._apply_parameters)

        self._stats = _Stats()
        self._commands = CommandTracker(self._param("command_timeout"), self._param("max_command_chars"))
        self._command_lock = threading.Lock()
        self._steady = Clock(clock_type=ClockType.STEADY_TIME)
        self._last_warned: dict[str, float] = {}
        self._enabled = self._param("enabled")
        self._remover = None  # owned by the worker thread
        self._model_state = "unloaded"
        self._want_unload = False
        self._want_reload = False
        self._last_accepted: Time | None = None
        self._rates = (self.get_clock().now(), 0, 0)  # (time, frames_in, frames_out) at the last diagnostics
        self._dropped_at_last_report: dict[str, int] = {}

        self._pending: _PendingFrame | None = None
        self._wake = threading.Condition()
        self._stopping = False

        overridable = QoSOverridingOptions.with_default_policies()
        # Sensor-data QoS (best effort, volatile) with depth 1: DDS itself keeps only the newest frame.
        camera = QoSProfile(depth=1, reliability=ReliabilityPolicy.BEST_EFFORT, durability=DurabilityPolicy.VOLATILE)
        reliable = QoSProfile(depth=5, reliability=ReliabilityPolicy.RELIABLE)
        self._image_pub = self.create_publisher(Image, "~/cleaned_image", reliable, qos_overriding_options=overridable)
        self._mask_pub = self.create_publisher(Image, "~/mask", reliable, qos_overriding_options=overridable)
        self._result_pub = ResultPublisher(self, "~/result", reliable)
        self._diagnostics_pub = self.create_publisher(DiagnosticArray, "/diagnostics", 10)
        self.create_subscription(Image, "~/image", self._on_image, camera, qos_overriding_options=overridable)
        self.create_subscription(String, "~/command", self._on_command, QoSProfile(depth=10, reliability=ReliabilityPolicy.RELIABLE), qos_overriding_options=overridable)
        self._compressed_pub = None
        if self._param("compressed_input"):
            self._compressed_pub = self.create_publisher(CompressedImage, "~/cleaned_image/compressed", reliable, qos_overriding_options=overridable)
            self.create_subscription(CompressedImage, "~/image/compressed", self._on_compressed, camera, qos_overriding_options=overridable)
        self.create_service(SetBool, "~/set_enabled", self._on_set_enabled)
        self.create_timer(self._param("diagnostics_period"), self._publish_diagnostics)

        self._worker = threading.Thread(target=self._work, name="ros_ror_inference", daemon=True)
        self._worker.start()
        if self._enabled and self._param("preload"):
            with self._wake:
                self._want_reload = True
                self._wake.notify()
        self.get_logger().info(
            f"ready: {'enabled' if self._enabled else 'disabled'}, model {self._model_path()} ({self._param('backend')}), "
            f"results as {self._result_pub.type_name}"
        )

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
            if p.name == "backend" and p.value not in BACKENDS:
                return SetParametersResult(successful=False, reason=f"backend must be one of {', '.join(BACKENDS)}, got {p.value!r}")
            if p.name == "mask_threshold" and p.value >= 1.0:
                return SetParametersResult(successful=False, reason="mask_threshold must be below 1 (nothing would ever be removed)")
            if p.name == "device" and p.value and not (p.value == "cpu" or p.value.startswith("cuda")):
                return SetParametersResult(successful=False, reason=f"device must be empty, 'cpu' or 'cuda[:N]', got {p.value!r}")
        return SetParametersResult(successful=True)

    def _apply_parameters(self, params) -> None:
        names = {p.name for p in params}
        with self._command_lock:
            self._commands.timeout = self._param("command_timeout")
            self._commands.max_chars = self._param("max_command_chars")
        remover = self._remover
        if names & set(_THRESHOLDS) and remover is not None:
            # Remover reads its thresholds per frame: setting them applies from the next frame, no reload.
            for name in _THRESHOLDS:
                setattr(remover, name, self._param(name))

    def _model_path(self) -> str:
        return self._param("model_path") or str(bundled_model_dir())

    # ---------------------------------------------------------------- input
    def _warn(self, reason: str, message: str) -> None:
        """One warning per reason per `warn_throttle` seconds (steady clock: sim time may stand still)."""
        now = self._steady.now().nanoseconds * 1e-9
        if now - self._last_warned.get(reason, -1e18) >= self._param("warn_throttle"):
            self._last_warned[reason] = now
            self.get_logger().warning(f"{message} (dropped; further '{reason}' warnings are throttled)")

    def _on_image(self, msg: Image) -> None:
        try:
            frame = decode_image(msg.height, msg.width, msg.encoding, msg.step, msg.data, self._param("max_frame_pixels"))
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

    def _reject_frame(self, error: ImageError) -> None:
        self._stats.drop(error.reason)
        self._warn(error.reason, f"bad frame: {error}")

    def _accept(self, pending: _PendingFrame) -> None:
        if not self._enabled:
            self._stats.drop("disabled")
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
        self.get_logger().info("command ended" if command.stop else f"new command: {command.text!r}")

    def _on_set_enabled(self, request: SetBool.Request, response: SetBool.Response) -> SetBool.Response:
        with self._wake:
            self._enabled = request.data
            self._want_unload = not request.data
            if request.data and self._model_state == "failed":
                self._model_state = "unloaded"  # enabling again retries a load that failed
            self._wake.notify()
        response.success = True
        response.message = "enabled: the model loads at the first frame that needs it" if request.data else "disabled: model unloaded"
        self.get_logger().info(response.message)
        return response

    # ---------------------------------------------------------------- worker
    def _work(self) -> None:
        while True:
            with self._wake:
                while not (self._stopping or self._pending or self._want_unload or self._want_reload):
                    self._wake.wait()
                if self._stopping:
                    return
                pending, self._pending = self._pending, None
                unload, reload = self._want_unload, self._want_reload
                self._want_unload = self._want_reload = False
            if unload or reload:
                self._unload()
            if reload:
                self._load()
            if pending is not None and self._enabled:
                try:
                    self._process(pending)
                except Exception as e:  # noqa: BLE001 - the node must outlive any single frame
                    self._stats.drop("processing_error")
                    self._stats.last_error = f"{type(e).__name__}: {e}"
                    self._warn("processing_error", f"frame failed: {self._stats.last_error}")

    def _load(self) -> None:
        from sahm_core.runtime import Remover

        self._model_state = "loading"
        path = self._model_path()
        self.get_logger().info(f"loading model {path} (backend {self._param('backend')})")
        try:
            self._remover = Remover.load(
                path,
                backend=self._param("backend"),
                device=self._param("device") or None,
                **{name: self._param(name) for name in _THRESHOLDS},
            )
        except Exception as e:  # noqa: BLE001 - a bad model path must not kill the node; report and wait
            self._model_state = "failed"
            self._stats.last_error = f"model load failed: {type(e).__name__}: {e}"
            self.get_logger().error(f"{self._stats.last_error}; frames are dropped until ~/set_enabled is called again")
            return
        self._model_state = "loaded"
        self.get_logger().info(f"model loaded: {self._remover.config.name} on {self._remover.backend}")

    def _unload(self) -> None:
        if self._remover is not None:
            self._remover = None  # the last reference: backend sessions and (GPU) memory go with it
            self._model_state = "unloaded"
            self.get_logger().info("model unloaded")

    def _process(self, pending: _PendingFrame) -> None:
        now = self.get_clock().now().nanoseconds * 1e-9
        rgb = pending.frame.rgb
        with self._command_lock:
            active = self._commands.active(now)
        if active is None:
            self._pass_through(pending)
            return
        if self._model_state == "unloaded":
            self._load()
        if self._model_state != "loaded":
            self._stats.drop("model_unavailable")
            self._warn("model_unavailable", f"no model to run ({self._stats.last_error})")
            return
        with self._command_lock:
            command, rejected = sync_command(self._remover, self._commands, now)
        if rejected is not None:
            with self._stats.lock:
                self._stats.rejected_commands["encoder"] += 1
            self._warn("command_encoder", f"the model rejected command {active!r}: {rejected}")
        if command is None:  # rejected, or ended (stop, timeout) while the model was loading
            self._pass_through(pending)
            return
        removal = self._remover.remove(rgb)
        fields = fields_from_removal(removal, command, self._remover.backend)
        with self._stats.lock:
            self._stats.inference_s.append(removal.latency_s)
        self._publish(pending, removal.image, removal.mask, fields)

    def _pass_through(self, pending: _PendingFrame) -> None:
        if self._param("pass_through"):
            rgb = pending.frame.rgb
            self._publish(pending, rgb, np.zeros(rgb.shape[:2], np.uint8), ResultFields(width=rgb.shape[1], height=rgb.shape[0]))

    def _publish(self, pending: _PendingFrame, rgb: np.ndarray, mask: np.ndarray, fields: ResultFields) -> None:
        header = pending.header
        height, width = mask.shape
        if pending.compressed:
            self._compressed_pub.publish(CompressedImage(header=header, format=pending.frame.encoding, data=encode_compressed(rgb, pending.frame.encoding)))
        else:
            data, step = encode_image(rgb, pending.frame.encoding, pending.frame.alpha)
            self._image_pub.publish(Image(header=header, height=height, width=width, encoding=pending.frame.encoding, step=step, data=data))
        mask_data, mask_step = mask_fields(mask)
        self._mask_pub.publish(Image(header=header, height=height, width=width, encoding="mono8", step=mask_step, data=mask_data))
        stamped = header.stamp.sec != 0 or header.stamp.nanosec != 0
        origin = Time.from_msg(header.stamp, clock_type=self.get_clock().clock_type) if stamped else pending.received
        fields.latency = (self.get_clock().now() - origin).nanoseconds * 1e-9
        self._result_pub.publish(header, fields)
        with self._stats.lock:
            self._stats.frames_out += 1
            self._stats.latency_s.append(fields.latency)

    # ---------------------------------------------------------------- diagnostics
    def diagnostics(self) -> DiagnosticStatus:
        """The node's health as one DiagnosticStatus (also what /diagnostics carries)."""
        now = self.get_clock().now()
        stats = self._stats
        with stats.lock:
            frames_in, frames_out = stats.frames_in, stats.frames_out
            dropped, rejected = dict(stats.dropped), dict(stats.rejected_commands)
            inference, latency = list(stats.inference_s), list(stats.latency_s)
        then, then_in, then_out = self._rates
        elapsed = (now - then).nanoseconds * 1e-9
        self._rates = (now, frames_in, frames_out)
        rate_in = (frames_in - then_in) / elapsed if elapsed > 0 else 0.0
        rate_out = (frames_out - then_out) / elapsed if elapsed > 0 else 0.0
        with self._command_lock:
            command = self._commands.active(now.nanoseconds * 1e-9)
        values = {
            "enabled": self._enabled,
            "model": self._model_path(),
            "model_state": self._model_state,
            "backend": self._remover.backend if self._remover is not None else self._param("backend"),
            "command": command or "",
            "input_rate_hz": f"{rate_in:.2f}",
            "output_rate_hz": f"{rate_out:.2f}",
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
        if self._model_state == "failed":
            level, message = DiagnosticStatus.ERROR, "model failed to load"
        elif not self._enabled:
            level, message = DiagnosticStatus.OK, "disabled"
        elif bad_inputs := {r: n - self._dropped_at_last_report.get(r, 0) for r, n in dropped.items() if r not in _ROUTINE_DROPS and n > self._dropped_at_last_report.get(r, 0)}:
            level, message = DiagnosticStatus.WARN, "dropping bad frames: " + ", ".join(f"{n} {r}" for r, n in sorted(bad_inputs.items()))
        else:
            level, message = DiagnosticStatus.OK, "removing" if command else "idle (no command)"
        self._dropped_at_last_report = dropped
        return DiagnosticStatus(
            level=level,
            name=f"{self.get_name()}: referring object removal",
            message=message,
            hardware_id=str(values["backend"]),
            values=[KeyValue(key=k, value=str(v)) for k, v in values.items()],
        )

    def _publish_diagnostics(self) -> None:
        self._diagnostics_pub.publish(DiagnosticArray(header=Header(stamp=self.get_clock().now().to_msg()), status=[self.diagnostics()]))

    def destroy_node(self) -> None:
        with self._wake:
            self._stopping = True
            self._wake.notify()
        self._worker.join(timeout=10.0)
        super().destroy_node()


def main(args=None) -> None:
    with rclpy.init(args=args):
        node = RemoveNode()
        try:
            rclpy.spin(node)
        except (KeyboardInterrupt, ExternalShutdownException):
            pass
        finally:
            node.destroy_node()


if __name__ == "__main__":
    main()
