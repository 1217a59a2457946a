//! OpenAI embeddings <-> InvokeModel for the embedding models on Bedrock: Amazon Titan
//! (`amazon.titan-embed-*`, one text per request) and Cohere (`cohere.embed-*`, a batch).

use super::model_path;
use crate::canonical::openai::RequestError;
use crate::providers::native::{DecodeCtx, DecodeError, Encoded};
use serde_json::{json, Value};

fn is_cohere(model: &str) -> bool {
    model.to_ascii_lowercase().contains("cohere.")
}

pub fn encode(body: &[u8]) -> Result<Encoded, RequestError> {
    let v: Value = serde_json::from_slice(body)
        .map_err(|e| RequestError::new(format!("the body is not JSON: {e}"), None))?;
    let model = v["model"]
        .as_str()
        .ok_or_else(|| RequestError::new("model is required", Some("model")))?
        .to_string();
    let texts: Vec<String> = match &v["input"] {
        Value::String(s) => vec![s.clone()],
        Value::Array(a) if a.iter().all(Value::is_string) => a
            .iter()
            .filter_map(Value::as_str)
            .map(str::to_string)
            .collect(),
        _ => {
            return Err(RequestError::new(
                "Bedrock embeddings take input as a string or a list of strings (not tokens)",
                Some("input"),
            ))
        }
    };
    if texts.is_empty() {
        return Err(RequestError::new("input is empty", Some("input")));
    }
    let mut dropped = Vec::new();
    if v["encoding_format"].as_str().is_some_and(|f| f != "float") {
        dropped.push("encoding_format".to_string());
    }
    if v.get("user").is_some() {
        dropped.push("user".to_string());
    }
    let native = if is_cohere(&model) {
        if v.get("dimensions").is_some() {
            dropped.push("dimensions".to_string());
        }
        json!({"texts": texts, "input_type": "search_document"})
    } else {
        if texts.len() > 1 {
            return Err(RequestError::new(
                format!(
                    "{model} embeds one text per request: send {} requests, or use a Cohere embedding model for batches",
                    texts.len()
                ),
                Some("input"),
            ));
        }
        let mut b = json!({"inputText": texts[0]});
        if let Some(d) = v["dimensions"].as_u64() {
            b["dimensions"] = json!(d);
        }
        b
    };
    Ok(Encoded {
        path: model_path(&model, "invoke"),
        body: serde_json::to_vec(&native).unwrap_or_default(),
        headers: vec![(
            http::header::ACCEPT,
            http::HeaderValue::from_static("application/json"),
        )],
        dropped,
        refused: Vec::new(),
        ctx: DecodeCtx {
            model,
            json_tool: None,
        },
    })
}

pub fn decode(body: &[u8], ctx: &DecodeCtx) -> Result<Vec<u8>, DecodeError> {
    let v: Value = serde_json::from_slice(body)
        .map_err(|e| DecodeError::new(format!("Bedrock embeddings answer is not JSON: {e}")))?;
    let (vectors, tokens): (Vec<Value>, u64) = if let Some(e) = v.get("embedding") {
        (
            vec![e.clone()],
            v["inputTextTokenCount"].as_u64().unwrap_or(0),
        )
    } else {
        // Cohere: `embeddings` is a list, or `{"float": [...]}` when types were asked for.
        let list = match &v["embeddings"] {
            Value::Array(a) => a.clone(),
            Value::Object(o) => o
                .get("float")
                .and_then(Value::as_array)
                .cloned()
                .unwrap_or_default(),
            _ => {
                return Err(DecodeError::new(
                    "Bedrock embeddings answer has neither `embedding` nor `embeddings`",
                ))
            }
        };
        (list, 0)
    };
    let data: Vec<Value> = vectors
        .into_iter()
        .enumerate()
        .map(|(i, e)| json!({"object": "embedding", "index": i, "embedding": e}))
        .collect();
    let out = json!({
        "object": "list",
        "data": data,
        "model": ctx.model,
        "usage": {"prompt_tokens": tokens, "total_tokens": tokens},
    });
    Ok(out.to_string().into_bytes())
}
