"""sidecar.api."""
