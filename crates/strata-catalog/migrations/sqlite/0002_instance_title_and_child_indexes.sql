-- The instance's title for FHIR ImagingStudy.series.instance.title (Content Label, Concept Name
-- meaning, Document Title or Image Type), filled at ingest.
ALTER TABLE instance ADD COLUMN title TEXT NOT NULL DEFAULT '';

-- Child-table conditions of study-level queries (ModalitiesInStudy, SOPClassesInStudy) are
-- correlated on study_pk: without these, the planner probes by modality or SOP class alone
-- and scans every matching child for every study.
CREATE INDEX IF NOT EXISTS series_study_modality_idx ON series (study_pk, modality);
CREATE INDEX IF NOT EXISTS instance_study_sop_class_idx ON instance (study_pk, sop_class_uid);
