"""Import-only stand-in for ROS 2's composition_interfaces (not on PyPI); see ../README.md."""
