-- 0020: an ingest key is bound to the machines its edge serves (issue #15 item 4). NULL: a key
-- issued before binding existed; it may write and read only machines no other edge serves
-- (cloud/api/guards.py EdgePrincipal). Binding is set when the key is issued.
ALTER TABLE edge_api_keys ADD COLUMN machines TEXT[];
