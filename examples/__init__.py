"""Example applications that run behind epochgate sidecars."""
