"""Removal datasets: the reader, the synthetic scene generator and the ComCOCO builder.

`RemovalDataset` is imported lazily so that `sahm_core.data.synthetic` (used by the
ROS demo to make a camera stream) does not pay for importing torch.
"""

__all__ = ["RemovalDataset"]


def __getattr__(name):
    if name == "RemovalDataset":
        from sahm_core.data.dataset import RemovalDataset

        return RemovalDataset
    raise AttributeError(f"module 'sahm_core.data' has no attribute {name!r}")
