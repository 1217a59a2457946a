//! `providers[]`: kinds, presets, credentials and per-kind rules.

use super::raw::{RawMock, RawProvider, RawProviderKind};
use super::validate::{
    check_url, duration, DEFAULT_CONNECT_TIMEOUT, DEFAULT_STREAM_IDLE, DEFAULT_TIMEOUT,
};
use super::{ConfigError, Locality, NativeSettings, ProviderConfig, ProviderKind};
use std::time::Duration;
/// `max_tokens` sent to APIs that require one when the client gives none.
pub const DEFAULT_MAX_TOKENS: u64 = 4096;

/// A known OpenAI-compatible vendor or server: its base URL, where it runs, whether it
/// takes `stream_options` (those that reject it still send usage in their last chunk), and
/// whether it speaks thinking as `content` parts ([`ProviderConfig::content_parts`]).
pub struct Preset {
    pub name: &'static str,
    pub base_url: &'static str,
    pub locality: Locality,
    pub stream_usage: bool,
    pub content_parts: bool,
}

const fn preset(
    name: &'static str,
    base_url: &'static str,
    locality: Locality,
    stream_usage: bool,
) -> Preset {
    Preset {
        name,
        base_url,
        locality,
        stream_usage,
        content_parts: false,
    }
}

pub const PRESETS: &[Preset] = &[
    preset(
        "groq",
        "https://api.groq.com/openai/v1",
        Locality::Cloud,
        true,
    ),
    preset(
        "together",
        "https://api.together.xyz/v1",
        Locality::Cloud,
        true,
    ),
    preset(
        "fireworks",
        "https://api.fireworks.ai/inference/v1",
        Locality::Cloud,
        true,
    ),
    preset(
        "deepseek",
        "https://api.deepseek.com/v1",
        Locality::Cloud,
        true,
    ),
    preset("xai", "https://api.x.ai/v1", Locality::Cloud, true),
    preset(
        "openrouter",
        "https://openrouter.ai/api/v1",
        Locality::Cloud,
        true,
    ),
    preset(
        "perplexity",
        "https://api.perplexity.ai",
        Locality::Cloud,
        false,
    ),
    preset(
        "cerebras",
        "https://api.cerebras.ai/v1",
        Locality::Cloud,
        true,
    ),
    Preset {
        content_parts: true,
        ..preset(
            "mistral",
            "https://api.mistral.ai/v1",
            Locality::Cloud,
            false,
        )
    },
    preset("vllm", "http://127.0.0.1:8000/v1", Locality::OnPrem, true),
    preset("tgi", "http://127.0.0.1:8080/v1", Locality::OnPrem, false),
    preset(
        "llamacpp",
        "http://127.0.0.1:8080/v1",
        Locality::OnPrem,
        true,
    ),
    preset(
        "lmstudio",
        "http://127.0.0.1:1234/v1",
        Locality::OnPrem,
        true,
    ),
    preset(
        "ollama",
        "http://127.0.0.1:11434/v1",
        Locality::OnPrem,
        true,
    ),
];

pub fn find_preset(name: &str) -> Option<&'static Preset> {
    PRESETS.iter().find(|p| p.name == name)
}

/// Default base URLs of the native kinds (`None`: must be configured or is derived).
fn default_base_url(kind: ProviderKind, region: Option<&str>) -> Option<String> {
    Some(match kind {
        ProviderKind::OpenAi => "https://api.openai.com/v1".to_string(),
        ProviderKind::Anthropic => "https://api.anthropic.com".to_string(),
        ProviderKind::Gemini => "https://generativelanguage.googleapis.com".to_string(),
        ProviderKind::Cohere => "https://api.cohere.com".to_string(),
        ProviderKind::Ollama => "http://127.0.0.1:11434".to_string(),
        ProviderKind::Bedrock => format!("https://bedrock-runtime.{}.amazonaws.com", region?),
        ProviderKind::Vertex => match region? {
            "global" => "https://aiplatform.googleapis.com".to_string(),
            r => format!("https://{r}-aiplatform.googleapis.com"),
        },
        _ => return None,
    })
}

pub(super) fn provider(rp: RawProvider, path: &str, errs: &mut Vec<ConfigError>) -> ProviderConfig {
    let kind = match rp.kind {
        RawProviderKind::Openai => ProviderKind::OpenAi,
        RawProviderKind::OpenaiCompatible => ProviderKind::OpenAiCompatible,
        RawProviderKind::AzureOpenai => ProviderKind::AzureOpenAi,
        RawProviderKind::Anthropic => ProviderKind::Anthropic,
        RawProviderKind::Gemini => ProviderKind::Gemini,
        RawProviderKind::Vertex => ProviderKind::Vertex,
        RawProviderKind::Bedrock => ProviderKind::Bedrock,
        RawProviderKind::Cohere => ProviderKind::Cohere,
        RawProviderKind::Ollama => ProviderKind::Ollama,
        RawProviderKind::Mock => ProviderKind::Mock,
    };
    let api_key = rp.api_key.filter(|k| !k.expose().trim().is_empty());
    let mut base_url = rp
        .base_url
        .map(|u| u.trim().trim_end_matches('/').to_string());
    let mut locality = rp.locality;
    let mut stream_usage = rp.stream_usage;
    let preset = match (&rp.preset, kind) {
        (None, _) => None,
        (Some(name), ProviderKind::OpenAiCompatible) => match find_preset(name) {
            Some(p) => Some(p),
            None => {
                let known: Vec<&str> = PRESETS.iter().map(|p| p.name).collect();
                errs.push(ConfigError::new(
                    format!("{path}.preset"),
                    format!("unknown preset {name:?}; known: {}", known.join(", ")),
                ));
                None
            }
        },
        (Some(_), _) => {
            errs.push(ConfigError::new(
                format!("{path}.preset"),
                "only valid for kind openai_compatible",
            ));
            None
        }
    };
    if let Some(p) = preset {
        base_url.get_or_insert_with(|| p.base_url.to_string());
        locality.get_or_insert(p.locality);
        stream_usage.get_or_insert(p.stream_usage);
    }
    let need = |errs: &mut Vec<ConfigError>, field: &str, what: &str| {
        errs.push(ConfigError::new(
            format!("{path}.{field}"),
            what.to_string(),
        ));
    };
    match kind {
        ProviderKind::OpenAi
        | ProviderKind::Anthropic
        | ProviderKind::Gemini
        | ProviderKind::Cohere => {
            if api_key.is_none() {
                let var = match kind {
                    ProviderKind::OpenAi => "OPENAI_API_KEY",
                    ProviderKind::Anthropic => "ANTHROPIC_API_KEY",
                    ProviderKind::Gemini => "GEMINI_API_KEY",
                    _ => "COHERE_API_KEY",
                };
                need(
                    errs,
                    "api_key",
                    &format!(
                        "required for kind {} (e.g. api_key: ${{{var}}})",
                        kind.as_str()
                    ),
                );
            }
        }
        ProviderKind::OpenAiCompatible => {
            // An unknown preset is already reported; one error per mistake.
            if base_url.is_none() && rp.preset.is_none() {
                need(
                    errs,
                    "base_url",
                    "required for kind openai_compatible (e.g. http://127.0.0.1:8000/v1), or set a preset",
                );
            }
        }
        ProviderKind::AzureOpenAi => {
            if base_url.is_none() {
                need(
                    errs,
                    "base_url",
                    "required for kind azure_openai (https://<resource>.openai.azure.com)",
                );
            }
            if api_key.is_none() && rp.bearer_token.is_none() {
                need(
                    errs,
                    "api_key",
                    "kind azure_openai needs api_key (sent as `api-key`) or bearer_token (Entra ID)",
                );
            }
        }
        ProviderKind::Bedrock | ProviderKind::Vertex => {
            if rp.region.is_none() && base_url.is_none() {
                need(
                    errs,
                    "region",
                    &format!(
                        "required for kind {} (e.g. {})",
                        kind.as_str(),
                        if kind == ProviderKind::Bedrock {
                            "us-east-1"
                        } else {
                            "us-central1"
                        }
                    ),
                );
            }
            if kind == ProviderKind::Vertex && rp.credentials_file.is_none() && api_key.is_none() {
                need(
                    errs,
                    "credentials_file",
                    "kind vertex needs a service-account JSON key file (credentials_file) or an OAuth access token (api_key)",
                );
            }
            if kind == ProviderKind::Bedrock
                && rp.aws_access_key_id.is_some() != rp.aws_secret_access_key.is_some()
            {
                need(
                    errs,
                    "aws_secret_access_key",
                    "aws_access_key_id and aws_secret_access_key go together",
                );
            }
        }
        ProviderKind::Ollama => {}
        ProviderKind::Mock => {
            if base_url.is_some() {
                need(
                    errs,
                    "base_url",
                    "not used by kind mock (the mock runs inside Sluice); to use a sluice-mock server, use kind openai_compatible",
                );
            }
        }
    }
    if base_url.is_none() {
        base_url = default_base_url(kind, rp.region.as_deref());
    }
    if kind != ProviderKind::Mock && rp.mock.is_some() {
        need(errs, "mock", "only valid for kind mock");
    }
    let only = |errs: &mut Vec<ConfigError>, set: bool, field: &str, kinds: &[ProviderKind]| {
        if set && !kinds.contains(&kind) {
            let names: Vec<&str> = kinds.iter().map(|k| k.as_str()).collect();
            errs.push(ConfigError::new(
                format!("{path}.{field}"),
                format!("only valid for kind {}", names.join(" or ")),
            ));
        }
    };
    use ProviderKind as K;
    only(
        errs,
        rp.region.is_some(),
        "region",
        &[K::Bedrock, K::Vertex],
    );
    only(errs, rp.project.is_some(), "project", &[K::Vertex]);
    only(
        errs,
        rp.credentials_file.is_some(),
        "credentials_file",
        &[K::Vertex],
    );
    only(
        errs,
        rp.aws_access_key_id.is_some() || rp.aws_secret_access_key.is_some(),
        "aws_access_key_id",
        &[K::Bedrock],
    );
    only(
        errs,
        rp.bearer_token.is_some(),
        "bearer_token",
        &[K::AzureOpenAi],
    );
    only(
        errs,
        rp.api_version.is_some(),
        "api_version",
        &[K::AzureOpenAi, K::Anthropic],
    );
    only(
        errs,
        rp.supports_responses.is_some(),
        "supports_responses",
        &[K::OpenAiCompatible, K::AzureOpenAi, K::OpenAi],
    );
    if rp.default_max_tokens == Some(0) {
        need(errs, "default_max_tokens", "must be at least 1");
    }
    if let Some(url) = &base_url {
        if let Err(e) = check_url(url) {
            errs.push(ConfigError::new(format!("{path}.base_url"), e));
        }
    }
    let mut headers = Vec::with_capacity(rp.headers.len());
    for (name, value) in &rp.headers {
        let hpath = format!("{path}.headers.{name}");
        match (
            http::HeaderName::from_bytes(name.as_bytes()),
            http::HeaderValue::from_str(value),
        ) {
            (Ok(n), Ok(mut v)) => {
                v.set_sensitive(true);
                headers.push((n, v));
            }
            (Err(_), _) => errs.push(ConfigError::new(hpath, "invalid header name")),
            (_, Err(_)) => errs.push(ConfigError::new(
                hpath,
                "invalid header value (control characters or non-ASCII)",
            )),
        }
    }
    let timeout = duration(
        &rp.timeout,
        &format!("{path}.timeout"),
        DEFAULT_TIMEOUT,
        errs,
    );
    let connect_timeout = duration(
        &rp.connect_timeout,
        &format!("{path}.connect_timeout"),
        DEFAULT_CONNECT_TIMEOUT,
        errs,
    );
    let stream_idle_timeout = duration(
        &rp.stream_idle_timeout,
        &format!("{path}.stream_idle_timeout"),
        DEFAULT_STREAM_IDLE,
        errs,
    );
    let max_response_bytes = match &rp.max_response_size {
        None => super::DEFAULT_MAX_RESPONSE,
        Some(super::raw::SizeOrText::Int(0)) => {
            errs.push(ConfigError::new(
                format!("{path}.max_response_size"),
                "must be greater than 0",
            ));
            super::DEFAULT_MAX_RESPONSE
        }
        Some(super::raw::SizeOrText::Int(n)) => *n,
        Some(super::raw::SizeOrText::Text(t)) => super::units::parse_bytes(t).unwrap_or_else(|e| {
            errs.push(ConfigError::new(format!("{path}.max_response_size"), e));
            super::DEFAULT_MAX_RESPONSE
        }),
    };
    let mock = mock_settings(rp.mock.unwrap_or_default(), &format!("{path}.mock"), errs);
    let health_check =
        super::routing::health_check(rp.health_check.as_ref(), path, base_url.is_some(), errs);
    let is_local_default = matches!(kind, K::Mock | K::Ollama);
    ProviderConfig {
        name: rp.name,
        kind,
        api_key,
        base_url,
        locality: locality.unwrap_or(if is_local_default {
            Locality::OnPrem
        } else {
            Locality::Cloud
        }),
        headers,
        timeout,
        connect_timeout,
        stream_idle_timeout,
        max_response_bytes,
        stream_usage: stream_usage.unwrap_or(true),
        content_parts: preset.is_some_and(|p| p.content_parts),
        mock,
        health_check,
        native: NativeSettings {
            preset: rp.preset,
            api_version: rp.api_version,
            region: rp.region,
            project: rp.project,
            credentials_file: rp.credentials_file,
            aws_access_key_id: rp.aws_access_key_id,
            aws_secret_access_key: rp.aws_secret_access_key,
            aws_session_token: rp.aws_session_token,
            bearer_token: rp.bearer_token,
            default_max_tokens: rp.default_max_tokens.unwrap_or(DEFAULT_MAX_TOKENS),
            unsupported_params: rp.unsupported_params.unwrap_or_default(),
            supports_responses: rp.supports_responses.unwrap_or(false),
        },
    }
}

fn mock_settings(m: RawMock, path: &str, errs: &mut Vec<ConfigError>) -> sluice_mock::MockSettings {
    let mut s = sluice_mock::MockSettings::default();
    let ms = |d: Duration| u64::try_from(d.as_millis()).unwrap_or(u64::MAX);
    s.latency_ms = ms(duration(
        &m.latency,
        &format!("{path}.latency"),
        Duration::ZERO,
        errs,
    ));
    s.ttft_ms = ms(duration(
        &m.ttft,
        &format!("{path}.ttft"),
        Duration::ZERO,
        errs,
    ));
    s.chunk_delay_ms = ms(duration(
        &m.chunk_delay,
        &format!("{path}.chunk_delay"),
        Duration::ZERO,
        errs,
    ));
    if let Some(c) = m.chunks {
        if c == 0 {
            errs.push(ConfigError::new(
                format!("{path}.chunks"),
                "must be at least 1",
            ));
        }
        s.chunks = c.max(1);
    }
    s
}
