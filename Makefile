# nplus: every command creates/uses the local virtual environment .venv (CPU PyTorch 2.13.0, pinned).
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: setup demo smoke test test-fast lint faults bench bench-ppo bench-gpu bench-peers report clean reward-hacking ai-feedback

$(STAMP): pyproject.toml
	$(PY) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	# torch first and pinned: a newer or unpinned torch pulls several GB of CUDA packages.
	$(BIN)/pip install -q torch==2.13.0
	$(BIN)/pip install -q -e ".[test,track]"
	touch $(STAMP)

setup: $(STAMP)

## The README's main job: the demo study on the embedded task, then its HTML report.
demo: $(STAMP)
	$(BIN)/nplus ablate ablations/demo.toml --out runs/demo --workers 2 || true
	$(BIN)/nplus report runs/demo --out reports/demo
	@echo "report: $(CURDIR)/reports/demo/index.html"

## Reward hacking (docs/rewards.md): PPO on a keyword-count rule reward at two KL coefficients and on the gold judge,
## against the learned RM, 3 seeds; writes reports/reward_hacking/.
reward-hacking: $(STAMP)
	$(BIN)/nplus ablate ablations/reward_hacking.toml --out runs/reward_hacking --workers 2 || true
	$(BIN)/nplus report runs/reward_hacking --out reports/reward_hacking

## Human-style labels vs AI feedback (docs/rewards.md): relabel the training pairs, then RM + PPO on each, 3 seeds.
ai-feedback: $(STAMP)
	$(BIN)/nplus ablate ablations/ai_feedback.toml --out runs/ai_feedback --workers 2 || true
	$(BIN)/nplus report runs/ai_feedback --out reports/ai_feedback

## One smoke pipeline run (seconds).
smoke: $(STAMP)
	$(BIN)/nplus pipeline --preset smoke --seed 1 --out runs/smoke/seed=1

## The test suite (CPU only, no network): what CI runs (.ci/run).
test: $(STAMP)
	$(BIN)/python -m pytest -q

## The fast tier, to run while editing: the suite without the tests marked slow (training in fresh processes,
## the browser); target 90 s on 2 cores. `make test` before pushing.
test-fast: $(STAMP)
	$(BIN)/python -m pytest -q -m "not slow"

## ruff's lint (pyproject.toml [tool.ruff]: pyflakes, pycodestyle, import sorting) and format check.
lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

## The kill -9 campaign (nplus/ablate/faults.py): 20 kills of `nplus ablate ablations/faults.toml` with real training,
## each resumed; prints runs lost / duplicated (both must be 0) and whether stats.csv matches an uninterrupted sweep.
faults: $(STAMP)
	$(BIN)/python -m nplus.ablate.faults --kills 20 --out runs/faults

## Speed and memory figures (printed, never asserted): smoke and demo pipelines, then the PPO phase and cost tables.
bench: $(STAMP)
	$(BIN)/python -m nplus.tooling.bench

## Only the PPO tables of `make bench` (random weights, no pipeline): per-phase FLOP/s vs the matmul peak, costs.
bench-ppo: $(STAMP)
	$(BIN)/python -m nplus.tooling.bench phases costs

## PPO updates on a Pythia-1B-shaped model, bf16 on CUDA. The .venv's torch is CPU-only: pass a CUDA python,
## e.g. `make bench-gpu GPU_PY=/opt/venv/bin/python` (with nplus importable), or BENCH_GPU_ARGS=--tiny on a CPU.
GPU_PY ?= $(BIN)/python
BENCH_GPU_ARGS ?=
bench-gpu: $(STAMP)
	$(GPU_PY) -m nplus.tooling.bench_gpu $(BENCH_GPU_ARGS)

## TRL's PPO trainer vs nplus's on the same random-weight models, prompts and settings (nplus/tooling/bench_peers.py), in a
## bench-only environment: trl is never a dependency of nplus. torch is pinned (unpinned, it pulls GB of CUDA).
BENCH_VENV := .venv-bench
BENCH_STAMP := $(BENCH_VENV)/.installed
PEERS_ARGS ?=

$(BENCH_STAMP): nplus/tooling/bench_peers_requirements.txt pyproject.toml
	$(PY) -m venv $(BENCH_VENV)
	$(BENCH_VENV)/bin/pip install -q torch==2.13.0
	$(BENCH_VENV)/bin/pip install -q -r nplus/tooling/bench_peers_requirements.txt
	$(BENCH_VENV)/bin/pip install -q -e .
	touch $(BENCH_STAMP)

bench-peers: $(BENCH_STAMP)
	OMP_NUM_THREADS=1 MKL_NUM_THREADS=1 $(BENCH_VENV)/bin/python -m nplus.tooling.bench_peers $(PEERS_ARGS)

clean:
	rm -rf runs/.cache runs/smoke
