//! OpenAI-compatible vendors that speak thinking as `content` parts (Mistral, the `mistral`
//! preset): their answers said OpenAI's way, and thinking history sent their way.
//!
//! Mistral's reasoning models (Magistral) answer with a list-shaped `content`:
//! `[{"type":"thinking","thinking":[{"type":"text","text":..}]}, {"type":"text","text":..}]`,
//! and take thinking history the same way: Mistral's API spec gives an assistant message's
//! `content` as a string or a list of chunks, `ThinkChunk`
//! (`{"type":"thinking","thinking":[TextChunk, ...]}`) among them (the OpenAPI document,
//! as generated in <https://docs.rs/crate/mistral-openapi-client/latest/source/src/models/think_chunk.rs>;
//! the reasoning guide, <https://docs.mistral.ai/fr/studio-api/conversations/reasoning>).
//! Only bodies that hold such a list (or thinking history) are parsed; every other body is
//! passed on byte for byte, and other OpenAI-compatible vendors never come here.

use super::{BodyError, UpstreamBody};
use crate::canonical::openai::{
    flatten_listed_content, has_listed_content, thinking_as_content_parts,
};
use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};
use serde_json::Value;
use std::pin::Pin;
use std::task::{Context, Poll};

/// A chat-completions request body with assistant thinking (`reasoning_content`,
/// `thinking_blocks`) moved into `thinking` content parts; the body itself when it has none.
pub fn request(body: Bytes) -> Bytes {
    let has = |k: &[u8]| body.windows(k.len()).any(|w| w == k);
    if !has(b"\"reasoning_content\"") && !has(b"\"thinking_blocks\"") {
        return body;
    }
    let Ok(mut v) = serde_json::from_slice::<Value>(&body) else {
        return body;
    };
    if !thinking_as_content_parts(&mut v) {
        return body;
    }
    serde_json::to_vec(&v).map_or(body, Bytes::from)
}

/// An answer body with list-shaped `content` said OpenAI's way
/// ([`flatten_listed_content`]): a JSON answer once whole, a stream event by event.
pub struct ListedContentBody {
    inner: UpstreamBody,
    stream: bool,
    /// A stream: bytes after the last complete event. JSON: the answer so far.
    buf: Vec<u8>,
    done: bool,
}

impl ListedContentBody {
    pub fn new(inner: UpstreamBody, stream: bool) -> Self {
        Self {
            inner,
            stream,
            buf: Vec::new(),
            done: false,
        }
    }
}

impl ListedContentBody {
    /// Takes a chunk of the answer; a stream's complete events come back at once (a partial
    /// one waits for its end), a JSON answer waits whole.
    fn push(&mut self, data: &[u8]) -> Option<Bytes> {
        self.buf.extend_from_slice(data);
        if !self.stream {
            return None;
        }
        let end = last_event_end(&self.buf)?;
        let out = stream_events(&self.buf[..end]);
        self.buf.drain(..end);
        Some(out)
    }

    /// What is left when the answer ends.
    fn end(&mut self) -> Option<Bytes> {
        let rest = std::mem::take(&mut self.buf);
        if rest.is_empty() {
            None
        } else if self.stream {
            Some(stream_events(&rest))
        } else {
            Some(json_answer(rest))
        }
    }
}

/// `chunks` of an answer through the adapter, as they would arrive: what the client gets
/// (for tests and the fuzz targets).
pub(crate) fn translate_chunks<'a>(
    chunks: impl IntoIterator<Item = &'a [u8]>,
    stream: bool,
) -> Vec<u8> {
    let mut body = ListedContentBody::new(UpstreamBody::Full(None), stream);
    let mut out = Vec::new();
    for c in chunks {
        out.extend(body.push(c).unwrap_or_default());
    }
    out.extend(body.end().unwrap_or_default());
    out
}

/// A whole `chat.completion` with every choice's message flattened.
pub fn json_answer(body: Vec<u8>) -> Bytes {
    if !has_listed_content(&body) {
        return Bytes::from(body);
    }
    let Ok(mut v) = serde_json::from_slice::<Value>(&body) else {
        return Bytes::from(body);
    };
    let mut changed = false;
    for c in v["choices"].as_array_mut().into_iter().flatten() {
        changed |= flatten_listed_content(&mut c["message"], false);
    }
    if !changed {
        return Bytes::from(body);
    }
    serde_json::to_vec(&v).map_or_else(|_| Bytes::from(body), Bytes::from)
}

/// Complete SSE events (`events` ends at an event boundary) with each `data:` chunk's deltas
/// flattened; other lines and events unchanged.
pub fn stream_events(events: &[u8]) -> Bytes {
    if !has_listed_content(events) {
        return Bytes::copy_from_slice(events);
    }
    let mut out = Vec::with_capacity(events.len() + 64);
    for line in events.split_inclusive(|&b| b == b'\n') {
        let data = line
            .strip_prefix(b"data:")
            .map(<[u8]>::trim_ascii)
            .filter(|d| has_listed_content(d));
        let rewritten = data.and_then(|d| {
            let mut v: Value = serde_json::from_slice(d).ok()?;
            let mut changed = false;
            for c in v["choices"].as_array_mut().into_iter().flatten() {
                changed |= flatten_listed_content(&mut c["delta"], true);
            }
            changed.then(|| serde_json::to_vec(&v).ok()).flatten()
        });
        match rewritten {
            Some(json) => {
                out.extend_from_slice(b"data: ");
                out.extend_from_slice(&json);
                out.push(b'\n');
            }
            None => out.extend_from_slice(line),
        }
    }
    Bytes::from(out)
}

/// Where the last complete SSE event in `buf` ends (after its blank line), if any.
fn last_event_end(buf: &[u8]) -> Option<usize> {
    let lf = buf.windows(2).rposition(|w| w == b"\n\n").map(|i| i + 2);
    let crlf = buf
        .windows(4)
        .rposition(|w| w == b"\r\n\r\n")
        .map(|i| i + 4);
    lf.max(crlf)
}

impl Body for ListedContentBody {
    type Data = Bytes;
    type Error = BodyError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BodyError>>> {
        let this = self.get_mut();
        loop {
            if this.done {
                return Poll::Ready(None);
            }
            match Pin::new(&mut this.inner).poll_frame(cx) {
                Poll::Pending => return Poll::Pending,
                Poll::Ready(Some(Err(e))) => {
                    this.done = true;
                    return Poll::Ready(Some(Err(e)));
                }
                Poll::Ready(Some(Ok(frame))) => {
                    let Ok(data) = frame.into_data() else {
                        continue;
                    };
                    if let Some(out) = this.push(&data) {
                        return Poll::Ready(Some(Ok(Frame::data(out))));
                    }
                }
                Poll::Ready(None) => {
                    this.done = true;
                    return Poll::Ready(this.end().map(|b| Ok(Frame::data(b))));
                }
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        self.done
    }

    fn size_hint(&self) -> SizeHint {
        SizeHint::default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    const THINKING: &str = r#"{"type":"thinking","thinking":[{"type":"text","text":"Look "},{"type":"text","text":"both ways."}]}"#;

    #[test]
    fn a_listed_json_answer_becomes_openai_shaped() {
        let body = format!(
            r#"{{"id":"x","choices":[{{"index":0,"message":{{"role":"assistant","content":
            [{THINKING}, {{"type":"text","text":"Cross "}}, {{"type":"text","text":"now."}}]}},
            "finish_reason":"stop"}}],"usage":{{"prompt_tokens":3,"completion_tokens":5}}}}"#
        );
        let v: Value = serde_json::from_slice(&json_answer(body.into_bytes())).unwrap();
        let m = &v["choices"][0]["message"];
        assert_eq!(m["content"], "Cross now.");
        assert_eq!(m["reasoning_content"], "Look both ways.");
        assert_eq!(
            m["thinking_blocks"],
            json!([{"type": "thinking", "thinking": "Look both ways."}])
        );
        assert_eq!(v["usage"]["completion_tokens"], 5);
    }

    #[test]
    fn string_content_is_passed_on_byte_for_byte() {
        let body = br#"{"choices":[{"message":{"content" : "hi [1]"}}]}"#.to_vec();
        assert_eq!(&json_answer(body.clone())[..], &body[..]);
        let events = b"data: {\"choices\":[{\"delta\":{\"content\":\"[x]\"}}]}\n\n";
        assert_eq!(&stream_events(events)[..], &events[..]);
        let req = Bytes::from_static(br#"{"messages":[{"role":"user","content":"hi"}]}"#);
        assert_eq!(request(req.clone()), req);
    }

    #[test]
    fn a_stream_split_anywhere_yields_openai_deltas() {
        let sse = format!(
            "data: {{\"choices\":[{{\"index\":0,\"delta\":{{\"role\":\"assistant\",\"content\":\"\"}}}}]}}\n\n\
             data: {{\"choices\":[{{\"index\":0,\"delta\":{{\"content\":[{THINKING}]}}}}]}}\n\n\
             data: {{\"choices\":[{{\"index\":0,\"delta\":{{\"content\":[{{\"type\":\"text\",\"text\":\"Go.\"}}]}}}}]}}\n\n\
             data: [DONE]\n\n"
        );
        for split in [1, 7, 40, 150, sse.len() - 3] {
            let (a, b) = sse.as_bytes().split_at(split);
            let out = String::from_utf8(translate_chunks([a, b], true)).unwrap();
            let deltas: Vec<Value> = out
                .split("\n\n")
                .filter_map(|e| e.strip_prefix("data: "))
                .filter(|d| *d != "[DONE]")
                .map(|d| serde_json::from_str::<Value>(d).unwrap()["choices"][0]["delta"].clone())
                .collect();
            assert_eq!(deltas.len(), 3, "split at {split}: {out}");
            assert_eq!(deltas[1]["reasoning_content"], "Look both ways.");
            assert_eq!(deltas[1]["thinking_blocks"][0]["index"], 0);
            assert!(deltas[1]["content"].is_null());
            assert_eq!(deltas[2]["content"], "Go.");
            assert!(out.ends_with("data: [DONE]\n\n"));
        }
    }

    #[test]
    fn thinking_history_goes_as_content_parts() {
        let req = Bytes::from(
            json!({"model": "m", "messages": [
                {"role": "user", "content": "How?"},
                {"role": "assistant", "content": "Carefully.", "reasoning_content": "Hmm.",
                 "thinking_blocks": [{"type": "thinking", "thinking": "Hmm.", "signature": "sig"}]},
                {"role": "user", "content": "And a river?"}
            ]})
            .to_string(),
        );
        let v: Value = serde_json::from_slice(&request(req)).unwrap();
        assert_eq!(
            v["messages"][1],
            json!({"role": "assistant", "content": [
                {"type": "thinking", "thinking": [{"type": "text", "text": "Hmm."}]},
                {"type": "text", "text": "Carefully."}
            ]})
        );
        assert_eq!(v["messages"][0], json!({"role": "user", "content": "How?"}));
    }
}
