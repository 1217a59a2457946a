//! Broken configs: each error names the exact field path (and, for YAML syntax, the line).
#![allow(clippy::unwrap_used, clippy::expect_used)]

use sluice::config::from_yaml;

const BASE_PROVIDERS: &str = r#"
providers:
  - {name: openai, kind: openai, api_key: sk-x}
  - {name: local, kind: openai_compatible, base_url: "http://127.0.0.1:8000/v1"}
"#;

fn env(name: &str) -> Option<String> {
    (name == "PRESENT").then(|| "value".to_string())
}

fn errors(yaml: &str) -> Vec<String> {
    match from_yaml(yaml, &env) {
        Ok(_) => panic!("config unexpectedly valid:\n{yaml}"),
        Err(errs) => errs.iter().map(ToString::to_string).collect(),
    }
}

fn with_models(models: &str) -> String {
    format!("{BASE_PROVIDERS}models:\n{models}")
}

#[test]
fn every_broken_config_names_its_field_path() {
    let table: Vec<(String, &str)> = vec![
        (
            with_models(
                "  - {name: a, deployments: [{provider: openai, model: x}]}\n  - {name: b, deployments: [{provider: local, model: y}]}\n  - {name: c, deployments: [{provider: opnai, model: gpt-4o}]}\n",
            ),
            r#"models[2].deployments[0].provider: no provider named "opnai"; did you mean "openai"?"#,
        ),
        (
            with_models("  - {name: a, deployments: [{provider: zzz, model: x}]}\n"),
            r#"models[0].deployments[0].provider: no provider named "zzz"; providers are: local, openai"#,
        ),
        (
            with_models("  - {name: a, deployments: [{provider: openai, model: x, wieght: 2}]}\n"),
            "models[0].deployments[0].wieght: unknown field `wieght`, expected one of `provider`, `model`, `weight`",
        ),
        (
            with_models("  - {name: a, deployments: [{provider: openai, model: x, weight: heavy}]}\n"),
            "models[0].deployments[0].weight: invalid type: string \"heavy\", expected u32",
        ),
        (
            with_models("  - {name: a, deployments: [{provider: openai, model: x, weight: 0}]}\n"),
            "models[0].deployments[0].weight: must be at least 1",
        ),
        (
            with_models("  - {name: a, deployments: []}\n"),
            "models[0].deployments: at least one deployment is required",
        ),
        (
            with_models("  - {name: a, deployments: [{provider: openai, model: x}]}\n  - {name: a, deployments: [{provider: openai, model: y}]}\n"),
            r#"models[1].name: duplicate model name "a""#,
        ),
        (
            with_models("  - {name: a, deployments: [{provider: openai, model: x}], fallbacks: [claud]}\n  - {name: claude, deployments: [{provider: local, model: y}]}\n"),
            r#"models[0].fallbacks[0]: no model named "claud"; did you mean "claude"?"#,
        ),
        (
            "providers:\n  - {name: p, kind: openai, api_key: \"${MISSING_KEY}\"}\n".into(),
            "providers[0].api_key: environment variable MISSING_KEY is not set",
        ),
        (
            "providers:\n  - {name: p, kind: openai}\n".into(),
            "providers[0].api_key: required for kind openai",
        ),
        (
            "providers:\n  - {name: p, kind: openai_compatible}\n".into(),
            "providers[0].base_url: required for kind openai_compatible",
        ),
        (
            "providers:\n  - {name: p, kind: openai_compatible, base_url: \"ftp://x/v1\"}\n".into(),
            "providers[0].base_url: invalid URL \"ftp://x/v1\": must start with http:// or https://",
        ),
        (
            "providers:\n  - {name: p, kind: mock}\n  - {name: p, kind: mock}\n".into(),
            r#"providers[1].name: duplicate provider name "p""#,
        ),
        (
            "providers:\n  - {name: p, kind: anthropik}\n".into(),
            "providers[0].kind: unknown variant `anthropik`, expected one of `openai`, `openai_compatible`, `azure_openai`, `anthropic`, `gemini`, `vertex`, `bedrock`, `cohere`, `ollama`, `mock`",
        ),
        (
            "providers:\n  - {name: p, kind: mock, timeout: 10 days}\n".into(),
            "providers[0].timeout: invalid duration \"10 days\": unknown unit \"days\"; use ms, s, m or h",
        ),
        (
            "providers:\n  - {name: p, kind: mock, headers: {\"bad header\": x}}\n".into(),
            "providers[0].headers.bad header: invalid header name",
        ),
        (
            "server: {listen: \"localhost:eighty\"}\n".into(),
            "server.listen: invalid address \"localhost:eighty\"; expected IP:PORT such as 127.0.0.1:8080",
        ),
        (
            "server: {max_body_size: 12 parsecs}\n".into(),
            "server.max_body_size: invalid size \"12 parsecs\": unknown unit \"parsecs\"",
        ),
        (
            "server: {lisen: \"127.0.0.1:1\"}\n".into(),
            "server.lisen: unknown field `lisen`, expected one of",
        ),
        (
            "store: {url: \"mysql://x\"}\n".into(),
            "store.url: unsupported store \"mysql://x\"; use sqlite://PATH or postgres://USER@HOST:PORT/DB",
        ),
        (
            "server: {master_key: \"${EMPTY_KEY:-}\"}\n".into(),
            "server.master_key: is empty",
        ),
        (
            with_models("  - {name: a, strategy: fastest, deployments: [{provider: openai, model: x}]}\n"),
            "models[0].strategy: unknown variant `fastest`, expected one of `weighted`, `round_robin`",
        ),
        (
            with_models("  - {name: a, strategy: lowest_cost, deployments: [{provider: openai, model: x}]}\n"),
            "models[0].deployments[0].price: required with strategy lowest_cost",
        ),
        (
            with_models("  - {name: a, retries: {max_attempts: 0, backoff: soon}, deployments: [{provider: openai, model: x}]}\n"),
            "models[0].retries.max_attempts: must be at least 1",
        ),
        (
            with_models("  - {name: a, retries: {backoff: soon}, deployments: [{provider: openai, model: x}]}\n"),
            "models[0].retries.backoff: invalid duration \"soon\"",
        ),
        (
            with_models("  - {name: a, breaker: {cooldown: 1 week}, deployments: [{provider: openai, model: x}]}\n"),
            "models[0].breaker.cooldown: invalid duration",
        ),
        (
            with_models("  - {name: a, deployments: [{provider: openai, model: x, timeout: never}]}\n"),
            "models[0].deployments[0].timeout: invalid duration \"never\"",
        ),
        (
            with_models("  - {name: a, data_policy: local_only, deployments: [{provider: openai, model: x}]}\n"),
            "models[0].data_policy: local_only needs at least one deployment on an on_prem provider",
        ),
        (
            with_models("  - {name: a, aliases: [b], deployments: [{provider: openai, model: x}]}\n  - {name: b, deployments: [{provider: local, model: y}]}\n"),
            r#"models[0].aliases[0]: "b" is already a model name or alias"#,
        ),
        (
            with_models("  - {name: \"a/*/b\", deployments: [{provider: openai, model: x}]}\n"),
            "models[0].name: `*` is only allowed at the end",
        ),
        (
            with_models("  - {name: a, deployments: [{provider: openai, model: \"*\"}]}\n"),
            "models[0].deployments[0].model: `*` (the requested name after the route's prefix) is only allowed",
        ),
        (
            with_models("  - {name: a, fallbacks_by_class: {context_window_exceeded: [bigg]}, deployments: [{provider: openai, model: x}]}\n  - {name: big, deployments: [{provider: local, model: y}]}\n"),
            r#"models[0].fallbacks_by_class.context_window_exceeded[0]: no model named "bigg"; did you mean "big"?"#,
        ),
        (
            format!("fallbacks_by_class: {{rate_limited: [nope]}}\n{BASE_PROVIDERS}models:\n  - {{name: a, deployments: [{{provider: openai, model: x}}]}}\n"),
            r#"fallbacks_by_class.rate_limited[0]: no model named "nope""#,
        ),
        (
            format!("mode: on_prem\n{BASE_PROVIDERS}"),
            r#"providers[0].locality: provider "openai" is cloud and `mode: on_prem` refuses cloud providers"#,
        ),
        (
            "routing: {}\n".into(),
            "routing: unknown field `routing`, expected one of",
        ),
    ];
    for (yaml, expected) in &table {
        let errs = errors(yaml);
        assert!(
            errs.iter().any(|e| e.starts_with(expected)),
            "expected an error starting with\n  {expected}\ngot\n  {errs:#?}\nfor\n{yaml}"
        );
    }
}

#[test]
fn yaml_syntax_errors_carry_line_and_column() {
    let errs = errors("server:\n  listen: 127.0.0.1:8080\n providers: [\n");
    assert_eq!(errs.len(), 1);
    assert!(
        errs[0].starts_with("YAML syntax error at line 3, column"),
        "{errs:?}"
    );
}

#[test]
fn all_validation_errors_are_reported_at_once() {
    let errs = errors(
        "providers:\n  - {name: p, kind: openai_compatible}\nmodels:\n  - {name: m, deployments: [{provider: q, model: x, weight: 0}]}\n",
    );
    assert_eq!(errs.len(), 3, "{errs:#?}");
}

#[test]
fn env_interpolation_and_defaults() {
    let cfg = from_yaml(
        "server: {listen: \"127.0.0.1:${PORT:-9999}\", master_key: \"${PRESENT}\"}\nproviders:\n  - {name: p, kind: openai, api_key: \"${PRESENT}\"}\nmodels:\n  - {name: m, deployments: [{provider: p, model: x}]}\n",
        &env,
    )
    .unwrap();
    assert_eq!(cfg.server.listen.port(), 9999);
    assert_eq!(cfg.server.master_key.as_ref().unwrap().expose(), "value");
    // Secrets never print.
    let dump = format!("{cfg:?}");
    assert!(!dump.contains("value"), "{dump}");
    assert_eq!(
        cfg.providers[0].base_url.as_deref(),
        Some("https://api.openai.com/v1")
    );
}

#[test]
fn zero_config_has_the_mock_and_discovers_openai_from_the_environment() {
    let cfg = sluice::config::load(None, &|_| None).unwrap();
    let names: Vec<&str> = cfg.models.iter().map(|m| m.name.as_str()).collect();
    assert!(names.contains(&"mock-1"));
    assert_eq!(cfg.providers.len(), 1);
    let cfg =
        sluice::config::load(None, &|n| (n == "OPENAI_API_KEY").then(|| "sk-env".into())).unwrap();
    assert!(cfg.providers.iter().any(|p| p.name == "openai"));
    assert!(cfg.models.iter().any(|m| m.name == "gpt-4o-mini"));
    let cfg = sluice::config::load(None, &|n| {
        (n == "ANTHROPIC_API_KEY").then(|| "sk-ant-env".into())
    })
    .unwrap();
    let p = cfg
        .providers
        .iter()
        .find(|p| p.name == "anthropic")
        .unwrap();
    assert_eq!(p.base_url.as_deref(), Some("https://api.anthropic.com"));
    assert!(cfg.models.iter().any(|m| m.name == "claude-sonnet-4-5"));
    assert!(cfg.models.iter().any(|m| m.name == "anthropic/*"));
    let cfg = sluice::config::load(None, &|n| {
        (n == "GEMINI_API_KEY").then(|| "AIza-env".into())
    })
    .unwrap();
    let p = cfg.providers.iter().find(|p| p.name == "gemini").unwrap();
    assert_eq!(
        p.base_url.as_deref(),
        Some("https://generativelanguage.googleapis.com")
    );
    assert!(cfg.models.iter().any(|m| m.name == "gemini-2.5-flash"));
    assert!(cfg.models.iter().any(|m| m.name == "gemini/*"));
}

#[test]
fn native_provider_kinds_need_their_settings() {
    let cases = [
        (
            "{name: a, kind: anthropic}",
            "providers[0].api_key",
            "ANTHROPIC_API_KEY",
        ),
        (
            "{name: b, kind: bedrock}",
            "providers[0].region",
            "us-east-1",
        ),
        (
            "{name: v, kind: vertex, region: us-central1}",
            "providers[0].credentials_file",
            "service-account",
        ),
        (
            "{name: z, kind: azure_openai, api_key: k}",
            "providers[0].base_url",
            "openai.azure.com",
        ),
        (
            "{name: g, kind: openai_compatible, preset: grok}",
            "providers[0].preset",
            "known: groq",
        ),
        (
            "{name: g, kind: anthropic, api_key: k, preset: groq}",
            "providers[0].preset",
            "only valid for kind openai_compatible",
        ),
        (
            "{name: g, kind: anthropic, api_key: k, region: x}",
            "providers[0].region",
            "only valid for kind bedrock or vertex",
        ),
        (
            "{name: g, kind: anthropic, api_key: k, unsupported_params: ignore}",
            "providers[0].unsupported_params",
            "unknown variant",
        ),
    ];
    for (provider, path, hint) in cases {
        let yaml = format!("providers:\n  - {provider}\nmodels: []\n");
        let err = errors(&yaml).join("\n");
        assert!(err.contains(path), "{provider}: {err}");
        assert!(err.contains(hint), "{provider}: {err}");
    }
    let ok = from_yaml(
        "providers:\n  - {name: g, kind: openai_compatible, preset: groq, api_key: k}\n  - {name: l, kind: openai_compatible, preset: vllm}\nmodels: []\n",
        &env,
    )
    .unwrap();
    assert_eq!(
        ok.providers[0].base_url.as_deref(),
        Some("https://api.groq.com/openai/v1")
    );
    assert_eq!(ok.providers[0].locality, sluice::config::Locality::Cloud);
    assert_eq!(ok.providers[1].locality, sluice::config::Locality::OnPrem);
}

#[test]
fn config_check_command_exits_non_zero_and_prints_paths() {
    let dir = tempfile::tempdir().unwrap();
    let bad = dir.path().join("bad.yaml");
    std::fs::write(
        &bad,
        with_models("  - {name: c, deployments: [{provider: opnai, model: x}]}\n"),
    )
    .unwrap();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_sluice"))
        .args(["config", "check"])
        .arg(&bad)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("1 error"), "{err}");
    assert!(
        err.contains(r#"models[0].deployments[0].provider: no provider named "opnai"; did you mean "openai"?"#),
        "{err}"
    );

    let good = dir.path().join("good.yaml");
    std::fs::write(
        &good,
        with_models("  - {name: c, deployments: [{provider: openai, model: x}]}\n"),
    )
    .unwrap();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_sluice"))
        .args(["config", "check"])
        .arg(&good)
        .output()
        .unwrap();
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stdout).contains("ok (2 providers, 1 models)"));
}

#[test]
fn design_contract_spelling_least_latency_is_accepted() {
    let cfg = from_yaml(
        &with_models(
            "  - {name: a, strategy: least_latency, deployments: [{provider: openai, model: x}]}\n",
        ),
        &env,
    )
    .unwrap();
    assert_eq!(
        cfg.models[0].strategy,
        sluice::config::raw::Strategy::LowestLatency
    );
}

#[test]
fn routing_timeouts_capabilities_hedging_and_complexity_are_validated() {
    let m = |extra: &str| {
        with_models(&format!("  - {{name: a, {extra}}}\n  - {{name: b, deployments: [{{provider: local, model: y}}]}}\n"))
    };
    let table: Vec<(String, &str)> = vec![
        (
            m("deployments: [{provider: local, model: x, timeouts: {first_token: soon}}]"),
            r#"models[0].deployments[0].timeouts.first_token: invalid duration "soon""#,
        ),
        (
            m("deployments: [{provider: local, model: x, timeouts: {idle: 0s}}]"),
            "models[0].deployments[0].timeouts.idle: must be greater than 0",
        ),
        (
            m("deployments: [{provider: local, model: x, timeouts: {first_token: 5s, total: 1s}}]"),
            "models[0].deployments[0].timeouts.first_token: must not be longer than timeouts.total",
        ),
        (
            m("deployments: [{provider: local, model: x, timeouts: {ttft: 1s}}]"),
            "models[0].deployments[0].timeouts.ttft: unknown field `ttft`, expected one of `connect`, `first_token`, `idle`, `total`",
        ),
        (
            m("deployments: [{provider: local, model: x, tpm: 0}]"),
            "models[0].deployments[0].tpm: must be at least 1",
        ),
        (
            m("deployments: [{provider: local, model: x, capabilities: {context_window: 0}}]"),
            "models[0].deployments[0].capabilities.context_window: must be at least 1",
        ),
        (
            m("capabilities: {vision: maybe}, deployments: [{provider: local, model: x}]"),
            "models[0].capabilities.vision: invalid type: string \"maybe\", expected a boolean",
        ),
        (
            m("hedge: {after: later}, deployments: [{provider: local, model: x}]"),
            r#"models[0].hedge.after: "later" is neither a duration (e.g. 300ms) nor `p95`"#,
        ),
        (
            m("hedge: {after: 100ms, initial: 1s}, deployments: [{provider: local, model: x}]"),
            "models[0].hedge.after: `initial` and `min` only apply with `after: p95`",
        ),
        (
            m("strategy: cheapest, deployments: [{provider: local, model: x}]"),
            "models[0].strategy: unknown variant `cheapest`",
        ),
        (
            m("complexity: {simple: b, hard: strong}"),
            r#"models[0].complexity.hard: no model named "strong""#,
        ),
        (
            m("complexity: {simple: b, hard: b}, deployments: [{provider: local, model: x}]"),
            "models[0].deployments: a complexity route forwards to",
        ),
        (
            m("complexity: {simple: a, hard: b}"),
            r#"models[0].complexity.simple: "a" is itself a complexity route"#,
        ),
        (
            m("complexity: {simple: b, hard: b, keywords: [\"\"]}"),
            "models[0].complexity.keywords[0]: must not be empty",
        ),
        (
            format!("{BASE_PROVIDERS}  - {{name: hc, kind: openai_compatible, base_url: \"http://127.0.0.1:1/v1\", health_check: {{interval: 0s}}}}\n"),
            "providers[2].health_check.interval: must be greater than 0",
        ),
        (
            "providers: [{name: m, kind: mock, health_check: {interval: 5s}}]\n".into(),
            "providers[0].health_check: only for providers reached over HTTP",
        ),
    ];
    for (yaml, expected) in &table {
        let errs = errors(yaml);
        assert!(
            errs.iter().any(|e| e.starts_with(expected)),
            "expected an error starting with\n  {expected}\ngot\n  {errs:#?}\nfor\n{yaml}"
        );
    }
    // And the valid forms load.
    let ok = with_models(concat!(
        "  - name: a\n    strategy: cheapest_capable\n    hedge: {after: p95, initial: 500ms, min: 50ms}\n",
        "    capabilities: {vision: true}\n",
        "    deployments: [{provider: local, model: x, tpm: 1000, timeouts: {connect: 1s, first_token: 2s, idle: 5s, total: 60s}, capabilities: {context_window: 8000, tools: true}}]\n",
        "  - {name: b, strategy: most_headroom, hedge: {after: 300ms}, deployments: [{provider: local, model: y}]}\n",
        "  - {name: auto, complexity: {simple: a, hard: b, long_prompt_tokens: 500, keywords: [Prove]}}\n",
    ));
    let cfg = from_yaml(&ok, &env).unwrap();
    let d = &cfg.models[0].deployments[0];
    assert_eq!(
        d.timeouts.first_token,
        Some(std::time::Duration::from_secs(2))
    );
    assert_eq!(d.capabilities.context_window, Some(8000));
    assert_eq!(
        cfg.models[2].complexity.as_ref().unwrap().keywords,
        ["prove"]
    );
}

/// The fleet examples under deploy/ are configs this build accepts, with the environment
/// their manifests provide, and every manifest is valid YAML.
#[test]
fn deploy_examples_pass_config_check() {
    let deploy = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../deploy");
    for cfg in ["compose/sluice.yaml", "k8s/sluice.yaml"] {
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_sluice"))
            .args(["config", "check"])
            .arg(deploy.join(cfg))
            .env("SLUICE_MASTER_KEY", "sk-example-master-key-0123456789")
            .env("POSTGRES_PASSWORD", "pw")
            .env("OPENAI_API_KEY", "sk-example")
            .env("SLUICE_DATABASE_URL", "postgres://sluice:pw@db:5432/sluice")
            .output()
            .unwrap();
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert_eq!(
            out.status.code(),
            Some(0),
            "{cfg}: {}{stdout}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(stdout.contains("config hash: sha256:"), "{cfg}: {stdout}");
        // The password never shows.
        assert!(!stdout.contains("pw@"), "{cfg}: {stdout}");
    }
    for manifest in [
        "compose/docker-compose.yml",
        "k8s/deployment.yaml",
        "k8s/service.yaml",
        "k8s/pdb.yaml",
        "k8s/redis.yaml",
        "k8s/kustomization.yaml",
        "k8s/secret.example.yaml",
    ] {
        let text = std::fs::read_to_string(deploy.join(manifest)).unwrap();
        for doc in text.split("\n---\n") {
            let v: serde_json::Value = serde_norway::from_str(doc)
                .unwrap_or_else(|e| panic!("{manifest} is not valid YAML: {e}"));
            assert!(v.is_object(), "{manifest}");
        }
    }
}
