"""The gateway benchmark (``python -m bench.gateway``): see bench/gateway/run.py."""
