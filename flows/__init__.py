"""Prefect flows over the DVC pipeline: ``pipeline`` (one task per stage), ``retrain`` (new interactions -> only
affected stages), ``experiments`` (parameter variants as DVC experiments), ``serve`` (deployments).

Dependencies point one way: flows -> tasks -> llara. The prefect-free helpers (``workspace``, ``dvc_stages``, ``cli``)
also back ``llara run --no-prefect``.
"""
