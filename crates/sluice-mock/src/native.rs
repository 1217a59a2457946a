//! Provider-native wire formats: which paths they answer, and their error shapes. Each
//! format is one module (`anthropic`, ...) built on the same deterministic answer as the
//! OpenAI one (`openai::answer_question`), so every format says the same thing.

use bytes::Bytes;
use http::{HeaderName, HeaderValue};

use crate::control::Recorded;
use crate::gemini::{self, GoogleOp};
use crate::openai::Payload;
use crate::{anthropic, bedrock, ApiError};

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Op {
    /// Anthropic `POST /v1/messages`.
    AnthropicMessages,
    /// Anthropic `POST /v1/messages/count_tokens`.
    AnthropicCountTokens,
    /// Gemini on AI Studio and Vertex, Anthropic on Vertex, Google's token endpoint.
    Google(GoogleOp),
    /// Bedrock `POST /model/{modelId}/converse`, `/converse-stream` and `/invoke`.
    Bedrock(bedrock::Action),
}

impl Op {
    /// The native operation a path names, if any.
    pub(crate) fn of(path: &str) -> Option<Op> {
        match path {
            "/v1/messages" => Some(Op::AnthropicMessages),
            "/v1/messages/count_tokens" => Some(Op::AnthropicCountTokens),
            _ => gemini::op(path)
                .map(Op::Google)
                .or_else(|| bedrock::action_of(path).map(Op::Bedrock)),
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
            Op::Google(op) => gemini::answer(
                op,
                &recorded.uri,
                &recorded.headers,
                &recorded.body,
                number,
                chunks,
            ),
            Op::Bedrock(action) => bedrock::answer(action, recorded, number, chunks),
        }
    }

    pub(crate) fn error_body(self, error: &ApiError) -> Bytes {
        match self {
            Op::AnthropicMessages
            | Op::AnthropicCountTokens
            | Op::Google(GoogleOp::RawPredict(_)) => anthropic::error_body(error),
            Op::Google(_) => gemini::error_body(error),
            Op::Bedrock(_) => bedrock::error_body(error),
        }
    }

    /// Extra headers on an error (Bedrock's `x-amzn-errortype`, ...).
    pub(crate) fn error_headers(self, error: &ApiError) -> Vec<(HeaderName, HeaderValue)> {
        match self {
            Op::Bedrock(_) => bedrock::error_headers(error),
            Op::AnthropicMessages | Op::AnthropicCountTokens | Op::Google(_) => Vec::new(),
        }
    }
}
