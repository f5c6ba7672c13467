# The two commands of the README:  `make lab`  and  `make test`.
# Both create .venv (Python 3.11 + pip) and install the project into it first.
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed

.PHONY: setup lab test test-fast clean showcase

setup: $(STAMP)

$(STAMP): pyproject.toml
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade "pip>=23.1"
	$(PY) -m pip install --quiet -e ".[lab,dev]"
	@touch $(STAMP)

lab: setup
	$(PY) tools/lab.py $(LAB_ARGS)

# Everything: reference vs checks, mutants, notebooks in every mode, JupyterLab.
test: setup
	$(PY) -m pytest -n 2 --dist loadfile

# Skips the slow cases (notebooks, JupyterLab, training runs).
test-fast: setup
	$(PY) -m pytest -n 2 --dist loadfile -m "not slow"

clean:
	rm -rf $(VENV) .pytest_cache .workbook

# The showcase run: ~10 minutes on a 2-core CPU, then poems from titles (see README).
# Runs whatever WORKBOOK_IMPL selects: your code (default) or the reference (=solutions).
SHOWCASE_DATA := out/poetry_train.bin
showcase: setup
	@test -f $(SHOWCASE_DATA) || $(PY) -m workbook.data.pack data/pretrain_poetry_train.jsonl.gz $(SHOWCASE_DATA) --tokenizer data/tokenizer
	$(PY) -m workbook.train.pretrain --save_dir out/showcase --data_path $(SHOWCASE_DATA) \
	    --hidden_size 256 --num_hidden_layers 4 --num_attention_heads 4 --num_key_value_heads 2 \
	    --max_seq_len 128 --batch_size 32 --accumulation_steps 1 --learning_rate 3e-3 \
	    --max_steps 1000 --log_interval 50 --save_interval 250 --eval_interval 250 --eval_batches 20 \
	    --num_workers 1 --dtype bfloat16 --samples 5 --device cpu
