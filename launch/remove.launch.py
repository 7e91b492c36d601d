"""Launch the referring-object-removal node on a camera and a speech topic.

    ros2 launch ros_ror remove.launch.py image_topic:=/camera/image_raw command_topic:=/speech/text
    ros2 launch ros_ror remove.launch.py model_path:=/models/tiny/model.engine backend:=tensorrt

The node reads config/remove.yaml (or `params_file`); `model_path` and `backend`
given here override the file only when they are not empty. Fast DDS needs its
LARGE_DATA transports to move 640x480 images reliably (README, "DDS and large
images"); the camera driver's process should get the same variable.
"""

from launch import LaunchDescription
from launch.actions import DeclareLaunchArgument, OpaqueFunction
from launch.substitutions import LaunchConfiguration, PathJoinSubstitution
from launch_ros.actions import Node
from launch_ros.substitutions import FindPackageShare

ARGUMENTS = {
    "image_topic": ("/camera/image_raw", "sensor_msgs/Image topic of the camera (remapped to ~/image)"),
    "command_topic": ("/speech/text", "std_msgs/String topic of the speech recogniser (remapped to ~/command)"),
    "model_path": ("", "model dir, .safetensors, .onnx or TensorRT .engine; empty = the value in params_file"),
    "backend": ("", "auto | tensorrt | onnxruntime | torch; empty = the value in params_file"),
    "use_sim_time": ("false", "use /clock (bag replay with --clock)"),
    "fastdds_transports": ("LARGE_DATA", "FASTDDS_BUILTIN_TRANSPORTS for the node process"),
}


def _node(context):
    value = {name: LaunchConfiguration(name).perform(context) for name in (*ARGUMENTS, "params_file")}
    overrides = {"use_sim_time": value["use_sim_time"].lower() in ("true", "1", "yes")}
    overrides.update({k: value[k] for k in ("model_path", "backend") if value[k]})
    return [
        Node(
            package="ros_ror",
            executable="remove_node",
            name="ros_ror_remove",
            output="screen",
            parameters=[value["params_file"], overrides],
            remappings=[("~/image", value["image_topic"]), ("~/command", value["command_topic"])],
            additional_env={"FASTDDS_BUILTIN_TRANSPORTS": value["fastdds_transports"]},
        )
    ]


def generate_launch_description():
    default_params = PathJoinSubstitution([FindPackageShare("ros_ror"), "config", "remove.yaml"])
    declared = [DeclareLaunchArgument(name, default_value=default, description=text) for name, (default, text) in ARGUMENTS.items()]
    declared.append(DeclareLaunchArgument("params_file", default_value=default_params, description="node parameters (YAML)"))
    return LaunchDescription([*declared, OpaqueFunction(function=_node)])
