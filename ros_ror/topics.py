"""The node's name and its output topics (relative to the node), shared by the node, replay and the demo.

image_transport pairs an image topic with the `camera_info` beside it, so the cleaned stream has a namespace of
its own (`cleaned/image` + `cleaned/camera_info`); the input's pair is `image` + `camera_info`.
"""

NODE_NAME = "ros_ror_remove"
CLEANED_IMAGE = "cleaned/image"
CLEANED_INFO = "cleaned/camera_info"
MASK = "mask"
RESULT = "result"
CANDIDATE_MASK = "candidate_mask"  # with confirm_targets: what a target waiting for ~/confirm found
CANDIDATE_OVERLAY = "candidate_overlay"  # the same drawn on the frame, for rqt_image_view
