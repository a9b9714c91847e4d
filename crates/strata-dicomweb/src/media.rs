//! Media type parsing for Content-Type and Accept.

/// A parsed media type: lowercase `type/subtype` and its parameters (names lowercase,
/// values unquoted).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct MediaType {
    pub essence: String,
    pub params: Vec<(String, String)>,
}

impl MediaType {
    /// Parses one media type such as `multipart/related; type="application/dicom"; boundary=x`.
    pub fn parse(text: &str) -> Option<Self> {
        let mut parts = split_outside_quotes(text, ';').into_iter();
        let essence = parts.next()?.trim().to_ascii_lowercase();
        if !essence.contains('/') {
            return None;
        }
        let params = parts
            .filter_map(|param| {
                let (name, value) = param.split_once('=')?;
                let value = value.trim();
                let value = value
                    .strip_prefix('"')
                    .and_then(|v| v.strip_suffix('"'))
                    .unwrap_or(value);
                Some((name.trim().to_ascii_lowercase(), value.to_owned()))
            })
            .collect();
        Some(Self { essence, params })
    }

    /// Parses an Accept header into its media ranges, in order.
    pub fn parse_accept(text: &str) -> Vec<Self> {
        split_outside_quotes(text, ',')
            .iter()
            .filter_map(|item| Self::parse(item))
            .collect()
    }

    /// Returns a parameter's value.
    pub fn param(&self, name: &str) -> Option<&str> {
        self.params
            .iter()
            .find(|(key, _)| key == name)
            .map(|(_, value)| value.as_str())
    }
}

fn split_outside_quotes(text: &str, separator: char) -> Vec<String> {
    let mut parts = Vec::new();
    let mut current = String::new();
    let mut quoted = false;
    for character in text.chars() {
        match character {
            '"' => {
                quoted = !quoted;
                current.push(character);
            }
            c if c == separator && !quoted => parts.push(std::mem::take(&mut current)),
            c => current.push(c),
        }
    }
    parts.push(current);
    parts
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn test_parses_multipart_related_with_quoted_params() {
        let media =
            MediaType::parse("Multipart/Related; type=\"application/dicom\"; boundary=\"a;b\"")
                .unwrap();
        assert_eq!(media.essence, "multipart/related");
        assert_eq!(media.param("type"), Some("application/dicom"));
        assert_eq!(media.param("boundary"), Some("a;b"));
    }

    #[test]
    fn test_parses_accept_lists() {
        let ranges =
            MediaType::parse_accept("multipart/related; type=\"application/dicom\", */*;q=0.1");
        assert_eq!(ranges.len(), 2);
        assert_eq!(ranges[1].essence, "*/*");
    }
}
