"""The scenarios of `make bench`, one module each; bench/run.py runs them in order (Bench.main)."""
