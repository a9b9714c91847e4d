-- Strata catalog schema, SQLite flavour. Keep in step with migrations/postgres/0001_initial.sql:
-- same tables, columns, constraints and indexes; only the types differ.
--
-- Text attributes are NOT NULL ('' when absent). `*_upper` columns hold the Unicode uppercase of
-- person names, computed in Rust, for case-insensitive PN matching. Integer types stay plain
-- INTEGER / TEXT because the sqlx Any driver only decodes those.

CREATE TABLE IF NOT EXISTS patient (
    patient_pk INTEGER PRIMARY KEY,
    patient_id TEXT NOT NULL,
    issuer_of_patient_id TEXT NOT NULL,
    patient_name TEXT NOT NULL,
    patient_name_upper TEXT NOT NULL,
    patient_birth_date TEXT NOT NULL,
    patient_sex TEXT NOT NULL
);
-- A patient is identified by Patient ID and Issuer; patients without an ID are never merged.
CREATE UNIQUE INDEX IF NOT EXISTS patient_identity_key
    ON patient (patient_id, issuer_of_patient_id) WHERE patient_id <> '';
CREATE INDEX IF NOT EXISTS patient_patient_id_idx ON patient (patient_id);
CREATE INDEX IF NOT EXISTS patient_name_upper_idx ON patient (patient_name_upper);
CREATE INDEX IF NOT EXISTS patient_birth_date_idx ON patient (patient_birth_date);

CREATE TABLE IF NOT EXISTS study (
    study_pk INTEGER PRIMARY KEY,
    patient_pk INTEGER NOT NULL REFERENCES patient (patient_pk),
    study_instance_uid TEXT NOT NULL,
    study_date TEXT NOT NULL,
    study_time TEXT NOT NULL,
    accession_number TEXT NOT NULL,
    referring_physician_name TEXT NOT NULL,
    referring_physician_name_upper TEXT NOT NULL,
    study_id TEXT NOT NULL,
    study_description TEXT NOT NULL,
    timezone_offset_from_utc TEXT NOT NULL,
    num_series INTEGER NOT NULL DEFAULT 0,
    num_instances INTEGER NOT NULL DEFAULT 0,
    CONSTRAINT study_instance_uid_key UNIQUE (study_instance_uid)
);
CREATE INDEX IF NOT EXISTS study_patient_pk_idx ON study (patient_pk);
CREATE INDEX IF NOT EXISTS study_date_idx ON study (study_date);
CREATE INDEX IF NOT EXISTS study_accession_number_idx ON study (accession_number);
CREATE INDEX IF NOT EXISTS study_referring_physician_name_upper_idx
    ON study (referring_physician_name_upper);
CREATE INDEX IF NOT EXISTS study_study_id_idx ON study (study_id);

CREATE TABLE IF NOT EXISTS series (
    series_pk INTEGER PRIMARY KEY,
    study_pk INTEGER NOT NULL REFERENCES study (study_pk),
    series_instance_uid TEXT NOT NULL,
    modality TEXT NOT NULL,
    series_number INTEGER,
    series_description TEXT NOT NULL,
    body_part_examined TEXT NOT NULL,
    performed_procedure_step_start_date TEXT NOT NULL,
    performed_procedure_step_start_time TEXT NOT NULL,
    num_instances INTEGER NOT NULL DEFAULT 0,
    CONSTRAINT series_instance_uid_key UNIQUE (series_instance_uid)
);
CREATE INDEX IF NOT EXISTS series_study_pk_idx ON series (study_pk);
CREATE INDEX IF NOT EXISTS series_modality_idx ON series (modality);
CREATE INDEX IF NOT EXISTS series_pps_start_date_idx ON series (performed_procedure_step_start_date);

-- Items of the Request Attributes Sequence (0040,0275) of a series, in arrival order.
CREATE TABLE IF NOT EXISTS series_request_attribute (
    request_attribute_pk INTEGER PRIMARY KEY,
    series_pk INTEGER NOT NULL REFERENCES series (series_pk),
    scheduled_procedure_step_id TEXT NOT NULL,
    requested_procedure_id TEXT NOT NULL,
    CONSTRAINT series_request_attribute_item_key
        UNIQUE (series_pk, scheduled_procedure_step_id, requested_procedure_id)
);
CREATE INDEX IF NOT EXISTS series_request_attribute_sps_id_idx
    ON series_request_attribute (scheduled_procedure_step_id);
CREATE INDEX IF NOT EXISTS series_request_attribute_rp_id_idx
    ON series_request_attribute (requested_procedure_id);

CREATE TABLE IF NOT EXISTS instance (
    instance_pk INTEGER PRIMARY KEY,
    series_pk INTEGER NOT NULL REFERENCES series (series_pk),
    -- Denormalised from the series so study-level counts and lookups need no join.
    study_pk INTEGER NOT NULL REFERENCES study (study_pk),
    sop_instance_uid TEXT NOT NULL,
    sop_class_uid TEXT NOT NULL,
    instance_number INTEGER,
    image_rows INTEGER,
    image_columns INTEGER,
    bits_allocated INTEGER,
    number_of_frames INTEGER,
    transfer_syntax_uid TEXT NOT NULL,
    specific_character_set TEXT NOT NULL,
    object_key TEXT NOT NULL,
    size_bytes INTEGER NOT NULL,
    sha256 TEXT NOT NULL,
    metadata_json TEXT NOT NULL,
    source_protocol TEXT NOT NULL,
    calling_ae_title TEXT,
    remote_addr TEXT,
    created_at_ms INTEGER NOT NULL,
    CONSTRAINT instance_sop_instance_uid_key UNIQUE (sop_instance_uid)
);
CREATE INDEX IF NOT EXISTS instance_series_pk_idx ON instance (series_pk, instance_pk);
CREATE INDEX IF NOT EXISTS instance_study_pk_idx ON instance (study_pk, instance_pk);
CREATE INDEX IF NOT EXISTS instance_sop_class_uid_idx ON instance (sop_class_uid);

-- Append-only log. AUTOINCREMENT so a sequence number is never reused.
CREATE TABLE IF NOT EXISTS event (
    event_sequence INTEGER PRIMARY KEY AUTOINCREMENT,
    kind TEXT NOT NULL,
    study_instance_uid TEXT NOT NULL,
    series_instance_uid TEXT NOT NULL,
    sop_instance_uid TEXT NOT NULL,
    object_key TEXT NOT NULL,
    created_at_ms INTEGER NOT NULL
);
