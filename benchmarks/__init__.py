"""Benchmarks: side-by-side speed, memory and accuracy measurements (outside the product)."""
