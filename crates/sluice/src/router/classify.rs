//! Reads what routing by capability or complexity needs from an OpenAI chat body. Only
//! routes with `strategy: cheapest_capable` or `complexity` pay for this parse; the plain
//! passthrough path never calls it.

use super::catalog::Needs;
use crate::config::ComplexityConfig;
use memchr::memmem;
use serde::Deserialize;
use serde_json::value::RawValue;

#[derive(Deserialize)]
struct Fields<'a> {
    #[serde(borrow)]
    messages: Option<&'a RawValue>,
    #[serde(borrow)]
    tools: Option<&'a RawValue>,
    #[serde(borrow)]
    functions: Option<&'a RawValue>,
    #[serde(borrow)]
    response_format: Option<&'a RawValue>,
}

#[derive(Deserialize)]
struct ResponseFormat<'a> {
    #[serde(rename = "type", borrow)]
    kind: Option<&'a str>,
}

/// The request's shape: what it needs from a deployment, and how hard it looks.
#[derive(Debug, Default)]
pub struct Shape {
    pub needs: Needs,
    pub messages: usize,
    /// The raw `messages` JSON (for code and keyword cues).
    messages_text: String,
}

fn present(v: Option<&RawValue>) -> bool {
    v.is_some_and(|r| !matches!(r.get().trim(), "null" | "[]" | "{}"))
}

/// `prompt_bytes` and `max_tokens` come from the passthrough's peek; the rest is read here.
pub fn shape(body: &[u8], prompt_bytes: usize, max_tokens: Option<u64>) -> Shape {
    let Ok(f) = serde_json::from_slice::<Fields<'_>>(body) else {
        return Shape::default();
    };
    let messages = f.messages.map_or("", RawValue::get);
    let m = messages.as_bytes();
    let vision = memmem::find(m, b"\"image_url\"").is_some()
        || memmem::find(m, b"\"input_image\"").is_some();
    let json_schema = f
        .response_format
        .and_then(|r| serde_json::from_str::<ResponseFormat<'_>>(r.get()).ok())
        .and_then(|r| r.kind)
        == Some("json_schema");
    let count = serde_json::from_str::<Vec<&RawValue>>(messages).map_or(0, |v| v.len());
    Shape {
        needs: Needs {
            vision,
            tools: present(f.tools) || present(f.functions),
            json_schema,
            prompt_tokens: (prompt_bytes as u64).div_ceil(4),
            max_tokens,
        },
        messages: count,
        messages_text: messages.to_string(),
    }
}

/// Marks of code in a prompt: fenced blocks or common syntax.
const CODE_MARKS: &[&str] = &[
    "```",
    "def ",
    "fn ",
    "function ",
    "class ",
    "#include",
    "import ",
    "select ",
    "=>",
    "};",
    "</",
    "public static",
];

/// Which tier a complexity route sends this request to, and why (`simple`, or `hard` with
/// the first rule that matched). The reason goes out in `x-sluice-route-reason`.
pub fn complexity(rules: &ComplexityConfig, s: &Shape) -> (bool, &'static str) {
    if rules.tools && s.needs.tools {
        return (true, "complexity:hard(tools)");
    }
    if s.needs.prompt_tokens > rules.long_prompt_tokens {
        return (true, "complexity:hard(long_prompt)");
    }
    if s.messages > rules.max_simple_messages {
        return (true, "complexity:hard(long_conversation)");
    }
    let lower = s.messages_text.to_lowercase();
    if rules.code && CODE_MARKS.iter().any(|k| lower.contains(k)) {
        return (true, "complexity:hard(code)");
    }
    if rules.keywords.iter().any(|k| lower.contains(k.as_str())) {
        return (true, "complexity:hard(reasoning)");
    }
    (false, "complexity:simple")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rules() -> ComplexityConfig {
        crate::config::routing::complexity(
            Some(&crate::config::raw::RawComplexity {
                simple: "cheap".into(),
                hard: "strong".into(),
                long_prompt_tokens: Some(100),
                ..Default::default()
            }),
            "m",
            &mut Vec::new(),
        )
        .unwrap_or_else(|| unreachable!())
    }

    fn classify(body: &str) -> (bool, &'static str) {
        let s = shape(body.as_bytes(), body.len(), None);
        complexity(&rules(), &s)
    }

    #[test]
    fn needs_come_from_images_tools_and_json_schema() {
        let b = r#"{"model":"m","messages":[{"role":"user","content":[{"type":"text","text":"hi"},{"type":"image_url","image_url":{"url":"data:,"}}]}],"tools":[{"type":"function","function":{"name":"f"}}],"response_format":{"type":"json_schema","json_schema":{}}}"#;
        let n = shape(b.as_bytes(), 400, Some(10)).needs;
        assert!(n.vision && n.tools && n.json_schema);
        assert_eq!((n.prompt_tokens, n.max_tokens), (100, Some(10)));
        let n = shape(br#"{"messages":[{"role":"user","content":"hi"}],"tools":[],"response_format":{"type":"json_object"}}"#, 4, None).needs;
        assert!(!n.vision && !n.tools && !n.json_schema);
    }

    #[test]
    fn complexity_rules() {
        let simple = r#"{"messages":[{"role":"user","content":"What is the capital of France?"}]}"#;
        assert_eq!(classify(simple), (false, "complexity:simple"));
        let code =
            r#"{"messages":[{"role":"user","content":"Why does this fail? ```let x = 1;```"}]}"#;
        assert_eq!(classify(code), (true, "complexity:hard(code)"));
        let reason = r#"{"messages":[{"role":"user","content":"Prove it Step by Step"}]}"#;
        assert_eq!(classify(reason), (true, "complexity:hard(reasoning)"));
        let long = format!(
            r#"{{"messages":[{{"role":"user","content":"{}"}}]}}"#,
            "a ".repeat(300)
        );
        assert_eq!(classify(&long), (true, "complexity:hard(long_prompt)"));
        let tools =
            r#"{"messages":[{"role":"user","content":"hi"}],"tools":[{"type":"function"}]}"#;
        assert_eq!(classify(tools), (true, "complexity:hard(tools)"));
    }
}
