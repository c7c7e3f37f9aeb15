"""MLflow glue: where runs go, what each stage logs, the pyfunc that packages a bundle, the registry.

Nothing here knows about DVC or Prefect; `pipelines/` decides when to call it.
"""
