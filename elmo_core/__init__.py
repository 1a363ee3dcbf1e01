"""ELMo biLM in plain PyTorch."""
