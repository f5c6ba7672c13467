# The two commands of the README:  `make lab`  and  `make test`.
# Both create .venv (Python 3.11 + pip) and install the project into it first.
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed
# Every package of the set-up pinned with ==, the build backend (setuptools) included; `make lock`
# writes it.  Two set-ups months apart install the same versions.
LOCK   := constraints.txt

.PHONY: setup lab test test-fast clean showcase lock base-model sft-demo lora-demo dpo-demo distill-demo grpo-demo funnel clean-bench clean-leak clean-compare instruct-compare

setup: $(STAMP)

# pip and setuptools first (the pinned pip knows --build-constraint), then the project and its
# extras, then the kernel "MiniMind Workbook" and JupyterLab's settings (tools/lab.py).
$(STAMP): pyproject.toml $(LOCK)
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet -c $(LOCK) --upgrade pip setuptools
	$(PY) -m pip install --quiet -c $(LOCK) --build-constraint $(LOCK) -e ".[lab,dev]"
	$(PY) tools/lab.py --install
	@touch $(STAMP)

# Rewrites constraints.txt: a fresh venv in a temporary folder, the set-up's install commands
# without constraints (so the newest versions pyproject.toml admits), then `pip freeze`.  Local
# version labels are dropped (torch 2.13.0+cpu -> torch==2.13.0): see the file's header.
lock:
	@set -e; tmp=$$(mktemp -d); trap 'rm -rf "$$tmp"' EXIT; \
	echo "在临时目录 $$tmp 里新建 venv，安装最新的可用版本 ……"; \
	$(PYTHON) -m venv "$$tmp/venv"; \
	"$$tmp/venv/bin/python" -m pip install --quiet --upgrade pip setuptools; \
	"$$tmp/venv/bin/python" -m pip install --quiet -e ".[lab,dev]"; \
	"$$tmp/venv/bin/python" -m pip freeze --all --exclude-editable > "$$tmp/freeze.txt"; \
	if grep -vqE '^[A-Za-z0-9._-]+==[^ ]+$$' "$$tmp/freeze.txt"; then \
	    echo "make lock：pip freeze 里有不是 名字==版本 的行："; grep -vE '^[A-Za-z0-9._-]+==[^ ]+$$' "$$tmp/freeze.txt"; exit 1; fi; \
	torch=$$(grep -i '^torch==' "$$tmp/freeze.txt"); \
	{ \
	echo "# Every package of the set-up, pinned: make setup installs with"; \
	echo "#   pip install -c constraints.txt --upgrade pip setuptools"; \
	echo "#   pip install -c constraints.txt --build-constraint constraints.txt -e \".[lab,dev]\""; \
	echo "# so two set-ups months apart get the same versions (the build backend, setuptools, too)."; \
	echo "#"; \
	echo "# Written by \`make lock\` (do not edit by hand; after changing pyproject.toml, run it again):"; \
	echo "# a fresh venv, \`pip install --upgrade pip setuptools\`, \`pip install -e \".[lab,dev]\"\` (the"; \
	echo "# newest versions pyproject.toml admits), then \`pip freeze --all --exclude-editable\`."; \
	echo "# Locked on $$(date -u +%Y-%m-%d) with $$("$$tmp/venv/bin/python" -c 'import platform, sys; print(f"Python {platform.python_version()} on {sys.platform} {platform.machine()}")')."; \
	echo "#"; \
	echo "# torch is pinned without its local version label: pip freeze wrote $$torch here, the pin"; \
	echo "# is $${torch%%+*}, which every build of that release meets (the CPU wheel, PyPI's CUDA wheel,"; \
	echo "# pytorch.org's +cpu and +cuXXX wheels), while $$torch would refuse a CUDA build"; \
	echo "# on a GPU machine.  Any other local label is dropped the same way."; \
	echo "# Packages only another platform or the CUDA build needs (nvidia-*, triton: torch pins those"; \
	echo "# itself) are not listed here and resolve as usual."; \
	sed -E 's/^([^=]+==[^+]+)[+].*$$/\1/' "$$tmp/freeze.txt"; \
	} > "$$tmp/constraints.txt"; \
	mv "$$tmp/constraints.txt" $(LOCK); \
	echo "已写入 $(LOCK)：$$(grep -vc '^#' $(LOCK)) 个包"

lab: setup
	$(PY) tools/lab.py $(LAB_ARGS)

# Everything: reference vs checks, mutants, notebooks in every mode, JupyterLab.
# Two pytest workers, each (and every process it starts: notebook kernels, torchrun ranks) on one
# thread: torch's default of one thread per core makes two workers fight over the same cores, and
# small tensor ops then slow down many times over.
TEST_ENV := OMP_NUM_THREADS=1
test: setup
	$(TEST_ENV) $(PY) -m pytest -n 2 --dist loadfile

# Skips the slow cases (notebooks, JupyterLab, training runs).
test-fast: setup
	$(TEST_ENV) $(PY) -m pytest -n 2 --dist loadfile -m "not slow"

clean:
	rm -rf $(VENV) .pytest_cache .workbook

# The dtype of the CPU runs below: bfloat16 where the CPU computes it natively (AMX, AVX512-BF16:
# the committed figures were made so), float32 elsewhere, where bf16 autocast is emulated and
# several times slower (8x on an AVX2 EPYC).  `make sft-demo DTYPE=bfloat16` overrides.
DTYPE ?= $(shell $(PY) -c "from workbook.train.trainer import cpu_dtype; print(cpu_dtype())" 2>/dev/null || echo float32)

# The showcase run: ~10 minutes on a 2-core CPU, then poems from titles (see README).
# Runs whatever WORKBOOK_IMPL selects: your code (default) or the reference (=solutions).
SHOWCASE_DATA := out/poetry_train.bin
showcase: setup
	@test -f $(SHOWCASE_DATA) || $(PY) -m workbook.data.pack data/pretrain_poetry_train.jsonl.gz $(SHOWCASE_DATA) --tokenizer data/tokenizer
	$(PY) -m workbook.train.pretrain --save_dir out/showcase --data_path $(SHOWCASE_DATA) \
	    --hidden_size 256 --num_hidden_layers 4 --num_attention_heads 4 --num_key_value_heads 2 \
	    --max_seq_len 128 --batch_size 32 --accumulation_steps 1 --learning_rate 3e-3 \
	    --max_steps 1000 --log_interval 50 --save_interval 250 --eval_interval 250 --eval_batches 20 \
	    --num_workers 1 --dtype $(DTYPE) --samples 5 --device cpu

# The shipped base model (data/base/): the starting point of every Part 2 lesson.  Pretrains a
# 7.6M-parameter MiniMind (hidden 320, 5 layers, 8 q / 2 kv heads) for 3 epochs of the packed
# corpus (2,061 optimizer steps of 32 x 256 tokens) with the reference code, then copies the fp16
# weights, their config, the loss plot and the summary into data/base/.  ~50-60 minutes on a
# 2-core CPU with bf16 (AMX); figures in data/README.md.  The resume file stays in out/base.
BASE_OUT := out/base
base-model: setup
	@test -f $(SHOWCASE_DATA) || $(PY) -m workbook.data.pack data/pretrain_poetry_train.jsonl.gz $(SHOWCASE_DATA) --tokenizer data/tokenizer
	WORKBOOK_IMPL=solutions $(PY) -m workbook.train.pretrain --save_dir $(BASE_OUT) --data_path $(SHOWCASE_DATA) \
	    --hidden_size 320 --num_hidden_layers 5 --num_attention_heads 8 --num_key_value_heads 2 \
	    --max_seq_len 256 --batch_size 32 --accumulation_steps 1 --learning_rate 3e-3 --epochs 3 \
	    --log_interval 25 --save_interval 250 --eval_interval 250 --eval_batches 40 \
	    --num_workers 1 --dtype $(DTYPE) --samples 5 --device cpu --no_progress $(BASE_ARGS)
	mkdir -p data/base
	cp $(BASE_OUT)/pretrain_320.pth $(BASE_OUT)/pretrain_320_config.json $(BASE_OUT)/pretrain_320_loss.png \
	    $(BASE_OUT)/pretrain_320_summary.json data/base/

# Stage 14's measured run: full SFT of the shipped base for one epoch of the chat data with the
# reference code (~13 minutes on a 2-core CPU; max_seq_len 224 > the 99th percentile of 208 tokens), then the grader on the base and on the result;
# the SFT weights (the starting point of stages 15-17), the reports and the loss plot go to
# data/base/ (notebook 14 and the README show them).
SFT_OUT := out/sft
sft-demo: setup
	WORKBOOK_IMPL=solutions $(PY) -m workbook.train.full_sft --from_weight data/base/pretrain_320.pth \
	    --save_dir $(SFT_OUT) --epochs 1 --batch_size 16 --learning_rate 5e-4 --max_seq_len 224 \
	    --accumulation_steps 1 --log_interval 25 --save_interval 250 --eval_interval 250 --eval_batches 20 \
	    --num_workers 1 --dtype $(DTYPE) --samples 5 --device cpu --no_progress $(SFT_ARGS)
	WORKBOOK_IMPL=solutions $(PY) -m workbook eval data/base/pretrain_320.pth --json $(SFT_OUT)/sft_eval_base.json --show 0
	WORKBOOK_IMPL=solutions $(PY) -m workbook eval $(SFT_OUT)/full_sft_320.pth --json $(SFT_OUT)/sft_eval_sft.json --show 0
	cp $(SFT_OUT)/sft_eval_base.json $(SFT_OUT)/sft_eval_sft.json data/base/
	cp $(SFT_OUT)/full_sft_320.pth $(SFT_OUT)/full_sft_320_config.json data/base/
	cp $(SFT_OUT)/full_sft_320_loss.png data/base/sft_loss.png
	cp $(SFT_OUT)/full_sft_320_summary.json data/base/sft_summary.json

# Stage 15's measured comparison: LoRA at ranks 4 and 16 and full fine-tuning, same data (MiniMind's
# lora_identity: the model says who it is), steps and seed, from data/base/full_sft_320.pth, with the
# reference code; each scored on the task and on the stage-14 prompts (forgetting).  The report goes
# to data/base/lora_compare.json.  LORA_ARGS="--task acrostic --steps 2000" tries the harder task.
lora-demo: setup
	WORKBOOK_IMPL=solutions $(PY) bench/lora_compare.py --report data/base/lora_compare.json --dtype $(DTYPE) $(LORA_ARGS)

# Stage 16's measured effect: DPO from data/base/full_sft_320.pth on the offline preference pairs,
# the summed log-prob (the paper's) at β 0.1 and 0.5, same steps and seed, with the reference code;
# reward accuracy on the held-out pairs, the stage-14 grader, the SFT poems' loss.  MiniMind's mean
# moves far less in this budget: try DPO_ARGS="--runs mean:0.1,mean:1".
dpo-demo: setup
	WORKBOOK_IMPL=solutions $(PY) bench/dpo_compare.py --report data/base/dpo_compare.json --dtype $(DTYPE) $(DPO_ARGS)

# Stage 17's measured effect: a 128-wide, 4-layer student from scratch on the SFT conversations,
# CE alone against the shipped SFT model as teacher at T = 1 and 2 (α 0.5), same steps and seed.
distill-demo: setup
	WORKBOOK_IMPL=solutions $(PY) bench/distill_compare.py --report data/base/distill_compare.json --dtype $(DTYPE) $(DISTILL_ARGS)

# Stage 20's measured effect: GRPO from data/base/full_sft_320.pth with the checkable reward (form,
# stop, rhyme, tones), against offline DPO and DPO on on-policy pairs at the same budget (100
# updates on 16 answers each), with the reference code; greedy answers to the 120 held-out requests
# graded before and after.  Report data/base/grpo_compare.json, curves data/base/grpo_curves.png.
# ~12 minutes on 2 cores (the committed run with grpo_loose took 16); GRPO_ARGS="--runs grpo,grpo_loose,dpo,dpo_onpolicy" adds the run with the
# hackable rhyme rule (+4 minutes), as the committed report has it.
grpo-demo: setup
	WORKBOOK_IMPL=solutions $(PY) bench/grpo_compare.py --report data/base/grpo_compare.json $(GRPO_ARGS)

# Stage 18's measured funnel (reference code, ~1 minute of CPU): the raw poems (data/poetry_raw.jsonl.xz)
# through normalisation, the drop rules, exact and MinHash/LSH near-duplicate removal and
# decontamination, with examples of each step, plus the shipped split's validation leak (validation
# poems with a near-duplicate in training).  Writes data/clean_funnel.json (notebook 18 and
# data/README.md show it).  Add FUNNEL_ARGS="--out-dir out/clean" to keep the clean corpus.
funnel: setup
	WORKBOOK_IMPL=solutions $(PY) -m workbook.data.funnel --leak --json data/clean_funnel.json $(FUNNEL_ARGS)

# Times the whole cleaning + dedup of the raw corpus, and the near-duplicate step against datasketch
# on the same shingle sets (equal signatures and candidate pairs, or exit 1).
clean-bench: setup
	WORKBOOK_IMPL=solutions $(PY) bench/clean_bench.py --json bench/results/clean_bench.json

# The validation leak of the shipped split, measured on the shipped base model (no training): its loss
# on all 1,447 validation poems vs on the 109 with a near-duplicate in training vs on the rest
# (a split where near-duplicates cannot straddle).  ~2 minutes of CPU; writes data/clean_leak.json.
clean-leak: setup
	WORKBOOK_IMPL=solutions $(PY) bench/clean_leak.py --json data/clean_leak.json

# What cleaning does to a model (stage 18): the same 1.6M-parameter MiniMind, seed and token budget
# (200 steps x 32 x 128 tokens, fp32) pretrained on the raw poems (only normalised) and on the
# funnel's clean training side; loss on the clean held-out poems, regular lines, editorial marks and
# verbatim training lines in 20 samples.  ~15 minutes on a busy 2-core CPU; writes data/clean_compare.json.
clean-compare: setup
	WORKBOOK_IMPL=solutions $(PY) bench/clean_compare.py --steps 200 --report data/clean_compare.json

# Stage 19's measured comparison (bench/instruct_compare.py, reference code): the SFT data rebuilt
# through the stage-19 functions (byte-identical to the shipped files, checked), the same builder with
# the per-record split and no decontamination, and with every task the same share; each trained from
# the shipped base for the same 80 steps of 16 (sft-demo's settings, fp32) and graded on the 120
# held-out requests.  ~35 minutes on a busy 2-core CPU (INSTRUCT_ARGS="--variants shipped,record" trains
# two); writes data/base/instruct_compare.json.
instruct-compare: setup
	WORKBOOK_IMPL=solutions $(PY) bench/instruct_compare.py --steps 80 --report data/base/instruct_compare.json $(INSTRUCT_ARGS)
