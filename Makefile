# Everyday commands. DATASET picks pipelines/$(DATASET).toml; PIPELINE=path.toml overrides it.
DATASET ?= synthetic
PIPELINE ?= pipelines/$(DATASET).toml
PY ?= .venv/bin/python
SYNTH_DIR ?= data/synthetic
SYNTH_SCENES ?= 10
CHECKPOINT ?=
ARGS ?=

.PHONY: setup test test-fast demo synth synth-experiments synth-spans preprocess train eval bench clean budget compare ablation-threshold \
	ablation-partition ablation-components cost figures report experiments gt-check gpu-check gpu-wheels

VENV_STAMP := .venv/.installed
KERNELS_STAMP := .venv/.kernels

setup: $(VENV_STAMP) $(KERNELS_STAMP)  ## .venv with the project, its dependencies and a torch that fits them; kernels compiled

$(VENV_STAMP): pyproject.toml
	@if ! ldconfig -p 2>/dev/null | grep -q libusb-1.0; then \
	  if command -v apt-get >/dev/null && [ "$$(id -u)" = 0 ]; then \
	    echo "installing libusb-1.0 (open3d needs it)"; apt-get update -qq && apt-get install -y -qq libusb-1.0-0 >/dev/null; \
	  else echo "open3d needs the system library libusb-1.0: install it (Debian/Ubuntu: sudo apt-get install libusb-1.0-0)"; fi; \
	fi
	test -x $(PY) || python3 -m venv .venv
	$(PY) -m pip install -q --upgrade pip
	@# Respect a torch the user already installed; otherwise the pair open_clip needs.
	$(PY) -c "import torch" 2>/dev/null || $(PY) -m pip install -q torch==2.14.1 torchvision==0.29.1
	$(PY) -m pip install -q -e '.[dev]'
	touch $@

# Numba's cache is keyed by each source file's path and modification time: compile again when a
# file holding kernels changed (a fresh clone: all of them, a few minutes), so runs and tests start warm.
$(KERNELS_STAMP): $(VENV_STAMP) preprocess/warmup.py $(shell grep -rl --include='*.py' 'njit' preprocess shared)
	$(PY) -m preprocess compile
	touch $@

test: $(KERNELS_STAMP)  ## the whole test suite
	$(PY) -m pytest -q

test-fast: $(KERNELS_STAMP)  ## skip the slow end-to-end runs
	$(PY) -m pytest -q -m "not slow"

SYNTH_CODE := $(wildcard preprocess/synth/*.py)  # rooms made by an older generator are made again

$(SYNTH_DIR)/scannetv2_train.txt: $(SYNTH_CODE) | $(VENV_STAMP)
	$(PY) -m preprocess synth --out $(SYNTH_DIR) --scenes $(SYNTH_SCENES) --seed 0

synth: $(SYNTH_DIR)/scannetv2_train.txt  ## generate the embedded default dataset

EXP_DIR ?= data/synthetic-exp
$(EXP_DIR)/scannetv2_train.txt: $(SYNTH_CODE) | $(VENV_STAMP)
	$(PY) -m preprocess synth --out $(EXP_DIR) --scenes 48 --seed 1 --frames 20

synth-experiments: $(EXP_DIR)/scannetv2_train.txt  ## the experiments' 48 generated rooms (38 train, 10 val)

synth-spans: $(EXP_DIR)/scannetv2_train.txt  ## Felzenszwalb sets spanning two objects: 10 experiment rooms vs scene0000_00
	$(PY) benchmarks/instance_spans.py --rooms $(EXP_DIR) --scenes 10 --out reports/instance_spans

demo: synth $(KERNELS_STAMP)  ## generate → preprocess → train (short schedule) → evaluate, on the embedded default
	$(PY) -m preprocess run pipelines/synthetic.toml $(ARGS)
	$(PY) -m preprocess label-quality pipelines/synthetic.toml --out reports/synthetic
	$(PY) -m train fit pipelines/synthetic.toml
	$(PY) -m train eval pipelines/synthetic.toml --out reports/synthetic

preprocess:  ## make preprocess DATASET=scannet
	$(PY) -m preprocess run $(PIPELINE) $(ARGS)

train:  ## make train DATASET=scannet
	$(PY) -m train fit $(PIPELINE) $(ARGS)

eval:  ## make eval DATASET=scannet [CHECKPOINT=path]
	$(PY) -m train eval $(PIPELINE) $(if $(CHECKPOINT),--checkpoint $(CHECKPOINT)) $(ARGS)

# Experiments (seed Tables 1-4): preprocess what the pipeline needs (cached stages are reused),
# then train and score every [[runs]] entry into reports/<pipeline>/table.md.
define experiment
	$(if $(filter synthetic,$(DATASET)),$(MAKE) synth-experiments,)
	$(PY) -m preprocess run pipelines/$(DATASET)-$(1).toml $(ARGS)
	$(PY) -m train experiment pipelines/$(DATASET)-$(1).toml
endef

budget:  ## learning curves of gt, CE on refined labels and HICL at the budget (DATASET=synthetic)
	$(call experiment,budget)

compare:  ## make compare DATASET=synthetic|scannet|nuscenes
	$(call experiment,compare)

ablation-threshold:  ## Felzenszwalb k = 0.01 ... 0.05
	$(call experiment,threshold)

ablation-partition:  ## VCCS vs SPG vs Felzenszwalb vs 2D masks
	$(call experiment,partition)

ablation-components:  ## refinement, + intra-set, + intra-scene, + inter-scene, + feedback; full HICL without intra-set
	$(call experiment,components)

cost:  ## seconds per scene of each preprocessing stage, from the store
	$(PY) -m preprocess cost $(PIPELINE) --out reports/$(DATASET)-cost

# Fig. 1 from the threshold ablation's store where the dataset has one (nuScenes: the partition one);
# Fig. 2 from the HICL checkpoint of the first experiment that trains it (`experiments` runs budget
# first: the comparison then reuses its record and has no checkpoint of its own)
figures:  ## partitions side by side (Fig. 1), attention maps (Fig. 2)
	$(PY) -m preprocess show-partitions $(firstword $(wildcard pipelines/$(DATASET)-threshold.toml pipelines/$(DATASET)-partition.toml)) \
	  --out reports/$(DATASET)-figures/partitions.png
	$(PY) -m train attention $(firstword $(wildcard pipelines/$(DATASET)-budget.toml pipelines/$(DATASET)-compare.toml)) \
	  --run hicl --out reports/$(DATASET)-figures

report:  ## gather every table and figure into reports/REPORT.md
	$(PY) -m train report --readme README.md

experiments: budget compare ablation-threshold ablation-partition ablation-components cost figures report

GT_DIR ?= data/synthetic-gt
$(GT_DIR)/scannetv2_train.txt: $(SYNTH_CODE) | $(VENV_STAMP)
	$(PY) -m preprocess synth --out $(GT_DIR) --scenes 48 --seed 1 --frames 10

gt-check: $(GT_DIR)/scannetv2_train.txt  ## can the trainer learn? ground-truth supervision, 38 generated rooms, 10 held out
	$(PY) -m preprocess run pipelines/synthetic-gt.toml --stages ingest $(ARGS)
	$(PY) -m train fit pipelines/synthetic-gt.toml
	$(PY) -m train eval pipelines/synthetic-gt.toml --out reports/synthetic-gt-check

# Needs only torch, numpy, numba, tqdm and zarr (no `make setup`): on a bare GPU machine, PY=python3
# after installing the wheels `make gpu-wheels` stages (README: Checking a GPU machine).
gpu-check:  ## on a GPU machine (< 8 min): equality, AMP vs fp32, bench_sparse vs goal, every method x head in bf16/fp16 + eval, resume; one table
	$(PY) benchmarks/gpu_check.py $(ARGS)

gpu-wheels:  ## download into build/gpu-wheels the wheels gpu-check needs on a GPU machine without zarr (Python 3.12)
	scripts/stage_gpu_wheels.sh build/gpu-wheels

bench:  ## speed benchmarks (tables on stdout)
	@for b in benchmarks/bench_*.py; do echo "== $$b"; $(PY) $$b || exit 1; done

clean:
	rm -rf cache runs reports
