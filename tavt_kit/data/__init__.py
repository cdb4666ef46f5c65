"""Datasets and transforms (built-in demo dataset, CUB, NABirds, Dogs, Cars, iNat, ultra-FGVC, folders)."""
