"""asv benchmarks for needle (run: asv run --python=same --quick --show-stderr)."""
