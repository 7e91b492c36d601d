# Two commands on a fresh machine:
#   make demo   set up .venv (first run only) and run the demo on the bundled model
#   make test   set up .venv (first run only) and run the test suite
VENV ?= .venv
PY := $(VENV)/bin/python
# Large images over Fast DDS need its LARGE_DATA transports (see README, "DDS and large images").
export FASTDDS_BUILTIN_TRANSPORTS ?= LARGE_DATA
# Nothing is fetched from a model hub at run time.
export HF_HUB_OFFLINE := 1
export TRANSFORMERS_OFFLINE := 1

.PHONY: setup demo test clean

setup: $(VENV)/.installed

$(VENV)/.installed: setup.py
	python3 -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip setuptools wheel
	$(PY) -m pip install --quiet -e '.[dev]'
	touch $@

demo: setup
	$(VENV)/bin/ros-ror demo --out out/demo

test: setup
	$(PY) -m pytest -q -ra tests

clean:
	rm -rf $(VENV) out build *.egg-info
