//! Integration tests for Strata.
