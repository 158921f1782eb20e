"""The download and preprocess stages: fetch the archive, decode it, carve the splits."""
