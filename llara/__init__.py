"""LLaRA: Large Language-Recommendation Assistant, as a reproducible library.

The library holds models, prompts, metrics and data handling. It never imports Prefect and never reads
params.yaml: the DVC stages in ``tasks/`` and the ``llara`` CLI are thin adapters over these functions.
"""

__version__ = "0.1.0"
