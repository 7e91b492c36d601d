"""Files that ship beside the Python package: msg/ definitions, config/, the bundled models/.

A source checkout (pip install -e, or running from the repo) has them at the
repository root; a regular pip install puts them under <prefix>/share/ros_ror,
a colcon workspace under the package's ament share directory.
"""

from __future__ import annotations

import sys
from pathlib import Path

PACKAGE = "ros_ror"
BUNDLED_MODEL = "models/nano"


def _ament_share() -> Path | None:
    try:
        from ament_index_python.packages import get_package_share_directory

        return Path(get_package_share_directory(PACKAGE))
    except (ImportError, LookupError, OSError):  # not in a sourced ament workspace
        return None


def shared_path(relative: str) -> Path:
    """Path of a shipped file or folder; FileNotFoundError lists every place that was looked at.

    The source checkout first, then the package's ament share directory (a colcon install, or the prefix that
    `ros-ror ament-prefix` writes), then this environment's share/ros_ror (a wheel install without AMENT_PREFIX_PATH).
    """
    share = _ament_share()
    candidates = [Path(__file__).resolve().parent.parent / relative,
                  *([share / relative] if share is not None else []),
                  Path(sys.prefix) / "share" / PACKAGE / relative]
    for path in candidates:
        if path.exists():
            return path
    raise FileNotFoundError(f"{relative} not found; looked in: {', '.join(str(p) for p in candidates)}")


def bundled_model_dir() -> Path:
    return shared_path(BUNDLED_MODEL)
