//! multipart/related bodies for STOW-RS requests and WADO-RS responses.

/// Returns the Content-Type and body of a STOW-RS request holding `objects`.
pub fn related_body(objects: &[Vec<u8>]) -> (String, Vec<u8>) {
    let boundary = format!("strata-test-{}", uuid::Uuid::new_v4().simple());
    let mut body = Vec::new();
    for object in objects {
        body.extend_from_slice(
            format!("--{boundary}\r\nContent-Type: application/dicom\r\n\r\n").as_bytes(),
        );
        body.extend_from_slice(object);
        body.extend_from_slice(b"\r\n");
    }
    body.extend_from_slice(format!("--{boundary}--\r\n").as_bytes());
    (
        format!("multipart/related; type=\"application/dicom\"; boundary={boundary}"),
        body,
    )
}

/// Splits a multipart/related response into its parts' bodies.
pub fn parse_related(content_type: &str, body: &[u8]) -> anyhow::Result<Vec<Vec<u8>>> {
    let boundary = content_type
        .split(';')
        .filter_map(|param| param.trim().strip_prefix("boundary="))
        .next()
        .map(|value| value.trim_matches('"').to_owned())
        .ok_or_else(|| anyhow::anyhow!("no boundary in `{content_type}`"))?;
    let delimiter = format!("--{boundary}").into_bytes();
    let mut parts = Vec::new();
    let mut position =
        find(body, &delimiter, 0).ok_or_else(|| anyhow::anyhow!("no first boundary"))?;
    loop {
        let after = position + delimiter.len();
        if body[after..].starts_with(b"--") {
            break;
        }
        let headers_end = find(body, b"\r\n\r\n", after)
            .ok_or_else(|| anyhow::anyhow!("part without headers"))?;
        let headers = String::from_utf8_lossy(&body[after..headers_end]).to_lowercase();
        let content_start = headers_end + 4;
        let length = headers
            .lines()
            .filter_map(|line| line.strip_prefix("content-length:"))
            .next()
            .and_then(|value| value.trim().parse::<usize>().ok());
        let content_end = match length {
            Some(length) => content_start + length,
            None => {
                let mut needle = b"\r\n".to_vec();
                needle.extend_from_slice(&delimiter);
                find(body, &needle, content_start)
                    .ok_or_else(|| anyhow::anyhow!("unterminated part"))?
            }
        };
        parts.push(body[content_start..content_end].to_vec());
        position = find(body, &delimiter, content_end)
            .ok_or_else(|| anyhow::anyhow!("no closing boundary"))?;
    }
    Ok(parts)
}

fn find(haystack: &[u8], needle: &[u8], from: usize) -> Option<usize> {
    haystack[from..]
        .windows(needle.len())
        .position(|window| window == needle)
        .map(|index| index + from)
}
