"""LLaRA proper: an LLM that reads item titles plus projected recommender embeddings (hybrid item tokens).

Modules: ``loading`` (LLM load/convert), ``prompts`` (templates + tokenized prompts), ``features``
(recommender-derived item features), ``model`` (the trainable wrapper), ``data`` (examples, collation),
``curriculum``, ``recipes`` (recipes, profiles, variants), ``training``, ``distributed`` (data-parallel training),
``checkpoint``, ``selection`` (validation-based checkpoint choice), ``runs`` (build / load a run), ``workflow``
(the fine-tuning workflow both adapters call), ``scoring`` (rank mode), ``generation`` (generate mode),
``evaluation``, ``recommend``.
"""
