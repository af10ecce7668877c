"""Benchmarks: speed, memory and quality measurements behind `graphrec-dist bench`."""
