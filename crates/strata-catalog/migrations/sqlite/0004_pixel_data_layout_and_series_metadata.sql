-- WADO-RS frames and the precomputed series metadata (issue 3). Keep in step with
-- migrations/postgres/0004_pixel_data_layout_and_series_metadata.sql.

-- Where the top-level Pixel Data lies in the stored object (JSON written at ingest: the native
-- value's offset and length, or the offset and length of every encapsulated fragment), so
-- frames are read with range requests. NULL for objects without pixel data and for instances
-- stored before this migration (WADO-RS then parses the object once and fills it in).
ALTER TABLE instance ADD COLUMN pixel_data_layout TEXT;

-- One precomputed WADO-RS metadata document per series: the instances' DICOM JSON in retrieval
-- order, valid for the catalog state whose latest event of the series is `change_sequence`.
-- Every store and delete appends an event, so a document whose sequence differs from the
-- series' latest event is stale and rebuilt on read.
CREATE TABLE IF NOT EXISTS series_metadata_cache (
    series_instance_uid TEXT PRIMARY KEY,
    study_instance_uid TEXT NOT NULL,
    change_sequence INTEGER NOT NULL,
    num_instances INTEGER NOT NULL,
    document TEXT NOT NULL
);

-- The latest event of a series or study (cache validation, ETags).
CREATE INDEX IF NOT EXISTS event_series_sequence_idx ON event (series_instance_uid, event_sequence);
CREATE INDEX IF NOT EXISTS event_study_sequence_idx ON event (study_instance_uid, event_sequence);
