"""Building blocks of OE-SDN: data, networks, losses, outlier exposure, training, scoring, metrics.

Nothing in this package knows about DVC or Prefect; `pipelines/` composes these pieces.
"""
