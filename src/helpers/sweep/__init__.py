"""Sweeps: many isolated runs over a grid of parameters, executed on Dask (``calib sweep``).

``plan`` expands and validates a sweep file, ``record`` keeps ``sweeps/<id>/sweep.json``,
``engine`` runs the members on a Dask cluster, ``report`` compares them, ``driver`` ties them
together. The cross-run phase cache they rely on is ``helpers.run.cache``. See docs/SWEEPS.md.
"""
