"""Pretraining on megatron-core: step (forward/backward/loss), DDP, optimizer, data, loop."""
