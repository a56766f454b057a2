# sslvision: set-up, demo, tests and benchmarks. Everything runs inside .venv.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
DEMO_CSV := results/demo.csv

.PHONY: setup demo test test-real test-slurm lint bench clean

setup: $(VENV)/.installed

# torch and torchvision are pinned so that pip takes the local wheels, not multi-GB downloads.
$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q torch==2.14.1 torchvision==0.29.1
	$(BIN)/pip install -q -e ".[dev]"
	touch $@

demo: setup
	rm -f $(DEMO_CSV)
	$(BIN)/sslvision pretrain configs/simclr/demo.yaml --overwrite
	$(BIN)/sslvision knn runs/simclr-demo/checkpoints/last.pt --train-data synthetic \
		--val-data synthetic --label "SimCLR (demo)" --results-csv $(DEMO_CSV)
	$(BIN)/sslvision knn random --train-data synthetic --val-data synthetic \
		--label "random init" --results-csv $(DEMO_CSV)
	$(BIN)/sslvision report $(DEMO_CSV) --evaluator knn

test: setup
	$(BIN)/python -m pytest -m "not real and not slurm" -q

test-real: setup
	$(BIN)/python -m pytest -m real -q

# A local SLURM cluster from Debian's packages; without them the tests skip with a message.
test-slurm: setup
	$(BIN)/python tests/slurm/local_cluster.py install || echo "SLURM packages not installed"
	$(BIN)/python -m pytest -m slurm -q

lint: setup
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

bench: setup
	$(BIN)/python benchmarks/simclr_throughput.py

clean:
	rm -rf runs results
