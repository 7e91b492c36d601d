# Two commands on a fresh machine:
#   make demo   set up .venv (first run only) and run the demo on the bundled model
#   make test   set up .venv (first run only) and run the test suite
VENV ?= .venv
PY := $(VENV)/bin/python
# Upstream `ros2 launch` / `ros2 param` / `ros2 lifecycle` as wheels (not on PyPI); installed when present.
ROS2_LAUNCH_WHEELS ?= ../shared/ros2-launch
# Every process of one make run (demo, tests) shares the transports: Fast DDS delivers nothing between a
# LARGE_DATA participant and a default one (README, "DDS and large images").
export FASTDDS_BUILTIN_TRANSPORTS ?= LARGE_DATA
# The virtualenv is the ament prefix that `ros2 launch ros_ror ...` searches (ros-ror ament-prefix writes it).
export AMENT_PREFIX_PATH := $(abspath $(VENV))
# Nothing is fetched from a model hub at run time.
export HF_HUB_OFFLINE := 1
export TRANSFORMERS_OFFLINE := 1

.PHONY: setup demo test lint gpu-check clean

setup: $(VENV)/.installed

$(VENV)/.installed: setup.py Makefile
	python3 -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip setuptools wheel
	$(PY) -m pip install --quiet -e '.[dev,cpu]'
	if [ -d $(ROS2_LAUNCH_WHEELS) ]; then \
		(cd $(ROS2_LAUNCH_WHEELS) && sha256sum --quiet -c SHA256SUMS) && \
		$(PY) -m pip install --quiet --no-deps $(ROS2_LAUNCH_WHEELS)/*.whl && \
		$(PY) -m pip install --quiet 'osrf-pycommon>=2.0' 'psutil>=5.9'; \
	else echo "note: $(ROS2_LAUNCH_WHEELS) not found: no ros2 CLI; the launch tests will skip"; fi
	$(VENV)/bin/ros-ror ament-prefix --prefix $(VENV)
	touch $@

demo: setup
	$(VENV)/bin/ros-ror demo --out out/demo

test: setup
	$(PY) -m pytest -q -ra --durations=25 tests

lint: setup
	$(VENV)/bin/ruff check .

# GPU paths in one go (report.json + report.md); GPU parts say "skipped: no CUDA device" without one.
gpu-check: setup
	$(VENV)/bin/sahm gpu-check --out out/gpu-check

clean:
	rm -rf $(VENV) out build *.egg-info
