//! Provider-native wire formats: which paths they answer, and their error shapes. Each
//! format is one module (`anthropic`, ...) built on the same deterministic answer as the
//! OpenAI one (`openai::answer_question`), so every format says the same thing.

use bytes::Bytes;
use http::{HeaderName, HeaderValue};

use crate::control::Recorded;
use crate::gemini::{self, GoogleOp};
use crate::openai::Payload;
use crate::{anthropic, bedrock, cohere, ollama, ApiError};

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
    /// Cohere `POST /v2/chat`.
    CohereChat,
    /// Cohere `POST /v2/embed`.
    CohereEmbed,
    /// Ollama `POST /api/chat`.
    OllamaChat,
    /// Ollama `POST /api/embed`.
    OllamaEmbed,
}

impl Op {
    /// The native operation a path names, if any.
    pub(crate) fn of(path: &str) -> Option<Op> {
        match path {
            "/v1/messages" => Some(Op::AnthropicMessages),
            "/v1/messages/count_tokens" => Some(Op::AnthropicCountTokens),
            "/v2/chat" => Some(Op::CohereChat),
            "/v2/embed" => Some(Op::CohereEmbed),
            "/api/chat" => Some(Op::OllamaChat),
            "/api/embed" => Some(Op::OllamaEmbed),
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
            Op::CohereChat => cohere::chat(&recorded.body, number, chunks),
            Op::CohereEmbed => cohere::embed(&recorded.body, number),
            Op::OllamaChat => ollama::chat(&recorded.body, chunks),
            Op::OllamaEmbed => ollama::embed(&recorded.body),
        }
    }

    pub(crate) fn error_body(self, error: &ApiError) -> Bytes {
        match self {
            Op::AnthropicMessages
            | Op::AnthropicCountTokens
            | Op::Google(GoogleOp::RawPredict(_)) => anthropic::error_body(error),
            Op::Google(_) => gemini::error_body(error),
            Op::Bedrock(_) => bedrock::error_body(error),
            Op::CohereChat | Op::CohereEmbed => cohere::error_body(error),
            Op::OllamaChat | Op::OllamaEmbed => ollama::error_body(error),
        }
    }

    /// Extra headers on an error (Bedrock's `x-amzn-errortype`, ...).
    pub(crate) fn error_headers(self, error: &ApiError) -> Vec<(HeaderName, HeaderValue)> {
        match self {
            Op::Bedrock(_) => bedrock::error_headers(error),
            _ => Vec::new(),
        }
    }
}
