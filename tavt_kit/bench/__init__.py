"""Latency / throughput measurement, latency tables and reports."""
