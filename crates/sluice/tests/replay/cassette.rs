//! Loads the recorded provider exchanges in `crates/sluice/tests/fixtures/wire/` (VCR cassettes
//! from pydantic-ai's test suite, MIT licence; see that folder's README) for replay tests.

#![allow(dead_code, clippy::unwrap_used, clippy::expect_used)]

use base64::Engine;
use serde_json::Value;
use std::path::PathBuf;

/// Where the transcripts are: inside the repository, so a fresh clone replays them.
pub fn wire_dir() -> PathBuf {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/wire");
    assert!(
        dir.is_dir(),
        "the wire transcripts are missing: expected them at {}",
        dir.display()
    );
    dir
}

pub struct Interaction {
    pub method: String,
    pub uri: String,
    pub request_headers: serde_json::Map<String, Value>,
    /// The request body as JSON (from `parsed_body` or a JSON `body`).
    pub request: Value,
    pub status: u16,
    pub response_headers: serde_json::Map<String, Value>,
    /// The raw response bytes (SSE text, JSON text, or decoded `!!binary`).
    pub response: Vec<u8>,
}

impl Interaction {
    pub fn response_json(&self) -> Value {
        serde_json::from_slice(&self.response).expect("response is JSON")
    }

    pub fn response_header(&self, name: &str) -> Option<String> {
        let v = self.response_headers.get(name)?;
        match v {
            Value::Array(a) => a.first().and_then(Value::as_str).map(str::to_string),
            Value::String(s) => Some(s.clone()),
            _ => None,
        }
    }

    pub fn content_type(&self) -> String {
        self.response_header("content-type").unwrap_or_default()
    }
}

/// Reads one cassette: `provider/file.yaml` under the wire folder.
pub fn load(rel: &str) -> Vec<Interaction> {
    let path = wire_dir().join(rel);
    let text = std::fs::read_to_string(&path)
        .unwrap_or_else(|e| panic!("cannot read {}: {e}", path.display()));
    // `!!binary` scalars: the YAML crate gives them to us as tagged values; decode below.
    let doc: serde_norway::Value = serde_norway::from_str(&text)
        .unwrap_or_else(|e| panic!("cannot parse {}: {e}", path.display()));
    let doc = to_json(doc);
    doc["interactions"]
        .as_array()
        .expect("interactions")
        .iter()
        .map(|i| {
            let req = &i["request"];
            let resp = &i["response"];
            let request = if let Some(p) = req.get("parsed_body") {
                p.clone()
            } else {
                match &req["body"] {
                    Value::String(s) => serde_json::from_str(s).unwrap_or(Value::String(s.clone())),
                    other => other.clone(),
                }
            };
            let response = if let Some(p) = resp.get("parsed_body") {
                serde_json::to_vec(p).unwrap()
            } else {
                match &resp["body"] {
                    Value::Object(o) => match o.get("string") {
                        Some(Value::String(s)) => s.clone().into_bytes(),
                        Some(Value::Object(b)) if b.contains_key("__binary") => {
                            base64::engine::general_purpose::STANDARD
                                .decode(
                                    b["__binary"]
                                        .as_str()
                                        .unwrap()
                                        .split_whitespace()
                                        .collect::<String>(),
                                )
                                .expect("binary body is base64")
                        }
                        _ => Vec::new(),
                    },
                    Value::String(s) => s.clone().into_bytes(),
                    _ => Vec::new(),
                }
            };
            Interaction {
                method: req["method"].as_str().unwrap_or("POST").to_string(),
                uri: req["uri"].as_str().unwrap_or_default().to_string(),
                request_headers: req["headers"].as_object().cloned().unwrap_or_default(),
                request,
                status: resp["status"]["code"].as_u64().unwrap_or(200) as u16,
                response_headers: resp["headers"].as_object().cloned().unwrap_or_default(),
                response,
            }
        })
        .collect()
}

fn to_json(v: serde_norway::Value) -> Value {
    use serde_norway::Value as Y;
    match v {
        Y::Null => Value::Null,
        Y::Bool(b) => Value::Bool(b),
        Y::Number(n) => {
            if let Some(i) = n.as_i64() {
                Value::from(i)
            } else if let Some(u) = n.as_u64() {
                Value::from(u)
            } else {
                Value::from(n.as_f64().unwrap_or(0.0))
            }
        }
        Y::String(s) => Value::String(s),
        Y::Sequence(s) => Value::Array(s.into_iter().map(to_json).collect()),
        Y::Mapping(m) => Value::Object(
            m.into_iter()
                .map(|(k, v)| {
                    let key = match k {
                        Y::String(s) => s,
                        other => serde_norway::to_string(&other)
                            .unwrap_or_default()
                            .trim()
                            .to_string(),
                    };
                    (key, to_json(v))
                })
                .collect(),
        ),
        Y::Tagged(t) => {
            if t.tag == "binary" || t.tag == "!binary" || t.tag.to_string().ends_with("binary") {
                let mut o = serde_json::Map::new();
                o.insert("__binary".into(), to_json(t.value));
                Value::Object(o)
            } else {
                to_json(t.value)
            }
        }
    }
}

/// Every cassette file of one provider folder, sorted.
pub fn list(provider: &str) -> Vec<String> {
    let mut v: Vec<String> = std::fs::read_dir(wire_dir().join(provider))
        .unwrap()
        .filter_map(|e| e.ok())
        .map(|e| format!("{provider}/{}", e.file_name().to_string_lossy()))
        .filter(|n| n.ends_with(".yaml"))
        .collect();
    v.sort();
    v
}
