"""mmalign: RL alignment for multimodal and embodied policies."""
