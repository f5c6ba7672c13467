"""Data: the tokenizer, the pretraining datasets, the packed binary format, SFT and DPO data, and (Part 3) cleaning and deduplication."""
