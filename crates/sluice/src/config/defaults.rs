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
        api_key: None,
        base_url: None,
        locality: None,
        headers: Default::default(),
        timeout: None,
        connect_timeout: None,
        stream_idle_timeout: None,
        stream_usage: None,
        mock: None,
        health_check: None,
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
    }
    (providers, models)
}
