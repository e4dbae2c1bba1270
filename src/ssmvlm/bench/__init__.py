"""Cost measurements: encoder latency/throughput/memory/FLOPs against resolution, and VLM generation cost."""
