"""Data: manual-directory readers, TFDS builders, the synthetic default and the grain pipelines."""
