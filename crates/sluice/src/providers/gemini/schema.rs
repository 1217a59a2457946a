//! JSON Schemas as Gemini's `parametersJsonSchema` / `responseJsonSchema` take them. The
//! recorded exchanges show both accept full JSON Schema (`additionalProperties`, `$defs`,
//! `anyOf`) from gemini-2.0-flash on, on AI Studio and Vertex alike; what they do not take
//! is the `$schema` marker and OpenAI's non-standard `strict`, so those are removed at
//! every schema position (never from a `properties` map, where they are field names).

use serde_json::{Map, Value};

/// A copy of `schema` without the keywords Gemini rejects.
pub fn clean(schema: &Value) -> Value {
    let mut v = schema.clone();
    clean_in_place(&mut v, 0);
    v
}

fn clean_in_place(v: &mut Value, depth: usize) {
    // Deeply nested schemas are rare; a bound keeps a hostile one from exhausting the stack.
    if depth > 64 {
        return;
    }
    let Value::Object(o) = v else { return };
    o.remove("$schema");
    o.remove("strict");
    for key in [
        "items",
        "additionalProperties",
        "not",
        "contains",
        "if",
        "then",
        "else",
    ] {
        if let Some(s) = o.get_mut(key) {
            clean_in_place(s, depth + 1);
        }
    }
    for key in ["anyOf", "oneOf", "allOf", "prefixItems"] {
        if let Some(Value::Array(a)) = o.get_mut(key) {
            for s in a {
                clean_in_place(s, depth + 1);
            }
        }
    }
    for key in ["properties", "$defs", "definitions", "patternProperties"] {
        if let Some(Value::Object(m)) = o.get_mut(key) {
            clean_map(m, depth + 1);
        }
    }
}

fn clean_map(m: &mut Map<String, Value>, depth: usize) {
    for s in m.values_mut() {
        clean_in_place(s, depth);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn removes_markers_but_not_fields_named_like_them() {
        let s = json!({"$schema": "x", "strict": true, "type": "object",
            "additionalProperties": false,
            "properties": {"strict": {"type": "boolean", "strict": 1},
                           "list": {"type": "array", "items": {"$schema": "y", "type": "string"}}},
            "$defs": {"A": {"anyOf": [{"strict": true, "type": "null"}]}}});
        let c = clean(&s);
        assert_eq!(
            c,
            json!({"type": "object", "additionalProperties": false,
                "properties": {"strict": {"type": "boolean"},
                               "list": {"type": "array", "items": {"type": "string"}}},
                "$defs": {"A": {"anyOf": [{"type": "null"}]}}})
        );
    }
}
