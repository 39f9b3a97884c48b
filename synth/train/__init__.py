"""Meta-training: data preparation, shards, episodes, the training loop, torchrun DDP, checkpoints."""
