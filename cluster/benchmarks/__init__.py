"""Benchmarks that drive the running app over HTTP and compare configurations side by side."""
