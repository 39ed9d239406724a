"""Fault probes: malformed input files and Kafka records, run as one parametrized suite."""
