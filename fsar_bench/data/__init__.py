"""Data: split manifests and files, benchmarks, video readers, clip loading, synthetic data, data check."""
