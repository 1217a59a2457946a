//! Server-sent events for chat completions: chunk framing and splitting a reply into pieces.

use super::chat::{Answer, Content, TOOL_ARGUMENTS};
use super::Events;

fn push_u64(buf: &mut Vec<u8>, n: u64) {
    let mut digits = [0u8; 20];
    let mut at = digits.len();
    let mut rest = n;
    loop {
        at -= 1;
        digits[at] = b'0' + (rest % 10) as u8;
        rest /= 10;
        if rest == 0 {
            break;
        }
    }
    buf.extend_from_slice(&digits[at..]);
}

/// Splits `text` into exactly `count` pieces of (nearly) equal length in characters, whose
/// concatenation is `text`. Pieces are empty when there are more pieces than characters.
pub(crate) fn pieces(text: &str, count: usize) -> impl Iterator<Item = &str> {
    let count = count.max(1);
    let total = text.chars().count();
    let mut chars = text.char_indices();
    let (mut start, mut taken) = (0, 0);
    (0..count).map(move |i| {
        let want = (i + 1) * total / count;
        let mut end = start;
        while taken < want {
            let Some((at, ch)) = chars.next() else { break };
            end = at + ch.len_utf8();
            taken += 1;
        }
        let piece = text.get(start..end).unwrap_or("");
        start = end;
        piece
    })
}

const CHUNK_DELTA: &[u8] = b"{\"index\":0,\"delta\":";
const CHUNK_CONTINUES: &[u8] = b",\"logprobs\":null,\"finish_reason\":null}],\"usage\":null}\n\n";

fn push_chunk(
    events: &mut Events,
    prefix: &[u8],
    delta: impl FnOnce(&mut Vec<u8>) -> serde_json::Result<()>,
) -> serde_json::Result<()> {
    events.push(|buf| {
        buf.extend_from_slice(prefix);
        buf.extend_from_slice(CHUNK_DELTA);
        delta(buf)?;
        buf.extend_from_slice(CHUNK_CONTINUES);
        Ok(())
    })
}

/// Role chunk, content (or tool-argument) chunks, finish chunk, optional usage chunk, `[DONE]`.
/// The per-request part of every chunk (id, created, model) is rendered once as `prefix`.
pub(super) fn stream_events(
    number: u64,
    created: u64,
    model: &str,
    answer: &Answer,
    chunks: usize,
    include_usage: bool,
) -> serde_json::Result<Events> {
    let mut prefix = Vec::with_capacity(160 + model.len());
    prefix.extend_from_slice(b"data: {\"id\":\"chatcmpl-mock-");
    push_u64(&mut prefix, number);
    prefix.extend_from_slice(b"\",\"object\":\"chat.completion.chunk\",\"created\":");
    push_u64(&mut prefix, created);
    prefix.extend_from_slice(b",\"model\":");
    serde_json::to_writer(&mut prefix, model)?;
    prefix.extend_from_slice(b",\"system_fingerprint\":\"fp_mock\",\"choices\":[");

    let mut events = Events::default();
    events.buf.reserve((prefix.len() + 96) * (chunks + 4));
    events.lens.reserve(chunks + 4);
    let finish_reason: &[u8] = match &answer.content {
        Content::Text(text) => {
            push_chunk(&mut events, &prefix, |buf| {
                buf.extend_from_slice(b"{\"role\":\"assistant\",\"content\":\"\"}");
                Ok(())
            })?;
            for piece in pieces(text, chunks) {
                push_chunk(&mut events, &prefix, |buf| {
                    buf.extend_from_slice(b"{\"content\":");
                    serde_json::to_writer(&mut *buf, piece)?;
                    buf.push(b'}');
                    Ok(())
                })?;
            }
            b"\"stop\""
        }
        Content::ToolCall { name } => {
            push_chunk(&mut events, &prefix, |buf| {
                buf.extend_from_slice(b"{\"role\":\"assistant\",\"content\":null,\"tool_calls\":[{\"index\":0,\"id\":\"call_mock_");
                push_u64(buf, number);
                buf.extend_from_slice(b"\",\"type\":\"function\",\"function\":{\"name\":");
                serde_json::to_writer(&mut *buf, name)?;
                buf.extend_from_slice(b",\"arguments\":\"\"}}]}");
                Ok(())
            })?;
            for piece in pieces(TOOL_ARGUMENTS, chunks.clamp(2, TOOL_ARGUMENTS.len())) {
                push_chunk(&mut events, &prefix, |buf| {
                    buf.extend_from_slice(
                        b"{\"tool_calls\":[{\"index\":0,\"function\":{\"arguments\":",
                    );
                    serde_json::to_writer(&mut *buf, piece)?;
                    buf.extend_from_slice(b"}}]}");
                    Ok(())
                })?;
            }
            b"\"tool_calls\""
        }
    };
    events.push(|buf| {
        buf.extend_from_slice(&prefix);
        buf.extend_from_slice(b"{\"index\":0,\"delta\":{},\"logprobs\":null,\"finish_reason\":");
        buf.extend_from_slice(finish_reason);
        buf.extend_from_slice(b"}],\"usage\":null}\n\n");
        Ok(())
    })?;
    if include_usage {
        events.push(|buf| {
            buf.extend_from_slice(&prefix);
            buf.extend_from_slice(b"],\"usage\":");
            serde_json::to_writer(&mut *buf, &answer.usage())?;
            buf.extend_from_slice(b"}\n\n");
            Ok(())
        })?;
    }
    events.push(|buf| {
        buf.extend_from_slice(b"data: [DONE]\n\n");
        Ok(())
    })?;
    Ok(events)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;

    #[test]
    fn pieces_cover_the_text() {
        assert_eq!(pieces("abcdef", 3).collect::<Vec<_>>(), ["ab", "cd", "ef"]);
        assert_eq!(pieces("ab", 4).collect::<String>(), "ab");
        assert_eq!(pieces("ab", 4).count(), 4);
        assert_eq!(pieces("日本語", 0).collect::<Vec<_>>(), ["日本語"]);
    }

    #[test]
    fn numbers_render_in_decimal() {
        for n in [0, 7, 10, 1_234_567_890, u64::MAX] {
            let mut buf = Vec::new();
            push_u64(&mut buf, n);
            assert_eq!(String::from_utf8(buf).unwrap(), n.to_string());
        }
    }
}
