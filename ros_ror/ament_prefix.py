"""Register a pip-installed ros_ror in an ament prefix, so `ros2 launch ros_ror remove.launch.py` finds it.

    ros-ror ament-prefix                 # the running environment's prefix (the virtualenv)
    export AMENT_PREFIX_PATH=$VIRTUAL_ENV

`ros2 launch PKG FILE`, `ros2 run` and launch_ros' FindPackageShare look a package
up in each prefix of AMENT_PREFIX_PATH: `share/ament_index/resource_index/packages/PKG`
marks it, `share/PKG/` holds its launch, config and data files, and
`lib/PKG/EXECUTABLE` its executables. colcon writes that layout itself
(CMakeLists.txt); pip cannot: an editable install writes none of it and a wheel
install puts console scripts in bin/, not lib/ros_ror. This fills the layout with
symbolic links to the files (so an editable checkout's edits show through) and to
the `remove_node` console script. The pip-installed ROS 2 wheels already keep
their own packages' index in the same prefix.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from .resources import PACKAGE, shared_path

# What `share/ros_ror` holds (as setup.py's data_files and CMakeLists.txt install it).
SHARED = ("package.xml", "launch", "config", "msg", "models/nano")
EXECUTABLES = ("remove_node",)


def _link(target: Path, link: Path) -> None:
    if link.resolve() == target.resolve():
        return  # already there: a wheel install's own copy, or a link from an earlier run
    link.parent.mkdir(parents=True, exist_ok=True)
    if link.is_symlink() or link.exists():
        link.unlink()
    link.symlink_to(target)


def write_prefix(prefix: Path, scripts: Path) -> list[Path]:
    """Index ros_ror in `prefix`; `scripts` is where pip put the console scripts. Returns the paths written.

    Folders become real folders of file links: the launch file search does not follow folder links.
    """
    written = []
    marker = prefix / "share/ament_index/resource_index/packages" / PACKAGE
    marker.parent.mkdir(parents=True, exist_ok=True)
    marker.touch()
    written.append(marker)
    for relative in SHARED:
        source = shared_path(relative)
        files = [source] if source.is_file() else sorted(p for p in source.rglob("*") if p.is_file())
        for file in files:
            link = prefix / "share" / PACKAGE / relative
            if file != source:
                link = link / file.relative_to(source)
            _link(file, link)
            written.append(link)
    for name in EXECUTABLES:
        script = scripts / name
        if not script.is_file():
            raise FileNotFoundError(f"{script} not found: install the package with pip first")
        link = prefix / "lib" / PACKAGE / name
        _link(script, link)
        written.append(link)
    return written


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--prefix", default=sys.prefix, help="the ament prefix to write (default: this environment's)")


def main(args: argparse.Namespace) -> int:
    prefix = Path(args.prefix).absolute()
    try:
        written = write_prefix(prefix, Path(sys.executable).parent)
    except (FileNotFoundError, OSError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    print(f"ros_ror indexed in {prefix} ({len(written)} entries); use it with: export AMENT_PREFIX_PATH={prefix}"
          + (f"{os.pathsep}$AMENT_PREFIX_PATH" if os.environ.get("AMENT_PREFIX_PATH") else ""))
    return 0
