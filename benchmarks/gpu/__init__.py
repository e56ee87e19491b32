"""The pieces of benchmarks/gpu_check.py: shapes and random models, the checks, their rows."""
