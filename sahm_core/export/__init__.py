"""Export of SAHM's per-frame graph and its TensorRT engine.

onnx_export      the per-frame graph to ONNX (opset >= 19, static shapes, config + weights hash in the metadata)
trt_ops          TensorRT readiness: every graph op against onnx-tensorrt's supported list (trt_supported_ops.json)
tensorrt_engine  engine build / cache (keyed by ONNX hash, TensorRT version, GPU, precision, shape) / pycuda runner
cache            where derived files go (~/.cache/ros_ror) and file fingerprints
cli              `sahm export onnx`
"""
