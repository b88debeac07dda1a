"""Plumbing: running work later, the ASGI thread pool, the multi-process server, Redis, request logs."""
