"""`make bench`: throughput, memory and latency of hf-ingest, against baselines measured in the same run."""
