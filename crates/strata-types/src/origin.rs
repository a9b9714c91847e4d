//! The origin (`scheme://host`) a client reached the archive by, for absolute URLs in
//! responses (RetrieveURL, BulkDataURI, FHIR links) when no public base URL is configured.

/// Returns `scheme://host` from the request's `Host` header and an optional
/// `X-Forwarded-Proto` set by a reverse proxy. Only `http` and `https` are honoured; a missing
/// host falls back to `localhost`.
pub fn request_origin(host: Option<&str>, forwarded_proto: Option<&str>) -> String {
    let host = host.filter(|host| !host.is_empty()).unwrap_or("localhost");
    let scheme = forwarded_proto
        .filter(|proto| *proto == "https" || *proto == "http")
        .unwrap_or("http");
    format!("{scheme}://{host}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn test_origin_from_host_and_proxy() {
        assert_eq!(request_origin(Some("pacs:8080"), None), "http://pacs:8080");
        assert_eq!(
            request_origin(Some("pacs.example.org"), Some("https")),
            "https://pacs.example.org"
        );
        assert_eq!(request_origin(None, Some("gopher")), "http://localhost");
    }
}
