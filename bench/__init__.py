"""Hand-run benchmarks (not part of the test suite); see README.md."""
