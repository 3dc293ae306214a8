"""lightning-ssl: self-supervised learning benchmarks on long-tailed, imbalanced and uncurated images."""

__version__ = "0.1.0"
