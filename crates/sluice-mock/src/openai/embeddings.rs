//! OpenAI embeddings: deterministic unit vectors. A text's vector is the normalised sum of
//! one pseudo-random unit vector per word and per pair of adjacent words (lowercased,
//! punctuation dropped), so texts that share most of their words point the same way (a
//! rewording scores high, an unrelated text near 0) — meaningful enough for the semantic
//! cache's tests, and the same on every run. A token list gets one vector from its hash.

use std::borrow::Cow;

use bytes::Bytes;
use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;

use super::Payload;
use crate::{ApiError, MAX_EMBEDDING_DIMS};

#[derive(Deserialize)]
struct EmbeddingRequest<'a> {
    #[serde(borrow)]
    model: Option<Cow<'a, str>>,
    #[serde(borrow)]
    input: Option<&'a RawValue>,
    dimensions: Option<u64>,
    #[serde(borrow)]
    encoding_format: Option<Cow<'a, str>>,
}

#[derive(Deserialize)]
#[serde(untagged)]
enum Input<'a> {
    Text(#[serde(borrow)] Cow<'a, str>),
    Texts(#[serde(borrow)] Vec<Cow<'a, str>>),
    Tokens(Vec<u32>),
    TokenLists(Vec<Vec<u32>>),
}

/// One item to embed.
#[derive(Clone, Copy)]
enum Item<'a> {
    Text(&'a str),
    Tokens(&'a [u32]),
}

impl Item<'_> {
    /// FNV-1a over the item, tagged so a text and a token list never share a seed by accident.
    fn seed(self) -> u64 {
        const PRIME: u64 = 0x0000_0100_0000_01b3;
        let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
        let mut eat = |byte: u8| hash = (hash ^ u64::from(byte)).wrapping_mul(PRIME);
        match self {
            Item::Text(text) => {
                eat(b't');
                text.bytes().for_each(&mut eat);
            }
            Item::Tokens(tokens) => {
                eat(b'#');
                tokens
                    .iter()
                    .flat_map(|t| t.to_le_bytes())
                    .for_each(&mut eat);
            }
        }
        hash
    }

    fn tokens(self) -> u64 {
        match self {
            Item::Text(text) => text.chars().count().div_ceil(4) as u64,
            Item::Tokens(tokens) => tokens.len() as u64,
        }
    }
}

/// splitmix64: a tiny, well-mixed generator; deterministic across platforms and Rust versions.
fn splitmix(state: &mut u64) -> u64 {
    *state = state.wrapping_add(0x9e37_79b9_7f4a_7c15);
    let mut z = *state;
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// A unit-length vector that depends only on the item and the length.
pub(crate) fn vector(seed: u64, dims: usize) -> Vec<f32> {
    let mut state = seed;
    let mut values: Vec<f32> = (0..dims)
        .map(|_| {
            #[allow(clippy::cast_precision_loss)]
            let unit = (splitmix(&mut state) >> 40) as f32 / (1u64 << 24) as f32;
            unit * 2.0 - 1.0
        })
        .collect();
    let norm = values.iter().map(|v| v * v).sum::<f32>().sqrt();
    if norm > 0.0 {
        values.iter_mut().for_each(|v| *v /= norm);
    }
    values
}

/// The vector every wire format gives for one text input (native formats reuse it): a
/// hashed bag of words and word pairs.
pub(crate) fn text_vector(text: &str, dims: usize) -> Vec<f32> {
    let words: Vec<String> = text
        .split(|c: char| !c.is_alphanumeric() && c != '\'')
        .map(|w| w.trim_matches('\'').to_lowercase())
        .filter(|w| !w.is_empty())
        .collect();
    if words.is_empty() {
        return vector(Item::Text(text).seed(), dims);
    }
    let mut sum = vec![0f32; dims];
    let mut add = |token: &str, weight: f32| {
        for (s, v) in sum.iter_mut().zip(vector(Item::Text(token).seed(), dims)) {
            *s += weight * v;
        }
    };
    for w in &words {
        add(w, 1.0);
    }
    for pair in words.windows(2) {
        add(&format!("{} {}", pair[0], pair[1]), 0.5);
    }
    let norm = sum.iter().map(|v| v * v).sum::<f32>().sqrt();
    if norm > 0.0 {
        sum.iter_mut().for_each(|v| *v /= norm);
    }
    sum
}

/// Token count every wire format reports for one text input.
pub(crate) fn text_tokens(text: &str) -> u64 {
    Item::Text(text).tokens()
}

/// Standard base64 with padding, as OpenAI uses for `encoding_format: "base64"`.
pub(crate) fn base64(bytes: &[u8]) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::with_capacity(bytes.len().div_ceil(3) * 4);
    for group in bytes.chunks(3) {
        let b = [
            group[0],
            group.get(1).copied().unwrap_or(0),
            group.get(2).copied().unwrap_or(0),
        ];
        let n = u32::from(b[0]) << 16 | u32::from(b[1]) << 8 | u32::from(b[2]);
        for (i, shift) in [18, 12, 6, 0].into_iter().enumerate() {
            if i <= group.len() {
                out.push(char::from(ALPHABET[(n >> shift) as usize & 63]));
            } else {
                out.push('=');
            }
        }
    }
    out
}

#[derive(Serialize)]
#[serde(untagged)]
enum Embedding {
    Floats(Vec<f32>),
    Base64(String),
}

#[derive(Serialize)]
struct EmbeddingObject {
    object: &'static str,
    index: usize,
    embedding: Embedding,
}

#[derive(Serialize)]
struct EmbeddingUsage {
    prompt_tokens: u64,
    total_tokens: u64,
}

#[derive(Serialize)]
struct EmbeddingList<'a> {
    object: &'static str,
    data: Vec<EmbeddingObject>,
    model: &'a str,
    usage: EmbeddingUsage,
}

/// `POST /v1/embeddings`
pub(crate) fn embeddings(body: &[u8], default_dims: usize) -> Result<Payload, ApiError> {
    let request: EmbeddingRequest<'_> = serde_json::from_slice(body).map_err(ApiError::bad_json)?;
    let model = request
        .model
        .as_deref()
        .ok_or_else(|| ApiError::invalid("Missing required parameter: 'model'.", Some("model")))?;
    let input = request
        .input
        .ok_or_else(|| ApiError::invalid("Missing required parameter: 'input'.", Some("input")))?;
    let input: Input<'_> = serde_json::from_str(input.get()).map_err(|_| {
        ApiError::invalid(
            "'input' must be a string, an array of strings, an array of integers or an array of integer arrays.",
            Some("input"),
        )
    })?;
    let items: Vec<Item<'_>> = match &input {
        Input::Text(text) => vec![Item::Text(text)],
        Input::Texts(texts) => texts.iter().map(|t| Item::Text(t)).collect(),
        Input::Tokens(tokens) => vec![Item::Tokens(tokens)],
        Input::TokenLists(lists) => lists.iter().map(|t| Item::Tokens(t)).collect(),
    };
    if items.is_empty() {
        return Err(ApiError::invalid(
            "'input' must not be empty.",
            Some("input"),
        ));
    }
    let dims = match request.dimensions {
        None => default_dims.clamp(1, MAX_EMBEDDING_DIMS),
        Some(d) => match usize::try_from(d) {
            Ok(d) if (1..=MAX_EMBEDDING_DIMS).contains(&d) => d,
            _ => {
                let message = format!("'dimensions' must be between 1 and {MAX_EMBEDDING_DIMS}.");
                return Err(ApiError::invalid(message, Some("dimensions")));
            }
        },
    };
    let base64_output = match request.encoding_format.as_deref() {
        None | Some("float") => false,
        Some("base64") => true,
        Some(_) => {
            return Err(ApiError::invalid(
                "'encoding_format' must be \"float\" or \"base64\".",
                Some("encoding_format"),
            ))
        }
    };
    let prompt_tokens = items.iter().map(|item| item.tokens()).sum();
    let data = items
        .iter()
        .enumerate()
        .map(|(index, item)| {
            let values = match item {
                Item::Text(t) => text_vector(t, dims),
                Item::Tokens(_) => vector(item.seed(), dims),
            };
            let embedding = if base64_output {
                let bytes: Vec<u8> = values.iter().flat_map(|v| v.to_le_bytes()).collect();
                Embedding::Base64(base64(&bytes))
            } else {
                Embedding::Floats(values)
            };
            EmbeddingObject {
                object: "embedding",
                index,
                embedding,
            }
        })
        .collect();
    let list = EmbeddingList {
        object: "list",
        data,
        model,
        usage: EmbeddingUsage {
            prompt_tokens,
            total_tokens: prompt_tokens,
        },
    };
    Ok(Payload::Json(serde_json::to_vec(&list).map(Bytes::from)?))
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;
    use serde_json::Value;

    fn embed(body: &str) -> Result<Value, ApiError> {
        match embeddings(body.as_bytes(), 16)? {
            Payload::Json(bytes) => Ok(serde_json::from_slice(&bytes).unwrap()),
            Payload::Stream(_) => panic!("embeddings never stream"),
        }
    }

    fn floats(value: &Value) -> Vec<f32> {
        value
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v.as_f64().unwrap() as f32)
            .collect()
    }

    #[test]
    fn base64_matches_known_vectors() {
        assert_eq!(base64(b""), "");
        assert_eq!(base64(b"f"), "Zg==");
        assert_eq!(base64(b"fo"), "Zm8=");
        assert_eq!(base64(b"foo"), "Zm9v");
        assert_eq!(base64(b"foobar"), "Zm9vYmFy");
        assert_eq!(base64(&1.0f32.to_le_bytes()), "AACAPw==");
    }

    #[test]
    fn vectors_are_deterministic_unit_length() {
        let a = vector(Item::Text("hello").seed(), 64);
        assert_eq!(a, vector(Item::Text("hello").seed(), 64));
        assert_ne!(a, vector(Item::Text("hullo").seed(), 64));
        let norm: f32 = a.iter().map(|v| v * v).sum::<f32>().sqrt();
        assert!((norm - 1.0).abs() < 1e-5, "norm {norm}");
    }

    #[test]
    fn every_input_shape_and_dimensions() {
        let one = embed(r#"{"model":"m","input":"hello world"}"#).unwrap();
        assert_eq!(one["model"], "m");
        assert_eq!(one["object"], "list");
        assert_eq!(one["data"][0]["object"], "embedding");
        assert_eq!(one["data"][0]["embedding"].as_array().unwrap().len(), 16);
        assert_eq!(one["usage"]["prompt_tokens"], 3);

        let many = embed(r#"{"model":"m","input":["hello world","b"],"dimensions":5}"#).unwrap();
        assert_eq!(many["data"].as_array().unwrap().len(), 2);
        assert_eq!(many["data"][1]["index"], 1);
        assert_eq!(many["data"][1]["embedding"].as_array().unwrap().len(), 5);
        assert_eq!(many["usage"]["total_tokens"], 4);
        assert_eq!(
            floats(&many["data"][0]["embedding"]),
            floats(
                &embed(r#"{"model":"x","input":["hello world"],"dimensions":5}"#).unwrap()["data"]
                    [0]["embedding"]
            )
        );

        let tokens = embed(r#"{"model":"m","input":[1,2,3]}"#).unwrap();
        assert_eq!(tokens["data"].as_array().unwrap().len(), 1);
        assert_eq!(tokens["usage"]["prompt_tokens"], 3);
        let lists = embed(r#"{"model":"m","input":[[1,2],[3]]}"#).unwrap();
        assert_eq!(lists["data"].as_array().unwrap().len(), 2);
        assert_eq!(lists["usage"]["prompt_tokens"], 3);
    }

    #[test]
    fn base64_output_decodes_to_the_float_vector() {
        let plain = embed(r#"{"model":"m","input":"abc","dimensions":4}"#).unwrap();
        let encoded =
            embed(r#"{"model":"m","input":"abc","dimensions":4,"encoding_format":"base64"}"#)
                .unwrap();
        let values = floats(&plain["data"][0]["embedding"]);
        let bytes: Vec<u8> = values.iter().flat_map(|v| v.to_le_bytes()).collect();
        assert_eq!(encoded["data"][0]["embedding"], base64(&bytes));
    }

    #[test]
    fn bad_requests_name_the_field() {
        for (body, param) in [
            (r#"{"input":"x"}"#, Some("model")),
            (r#"{"model":"m"}"#, Some("input")),
            (r#"{"model":"m","input":[]}"#, Some("input")),
            (r#"{"model":"m","input":{"a":1}}"#, Some("input")),
            (
                r#"{"model":"m","input":"x","dimensions":0}"#,
                Some("dimensions"),
            ),
            (
                r#"{"model":"m","input":"x","encoding_format":"hex"}"#,
                Some("encoding_format"),
            ),
            (r#"{"model":"m","input":"x""#, None),
        ] {
            let error = embed(body).err().unwrap();
            assert_eq!(error.status, http::StatusCode::BAD_REQUEST, "{body}");
            assert_eq!(error.param, param, "{body}");
        }
    }
}
