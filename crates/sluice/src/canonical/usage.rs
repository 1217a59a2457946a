//! Token usage of one request, and how it is read from the OpenAI wire format.

use serde::Deserialize;

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Usage {
    pub input_tokens: u64,
    pub output_tokens: u64,
    /// Input tokens served from the provider's prompt cache (a subset of `input_tokens`).
    pub cached_input_tokens: u64,
    /// Reasoning tokens (a subset of `output_tokens`).
    pub reasoning_tokens: u64,
    /// Input tokens written to the provider's prompt cache (a subset of `input_tokens`;
    /// Anthropic and Bedrock charge them above the plain input price).
    pub cache_write_tokens: u64,
}

impl Usage {
    /// Combines partial reports (a stream's start and end): each field takes the larger.
    pub fn merge(self, o: &Usage) -> Usage {
        Usage {
            input_tokens: self.input_tokens.max(o.input_tokens),
            output_tokens: self.output_tokens.max(o.output_tokens),
            cached_input_tokens: self.cached_input_tokens.max(o.cached_input_tokens),
            reasoning_tokens: self.reasoning_tokens.max(o.reasoning_tokens),
            cache_write_tokens: self.cache_write_tokens.max(o.cache_write_tokens),
        }
    }
}

/// OpenAI's `usage` object (chat completions and embeddings); Anthropic's names are read too,
/// for Anthropic answers passed through untouched.
#[derive(Debug, Deserialize)]
pub struct OpenAiUsage {
    #[serde(default)]
    pub prompt_tokens: u64,
    #[serde(default)]
    pub completion_tokens: u64,
    #[serde(default)]
    pub input_tokens: u64,
    #[serde(default)]
    pub output_tokens: u64,
    #[serde(default)]
    pub cache_read_input_tokens: u64,
    #[serde(default)]
    pub cache_creation_input_tokens: u64,
    #[serde(default)]
    pub prompt_tokens_details: Option<PromptDetails>,
    #[serde(default)]
    pub completion_tokens_details: Option<CompletionDetails>,
    /// The Responses API's names for the same details.
    #[serde(default)]
    pub input_tokens_details: Option<PromptDetails>,
    #[serde(default)]
    pub output_tokens_details: Option<CompletionDetails>,
}

#[derive(Debug, Deserialize)]
pub struct PromptDetails {
    #[serde(default)]
    pub cached_tokens: Option<u64>,
    /// Ours, for translated providers that report prompt-cache writes.
    #[serde(default)]
    pub cache_write_tokens: Option<u64>,
}

#[derive(Debug, Deserialize)]
pub struct CompletionDetails {
    #[serde(default)]
    pub reasoning_tokens: Option<u64>,
}

impl From<OpenAiUsage> for Usage {
    fn from(u: OpenAiUsage) -> Self {
        if u.prompt_tokens == 0 && u.completion_tokens == 0 {
            // Anthropic: input excludes cache reads and writes. Responses: input includes the
            // cached tokens, counted in `input_tokens_details`.
            let read = u.cache_read_input_tokens;
            let write = u.cache_creation_input_tokens;
            let cached = u
                .input_tokens_details
                .and_then(|d| d.cached_tokens)
                .unwrap_or(0);
            return Usage {
                input_tokens: u.input_tokens + read + write,
                output_tokens: u.output_tokens,
                cached_input_tokens: read + cached,
                reasoning_tokens: u
                    .output_tokens_details
                    .and_then(|d| d.reasoning_tokens)
                    .unwrap_or(0),
                cache_write_tokens: write,
            };
        }
        Usage {
            input_tokens: u.prompt_tokens,
            output_tokens: u.completion_tokens,
            cached_input_tokens: u
                .prompt_tokens_details
                .as_ref()
                .and_then(|d| d.cached_tokens)
                .unwrap_or(0),
            cache_write_tokens: u
                .prompt_tokens_details
                .and_then(|d| d.cache_write_tokens)
                .unwrap_or(0),
            reasoning_tokens: u
                .completion_tokens_details
                .and_then(|d| d.reasoning_tokens)
                .unwrap_or(0),
        }
    }
}

#[derive(Deserialize)]
struct UsageOnly {
    usage: Option<OpenAiUsage>,
}

/// Reads `usage` from an OpenAI JSON response or stream chunk; `None` if absent or null.
///
/// Fast path: OpenAI puts `usage` last, so parse only the object after the last `"usage"`
/// key instead of the whole body (a string value cannot contain an unescaped `"usage"`).
pub fn from_openai_json(body: &[u8]) -> Option<Usage> {
    if let Some(at) = memchr::memmem::rfind(body, b"\"usage\"") {
        let rest = body[at + 7..].trim_ascii_start();
        if let Some(value) = rest.strip_prefix(b":").map(<[u8]>::trim_ascii_start) {
            if value.starts_with(b"null") {
                return None;
            }
            let mut de = serde_json::Deserializer::from_slice(value);
            if let Ok(u) = <OpenAiUsage as serde::Deserialize>::deserialize(&mut de) {
                return Some(u.into());
            }
        }
    }
    serde_json::from_slice::<UsageOnly>(body)
        .ok()
        .and_then(|u| u.usage)
        .map(Usage::from)
}

static BPE: std::sync::OnceLock<Option<tiktoken_rs::CoreBPE>> = std::sync::OnceLock::new();

fn bpe() -> Option<&'static tiktoken_rs::CoreBPE> {
    BPE.get_or_init(|| tiktoken_rs::o200k_base().ok()).as_ref()
}

/// Tokens in `text` by OpenAI's `o200k_base` BPE: the gateway's one tokenizer, for estimates
/// (count_tokens without a provider, output of streams whose provider reports no usage).
/// Falls back to four bytes a token if the vocabulary cannot be built. The first call builds
/// the vocabulary (about a second in a debug build).
pub fn count_tokens(text: &str) -> u64 {
    match bpe() {
        Some(bpe) => bpe.encode_ordinary(text).len() as u64,
        None => (text.len() as u64).div_ceil(4),
    }
}

/// [`count_tokens`] without ever waiting for the vocabulary: four bytes a token until it is
/// built (for the request path, which must not stall). The first call starts building it
/// on its own thread, so processes that never need it (providers that report usage) never
/// pay for it.
pub fn count_tokens_now(text: &str) -> u64 {
    match BPE.get() {
        Some(Some(bpe)) => bpe.encode_ordinary(text).len() as u64,
        Some(None) => (text.len() as u64).div_ceil(4),
        None => {
            static STARTED: std::sync::Once = std::sync::Once::new();
            STARTED.call_once(|| {
                std::thread::spawn(|| {
                    let _ = bpe();
                });
            });
            (text.len() as u64).div_ceil(4)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_usage_with_details() {
        let u = from_openai_json(
            br#"{"id":"x","choices":[],"usage":{"prompt_tokens":10,"completion_tokens":5,"total_tokens":15,
               "prompt_tokens_details":{"cached_tokens":4},"completion_tokens_details":{"reasoning_tokens":2}}}"#,
        );
        assert_eq!(
            u,
            Some(Usage {
                input_tokens: 10,
                output_tokens: 5,
                cached_input_tokens: 4,
                reasoning_tokens: 2,
                cache_write_tokens: 0,
            })
        );
        assert_eq!(from_openai_json(br#"{"usage":null}"#), None);
        assert_eq!(from_openai_json(b"not json"), None);
        let e = from_openai_json(br#"{"data":[],"usage":{"prompt_tokens":3,"total_tokens":3}}"#);
        // A nested `usage` key that is not an object falls back to the full parse.
        let nested = from_openai_json(
            br#"{"usage":{"prompt_tokens":1,"completion_tokens":1},"x":{"usage":"n/a"}}"#,
        );
        assert_eq!(nested.map(|u| u.input_tokens), Some(1));
        // Text mentioning usage inside a string is escaped and never matches.
        let texty = from_openai_json(
            br#"{"choices":[{"message":{"content":"see \"usage\": {}"}}],"usage":{"prompt_tokens":4,"completion_tokens":2}}"#,
        );
        assert_eq!(texty.map(|u| u.output_tokens), Some(2));
        assert_eq!(e.map(|u| u.input_tokens), Some(3));
    }
}
