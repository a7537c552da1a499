"""sidecar.proxy."""
