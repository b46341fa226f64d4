"""The parts of benchmarks/serving_latency.py, one job each (model, server, clients, canned server, h2load,
measurement, report)."""
