//! Fixtures for the content-policy benchmark: the default rule set (every built-in
//! detector) built through the real config loader, and a 4 KiB chat prompt.

use sluice::policy::content::PolicySet;
use std::sync::Arc;

/// Every built-in detector, one rule each, as a user would write them.
pub const DEFAULT_RULES: &str = "
providers: [{name: p, kind: mock}]
models: [{name: m, deployments: [{provider: p, model: x}]}]
policies:
  - {name: email, stage: both, detect: [email], action: redact_reversible}
  - {name: phone, stage: both, detect: [phone], action: redact}
  - {name: cards, stage: both, detect: [payment_card], action: block}
  - {name: iban, stage: both, detect: [iban], action: redact}
  - {name: ssn, stage: both, detect: [ssn], action: redact}
  - {name: ip, stage: both, detect: [ip], action: flag}
  - {name: secrets, stage: both, detect: [secrets], action: block}
  - {name: injection, stage: input, detect: [prompt_injection], action: block}
";

pub fn default_rules() -> Arc<PolicySet> {
    match sluice::config::from_yaml(DEFAULT_RULES, &|_| None) {
        Ok(c) => c.policies,
        Err(e) => panic!("bench rules do not load: {e:?}"),
    }
}

const PARAGRAPH: &str = "Our quarterly review covers the migration of the billing service to the new cluster. \
The team moved 14 services, cut p99 latency from 180 ms to 95 ms, and retired version 2.3 of the API. \
Please summarise the risks below and suggest next steps for Q3, including the rollout plan, \
the on-call rota, and `fn main() { let x = vec![1, 2, 3]; println!(\"{:?}\", x); }` as an example. ";

/// A benign prompt of exactly `n` bytes (ASCII).
pub fn prompt(n: usize) -> String {
    let mut s = String::with_capacity(n + PARAGRAPH.len());
    while s.len() < n {
        s.push_str(PARAGRAPH);
    }
    s.truncate(n);
    s
}

/// An OpenAI chat body with a system message and the prompt as the user message.
pub fn chat_body(prompt: &str) -> Vec<u8> {
    serde_json::json!({
        "model": "m",
        "messages": [
            {"role": "system", "content": "You are a helpful assistant."},
            {"role": "user", "content": prompt},
        ],
    })
    .to_string()
    .into_bytes()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fixtures_load_and_the_prompt_is_clean() {
        let set = default_rules();
        assert_eq!(set.rules.len(), 8);
        let p = prompt(4096);
        assert_eq!(p.len(), 4096);
        for r in &set.rules {
            assert!(
                sluice::policy::content::scan::find(r, &p).is_empty(),
                "{}",
                r.name
            );
        }
    }
}
