"""sidecar.control."""
