"""LLaRA proper: an LLM that reads item titles plus projected recommender embeddings (hybrid item tokens).

Modules: ``loading`` (LLM load/convert), ``prompts`` (templates + tokenized prompts), ``features`` (recommender-derived item features), ``model`` (the trainable wrapper),
``data`` (examples, collation), ``curriculum``, ``training``, ``checkpoint``, ``scoring`` (rank mode),
``generation`` (generate mode), ``evaluation``, ``recommend``.
"""
