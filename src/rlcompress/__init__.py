"""rlcompress: compress trained PyTorch CNNs.

FPGM filter pruning, a DDPG search for the number of weight-sharing clusters of every layer
under a size budget, per-layer k-means weight sharing with centroid fine-tuning, and a real
compressed file format (``.rlc``).

    import rlcompress
    small, report = rlcompress.compress(model, train_loader, val_loader, target_size="48KB")
    model = rlcompress.load("runs/compress/model.rlc", model=MyNet())
"""

from rlcompress import data
from rlcompress.pipeline import compress, load

__version__ = "0.1.0"
__all__ = ["__version__", "compress", "data", "load"]
