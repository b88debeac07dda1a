"""Ops' configuration: the in-memory snapshot, JSON import and export, and the demo seed."""
