//! The OpenAI wire format: shared payload and error shapes, models; chat and embeddings below.

mod chat;
mod embeddings;
mod stream;

pub(crate) use chat::{answer_question, chat, Answer, Content, TOOL_ARGUMENTS};
pub(crate) use embeddings::{embeddings, text_tokens, text_vector, vector};
pub(crate) use stream::pieces;

use bytes::Bytes;
use http::StatusCode;
use serde::Serialize;

use crate::ApiError;

pub(crate) const MODEL_IDS: [&str; 3] = ["mock-1", "mock-2", "mock-embed"];
/// A fixed date, so model listings are byte-for-byte stable.
const MODELS_CREATED: u64 = 1_700_000_000;

/// A successful answer, before delivery faults and pacing are applied.
pub(crate) enum Payload {
    Json(Bytes),
    Stream(Events),
}

/// Stream events back to back in one buffer, with the length of each.
#[derive(Default)]
pub(crate) struct Events {
    pub(crate) buf: Vec<u8>,
    pub(crate) lens: Vec<usize>,
    /// `None`: `text/event-stream`.
    pub(crate) content_type: Option<http::HeaderValue>,
}

impl Events {
    pub(crate) fn push(
        &mut self,
        write: impl FnOnce(&mut Vec<u8>) -> serde_json::Result<()>,
    ) -> serde_json::Result<()> {
        let start = self.buf.len();
        write(&mut self.buf)?;
        self.lens.push(self.buf.len() - start);
        Ok(())
    }
}

/// Encoding our own response types cannot fail short of a bug; request parse errors are
/// mapped with [`ApiError::bad_json`] where they happen, so they get a 400.
impl From<serde_json::Error> for ApiError {
    fn from(error: serde_json::Error) -> Self {
        ApiError::internal(format!("could not encode the response: {error}"))
    }
}

impl ApiError {
    pub(crate) fn bad_json(error: serde_json::Error) -> Self {
        ApiError::invalid(
            format!("We could not parse the JSON body of your request: {error}"),
            None,
        )
    }
}

#[derive(Serialize)]
struct ErrorEnvelope<'a> {
    error: ErrorDetail<'a>,
}

#[derive(Serialize)]
struct ErrorDetail<'a> {
    message: &'a str,
    #[serde(rename = "type")]
    kind: &'a str,
    param: Option<&'a str>,
    code: Option<&'a str>,
}

/// `{"error":{"message","type","param","code"}}`
pub(crate) fn error_body(error: &ApiError) -> Bytes {
    let envelope = ErrorEnvelope {
        error: ErrorDetail {
            message: &error.message,
            kind: error.kind,
            param: error.param,
            code: error.code,
        },
    };
    serde_json::to_vec(&envelope).map(Bytes::from).unwrap_or_else(|_| {
        Bytes::from_static(br#"{"error":{"message":"mock error","type":"server_error","param":null,"code":null}}"#)
    })
}

#[derive(Serialize)]
struct ModelObject<'a> {
    id: &'a str,
    object: &'static str,
    created: u64,
    owned_by: &'static str,
}

impl<'a> ModelObject<'a> {
    fn new(id: &'a str) -> Self {
        Self {
            id,
            object: "model",
            created: MODELS_CREATED,
            owned_by: "sluice-mock",
        }
    }
}

#[derive(Serialize)]
struct ModelList<'a> {
    object: &'static str,
    data: Vec<ModelObject<'a>>,
}

/// `GET /v1/models`, rendered once at start: it never changes.
pub(crate) fn models_body() -> Bytes {
    let list = ModelList {
        object: "list",
        data: MODEL_IDS.iter().map(|id| ModelObject::new(id)).collect(),
    };
    serde_json::to_vec(&list)
        .map(Bytes::from)
        .unwrap_or_default()
}

/// `GET /v1/models/{id}`
pub(crate) fn model(id: &str) -> Result<Payload, ApiError> {
    if !MODEL_IDS.contains(&id) {
        return Err(ApiError {
            status: StatusCode::NOT_FOUND,
            code: Some("model_not_found"),
            ..ApiError::invalid(format!("The model '{id}' does not exist"), Some("model"))
        });
    }
    Ok(Payload::Json(
        serde_json::to_vec(&ModelObject::new(id)).map(Bytes::from)?,
    ))
}
