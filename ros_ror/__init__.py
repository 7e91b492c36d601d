"""ROS 2 side of referring object removal: node, conversions, commands, rosbag replay, demo.

Talks to the model only through `sahm_core.runtime.Remover`.
"""
