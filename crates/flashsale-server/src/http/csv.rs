//! RFC 4180 CSV, written by hand (the rows are a few plain columns): fields separated by commas,
//! rows ended by CRLF, a field quoted when it holds a comma, a quote, CR or LF (a buyer id may
//! hold anything), its quotes doubled.

/// Appends one field (without its separator).
pub fn field(out: &mut Vec<u8>, text: &str) {
    if text
        .bytes()
        .any(|byte| matches!(byte, b',' | b'"' | b'\r' | b'\n'))
    {
        out.push(b'"');
        for byte in text.bytes() {
            if byte == b'"' {
                out.push(b'"');
            }
            out.push(byte);
        }
        out.push(b'"');
    } else {
        out.extend_from_slice(text.as_bytes());
    }
}

/// Appends one row.
pub fn row(out: &mut Vec<u8>, fields: &[&str]) {
    for (index, text) in fields.iter().enumerate() {
        if index > 0 {
            out.push(b',');
        }
        field(out, text);
    }
    out.extend_from_slice(b"\r\n");
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fields_are_quoted_only_when_they_must_be() {
        let mut out = Vec::new();
        row(
            &mut out,
            &["plain", "a,b", "say \"hi\"", "two\r\nlines", ""],
        );
        assert_eq!(
            String::from_utf8(out).unwrap(),
            "plain,\"a,b\",\"say \"\"hi\"\"\",\"two\r\nlines\",\r\n"
        );
    }
}
