//! An error with the errors that caused it, for messages at the edges: drivers often say only
//! "error performing TLS handshake" and keep the reason (the certificate's fault) in `source()`.

use std::error::Error;

/// "outer: cause: root cause", each cause once (some errors repeat their source's text).
pub fn describe(error: &(dyn Error + 'static)) -> String {
    let mut text = error.to_string();
    let mut cause = error.source();
    while let Some(error) = cause {
        let part = error.to_string();
        if !text.contains(&part) {
            text.push_str(": ");
            text.push_str(&part);
        }
        cause = error.source();
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, thiserror::Error)]
    #[error("outer")]
    struct Outer(#[source] std::io::Error);

    #[test]
    fn causes_follow_the_error() {
        let error = Outer(std::io::Error::other("the reason"));
        assert_eq!(describe(&error), "outer: the reason");
    }
}
