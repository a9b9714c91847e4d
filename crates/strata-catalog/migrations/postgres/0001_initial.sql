-- Strata catalog schema, PostgreSQL flavour. Keep in step with migrations/sqlite/0001_initial.sql:
-- same tables, columns, constraints and indexes; only the types differ.
--
-- Text attributes are NOT NULL ('' when absent). `*_upper` columns hold the Unicode uppercase of
-- person names, computed in Rust, for case-insensitive PN matching. Every text column uses the
-- "C" collation so comparisons, ranges and LIKE are bytewise, exactly as SQLite's BINARY, and
-- LIKE prefixes can use the btree indexes. Integers are BIGINT (the Any driver decodes i64).

CREATE TABLE IF NOT EXISTS patient (
    patient_pk BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    patient_id TEXT COLLATE "C" NOT NULL,
    issuer_of_patient_id TEXT COLLATE "C" NOT NULL,
    patient_name TEXT COLLATE "C" NOT NULL,
    patient_name_upper TEXT COLLATE "C" NOT NULL,
    patient_birth_date TEXT COLLATE "C" NOT NULL,
    patient_sex TEXT COLLATE "C" NOT NULL
);
-- A patient is identified by Patient ID and Issuer; patients without an ID are never merged.
CREATE UNIQUE INDEX IF NOT EXISTS patient_identity_key
    ON patient (patient_id, issuer_of_patient_id) WHERE patient_id <> '';
CREATE INDEX IF NOT EXISTS patient_patient_id_idx ON patient (patient_id);
CREATE INDEX IF NOT EXISTS patient_name_upper_idx ON patient (patient_name_upper);
CREATE INDEX IF NOT EXISTS patient_birth_date_idx ON patient (patient_birth_date);

CREATE TABLE IF NOT EXISTS study (
    study_pk BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    patient_pk BIGINT NOT NULL REFERENCES patient (patient_pk),
    study_instance_uid TEXT COLLATE "C" NOT NULL,
    study_date TEXT COLLATE "C" NOT NULL,
    study_time TEXT COLLATE "C" NOT NULL,
    accession_number TEXT COLLATE "C" NOT NULL,
    referring_physician_name TEXT COLLATE "C" NOT NULL,
    referring_physician_name_upper TEXT COLLATE "C" NOT NULL,
    study_id TEXT COLLATE "C" NOT NULL,
    study_description TEXT COLLATE "C" NOT NULL,
    timezone_offset_from_utc TEXT COLLATE "C" NOT NULL,
    num_series BIGINT NOT NULL DEFAULT 0,
    num_instances BIGINT NOT NULL DEFAULT 0,
    CONSTRAINT study_instance_uid_key UNIQUE (study_instance_uid)
);
CREATE INDEX IF NOT EXISTS study_patient_pk_idx ON study (patient_pk);
CREATE INDEX IF NOT EXISTS study_date_idx ON study (study_date);
CREATE INDEX IF NOT EXISTS study_accession_number_idx ON study (accession_number);
CREATE INDEX IF NOT EXISTS study_referring_physician_name_upper_idx
    ON study (referring_physician_name_upper);
CREATE INDEX IF NOT EXISTS study_study_id_idx ON study (study_id);

CREATE TABLE IF NOT EXISTS series (
    series_pk BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    study_pk BIGINT NOT NULL REFERENCES study (study_pk),
    series_instance_uid TEXT COLLATE "C" NOT NULL,
    modality TEXT COLLATE "C" NOT NULL,
    series_number BIGINT,
    series_description TEXT COLLATE "C" NOT NULL,
    body_part_examined TEXT COLLATE "C" NOT NULL,
    performed_procedure_step_start_date TEXT COLLATE "C" NOT NULL,
    performed_procedure_step_start_time TEXT COLLATE "C" NOT NULL,
    num_instances BIGINT NOT NULL DEFAULT 0,
    CONSTRAINT series_instance_uid_key UNIQUE (series_instance_uid)
);
CREATE INDEX IF NOT EXISTS series_study_pk_idx ON series (study_pk);
CREATE INDEX IF NOT EXISTS series_modality_idx ON series (modality);
CREATE INDEX IF NOT EXISTS series_pps_start_date_idx ON series (performed_procedure_step_start_date);

-- Items of the Request Attributes Sequence (0040,0275) of a series, in arrival order.
CREATE TABLE IF NOT EXISTS series_request_attribute (
    request_attribute_pk BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    series_pk BIGINT NOT NULL REFERENCES series (series_pk),
    scheduled_procedure_step_id TEXT COLLATE "C" NOT NULL,
    requested_procedure_id TEXT COLLATE "C" NOT NULL,
    CONSTRAINT series_request_attribute_item_key
        UNIQUE (series_pk, scheduled_procedure_step_id, requested_procedure_id)
);
CREATE INDEX IF NOT EXISTS series_request_attribute_sps_id_idx
    ON series_request_attribute (scheduled_procedure_step_id);
CREATE INDEX IF NOT EXISTS series_request_attribute_rp_id_idx
    ON series_request_attribute (requested_procedure_id);

CREATE TABLE IF NOT EXISTS instance (
    instance_pk BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    series_pk BIGINT NOT NULL REFERENCES series (series_pk),
    -- Denormalised from the series so study-level counts and lookups need no join.
    study_pk BIGINT NOT NULL REFERENCES study (study_pk),
    sop_instance_uid TEXT COLLATE "C" NOT NULL,
    sop_class_uid TEXT COLLATE "C" NOT NULL,
    instance_number BIGINT,
    image_rows BIGINT,
    image_columns BIGINT,
    bits_allocated BIGINT,
    number_of_frames BIGINT,
    transfer_syntax_uid TEXT COLLATE "C" NOT NULL,
    specific_character_set TEXT COLLATE "C" NOT NULL,
    object_key TEXT COLLATE "C" NOT NULL,
    size_bytes BIGINT NOT NULL,
    sha256 TEXT COLLATE "C" NOT NULL,
    metadata_json TEXT COLLATE "C" NOT NULL,
    source_protocol TEXT COLLATE "C" NOT NULL,
    calling_ae_title TEXT COLLATE "C",
    remote_addr TEXT COLLATE "C",
    created_at_ms BIGINT NOT NULL,
    CONSTRAINT instance_sop_instance_uid_key UNIQUE (sop_instance_uid)
);
CREATE INDEX IF NOT EXISTS instance_series_pk_idx ON instance (series_pk, instance_pk);
CREATE INDEX IF NOT EXISTS instance_study_pk_idx ON instance (study_pk, instance_pk);
CREATE INDEX IF NOT EXISTS instance_sop_class_uid_idx ON instance (sop_class_uid);

-- Append-only log. Writers take `LOCK TABLE event IN SHARE ROW EXCLUSIVE MODE` before inserting,
-- so sequence numbers become visible in commit order and a follower never skips one.
CREATE TABLE IF NOT EXISTS event (
    event_sequence BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    kind TEXT COLLATE "C" NOT NULL,
    study_instance_uid TEXT COLLATE "C" NOT NULL,
    series_instance_uid TEXT COLLATE "C" NOT NULL,
    sop_instance_uid TEXT COLLATE "C" NOT NULL,
    object_key TEXT COLLATE "C" NOT NULL,
    created_at_ms BIGINT NOT NULL
);
