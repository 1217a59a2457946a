//! The built-in `mock` provider: sluice-mock's handler called in-process, no socket.

use super::{Endpoint, UpstreamBody, UpstreamError, UpstreamErrorKind, UpstreamResponse};
use bytes::Bytes;
use std::sync::Arc;

pub async fn send(
    mock: &sluice_mock::Mock,
    provider: &Arc<str>,
    endpoint: Endpoint,
    body: Bytes,
    request_id: &str,
) -> Result<UpstreamResponse, UpstreamError> {
    let path = match endpoint {
        Endpoint::ChatCompletions => "/v1/chat/completions",
        Endpoint::Embeddings => "/v1/embeddings",
        Endpoint::AnthropicMessages => "/v1/messages",
        Endpoint::Responses => "/v1/responses",
    };
    let mut builder = http::Request::builder()
        .method(http::Method::POST)
        .uri(path)
        .header(http::header::CONTENT_TYPE, "application/json");
    if let Ok(v) = http::HeaderValue::from_str(request_id) {
        builder = builder.header("x-request-id", v);
    }
    let req = builder.body(body).map_err(|e| {
        UpstreamError::new(provider, path, UpstreamErrorKind::Protocol(e.to_string()))
    })?;
    match mock.handle(req).await {
        sluice_mock::MockReply::Response(resp) => {
            let (parts, body) = resp.into_parts();
            Ok(UpstreamResponse {
                status: parts.status,
                headers: parts.headers,
                body: UpstreamBody::Mock(body),
            })
        }
        sluice_mock::MockReply::Reset => Err(UpstreamError::new(
            provider,
            format!("built-in mock {}", endpoint.path()),
            UpstreamErrorKind::Protocol("connection reset".to_string()),
        )),
    }
}
