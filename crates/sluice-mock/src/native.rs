//! Provider-native wire formats: which paths they answer, and their error shapes. Each
//! format is one module (`anthropic`, ...) built on the same deterministic answer as the
//! OpenAI one (`openai::answer_question`), so every format says the same thing.

use bytes::Bytes;
use http::{HeaderName, HeaderValue};

use crate::control::Recorded;
use crate::openai::Payload;
use crate::{anthropic, ApiError};

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Op {
    /// Anthropic `POST /v1/messages`.
    AnthropicMessages,
    /// Anthropic `POST /v1/messages/count_tokens`.
    AnthropicCountTokens,
}

impl Op {
    /// The native operation a path names, if any.
    pub(crate) fn of(path: &str) -> Option<Op> {
        match path {
            "/v1/messages" => Some(Op::AnthropicMessages),
            "/v1/messages/count_tokens" => Some(Op::AnthropicCountTokens),
            _ => None,
        }
    }

    pub(crate) fn answer(
        self,
        recorded: &Recorded,
        number: u64,
        chunks: usize,
    ) -> Result<Payload, ApiError> {
        match self {
            Op::AnthropicMessages => anthropic::messages(&recorded.body, number, chunks),
            Op::AnthropicCountTokens => anthropic::count_tokens(&recorded.body),
        }
    }

    pub(crate) fn error_body(self, error: &ApiError) -> Bytes {
        match self {
            Op::AnthropicMessages | Op::AnthropicCountTokens => anthropic::error_body(error),
        }
    }

    /// Extra headers on an error (Bedrock's `x-amzn-errortype`, ...).
    pub(crate) fn error_headers(self, _error: &ApiError) -> Vec<(HeaderName, HeaderValue)> {
        Vec::new()
    }
}
