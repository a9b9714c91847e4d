-- QIDO-RS fuzzymatching=true on person names (issue 3). Keep in step with
-- migrations/postgres/0005_fuzzy_person_names.sql.
--
-- The name's words, accent-folded and upper-cased, between spaces (' MULLER JURGEN '), so that
-- a query word matches a word start with LIKE '% WORD%' in any order. Computed in Rust
-- (strata_catalog::fuzzy_name_words) at store time; NULL for rows stored before this
-- migration until the catalog fills them in at the next start (SqlCatalog::migrate).
ALTER TABLE patient ADD COLUMN patient_name_fuzzy TEXT;
ALTER TABLE study ADD COLUMN referring_physician_name_fuzzy TEXT;
