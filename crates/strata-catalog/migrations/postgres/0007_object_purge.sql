-- Object purges (docs/dicomweb.md, "Deleting"). Keep in step with the other engine's
-- 0007_object_purge.sql: same table and columns; only the integer type differs.

-- The purges of object keys, so that an ingest writing the same content-addressed key while
-- the object of a deleted instance is being removed can tell, in its store transaction, that
-- its object may be gone and write it again. One row per purged key: `generation` counts the
-- purges begun, `purging_since_ms` is set while one runs (it begins with no instance row
-- referring to the key, under the event log lock, and ends after the object is deleted).
-- Finished rows are removed a day after `done_at_ms`.
CREATE TABLE IF NOT EXISTS object_purge (
    object_key TEXT PRIMARY KEY,
    generation BIGINT NOT NULL,
    purging_since_ms BIGINT,
    done_at_ms BIGINT
);
