"""Benchmarks of docker-plugin-kit: ``make bench`` (bench/run)."""
