# Two commands on a fresh machine: `make run` and `make test`. Both create .venv with pip when missing.
# torch is pinned to the build this machine serves from disk (other versions download gigabytes).
PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.edgecam-installed
ARGS   ?=
PYTEST_ARGS ?=
BENCH_ARGS ?=
BOARD  ?= build

.PHONY: run test test-slow bench arm64-board adb-board clean

$(STAMP): pyproject.toml
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q torch==2.14.1 torchvision==0.29.1
	$(PY) -m pip install -q -e '.[dev,tensorrt-rtx,ray]'
	@# grad-cam pulls opencv-python-headless, which shares the cv2 package with the contrib build: make sure
	@# the contrib one (cv2.saliency, for the visual-saliency providers) is the one on disk
	@$(PY) -c "import cv2; cv2.saliency" 2>/dev/null || $(PY) -m pip install -q --force-reinstall --no-deps \
	  "opencv-contrib-python-headless==$$($(PY) -c 'import importlib.metadata as m; print(m.version("opencv-python-headless"))')"
	@touch $(STAMP)

## the embedded default benchmark (configs/quickstart.toml: pretrained EfficientNet-Lite0 on real photos), then
## the ground-truth demo (configs/digits-demo.toml: tinycnn on digits-clutter); extra CLI flags via ARGS="--limit 12"
run: $(STAMP)
	$(VENV)/bin/edgecam run $(ARGS)
	$(VENV)/bin/edgecam run configs/digits-demo.toml $(ARGS)

## the test suite (slow and hardware tests are opt-in); pytest's "no tests collected" (exit 5) is a failure
test: $(STAMP)
	@$(PY) -m pytest $(PYTEST_ARGS); rc=$$?; \
	if [ $$rc -eq 5 ]; then echo "make test: pytest collected no tests" >&2; exit 1; fi; exit $$rc

test-slow: $(STAMP)
	$(PY) -m pytest -m slow $(PYTEST_ARGS)

## the performance suite: prints one table of ratios and writes benchmarks/results/<machine>.md (flags via BENCH_ARGS="--items 1 2")
bench: $(STAMP)
	$(PY) benchmarks/suite.py $(BENCH_ARGS)

## the emulated aarch64 board of the `arm64` tests (Debian arm64 under qemu-user, cached; needs root): build it,
## or with BOARD=shell start it and print the devices.toml entry that reaches it
arm64-board: $(STAMP)
	$(PY) tests/arm64_board.py $(BOARD)

## the adbd boards of the `adb` tests (Debian's real adbd in a trixie root, x86-64 and arm64 under qemu-user,
## cached; needs root): build both, or with BOARD=shell ARCH=arm64 start one in its own network namespace and
## print the devices.toml entry that reaches it
ARCH ?= amd64
adb-board: $(STAMP)
	@if [ "$(BOARD)" = build ]; then $(PY) tests/adb_board.py build amd64 && $(PY) tests/adb_board.py build arm64; \
	else $(PY) tests/adb_board.py $(BOARD) $(ARCH); fi

clean:
	rm -rf runs .pytest_cache
