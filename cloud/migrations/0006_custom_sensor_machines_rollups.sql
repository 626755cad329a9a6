-- 0006: which machines each custom sensor was seen on (operators see only their machines'
-- sensors); a sensor may be registered by an admin before it is first seen; per-minute
-- rollups of the core sensors, written in the same transaction as the rows, so history over
-- weeks reads ~1,440 rows a day instead of 86,400.

ALTER TABLE custom_sensors ADD COLUMN machines TEXT[] NOT NULL DEFAULT '{}';
UPDATE custom_sensors SET machines = ARRAY[first_machine];
ALTER TABLE custom_sensors ALTER COLUMN first_seen DROP NOT NULL;
ALTER TABLE custom_sensors ALTER COLUMN last_seen DROP NOT NULL;
ALTER TABLE custom_sensors ALTER COLUMN first_machine DROP NOT NULL;
ALTER TABLE custom_sensors ALTER COLUMN min_value DROP NOT NULL;
ALTER TABLE custom_sensors ALTER COLUMN max_value DROP NOT NULL;
ALTER TABLE custom_sensors ADD COLUMN description TEXT;
CREATE INDEX custom_sensors_machines ON custom_sensors USING GIN (machines);
