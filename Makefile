# IPL: two commands from a fresh clone — `make demo` and `make test`.
# Both create .venv when missing and (re)install only when pyproject.toml changed.
PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed
PYTEST_ARGS ?=

.PHONY: demo test test-slow test-all bench bench-zh install clean-runs browser

$(PY):
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip

$(STAMP): pyproject.toml | $(PY)
	$(PY) -m pip install --quiet --progress-bar off -e '.[dev]'
	touch $(STAMP)

install: $(STAMP)

demo: $(STAMP)
	$(VENV)/bin/ipl demo $(ARGS)

# the seller-page browser test drives Debian's chromium (installed here when missing and root)
browser:
	@command -v chromium >/dev/null 2>&1 && command -v chromedriver >/dev/null 2>&1 || \
	  { [ "$$(id -u)" = 0 ] && apt-get update -qq && DEBIAN_FRONTEND=noninteractive \
	    apt-get install -y -qq --no-install-recommends chromium chromium-driver >/dev/null; } || \
	  echo "chromium not installed (not root or no apt): the browser test will be skipped"

# fast + integration tests; slow ones are marked and run with `make test-slow`
test: $(STAMP) browser
	HF_HUB_OFFLINE=1 $(PY) -m pytest -m "not slow and not gpu" $(PYTEST_ARGS)

test-slow: $(STAMP)
	HF_HUB_OFFLINE=1 $(PY) -m pytest -m "slow" $(PYTEST_ARGS)

test-all: $(STAMP)
	HF_HUB_OFFLINE=1 $(PY) -m pytest $(PYTEST_ARGS)

bench: $(STAMP)
	$(PY) bench/synth.py $(ARGS)

# Chinese streaming needs a model that writes Chinese (the demo's learned English listings): a
# small language=zh marketplace end to end (~16 min on 2 cores, runs/zh), then the serving bench
ZH := run.name=zh
bench-zh: $(STAMP)
	$(VENV)/bin/ipl synth --config jobs/configs/synth_local.yaml $(ZH) language=zh rows=2000
	$(VENV)/bin/ipl prepare --config jobs/configs/prepare_local.yaml $(ZH)
	$(VENV)/bin/ipl train --config jobs/configs/train_local.yaml $(ZH)
	$(VENV)/bin/ipl index --config jobs/configs/index_local.yaml $(ZH) caption.enabled=false
	$(PY) bench/serve.py --run zh --requests 32 --concurrency 1 --skip-unbatched --zh-tokens 96 $(ARGS)

clean-runs:
	rm -rf runs
