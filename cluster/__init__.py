"""Cluster-side tooling: placement and capacity arithmetic, test models, benchmarks."""
