//! Upstream URLs: the one place a name that came with a request (a model, possibly the
//! suffix of a wildcard route) becomes part of a provider's URL path.
//!
//! Two defences, both here: every name is checked against the provider's model-name grammar
//! (a 400 naming the model), and what goes into a path is percent-encoded as one segment, so
//! `../`, `?` or `#` can never reach another path on the provider's host with the gateway's
//! credentials.

use crate::canonical::openai::RequestError;
use crate::config::ProviderKind;
use percent_encoding::{utf8_percent_encode, AsciiSet, NON_ALPHANUMERIC};

/// Everything but RFC 3986 unreserved characters is escaped in a path segment.
const SEGMENT: &AsciiSet = &NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'_')
    .remove(b'.')
    .remove(b'~');

/// Vertex writes publisher model versions as `name@version`; `@` is legal in a segment.
const SEGMENT_AT: &AsciiSet = &SEGMENT.remove(b'@');

/// What a provider accepts as a model name in its URLs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ModelGrammar {
    /// The model travels in the body only (OpenAI, Anthropic, Cohere, Ollama, mock).
    BodyOnly,
    /// `[A-Za-z0-9._-]`, as Gemini model ids and Azure deployment names are.
    Plain,
    /// `Plain` plus `@` (Vertex: `claude-sonnet-4-5@20250929`).
    Versioned,
    /// Bedrock model ids and ARNs (`arn:aws:bedrock:...:inference-profile/us.anthropic...`):
    /// `:` and `/` are part of the grammar and are escaped inside one label, as AWS expects.
    AwsLabel,
}

impl ModelGrammar {
    pub fn of(kind: ProviderKind) -> Self {
        match kind {
            ProviderKind::Gemini => ModelGrammar::Plain,
            ProviderKind::AzureOpenAi => ModelGrammar::Plain,
            ProviderKind::Vertex => ModelGrammar::Versioned,
            ProviderKind::Bedrock => ModelGrammar::AwsLabel,
            ProviderKind::OpenAi
            | ProviderKind::OpenAiCompatible
            | ProviderKind::Anthropic
            | ProviderKind::Cohere
            | ProviderKind::Ollama
            | ProviderKind::Mock => ModelGrammar::BodyOnly,
        }
    }
}

/// Checks `model` against the grammar; the error is a 400 that names the model.
pub fn check_model(grammar: ModelGrammar, provider: &str, model: &str) -> Result<(), RequestError> {
    let refuse = |why: &str| {
        Err(RequestError::new(
            format!("model {model:?} cannot be sent to provider `{provider}`: {why}"),
            Some("model"),
        ))
    };
    if grammar == ModelGrammar::BodyOnly {
        return Ok(());
    }
    if model.is_empty() {
        return refuse("the name is empty");
    }
    if let Some(c) = model.chars().find(|c| c.is_control() || c.is_whitespace()) {
        return refuse(&format!("it contains the character {c:?}"));
    }
    if model.contains("..") {
        return refuse("it contains `..`");
    }
    let allowed = |c: char| match grammar {
        ModelGrammar::Plain => c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'),
        ModelGrammar::Versioned => c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-' | '@'),
        ModelGrammar::AwsLabel => !matches!(c, '?' | '#' | '\\' | '%'),
        ModelGrammar::BodyOnly => true,
    };
    if let Some(c) = model.chars().find(|c| !allowed(*c)) {
        return refuse(&format!(
            "the provider's model names have no {c:?} (letters, digits, `.`, `_`, `-`{})",
            match grammar {
                ModelGrammar::Versioned => ", `@`",
                ModelGrammar::AwsLabel => ", `:`, `/`",
                _ => "",
            }
        ));
    }
    Ok(())
}

/// `name` as one path segment: percent-encoded so that it can only ever be one segment.
pub fn segment(name: &str) -> String {
    utf8_percent_encode(name, SEGMENT).to_string()
}

/// Like [`segment`], keeping `@` (Vertex model versions).
pub fn segment_keep_at(name: &str) -> String {
    utf8_percent_encode(name, SEGMENT_AT).to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn segments_cannot_escape() {
        assert_eq!(
            segment("../../v1/files?x=1#y"),
            "..%2F..%2Fv1%2Ffiles%3Fx%3D1%23y"
        );
        assert_eq!(segment("gemini-2.5-flash"), "gemini-2.5-flash");
        assert_eq!(segment_keep_at("claude-x@2025"), "claude-x@2025");
        assert_eq!(segment_keep_at("a/b@c"), "a%2Fb@c");
    }

    #[test]
    fn grammars() {
        let ok = |g, m| check_model(g, "p", m).is_ok();
        assert!(ok(ModelGrammar::Plain, "gemini-2.5-flash"));
        assert!(!ok(ModelGrammar::Plain, "../files"));
        assert!(!ok(ModelGrammar::Plain, "a?b"));
        assert!(!ok(ModelGrammar::Plain, "a#b"));
        assert!(!ok(ModelGrammar::Plain, "a\u{0}b"));
        assert!(!ok(ModelGrammar::Plain, "a:b"));
        assert!(!ok(ModelGrammar::Plain, "a@b"));
        assert!(ok(ModelGrammar::Versioned, "claude-sonnet-4-5@20250929"));
        assert!(!ok(ModelGrammar::Versioned, "x/y"));
        assert!(ok(
            ModelGrammar::AwsLabel,
            "arn:aws:bedrock:us-east-1:1:inference-profile/us.anthropic.claude-v1:0"
        ));
        assert!(!ok(ModelGrammar::AwsLabel, "a?b"));
        assert!(!ok(ModelGrammar::AwsLabel, "x/../y"));
        assert!(ok(ModelGrammar::BodyOnly, "anything/at all?"));
        let e = check_model(ModelGrammar::Plain, "gem", "x/../y").unwrap_err();
        assert!(e.message.contains("\"x/../y\""), "{}", e.message);
        assert_eq!(e.param.as_deref(), Some("model"));
    }
}
