"""The cloud's read side for the API: SQL in, typed rows out.

Each function takes a psycopg connection (the caller owns the transaction) and returns frozen
dataclasses, so a column added to or moved in a ``SELECT`` cannot shift a value into the
wrong field. The API's routers reach these through the ``Db`` dependency
(``cloud/api/deps.py``) and turn the rows into their response models
(``cloud/api/schemas.py``).

Not here: the write path of readings (``cloud/storage.py``), users and keys
(``cloud/accounts.py``), thresholds (``cloud/thresholds.py``) and the model registry
(``cloud/lifecycle/registry.py``), which are shared with the aggregator and the CLI.
"""
