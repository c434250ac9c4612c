"""Health analysis, pure: device timelines -> per-stratum tallies -> judges -> verdicts.

Nothing here reads a clock, a file or a database; the server and the simulator feed it values.
"""
