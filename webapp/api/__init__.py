"""The scoring API: ``POST /v1/score`` and the read, label and key routes around it.

- :mod:`.scorer`: one transaction -> risk, decision, reasons (the stream's features,
  rules and champion model, hot-reloaded);
- rule conditions are evaluated per row by :mod:`txmon.models.rule_conditions` (Spark
  SQL's semantics; training uses them too);
- :mod:`.profiles`: the account's and payee's profiles as the stream last saved them;
- :mod:`.keys`: API keys (hashed, scoped) and the FastAPI dependency that checks them;
- :mod:`.limits`: per-key rate limit; :mod:`.metrics`: Prometheus metrics;
- :mod:`.routes`: the HTTP routes.
"""
