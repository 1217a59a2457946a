//! Zero-config providers and models: the built-in mock, plus providers whose keys are in the
//! environment (`OPENAI_API_KEY`, ...), each with its well-known models.

use super::raw::{RawDeployment, RawModel, RawProvider, RawProviderKind};
use super::secret::Secret;
use super::EnvLookup;

/// Models the built-in mock serves with no config at all.
pub const MOCK_MODELS: &[&str] = &["mock-1", "mock-2", "mock-embed"];

/// OpenAI models offered automatically when `OPENAI_API_KEY` is set.
pub const OPENAI_MODELS: &[&str] = &[
    "gpt-4o",
    "gpt-4o-mini",
    "gpt-4.1",
    "gpt-4.1-mini",
    "gpt-4.1-nano",
    "gpt-5",
    "gpt-5-mini",
    "gpt-5-nano",
    "o3",
    "o3-mini",
    "o4-mini",
    "text-embedding-3-small",
    "text-embedding-3-large",
];

fn provider(name: &str, kind: RawProviderKind) -> RawProvider {
    RawProvider {
        name: name.to_string(),
        kind,
        ..RawProvider::default()
    }
}

fn passthrough_models(provider: &str, names: &[&str]) -> Vec<RawModel> {
    names
        .iter()
        .map(|m| RawModel {
            name: (*m).to_string(),
            deployments: vec![RawDeployment {
                provider: provider.to_string(),
                model: (*m).to_string(),
                ..RawDeployment::default()
            }],
            ..RawModel::default()
        })
        .collect()
}

/// Anthropic models served under their own names when `ANTHROPIC_API_KEY` is set (any other
/// is reachable as `anthropic/<model>`).
pub const ANTHROPIC_MODELS: &[&str] = &[
    "claude-opus-4-1",
    "claude-sonnet-4-5",
    "claude-haiku-4-5",
    "claude-3-5-haiku-latest",
];

/// Gemini models served under their own names when `GEMINI_API_KEY` is set (any other is
/// reachable as `gemini/<model>`).
pub const GEMINI_MODELS: &[&str] = &[
    "gemini-2.5-pro",
    "gemini-2.5-flash",
    "gemini-2.5-flash-lite",
    "gemini-2.0-flash",
    "gemini-embedding-001",
];

/// A `prefix/*` route passing any model name under the prefix to `provider`.
fn wildcard_model(provider: &str) -> RawModel {
    RawModel {
        name: format!("{provider}/*"),
        deployments: vec![RawDeployment {
            provider: provider.to_string(),
            model: "*".to_string(),
            ..RawDeployment::default()
        }],
        ..RawModel::default()
    }
}

/// Providers and models used when the config does not list any.
pub fn discovered(env: EnvLookup<'_>) -> (Vec<RawProvider>, Vec<RawModel>) {
    let mut providers = vec![provider("mock", RawProviderKind::Mock)];
    let mut models = passthrough_models("mock", MOCK_MODELS);
    if let Some(key) = env("OPENAI_API_KEY").filter(|k| !k.trim().is_empty()) {
        let mut p = provider("openai", RawProviderKind::Openai);
        p.api_key = Some(Secret::new(key));
        p.base_url = env("OPENAI_BASE_URL").filter(|u| !u.trim().is_empty());
        providers.push(p);
        models.extend(passthrough_models("openai", OPENAI_MODELS));
        models.push(wildcard_model("openai"));
    }
    if let Some(key) = env("ANTHROPIC_API_KEY").filter(|k| !k.trim().is_empty()) {
        let mut p = provider("anthropic", RawProviderKind::Anthropic);
        p.api_key = Some(Secret::new(key));
        p.base_url = env("ANTHROPIC_BASE_URL").filter(|u| !u.trim().is_empty());
        providers.push(p);
        models.extend(passthrough_models("anthropic", ANTHROPIC_MODELS));
        models.push(wildcard_model("anthropic"));
    }
    if let Some(key) = env("GEMINI_API_KEY").filter(|k| !k.trim().is_empty()) {
        let mut p = provider("gemini", RawProviderKind::Gemini);
        p.api_key = Some(Secret::new(key));
        p.base_url = env("GEMINI_BASE_URL").filter(|u| !u.trim().is_empty());
        providers.push(p);
        models.extend(passthrough_models("gemini", GEMINI_MODELS));
        models.push(wildcard_model("gemini"));
    }
    // Bedrock: AWS keys (or a Bedrock API key) and a region; the keys themselves are read
    // from the environment again when the provider starts. Models as `bedrock/<model id>`.
    let set = |k: &str| env(k).filter(|v| !v.trim().is_empty());
    let keys = set("AWS_ACCESS_KEY_ID").is_some() && set("AWS_SECRET_ACCESS_KEY").is_some();
    let region = set("AWS_REGION").or_else(|| set("AWS_DEFAULT_REGION"));
    if let (true, Some(region)) = (keys || set("AWS_BEARER_TOKEN_BEDROCK").is_some(), region) {
        let mut p = provider("bedrock", RawProviderKind::Bedrock);
        p.region = Some(region);
        p.base_url = set("AWS_ENDPOINT_URL_BEDROCK_RUNTIME");
        providers.push(p);
        models.push(wildcard_model("bedrock"));
    }
    (providers, models)
}
