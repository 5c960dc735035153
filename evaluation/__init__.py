"""The evaluation run every method shares: load a directions file, score it and the random and
coordinate baselines with the metrics of ``metrics/`` (``metrics.evaluation``), write
``evaluation.json`` / ``evaluation.md`` and the plots. ``evaluation.run`` holds it; ``evaluate.py``
and the end of every ``train.py`` run call it."""
