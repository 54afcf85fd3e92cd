# babelsearch: `make demo` installs everything into .venv and runs the demo; `make test` runs the tests.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

.PHONY: help install demo test test-quick lint format mutation fuzz eval-sample clean serve bench-server bench-encode bench-index bench-peers bench-ray train-model bench-quality

help:  ## Show the targets
	@grep -E '^[a-z-]+:.*##' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-14s %s\n", $$1, $$2}'

install: $(STAMP)  ## Create .venv with babelsearch, its models and the test tools

$(STAMP): pyproject.toml engine/_refine.c engine/resources/babel_lite_captions.npz
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	# this exact torch pair installs from local wheels here; any other torch pulls gigabytes
	$(BIN)/python -m pip install -q torch==2.14.1 torchvision==0.29.1
	$(BIN)/python -m pip install -q -e '.[test,demo,eval,lint,clip,ray,fuzz]'
	# the model's derived files (image tower export, dictionary, query-bank vectors): made now, not on first use
	$(BIN)/babelsearch prepare
	touch $@

demo: install  ## Build the demo collection into data/, index it, search it in several languages
	$(BIN)/babelsearch demo

test: install  ## Run the whole test suite (the real model over the shared sample included)
	$(BIN)/python -m pytest

lint: install  ## ruff (lint and format check) and mypy over the whole tree, in seconds
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/python scripts/typecheck.py

format: install  ## Apply ruff's fixes and formatting
	$(BIN)/ruff check --fix .
	$(BIN)/ruff format .

# mutants per module (0: all of them); a name of its own: `make mutation SAMPLE=12` once set the shared photos folder to 12
MUTANTS ?= 12
mutation: install  ## Mutation testing of the core on a copy of the tree (cosmic-ray; MUTANTS=N per module, default 12, 0: all; SEED=S)
	$(BIN)/python -m pip install -q 'cosmic-ray>=8.3'
	$(BIN)/python scripts/mutation.py $(if $(filter-out 0,$(MUTANTS)),--sample $(MUTANTS)) --seed $(or $(SEED),0)

FUZZ_SECONDS ?= 60
fuzz: install  ## Coverage-guided fuzzing (atheris) of every byte-level reader, FUZZ_SECONDS each (default 60); crashes -> tests/fuzz/crashes
	$(BIN)/python scripts/fuzz.py --seconds $(FUZZ_SECONDS)

test-quick: install  ## The quick loop: everything but the slow integration tests
	$(BIN)/python -m pytest -m "not slow"

bench-index: install  ## Benchmark the index on 1,000,000 synthetic 384-d vectors, then filtered search (about 40 min on 2 cores)
	$(BIN)/python benchmarks/bench_index.py
	$(BIN)/python benchmarks/bench_filters.py

bench-peers: install  ## babelsearch vs faiss, hnswlib, usearch, LanceDB, autofaiss at 300k and 1M (peers in data/peers-venv; hours on 2 cores; QUICK=1: 50k)
	$(BIN)/python benchmarks/bench_peers.py $(if $(QUICK),--quick)

CAPTIONS := ../shared/data/captions
train-model: install  ## Retrain babel-lite's caption heads from ../shared's caption set (train split) -> engine/resources (about 50 min cold, 3 warm)
	$(BIN)/python -m babelsearch.training $(CAPTIONS) --work data/train-cache

bench-quality: install  ## Caption recall (Flickr8k and CC3M test pools, XTD10 protocol) and class-name recall (93 languages) of the bundled model
	$(BIN)/python benchmarks/bench_quality.py

SAMPLE_PHOTOS := ../shared/data/imagenet-sample
eval-sample: install  ## Margin reranking vs plain cosine on ../shared's 1000-photo sample, all 93 languages -> docs/eval
	$(BIN)/babelsearch index $(SAMPLE_PHOTOS)/images --index data/imagenet-sample-index -q
	$(BIN)/babelsearch eval data/imagenet-sample-index --labels ../shared/data/babel-imagenet/babel_imagenet.json \
		--truth $(SAMPLE_PHOTOS)/labels.tsv --rerank distance,margin,none --out docs/eval --cache data/eval-cache -q

clean:  ## Remove the demo data (not the virtual environment)
	rm -rf data/demo-photos data/demo-index

serve: install  ## Serve the demo index at http://127.0.0.1:8000 (built first if missing)
	test -f data/demo-index/manifest.json || $(BIN)/babelsearch demo
	$(BIN)/babelsearch serve data/demo-index

bench-server: install  ## Load test: 32 concurrent clients x 3000 mixed requests against a live server
	$(BIN)/python benchmarks/bench_server.py

bench-encode: install  ## Indexing images/s and query latency: babel-lite, then the CLIP architectures (random weights)
	$(BIN)/python benchmarks/bench_encode.py
	$(BIN)/python benchmarks/bench_clip.py

bench-ray: install  ## Indexing images/s single-process vs Ray (a local Ray, 2 workers) on the shared sample
	$(BIN)/python benchmarks/bench_ray.py

.PHONY: translations
translations: install  ## Re-extract the web UI's words (babel.cfg), update every catalog in webui/translations, compile them
	$(BIN)/pybabel extract -F babel.cfg -k _ -k gettext -k ngettext:1,2 --no-location --sort-output \
		--project babelsearch --copyright-holder "babelsearch authors" -o webui/translations/messages.pot .
	$(BIN)/pybabel update -i webui/translations/messages.pot -d webui/translations --width 120 \
		--ignore-obsolete --no-fuzzy-matching --ignore-pot-creation-date
	$(BIN)/pybabel compile -d webui/translations --statistics
