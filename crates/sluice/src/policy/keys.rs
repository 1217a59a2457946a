//! Virtual keys: generation, hashing, roles, model patterns, and the resolved principal the
//! request path sees (built once per cache refresh, never per request).

use super::limits::{Period, ScopeLimits};
use crate::store::gov::{KeyRecord, Limits, TeamRecord, UserRecord};
use rand::RngCore;
use sha2::{Digest, Sha256};
use std::collections::HashMap;
use std::sync::Arc;

pub const KEY_PREFIX: &str = "sk-sluice-";
/// Characters of a key shown in listings and usage records.
const VISIBLE: usize = KEY_PREFIX.len() + 8;

/// A new key: `sk-sluice-` + 32 random bytes as hex.
pub fn generate() -> String {
    let mut bytes = [0u8; 32];
    rand::rngs::OsRng.fill_bytes(&mut bytes);
    format!("{KEY_PREFIX}{}", hex::encode(bytes))
}

pub fn hash(key: &str) -> [u8; 32] {
    Sha256::digest(key.as_bytes()).into()
}

pub fn hash_hex(key: &str) -> String {
    hex::encode(hash(key))
}

pub fn decode_hash(h: &str) -> Option<[u8; 32]> {
    hex::decode(h).ok()?.try_into().ok()
}

pub fn visible_prefix(key: &str) -> String {
    key.chars().take(VISIBLE).collect()
}

pub fn new_id() -> String {
    let mut b = [0u8; 8];
    rand::rngs::OsRng.fill_bytes(&mut b);
    format!("key_{}", hex::encode(b))
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    /// Everything.
    Admin,
    /// Keys and usage of its own team only.
    TeamAdmin,
    /// Read-only.
    Viewer,
}

impl Role {
    pub fn parse(s: &str) -> Option<Role> {
        Some(match s {
            "admin" => Role::Admin,
            "team_admin" => Role::TeamAdmin,
            "viewer" => Role::Viewer,
            _ => return None,
        })
    }
}

/// `*` matches any run of characters; everything else is literal.
pub fn pattern_matches(pattern: &str, name: &str) -> bool {
    let mut parts = pattern.split('*');
    let Some(first) = parts.next() else {
        return false;
    };
    let Some(mut rest) = name.strip_prefix(first) else {
        return false;
    };
    let parts: Vec<&str> = parts.collect();
    let Some((last, middle)) = parts.split_last() else {
        return rest.is_empty();
    };
    for p in middle {
        match rest.find(p) {
            Some(i) => rest = &rest[i + p.len()..],
            None => return false,
        }
    }
    rest.len() >= last.len() && rest.ends_with(last)
}

/// A key with everything the request path needs, resolved.
#[derive(Debug)]
pub struct KeyPrincipal {
    pub record: KeyRecord,
    /// The stored hash (and a rotated-out one), decoded once for constant-time comparison.
    pub hash: [u8; 32],
    pub previous_hash: [u8; 32],
    pub role: Option<Role>,
    pub id: Arc<str>,
    pub prefix: Arc<str>,
    pub team: Option<Arc<str>>,
    pub user: Option<Arc<str>>,
    /// Metadata as JSON text for usage records (`None` when empty).
    pub tags: Option<Arc<str>>,
    /// Model lists to satisfy, all of them: the key's, its team's, the team's parents'.
    pub model_lists: Vec<(Arc<str>, Vec<String>)>,
    /// Key first, then its user, then the team and its parents.
    pub scopes: Vec<ScopeLimits>,
    /// Per-model limits of the team and its parents: (model pattern, scope).
    pub model_scopes: Vec<(String, ScopeLimits)>,
    pub has_budget: bool,
}

impl KeyPrincipal {
    /// Whether every model list allows `model`; otherwise the list that refused it.
    pub fn model_refused_by(&self, model: &str) -> Option<&(Arc<str>, Vec<String>)> {
        self.model_lists
            .iter()
            .find(|(_, list)| !list.iter().any(|p| pattern_matches(p, model)))
    }

    /// Whether any limit or budget applies (else admission is skipped).
    pub fn is_limited(&self) -> bool {
        !self.model_scopes.is_empty()
            || self.scopes.iter().any(|s| {
                s.rpm.is_some()
                    || s.tpm.is_some()
                    || s.max_concurrency.is_some()
                    || s.budget.is_some()
            })
    }
}

pub fn scope(id: String, label: String, l: &Limits) -> ScopeLimits {
    ScopeLimits {
        id: Arc::from(id),
        label: Arc::from(label),
        rpm: l.rpm,
        tpm: l.tpm,
        max_concurrency: l.max_concurrency,
        budget: l.budget_micro_usd.map(|b| {
            (
                b,
                l.budget_period
                    .as_deref()
                    .and_then(Period::parse)
                    .unwrap_or(Period::Monthly),
            )
        }),
    }
}

pub fn team_scope(t: &TeamRecord) -> ScopeLimits {
    scope(
        format!("team:{}", t.name),
        format!("team {:?}", t.name),
        &t.limits,
    )
}

pub fn user_scope(u: &UserRecord) -> ScopeLimits {
    scope(
        format!("user:{}", u.name),
        format!("user {:?}", u.name),
        &u.limits,
    )
}

pub fn key_scope(k: &KeyRecord) -> ScopeLimits {
    let label = match &k.name {
        Some(n) => format!("key {n:?} ({})", k.id),
        None => format!("key {}", k.id),
    };
    scope(format!("key:{}", k.id), label, &k.limits)
}

/// Resolves a key against its user and the teams (walking parents, at most 16 levels).
pub fn resolve(
    k: &KeyRecord,
    users: &HashMap<&str, &UserRecord>,
    teams: &HashMap<&str, &TeamRecord>,
) -> KeyPrincipal {
    let mut scopes = vec![key_scope(k)];
    let mut model_lists = Vec::new();
    let mut model_scopes = Vec::new();
    if let Some(m) = &k.limits.models {
        model_lists.push((Arc::from("key"), m.clone()));
    }
    if let Some(u) = k.user.as_deref().and_then(|u| users.get(u)) {
        scopes.push(user_scope(u));
        if let Some(m) = &u.limits.models {
            model_lists.push((Arc::from(format!("user {:?}", u.name)), m.clone()));
        }
    }
    let mut next = k.team.as_deref();
    let mut depth = 0;
    while let (Some(name), true) = (next, depth < 16) {
        let Some(t) = teams.get(name) else { break };
        scopes.push(team_scope(t));
        for (model, ml) in &t.model_limits {
            model_scopes.push((
                model.clone(),
                ScopeLimits {
                    id: Arc::from(format!("team:{}:model:{model}", t.name)),
                    label: Arc::from(format!("team {:?} for model {model:?}", t.name)),
                    rpm: ml.rpm,
                    tpm: ml.tpm,
                    max_concurrency: ml.max_concurrency,
                    budget: None,
                },
            ));
        }
        if let Some(m) = &t.limits.models {
            model_lists.push((Arc::from(format!("team {:?}", t.name)), m.clone()));
        }
        next = t.parent.as_deref();
        depth += 1;
    }
    let has_budget = scopes.iter().any(|s| s.budget.is_some());
    KeyPrincipal {
        hash: decode_hash(&k.hash).unwrap_or_default(),
        previous_hash: k
            .previous_hash
            .as_deref()
            .and_then(decode_hash)
            .unwrap_or_default(),
        role: k.role.as_deref().and_then(Role::parse),
        id: Arc::from(k.id.as_str()),
        prefix: Arc::from(k.prefix.as_str()),
        team: k.team.as_deref().map(Arc::from),
        user: k.user.as_deref().map(Arc::from),
        tags: (!k.metadata.is_empty())
            .then(|| serde_json::to_string(&k.metadata).ok())
            .flatten()
            .map(Arc::from),
        model_lists,
        scopes,
        model_scopes,
        has_budget,
        record: k.clone(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wildcards() {
        assert!(pattern_matches("claude-*", "claude-sonnet-4-5"));
        assert!(pattern_matches("*", "anything"));
        assert!(pattern_matches("gpt-4o", "gpt-4o"));
        assert!(!pattern_matches("gpt-4o", "gpt-4o-mini"));
        assert!(pattern_matches("gpt-*-mini", "gpt-4o-mini"));
        assert!(!pattern_matches("gpt-*-mini", "gpt-4o"));
        assert!(!pattern_matches("a*a", "a"));
    }

    #[test]
    fn keys_are_long_random_and_hashed() {
        let a = generate();
        assert!(a.starts_with(KEY_PREFIX));
        assert_eq!(a.len(), KEY_PREFIX.len() + 64);
        assert_ne!(a, generate());
        assert_eq!(visible_prefix(&a).len(), VISIBLE);
        assert_eq!(hash_hex(&a).len(), 64);
    }

    #[test]
    fn key_gets_the_intersection_of_model_lists() {
        let team = TeamRecord {
            name: "eng".into(),
            limits: Limits {
                models: Some(vec!["gpt-*".into()]),
                ..Limits::default()
            },
            ..TeamRecord::default()
        };
        let key = KeyRecord {
            id: "k".into(),
            team: Some("eng".into()),
            limits: Limits {
                models: Some(vec!["gpt-4o".into(), "claude-*".into()]),
                ..Limits::default()
            },
            ..KeyRecord::default()
        };
        let teams = HashMap::from([("eng", &team)]);
        let p = resolve(&key, &HashMap::new(), &teams);
        assert!(p.model_refused_by("gpt-4o").is_none());
        assert_eq!(
            p.model_refused_by("claude-x").map(|r| &*r.0),
            Some("team \"eng\"")
        );
        assert_eq!(p.model_refused_by("gpt-5").map(|r| &*r.0), Some("key"));
        assert_eq!(p.scopes.len(), 2);
    }
}
