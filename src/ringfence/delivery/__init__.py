"""Delivery: the content-addressed artifact store (TUF metadata and revocations build on it)."""
