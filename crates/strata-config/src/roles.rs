//! The roles a `strata serve` process plays (issue 7): one process runs all of them on a
//! laptop; on Kubernetes each runs in its own Deployment, sharing only the catalog, the object
//! store and the configuration.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

/// One service a process can run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    /// STOW-RS and DIMSE C-STORE (+ C-ECHO): writes objects, catalog rows and events.
    Ingest,
    /// DICOMweb reads (QIDO-RS, WADO-RS, WADO-URI, DELETE), FHIR, DIMSE C-FIND/C-MOVE/C-GET
    /// (+ C-ECHO), and `/api/search` forwarded to a search process when none runs here.
    Gateway,
    /// The full-text indexer (follows the event log) and `GET /api/search`.
    Search,
    /// The tiering worker and its admin API (issue 4).
    Tiering,
}

impl Role {
    /// Every role, in the order processes list them.
    pub const ALL: [Role; 4] = [Role::Ingest, Role::Gateway, Role::Search, Role::Tiering];

    /// The role's name in flags, config and logs.
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Ingest => "ingest",
            Role::Gateway => "gateway",
            Role::Search => "search",
            Role::Tiering => "tiering",
        }
    }
}

impl fmt::Display for Role {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// An unknown role name.
#[derive(Debug, thiserror::Error)]
#[error("unknown role `{0}` (expected ingest, gateway, search or tiering)")]
pub struct UnknownRole(String);

impl FromStr for Role {
    type Err = UnknownRole;

    fn from_str(name: &str) -> Result<Self, Self::Err> {
        Role::ALL
            .into_iter()
            .find(|role| role.as_str().eq_ignore_ascii_case(name.trim()))
            .ok_or_else(|| UnknownRole(name.trim().to_owned()))
    }
}

/// Parses `ingest,gateway` (the `--roles` flag and `STRATA_ROLES`); `all` means every role.
pub fn parse_roles(list: &str) -> Result<Vec<Role>, UnknownRole> {
    if list.trim().eq_ignore_ascii_case("all") {
        return Ok(Role::ALL.to_vec());
    }
    let mut roles = list
        .split(',')
        .filter(|name| !name.trim().is_empty())
        .map(Role::from_str)
        .collect::<Result<Vec<_>, _>>()?;
    roles.sort();
    roles.dedup();
    Ok(roles)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn test_parse_roles_accepts_lists_case_and_all() {
        assert_eq!(
            parse_roles("Gateway, ingest,gateway").unwrap(),
            vec![Role::Ingest, Role::Gateway]
        );
        assert_eq!(parse_roles("all").unwrap(), Role::ALL.to_vec());
        let error = parse_roles("ingest,indexer").unwrap_err();
        assert!(error.to_string().contains("`indexer`"), "{error}");
    }
}
