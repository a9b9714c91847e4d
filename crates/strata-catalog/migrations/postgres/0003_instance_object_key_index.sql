-- Deletion (DICOMweb DELETE) removes an object from the store only when no instance row refers
-- to its key any more; objects are content-addressed, so a deleted instance stored again
-- refers to the same key. This index makes that check (and orphan sweeps) a probe.
CREATE INDEX IF NOT EXISTS instance_object_key_idx ON instance (object_key);
