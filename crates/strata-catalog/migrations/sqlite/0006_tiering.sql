-- Tiered storage (issue 4, docs/tiering.md). Keep in step with the other engine's
-- 0006_tiering.sql: same tables and columns; only the integer type differs.

-- Where an object lives when it is not on the `hot` tier ([storage]). No row: hot.
-- Objects are content-addressed, so one row serves every instance row that shares the key.
CREATE TABLE IF NOT EXISTS tier_object (
    object_key TEXT PRIMARY KEY,
    tier TEXT NOT NULL,
    updated_at_ms INTEGER NOT NULL
);
CREATE INDEX IF NOT EXISTS tier_object_tier_idx ON tier_object (tier);

-- The move journal: at most one move per object. `copying`: the location is still
-- from_tier, the destination may hold a partial or complete copy. `committed`: the location
-- is to_tier, the source copy may still exist. A restart rolls back `copying` rows and
-- finishes `committed` ones.
CREATE TABLE IF NOT EXISTS tier_move (
    object_key TEXT PRIMARY KEY,
    from_tier TEXT NOT NULL,
    to_tier TEXT NOT NULL,
    state TEXT NOT NULL,
    created_at_ms INTEGER NOT NULL,
    updated_at_ms INTEGER NOT NULL
);

-- The latest read of a study, written in batches (never once per request).
CREATE TABLE IF NOT EXISTS study_access (
    study_instance_uid TEXT PRIMARY KEY,
    last_access_ms INTEGER NOT NULL
);

-- Per-study retention, legal hold and a temporary tier pin (a restored study kept hot).
CREATE TABLE IF NOT EXISTS study_retention (
    study_instance_uid TEXT PRIMARY KEY,
    legal_hold INTEGER NOT NULL,
    retain_until_ms INTEGER,
    pinned_tier TEXT,
    pinned_until_ms INTEGER,
    updated_at_ms INTEGER NOT NULL
);

-- The latest fixity check of each object.
CREATE TABLE IF NOT EXISTS fixity_result (
    object_key TEXT PRIMARY KEY,
    tier TEXT NOT NULL,
    checked_at_ms INTEGER NOT NULL,
    deep INTEGER NOT NULL,
    status TEXT NOT NULL,
    detail TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS fixity_result_status_idx ON fixity_result (status);

-- Named positions of the tiering service (its event-log cursor).
CREATE TABLE IF NOT EXISTS tiering_cursor (
    name TEXT PRIMARY KEY,
    position INTEGER NOT NULL
);
