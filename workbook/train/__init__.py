"""Training: the loop (stage 11), distributed (stage 12), checkpoints and the pretrain command."""
