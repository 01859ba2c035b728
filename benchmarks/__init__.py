"""Benchmarks: trioflow vs llama-index-workflows vs bare trio. Run ``python -m benchmarks``."""
