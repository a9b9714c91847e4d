//! Which role owns which HTTP route, and the middleware that answers requests for a role this
//! process does not run (docs/deployment.md has the table).

use std::collections::BTreeSet;
use std::fmt;
use std::sync::Arc;

use axum::extract::{Request, State};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use strata_config::Role;

/// The roles of this process.
#[derive(Debug, Clone)]
pub struct RoleSet(Arc<BTreeSet<Role>>);

impl RoleSet {
    /// The set of `roles`.
    pub fn new(roles: &[Role]) -> Self {
        Self(Arc::new(roles.iter().copied().collect()))
    }

    /// Whether this process runs `role`.
    pub fn runs(&self, role: Role) -> bool {
        self.0.contains(&role)
    }
}

impl fmt::Display for RoleSet {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let names: Vec<&str> = self.0.iter().map(|role| role.as_str()).collect();
        f.write_str(&names.join(","))
    }
}

/// The role that serves `method path`, or `None` for routes every process serves (health,
/// metrics) and for `/api/search`, which is mounted only where it can be answered.
pub fn owning_role(method: &http::Method, path: &str) -> Option<Role> {
    let under = |prefix: &str| {
        path == prefix
            || path
                .strip_prefix(prefix)
                .is_some_and(|rest| rest.starts_with('/'))
    };
    if under("/dicomweb") {
        // STOW-RS is the only POST of DICOMweb.
        return Some(if method == http::Method::POST {
            Role::Ingest
        } else {
            Role::Gateway
        });
    }
    if under("/fhir") {
        return Some(Role::Gateway);
    }
    if under("/api/tiering") {
        return Some(Role::Tiering);
    }
    None
}

/// Answers 404 with a problem body naming the role when the request belongs to a role this
/// process does not run (a misrouted Ingress rule is then obvious, not a silent 404).
pub async fn route_to_role(State(roles): State<RoleSet>, request: Request, next: Next) -> Response {
    match owning_role(request.method(), request.uri().path()) {
        Some(role) if !roles.runs(role) => strata_dicomweb::Problem::not_found(format!(
            "{} {} is served by the `{role}` role; this process runs: {roles}",
            request.method(),
            route_family(request.uri().path()),
        ))
        .into_response(),
        _ => next.run(request).await,
    }
}

/// The first path segment (never the UIDs after it).
fn route_family(path: &str) -> String {
    let first = path
        .trim_start_matches('/')
        .split('/')
        .next()
        .unwrap_or_default();
    format!("/{first}/…")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn test_owning_role_splits_stow_from_reads() {
        let post = http::Method::POST;
        let get = http::Method::GET;
        let delete = http::Method::DELETE;
        assert_eq!(owning_role(&post, "/dicomweb/studies"), Some(Role::Ingest));
        assert_eq!(
            owning_role(&post, "/dicomweb/studies/1.2"),
            Some(Role::Ingest)
        );
        assert_eq!(owning_role(&get, "/dicomweb/studies"), Some(Role::Gateway));
        assert_eq!(
            owning_role(&delete, "/dicomweb/studies/1.2"),
            Some(Role::Gateway)
        );
        assert_eq!(owning_role(&get, "/fhir/ImagingStudy"), Some(Role::Gateway));
        assert_eq!(
            owning_role(&get, "/api/tiering/status"),
            Some(Role::Tiering)
        );
        assert_eq!(owning_role(&get, "/api/search"), None);
        assert_eq!(owning_role(&get, "/readyz"), None);
        assert_eq!(owning_role(&get, "/dicomwebx"), None);
    }
}
