"""sidecar.proxy.h2."""
