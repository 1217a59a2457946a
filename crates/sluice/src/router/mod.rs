//! Model routes: the name a client asks for -> ordered candidate deployments, and dispatch
//! over them (retrying the next candidate only on errors classified retryable).

pub mod dispatch;

use crate::config::Config;
use crate::policy::prices::{self, Price};
use crate::providers::Provider;
use bytes::Bytes;
use rand::Rng;
use std::collections::HashMap;
use std::sync::Arc;

/// One (provider, provider model) a route can send to.
pub struct Deployment {
    pub provider: Arc<Provider>,
    pub model: Arc<str>,
    /// `model` as a JSON string literal, ready to splice into a body.
    pub model_json: Bytes,
    pub weight: u32,
    /// Deployment override, else the model's, else the built-in catalog's (by provider model,
    /// then public model name). `None`: unpriced (cost 0).
    pub price: Option<Price>,
}

pub struct Route {
    pub name: Arc<str>,
    pub deployments: Vec<Deployment>,
    pub fallbacks: Vec<Arc<str>>,
    /// The dearest price among the deployments and fallbacks: what admission reserves at.
    pub reserve_price: Option<Price>,
}

/// Every route, by public model name.
pub struct ModelTable {
    routes: HashMap<String, Arc<Route>>,
    names: Vec<String>,
    /// Stamped on every usage record: the built-in catalog, plus a digest of config overrides.
    pub catalog_version: Arc<str>,
}

impl ModelTable {
    pub fn build(cfg: &Config, providers: &[Arc<Provider>]) -> Self {
        let mut routes = HashMap::with_capacity(cfg.models.len());
        let mut names = Vec::with_capacity(cfg.models.len());
        for m in &cfg.models {
            let deployments = m
                .deployments
                .iter()
                .filter_map(|d| {
                    let provider = providers.get(d.provider)?.clone();
                    let model_json = serde_json::to_vec(&d.model).ok()?;
                    let price = d
                        .price
                        .or(m.price)
                        .or_else(|| prices::builtin(&d.model))
                        .or_else(|| prices::builtin(&m.name));
                    Some(Deployment {
                        provider,
                        model: Arc::from(d.model.as_str()),
                        model_json: Bytes::from(model_json),
                        weight: d.weight.max(1),
                        price,
                    })
                })
                .collect();
            routes.insert(
                m.name.clone(),
                Route {
                    name: Arc::from(m.name.as_str()),
                    deployments,
                    fallbacks: m.fallbacks.iter().map(|f| Arc::from(f.as_str())).collect(),
                    reserve_price: None,
                },
            );
            names.push(m.name.clone());
        }
        names.sort();
        let dearest = |r: &Route| {
            r.deployments
                .iter()
                .filter_map(|d| d.price)
                .reduce(Price::max)
        };
        let own: HashMap<String, Option<Price>> = routes
            .iter()
            .map(|(n, r)| (n.clone(), dearest(r)))
            .collect();
        for r in routes.values_mut() {
            r.reserve_price = std::iter::once(&*r.name)
                .chain(r.fallbacks.iter().map(|f| &**f))
                .filter_map(|n| own.get(n).copied().flatten())
                .reduce(Price::max);
        }
        let routes = routes.into_iter().map(|(n, r)| (n, Arc::new(r))).collect();
        Self {
            routes,
            names,
            catalog_version: catalog_version(cfg),
        }
    }

    pub fn get(&self, name: &str) -> Option<&Arc<Route>> {
        self.routes.get(name)
    }

    /// Public model names, sorted.
    pub fn names(&self) -> &[String] {
        &self.names
    }

    /// The order to try deployments in: the route's own (weighted random, without
    /// replacement), then each fallback route's, skipping repeats.
    pub fn candidates<'a>(&'a self, route: &'a Route) -> Vec<&'a Deployment> {
        let mut out = Vec::with_capacity(route.deployments.len());
        weighted_order(&route.deployments, &mut out);
        for f in &route.fallbacks {
            if let Some(fr) = self.routes.get(&**f) {
                let before = out.len();
                weighted_order(&fr.deployments, &mut out);
                // A deployment shared by two routes is tried once.
                let mut i = before;
                while i < out.len() {
                    if out[..before].iter().any(|d| std::ptr::eq(*d, out[i])) {
                        out.remove(i);
                    } else {
                        i += 1;
                    }
                }
            }
        }
        out
    }
}

fn catalog_version(cfg: &Config) -> Arc<str> {
    use std::hash::{Hash, Hasher};
    let mut h = std::collections::hash_map::DefaultHasher::new();
    let mut any = false;
    for m in &cfg.models {
        for (name, p) in std::iter::once((&m.name, m.price))
            .chain(m.deployments.iter().map(|d| (&d.model, d.price)))
        {
            if let Some(p) = p {
                any = true;
                (name, p.input, p.output, p.cached_input, p.reasoning).hash(&mut h);
            }
        }
    }
    if any {
        Arc::from(format!(
            "{}+config.{:08x}",
            prices::BUILTIN_CATALOG,
            h.finish() as u32
        ))
    } else {
        Arc::from(prices::BUILTIN_CATALOG)
    }
}

fn weighted_order<'a>(deployments: &'a [Deployment], out: &mut Vec<&'a Deployment>) {
    match deployments.len() {
        0 => {}
        1 => out.push(&deployments[0]),
        _ => {
            let mut rest: Vec<&Deployment> = deployments.iter().collect();
            let mut rng = rand::thread_rng();
            while !rest.is_empty() {
                let total: u64 = rest.iter().map(|d| u64::from(d.weight)).sum();
                let mut pick = rng.gen_range(0..total.max(1));
                let mut idx = 0;
                for (i, d) in rest.iter().enumerate() {
                    let w = u64::from(d.weight);
                    if pick < w {
                        idx = i;
                        break;
                    }
                    pick -= w;
                }
                out.push(rest.remove(idx));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn table(yaml: &str) -> (ModelTable, Vec<Arc<Provider>>) {
        let cfg = crate::config::from_yaml(yaml, &|_| None).unwrap();
        let providers: Vec<Arc<Provider>> = cfg
            .providers
            .iter()
            .map(|p| Arc::new(Provider::from_config(p).unwrap()))
            .collect();
        (ModelTable::build(&cfg, &providers), providers)
    }

    #[test]
    fn weights_shape_the_first_choice_and_fallbacks_follow() {
        let (t, _) = table(
            concat!(
                "providers:\n  - {name: a, kind: mock}\n  - {name: b, kind: mock}\n  - {name: c, kind: mock}\n",
                "models:\n  - name: m\n    deployments:\n      - {provider: a, model: x, weight: 9}\n",
                "      - {provider: b, model: y, weight: 1}\n    fallbacks: [n]\n",
                "  - name: n\n    deployments:\n      - {provider: c, model: z}\n",
            ),
        );
        let route = t.get("m").unwrap();
        let mut first_a = 0;
        for _ in 0..2000 {
            let c = t.candidates(route);
            assert_eq!(c.len(), 3);
            assert_eq!(&*c[2].model, "z", "fallback route comes last");
            if &*c[0].model == "x" {
                first_a += 1;
            }
        }
        // 90 % expected; allow generous slack so this never flakes.
        assert!((1650..=1950).contains(&first_a), "first_a = {first_a}");
        assert_eq!(&t.get("m").unwrap().deployments[0].model_json[..], b"\"x\"");
    }
}
