//! ConverseStream: the binary `application/vnd.amazon.eventstream` framing -> canonical events.
//!
//! Frames are split by `aws-smithy-eventstream` (prelude, headers, CRCs) and may arrive cut
//! anywhere; each `event` frame carries one JSON object named by its `:event-type` header.
//! An `exception` frame ends the stream with its message.

use super::{finish_reason, usage};
use crate::canonical::{FinishReason, StreamEvent};
use crate::providers::native::{DecodeCtx, DecodeError, StreamDecoder};
use aws_smithy_eventstream::frame::{DecodedFrame, MessageFrameDecoder};
use aws_smithy_types::event_stream::Message;
use bytes::BytesMut;
use serde_json::Value;

/// Event-stream messages are at most 16 MiB of payload plus 128 KiB of headers.
const MAX_FRAME: u32 = 16 * 1024 * 1024 + 128 * 1024 + 16;

pub struct ConverseStream {
    frames: MessageFrameDecoder,
    buf: BytesMut,
    ctx: DecodeCtx,
    /// Per content-block index: what the block is.
    blocks: Vec<(u64, Block)>,
    tools: u32,
    /// The decoder took the prelude of an unfinished frame (it keeps it, not `buf`).
    prelude_taken: bool,
    /// An error that followed events decoded in the same `feed`: those go out first (the
    /// transport drops a feed's events when it fails), the error on the next call.
    pending: Option<DecodeError>,
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Block {
    Tool(u32),
    JsonAnswer,
    /// A tool the provider runs itself (Nova code interpreter): not the client's to call.
    ServerTool,
}

fn header<'a>(m: &'a Message, name: &str) -> Option<&'a str> {
    m.headers()
        .iter()
        .find(|h| h.name().as_str() == name)
        .and_then(|h| h.value().as_string().ok())
        .map(|s| s.as_str())
}

impl ConverseStream {
    pub fn new(ctx: DecodeCtx) -> Self {
        Self {
            frames: MessageFrameDecoder::new(),
            buf: BytesMut::new(),
            ctx,
            blocks: Vec::new(),
            tools: 0,
            prelude_taken: false,
            pending: None,
        }
    }

    fn block(&self, index: u64) -> Option<Block> {
        self.blocks
            .iter()
            .rev()
            .find(|(i, _)| *i == index)
            .map(|(_, b)| *b)
    }

    fn on_message(&mut self, m: &Message, out: &mut Vec<StreamEvent>) -> Result<(), DecodeError> {
        match header(m, ":message-type").unwrap_or("event") {
            "event" => {}
            "exception" => {
                let kind = header(m, ":exception-type").unwrap_or("exception");
                let v: Value = serde_json::from_slice(m.payload()).unwrap_or(Value::Null);
                let msg = v["message"]
                    .as_str()
                    .or_else(|| v["Message"].as_str())
                    .map_or_else(
                        || String::from_utf8_lossy(m.payload()).into_owned(),
                        str::to_string,
                    );
                return Err(DecodeError::new(format!(
                    "Bedrock stream error ({kind}): {msg}"
                )));
            }
            other => {
                let code = header(m, ":error-code").unwrap_or(other);
                let msg = header(m, ":error-message").unwrap_or("unknown");
                return Err(DecodeError::new(format!(
                    "Bedrock stream error ({code}): {msg}"
                )));
            }
        }
        let event = header(m, ":event-type").unwrap_or_default();
        let v: Value = serde_json::from_slice(m.payload()).map_err(|e| {
            DecodeError::new(format!("Bedrock stream event {event} is not JSON: {e}"))
        })?;
        self.on_event(event, &v, out);
        Ok(())
    }

    fn on_event(&mut self, event: &str, v: &Value, out: &mut Vec<StreamEvent>) {
        let index = v["contentBlockIndex"].as_u64().unwrap_or(0);
        match event {
            "messageStart" => out.push(StreamEvent::Start {
                id: String::new(),
                model: self.ctx.model.clone(),
            }),
            "contentBlockStart" => {
                let Some(t) = v["start"].get("toolUse") else {
                    return; // toolResult of a server tool, or unknown
                };
                let name = t["name"].as_str().unwrap_or_default();
                let block = if t["type"].as_str() == Some("server_tool_use") {
                    Block::ServerTool
                } else if self.ctx.json_tool.as_deref() == Some(name) {
                    Block::JsonAnswer
                } else {
                    let i = self.tools;
                    self.tools += 1;
                    out.push(StreamEvent::ToolCallStart {
                        index: i,
                        id: t["toolUseId"].as_str().unwrap_or_default().to_string(),
                        name: name.to_string(),
                    });
                    Block::Tool(i)
                };
                self.blocks.push((index, block));
            }
            "contentBlockDelta" => {
                let d = &v["delta"];
                if let Some(t) = d["text"].as_str() {
                    if !t.is_empty() {
                        out.push(StreamEvent::Text(t.to_string()));
                    }
                } else if let Some(r) = d.get("reasoningContent") {
                    if let Some(t) = r["text"].as_str() {
                        out.push(StreamEvent::Thinking(t.to_string()));
                    }
                    if let Some(s) = r["signature"].as_str() {
                        out.push(StreamEvent::ThinkingSignature(s.to_string()));
                    }
                    if let Some(x) = r["redactedContent"].as_str() {
                        out.push(StreamEvent::RedactedThinking(x.to_string()));
                    }
                } else if let Some(input) = d["toolUse"]["input"].as_str() {
                    match self.block(index) {
                        Some(Block::Tool(i)) => out.push(StreamEvent::ToolCallArgs {
                            index: i,
                            delta: input.to_string(),
                        }),
                        Some(Block::JsonAnswer) => out.push(StreamEvent::Text(input.to_string())),
                        _ => {}
                    }
                }
            }
            "messageStop" => {
                let mut f = finish_reason(v["stopReason"].as_str().unwrap_or("end_turn"));
                if f == FinishReason::ToolCalls && self.tools == 0 {
                    f = FinishReason::Stop;
                }
                out.push(StreamEvent::Finish(f));
                if let Some(s) = super::stop_sequence(v) {
                    out.push(StreamEvent::StopSequence(s));
                }
            }
            "metadata" => {
                if let Some(u) = v.get("usage") {
                    out.push(StreamEvent::Usage(usage(u)));
                }
            }
            _ => {} // contentBlockStop, and events added later
        }
    }
}

impl StreamDecoder for ConverseStream {
    fn feed(&mut self, bytes: &[u8], out: &mut Vec<StreamEvent>) -> Result<(), DecodeError> {
        if let Some(e) = self.pending.take() {
            return Err(e);
        }
        let before = out.len();
        match self.decode(bytes, out) {
            Err(e) if out.len() > before => {
                self.pending = Some(e);
                Ok(())
            }
            r => r,
        }
    }

    fn finish(&mut self, _out: &mut Vec<StreamEvent>) -> Result<(), DecodeError> {
        if let Some(e) = self.pending.take() {
            return Err(e);
        }
        if !self.prelude_taken && self.buf.is_empty() {
            Ok(())
        } else {
            Err(DecodeError::new(format!(
                "Bedrock event stream ended inside a frame ({} bytes left)",
                self.buf.len()
            )))
        }
    }
}

impl ConverseStream {
    fn decode(&mut self, bytes: &[u8], out: &mut Vec<StreamEvent>) -> Result<(), DecodeError> {
        self.buf.extend_from_slice(bytes);
        loop {
            // The decoder waits for a frame's whole declared length before it checks any
            // CRC: bound the length first so a forged prelude cannot make us buffer gigabytes.
            if !self.prelude_taken && self.buf.len() >= 4 {
                let len = u32::from_be_bytes([self.buf[0], self.buf[1], self.buf[2], self.buf[3]]);
                if !(16..=MAX_FRAME).contains(&len) {
                    return Err(DecodeError::new(format!(
                        "Bedrock event stream is malformed: a frame of {len} bytes"
                    )));
                }
            }
            let before = self.buf.len();
            match self.frames.decode_frame(&mut self.buf) {
                Ok(DecodedFrame::Complete(m)) => {
                    self.prelude_taken = false;
                    self.on_message(&m, out)?;
                }
                Ok(DecodedFrame::Incomplete) => {
                    self.prelude_taken |= self.buf.len() < before;
                    return Ok(());
                }
                Err(e) => {
                    return Err(DecodeError::new(format!(
                        "Bedrock event stream is malformed: {e}"
                    )))
                }
            }
        }
    }
}
