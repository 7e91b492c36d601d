"""Launch the referring-object-removal node on a camera and a speech topic.

    ros2 launch ros_ror remove.launch.py image_topic:=/camera/image_raw command_topic:=/speech/text
    ros2 launch ros_ror remove.launch.py model_path:=/models/tiny/model.engine backend:=tensorrt
    ros2 launch ros_ror remove.launch.py --show-args

The node is a lifecycle node; with autostart (the default) it configures (loads
and warms up the model) and activates itself. Launch arguments left empty keep
the value in `params_file` (config/remove.yaml unless given), so a params file
that sets use_sim_time or a model keeps it. DDS transports come from the
environment, as for every other process on the robot; `fastdds_transports` sets
FASTDDS_BUILTIN_TRANSPORTS for everything this launch starts (README, "DDS").
"""

import posixpath

from launch import LaunchDescription
from launch.actions import DeclareLaunchArgument, OpaqueFunction, SetEnvironmentVariable
from launch.conditions import IfCondition
from launch.substitutions import LaunchConfiguration, PathJoinSubstitution, PythonExpression
from launch_ros.actions import LifecycleNode
from launch_ros.substitutions import FindPackageShare

NODE_NAME = "ros_ror_remove"
# name -> (default, description); an empty default means "the params file decides"
ARGUMENTS = {
    "image_topic": ("/camera/image_raw", "sensor_msgs/Image topic of the camera (remapped to ~/image)"),
    "camera_info_topic": ("", "sensor_msgs/CameraInfo of the camera (remapped to ~/camera_info); "
                              "empty = camera_info beside image_topic, as image_transport pairs them"),
    "command_topic": ("/speech/text", "std_msgs/String topic of the speech recogniser (remapped to ~/command)"),
    "model_path": ("", "model dir, .safetensors, .onnx or TensorRT .engine; empty = the value in params_file"),
    "backend": ("", "auto | tensorrt | onnxruntime | torch; empty = the value in params_file"),
    "use_sim_time": ("", "true: use /clock (bag replay with --clock); empty = the value in params_file"),
    "autostart": ("true", "configure (load and warm up the model) and activate at start; "
                          "false: wait for `ros2 lifecycle set`"),
    "log_level": ("info", "debug | info | warn | error | fatal"),
    "fastdds_transports": ("", "FASTDDS_BUILTIN_TRANSPORTS for every process of this launch, e.g. LARGE_DATA; "
                               "empty = the environment's (the camera driver must use the same)"),
}


def _node(context):
    value = {name: LaunchConfiguration(name).perform(context) for name in (*ARGUMENTS, "params_file")}
    overrides = {"autostart": value["autostart"].lower() in ("true", "1", "yes")}
    overrides.update({k: value[k] for k in ("model_path", "backend") if value[k]})
    if value["use_sim_time"]:
        overrides["use_sim_time"] = value["use_sim_time"].lower() in ("true", "1", "yes")
    image_topic = value["image_topic"]
    camera_info_topic = value["camera_info_topic"] or posixpath.join(posixpath.dirname(image_topic), "camera_info")
    return [
        LifecycleNode(
            package="ros_ror",
            executable="remove_node",
            name=NODE_NAME,
            namespace="",
            output="screen",
            parameters=[value["params_file"], overrides],
            remappings=[("~/image", image_topic), ("~/camera_info", camera_info_topic),
                        ("~/command", value["command_topic"])],
            ros_arguments=["--log-level", value["log_level"]],
        )
    ]


def generate_launch_description():
    default_params = PathJoinSubstitution([FindPackageShare("ros_ror"), "config", "remove.yaml"])
    declared = [DeclareLaunchArgument(name, default_value=default, description=text)
                for name, (default, text) in ARGUMENTS.items()]
    declared.append(DeclareLaunchArgument("params_file", default_value=default_params,
                                          description="node parameters (YAML)"))
    transports = LaunchConfiguration("fastdds_transports")
    return LaunchDescription([
        *declared,
        SetEnvironmentVariable("FASTDDS_BUILTIN_TRANSPORTS", transports,
                               condition=IfCondition(PythonExpression(["'", transports, "' != ''"]))),
        OpaqueFunction(function=_node),
    ])
