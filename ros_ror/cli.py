"""`ros-ror` command: replay a rosbag2 through the remover, run the demo, benchmark the node.

Each subcommand's module exposes `add_arguments(parser)` and `main(args) -> int`
and is imported only when that subcommand runs (as in `sahm`).
"""

from __future__ import annotations

import argparse
import importlib
import os
import sys

# subcommand -> (module, one-line help)
COMMANDS: dict[str, tuple[str, str]] = {
    "replay": ("ros_ror.replay",
               "run the remover over a rosbag2 (sqlite3 or mcap) and write a new bag with the results"),
    "demo": ("ros_ror.demo",
             "build a synthetic camera bag, replay it through the bundled model, draw before/after/mask"),
    "bench": ("ros_ror.bench", "latency / output rate / drops / memory of the node on a 640x480 30 Hz stream"),
    "ament-prefix": ("ros_ror.ament_prefix", "index ros_ror in an ament prefix so `ros2 launch ros_ror ...` finds it"),
}


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    # Nothing is fetched from a model hub. (DDS transports are the environment's, as for every ROS process.)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
    command = next((a for a in argv if not a.startswith("-")), None)
    parser = argparse.ArgumentParser(prog="ros-ror", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="subcommand", required=True, metavar="COMMAND")
    for name, (module, help_text) in COMMANDS.items():
        p = sub.add_parser(name, help=help_text, description=help_text)
        if name == command:
            importlib.import_module(module).add_arguments(p)
    args = parser.parse_args(argv)
    return int(importlib.import_module(COMMANDS[args.subcommand][0]).main(args) or 0)


if __name__ == "__main__":
    sys.exit(main())
