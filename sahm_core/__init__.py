"""SAHM: syntax-aware hybrid mapping for referring object removal (arXiv 2403.09128).

Model, text side, data, training, evaluation, export and runtime. Imports no ROS.
"""

__version__ = "0.6.0"
