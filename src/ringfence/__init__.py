"""Ringfence: safe progressive delivery of updates to large fleets of endpoints."""

__version__ = "0.1.0"
