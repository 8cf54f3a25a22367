"""Benchmarks of livestream against a raw Tornado broadcast and the Bokeh server.

Run them with ``python -m benchmarks`` (``--quick`` for a short smoke run); the figures and
how they were taken are in docs/benchmarks.md. Servers and subscribers always run in
separate processes; ratios are only ever taken between figures of the same run.
"""
