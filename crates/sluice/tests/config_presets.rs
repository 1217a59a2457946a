//! `kind: openai_compatible` + `preset:` resolves to the vendor's documented base URL,
//! locality and stream-usage quirk (the table in docs/providers.md, written out here
//! independently of the code's table); explicit fields win; misuse names the field.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use sluice::config::{from_yaml, Locality, ProviderKind};

/// (preset, base URL, locality, sends `stream_options`)
const DOCUMENTED: &[(&str, &str, Locality, bool)] = &[
    (
        "groq",
        "https://api.groq.com/openai/v1",
        Locality::Cloud,
        true,
    ),
    (
        "together",
        "https://api.together.xyz/v1",
        Locality::Cloud,
        true,
    ),
    (
        "fireworks",
        "https://api.fireworks.ai/inference/v1",
        Locality::Cloud,
        true,
    ),
    (
        "deepseek",
        "https://api.deepseek.com/v1",
        Locality::Cloud,
        true,
    ),
    ("xai", "https://api.x.ai/v1", Locality::Cloud, true),
    (
        "openrouter",
        "https://openrouter.ai/api/v1",
        Locality::Cloud,
        true,
    ),
    (
        "perplexity",
        "https://api.perplexity.ai",
        Locality::Cloud,
        false,
    ),
    (
        "cerebras",
        "https://api.cerebras.ai/v1",
        Locality::Cloud,
        true,
    ),
    (
        "mistral",
        "https://api.mistral.ai/v1",
        Locality::Cloud,
        false,
    ),
    ("vllm", "http://127.0.0.1:8000/v1", Locality::OnPrem, true),
    ("tgi", "http://127.0.0.1:8080/v1", Locality::OnPrem, false),
    (
        "llamacpp",
        "http://127.0.0.1:8080/v1",
        Locality::OnPrem,
        true,
    ),
    (
        "lmstudio",
        "http://127.0.0.1:1234/v1",
        Locality::OnPrem,
        true,
    ),
    (
        "ollama",
        "http://127.0.0.1:11434/v1",
        Locality::OnPrem,
        true,
    ),
];

fn no_env(_: &str) -> Option<String> {
    None
}

fn errors(yaml: &str) -> Vec<String> {
    match from_yaml(yaml, &no_env) {
        Ok(_) => panic!("config unexpectedly valid:\n{yaml}"),
        Err(errs) => errs.iter().map(ToString::to_string).collect(),
    }
}

#[test]
fn each_preset_resolves_to_its_documented_endpoint() {
    let mut yaml = String::from("providers:\n");
    for (name, ..) in DOCUMENTED {
        yaml.push_str(&format!(
            "  - {{name: p-{name}, kind: openai_compatible, preset: {name}, api_key: k}}\n"
        ));
    }
    let cfg = from_yaml(&yaml, &no_env).unwrap();
    for (name, url, locality, stream_usage) in DOCUMENTED {
        let p = cfg
            .providers
            .iter()
            .find(|p| p.name == format!("p-{name}"))
            .unwrap();
        assert_eq!(p.kind, ProviderKind::OpenAiCompatible, "{name}");
        assert_eq!(p.base_url.as_deref(), Some(*url), "{name}");
        assert_eq!(p.locality, *locality, "{name}");
        assert_eq!(p.stream_usage, *stream_usage, "{name}");
    }
}

#[test]
fn explicit_fields_win_over_the_preset() {
    let cfg = from_yaml(
        "providers:\n  - {name: g, kind: openai_compatible, preset: groq, base_url: \"http://10.0.0.9:9000/v1/\", locality: on_prem, stream_usage: false}\n",
        &no_env,
    )
    .unwrap();
    let p = &cfg.providers[0];
    assert_eq!(p.base_url.as_deref(), Some("http://10.0.0.9:9000/v1"));
    assert_eq!(p.locality, Locality::OnPrem);
    assert!(!p.stream_usage);
}

#[test]
fn preset_misuse_names_the_field() {
    let e = errors("providers:\n  - {name: a, kind: openai, api_key: k, preset: groq}\n");
    assert_eq!(
        e,
        ["providers[0].preset: only valid for kind openai_compatible"]
    );
    let e = errors(
        "providers:\n  - {name: x, kind: openai_compatible, base_url: \"http://h/v1\"}\n  - {name: a, kind: cohere, api_key: k, preset: mistral}\n",
    );
    assert_eq!(
        e,
        ["providers[1].preset: only valid for kind openai_compatible"]
    );
    let e = errors("providers:\n  - {name: a, kind: openai_compatible, preset: grok}\n");
    assert_eq!(e.len(), 1, "{e:?}");
    assert!(
        e[0].starts_with("providers[0].preset: unknown preset \"grok\"; known: groq, "),
        "{e:?}"
    );
}

#[test]
fn native_kinds_default_their_endpoint_and_locality() {
    let cfg = from_yaml(
        "providers:\n  - {name: c, kind: cohere, api_key: k}\n  - {name: o, kind: ollama}\n",
        &no_env,
    )
    .unwrap();
    let (c, o) = (&cfg.providers[0], &cfg.providers[1]);
    assert_eq!(c.base_url.as_deref(), Some("https://api.cohere.com"));
    assert_eq!(c.locality, Locality::Cloud);
    assert_eq!(o.base_url.as_deref(), Some("http://127.0.0.1:11434"));
    assert_eq!(o.locality, Locality::OnPrem);
    let e = errors("providers:\n  - {name: c, kind: cohere}\n");
    assert_eq!(e.len(), 1, "{e:?}");
    assert!(e[0].starts_with("providers[0].api_key: required for kind cohere"));
}
