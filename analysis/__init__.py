"""Analysis tools: parameter counts, KV-cache memory, FLOPs, throughput, results and scaling fits."""
