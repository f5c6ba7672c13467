"""Data: the tokenizer, the pretraining datasets, and the packed binary format."""
