"""rlcompress: compress trained PyTorch CNNs."""
