-- 0021: the signed statement an edge checks before it runs a model (issue #15 item 5,
-- shared/model_statement.py): machine, kind, model id, version, bundle hash, expiry. Set only
-- for a model put in service (a refused candidate has none); a signed rollback replaces it
-- with a rollback statement, an unsigned one clears it. NULL: a model registered before
-- statements existed.
ALTER TABLE model_registry ADD COLUMN statement JSONB;
