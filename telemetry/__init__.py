"""telemetry: structured JSON logs and Prometheus metrics shared by every process."""
