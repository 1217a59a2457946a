//! Model routes: the name a client asks for -> ordered candidate deployments, and dispatch
//! over them (retrying the next candidate only on errors classified retryable).

pub mod catalog;
pub mod classify;
pub mod dispatch;
pub mod health;
pub mod probe;
pub mod retry;
pub mod strategy;

use crate::config::{
    BreakerConfig, ComplexityConfig, Config, DataPolicy, HedgeConfig, Locality, Mode, RetryConfig,
    Strategy,
};
use crate::policy::prices::{self, Price};
use crate::providers::{FallbackClass, Provider};
use bytes::Bytes;
use catalog::{Capabilities, Missing, Needs};
use health::Health;
use health::TtftStats;
use std::collections::HashMap;
use std::sync::atomic::AtomicUsize;
use std::sync::Arc;
use std::time::Duration;

/// One (provider, provider model) a route can send to.
pub struct Deployment {
    pub provider: Arc<Provider>,
    pub model: Arc<str>,
    /// `model` as a JSON string literal, ready to splice into a body.
    pub model_json: Bytes,
    /// `model` as the `x-sluice-model` response header, built once.
    pub model_header: Option<http::HeaderValue>,
    pub weight: u32,
    /// Deployment override, else the model's, else the built-in catalog's (by provider model,
    /// then public model name). `None`: unpriced (cost 0).
    pub price: Option<Price>,
    /// Tier, lower first.
    pub priority: u32,
    /// Until response headers (whole body when not streaming): this deployment's or its provider's.
    pub timeout: Duration,
    /// Micro-USD per 1M input + output tokens, for `lowest_cost` (`u64::MAX` when unpriced).
    pub cost_rank: u64,
    /// Requests-per-minute capacity.
    pub rpm: Option<u32>,
    /// Tokens-per-minute capacity (estimates counted at dispatch).
    pub tpm: Option<u32>,
    /// Until the first byte of the answer (first stream chunk), when configured.
    pub first_token_timeout: Option<Duration>,
    /// Longest silence between stream chunks: this deployment's or its provider's.
    pub idle_timeout: Duration,
    /// The whole attempt, until the last byte, when configured.
    pub total_timeout: Option<Duration>,
    /// Catalog entry with the model's and the deployment's overrides.
    pub capabilities: Capabilities,
    /// Live state, shared by every route using this (provider, model).
    pub health: Arc<Health>,
}

impl Deployment {
    /// Breaker closed (or a probe free), rpm / tpm capacity left, and the upstream has not
    /// said (in `x-ratelimit-remaining-*`) that it has nothing left.
    pub fn available(&self) -> bool {
        self.health.available()
            && self.rpm.is_none_or(|cap| self.health.rpm_used() < cap)
            && self
                .tpm
                .is_none_or(|cap| self.health.tpm_used() < u64::from(cap))
            && !self.health.exhausted()
    }

    /// Estimated micro-USD (times 1M) of a request with `needs` here, for `cheapest_capable`.
    pub fn estimated_cost(&self, needs: &Needs) -> u128 {
        self.price.map_or(u128::MAX, |p| {
            u128::from(needs.prompt_tokens) * u128::from(p.input)
                + u128::from(needs.max_tokens.unwrap_or(ESTIMATED_OUTPUT)) * u128::from(p.output)
        })
    }
}

/// Output tokens assumed by `cheapest_capable` when a request sets no maximum.
const ESTIMATED_OUTPUT: u64 = 1024;

pub struct Route {
    pub name: Arc<str>,
    /// Sorted by priority (stable, so config order holds within a tier).
    pub deployments: Vec<Deployment>,
    pub fallbacks: Vec<Arc<str>>,
    /// The dearest price among the deployments and fallbacks (per-class fallbacks included):
    /// what admission reserves at.
    pub reserve_price: Option<Price>,
    /// Some deployment the request may reach (fallbacks included) has no price.
    pub unpriced: bool,
    /// The route's `cache:` setting.
    pub cache: crate::config::cache::RouteCache,
    /// Per error class (`FallbackClass::index`), tried after a failure of that class.
    pub class_fallbacks: [Vec<Arc<str>>; 4],
    pub strategy: Strategy,
    pub retries: RetryConfig,
    pub breaker: BreakerConfig,
    pub local_only: bool,
    pub hedge: Option<HedgeConfig>,
    /// Observed time to first token (for `hedge.after: p95`).
    pub ttft: Arc<TtftStats>,
    /// Complexity routing (the route then has no deployments of its own).
    pub complexity: Option<ComplexityConfig>,
    /// Round-robin position.
    rr: AtomicUsize,
}

impl Route {
    /// The largest max output among the deployments, when the catalog knows it for all.
    pub fn max_output(&self) -> Option<u64> {
        self.deployments
            .iter()
            .map(|d| d.capabilities.max_output)
            .try_fold(None, |acc: Option<u64>, m| {
                m.map(|m| Some(acc.map_or(m, |a| a.max(m))))
            })
            .flatten()
    }

    /// Whether routing needs the request's shape (capabilities), so the body is parsed.
    pub fn needs_shape(&self) -> bool {
        self.strategy == Strategy::CheapestCapable || self.complexity.is_some()
    }
}

/// The candidates for one request, in order, and why.
/// The candidate sequence for one request: what dispatch tries, in order.
pub struct Plan<'a> {
    pub candidates: Vec<&'a Deployment>,
    /// After `candidates` all failed with an error of a class: that class's fallback routes'
    /// deployments (the route's `class_fallbacks`, then the global ones), in order.
    pub conditional: Vec<(FallbackClass, &'a Deployment)>,
    /// Deployments left out because their breaker is open or their rpm capacity is used up.
    pub skipped_open: u32,
    /// Deployments left out by locality (`mode: on_prem`, `data_policy: local_only`).
    pub skipped_locality: u32,
    /// Deployments left out because they lack a capability the request needs.
    pub skipped_capability: u32,
    /// The first capability found missing (for the error when nothing is left).
    pub missing: Option<Missing>,
}

impl Plan<'_> {
    fn with_capacity(n: usize) -> Self {
        Plan {
            candidates: Vec::with_capacity(n),
            conditional: Vec::new(),
            skipped_open: 0,
            skipped_locality: 0,
            skipped_capability: 0,
            missing: None,
        }
    }
}

/// Every route, by public model name (aliases included).
pub struct ModelTable {
    routes: HashMap<String, Arc<Route>>,
    /// `prefix/*` routes, longest prefix first: any model name under the prefix.
    wildcards: Vec<(String, Arc<Route>)>,
    names: Vec<String>,
    /// Stamped on every usage record: the built-in catalog, plus a digest of config overrides.
    pub catalog_version: Arc<str>,
    on_prem_only: bool,
    global_class_fallbacks: [Vec<Arc<str>>; 4],
    /// Health by (provider, model), for the admin view and the next reload.
    health: Vec<(Arc<str>, Arc<str>, Arc<Health>)>,
    /// Routes resolved through a wildcard, kept so their state (round robin, hedging
    /// statistics) lives across requests; bounded by [`WILDCARD_ROUTES`].
    resolved: std::sync::RwLock<HashMap<String, Arc<Route>>>,
    /// Some route sets `cache:` on (so the cache step must look even without a `cache:` section).
    pub any_route_cache: bool,
}

/// The most wildcard-resolved routes kept; past it the set starts over.
const WILDCARD_ROUTES: usize = 4096;

impl ModelTable {
    pub fn build(cfg: &Config, providers: &[Arc<Provider>]) -> Self {
        Self::build_with(cfg, providers, None)
    }

    /// Builds the table, keeping the live state of deployments that `previous` also had.
    pub fn build_with(
        cfg: &Config,
        providers: &[Arc<Provider>],
        previous: Option<&ModelTable>,
    ) -> Self {
        let mut by_identity: HashMap<(Arc<str>, Arc<str>), Arc<Health>> = previous
            .map(|p| {
                p.health
                    .iter()
                    .map(|(pr, m, h)| ((pr.clone(), m.clone()), h.clone()))
                    .collect()
            })
            .unwrap_or_default();
        let mut health = Vec::new();
        let mut routes = HashMap::with_capacity(cfg.models.len());
        let mut names = Vec::with_capacity(cfg.models.len());
        let mut wildcards = Vec::new();
        // What admission reserves at: the dearest price among a route's own deployments and
        // those of its fallbacks.
        let dearest: HashMap<&str, (Option<Price>, bool)> = cfg
            .models
            .iter()
            .map(|m| {
                let p = m
                    .deployments
                    .iter()
                    .filter_map(|d| deployment_price(m, d))
                    .reduce(Price::max);
                let unpriced = m
                    .deployments
                    .iter()
                    .any(|d| deployment_price(m, d).is_none());
                (m.name.as_str(), (p, unpriced))
            })
            .collect();
        fn reachable(m: &crate::config::ModelConfig) -> Vec<&str> {
            std::iter::once(m.name.as_str())
                .chain(m.fallbacks.iter().map(String::as_str))
                .chain(m.class_fallbacks.iter().flatten().map(String::as_str))
                .collect()
        }
        for m in &cfg.models {
            let mut deployments: Vec<Deployment> = m
                .deployments
                .iter()
                .filter_map(|d| {
                    let provider = providers.get(d.provider)?.clone();
                    let model_json = serde_json::to_vec(&d.model).ok()?;
                    let price = deployment_price(m, d);
                    let model: Arc<str> = Arc::from(d.model.as_str());
                    let key = (provider.name.clone(), model.clone());
                    let h = by_identity.entry(key).or_default().clone();
                    if !health.iter().any(|(_, _, x)| Arc::ptr_eq(x, &h)) {
                        health.push((provider.name.clone(), model.clone(), h.clone()));
                    }
                    // A deployment with its own connect timeout gets its own connection pool.
                    let provider = match (d.timeouts.connect, cfg.providers.get(d.provider)) {
                        (Some(connect), Some(pc)) if connect != pc.connect_timeout => {
                            let mut pc = pc.clone();
                            pc.connect_timeout = connect;
                            Provider::from_config(&pc).map_or(provider, Arc::new)
                        }
                        _ => provider,
                    };
                    let capabilities = catalog::builtin(&d.model)
                        .or_else(|| catalog::builtin(&m.name))
                        .unwrap_or_default()
                        .with(&m.capabilities)
                        .with(&d.capabilities);
                    Some(Deployment {
                        model_header: http::HeaderValue::from_str(&model).ok(),
                        timeout: d.timeout.unwrap_or(provider.timeout),
                        first_token_timeout: d.timeouts.first_token,
                        idle_timeout: d.timeouts.idle.unwrap_or(provider.stream_idle_timeout),
                        total_timeout: d.timeouts.total,
                        capabilities,
                        tpm: d.tpm,
                        provider,
                        model,
                        model_json: Bytes::from(model_json),
                        weight: d.weight.max(1),
                        priority: d.priority,
                        cost_rank: price.map_or(u64::MAX, |p| p.input.saturating_add(p.output)),
                        price,
                        rpm: d.rpm,
                        health: h,
                    })
                })
                .collect();
            deployments.sort_by_key(|d| d.priority);
            let route = Arc::new(Route {
                name: Arc::from(m.name.as_str()),
                deployments,
                fallbacks: m.fallbacks.iter().map(|f| Arc::from(f.as_str())).collect(),
                reserve_price: reachable(m)
                    .into_iter()
                    .filter_map(|n| dearest.get(n).and_then(|d| d.0))
                    .reduce(Price::max),
                unpriced: reachable(m)
                    .into_iter()
                    .any(|n| dearest.get(n).is_some_and(|d| d.1)),
                cache: m.cache,
                class_fallbacks: arcs(&m.class_fallbacks),
                strategy: m.strategy,
                retries: m.retries,
                breaker: m.breaker,
                local_only: m.data_policy == DataPolicy::LocalOnly,
                hedge: m.hedge,
                ttft: Arc::default(),
                complexity: m.complexity.clone(),
                rr: AtomicUsize::new(0),
            });
            for alias in &m.aliases {
                routes.insert(alias.clone(), route.clone());
                names.push(alias.clone());
            }
            if let Some(prefix) = m.name.strip_suffix('*') {
                wildcards.push((prefix.to_string(), route));
                continue;
            }
            routes.insert(m.name.clone(), route);
            names.push(m.name.clone());
        }
        names.sort();
        wildcards.sort_by_key(|(p, _)| std::cmp::Reverse(p.len()));
        Self {
            routes,
            wildcards,
            names,
            on_prem_only: cfg.mode == Mode::OnPrem,
            global_class_fallbacks: arcs(&cfg.class_fallbacks),
            health,
            catalog_version: catalog_version(cfg),
            resolved: std::sync::RwLock::new(HashMap::new()),
            any_route_cache: cfg
                .models
                .iter()
                .any(|m| matches!(m.cache, crate::config::cache::RouteCache::On { .. })),
        }
    }

    pub fn get(&self, name: &str) -> Option<&Arc<Route>> {
        self.routes.get(name)
    }

    /// The route for a requested model name: an exact name or alias, else the longest
    /// `prefix/*` route, whose `model: "*"` deployments then use the rest of the name.
    pub fn resolve(&self, name: &str) -> Option<Arc<Route>> {
        if let Some(r) = self.routes.get(name) {
            return Some(r.clone());
        }
        if let Some(r) = self.resolved.read().ok()?.get(name) {
            return Some(r.clone());
        }
        let route = self.resolve_wildcard(name)?;
        if let Ok(mut kept) = self.resolved.write() {
            if kept.len() >= WILDCARD_ROUTES {
                kept.clear();
            }
            kept.insert(name.to_string(), route.clone());
        }
        Some(route)
    }

    fn resolve_wildcard(&self, name: &str) -> Option<Arc<Route>> {
        let (prefix, template) = self
            .wildcards
            .iter()
            .find(|(p, _)| name.len() > p.len() && name.starts_with(p.as_str()))?;
        let rest = &name[prefix.len()..];
        let rest_json = Bytes::from(serde_json::to_vec(rest).ok()?);
        let deployments = template
            .deployments
            .iter()
            .map(|d| {
                let star = &*d.model == "*";
                // A `*` deployment serves whatever model was asked for: price it as that model.
                let price = if star {
                    d.price.or_else(|| prices::builtin(rest))
                } else {
                    d.price
                };
                Deployment {
                    provider: d.provider.clone(),
                    model: if star {
                        Arc::from(rest)
                    } else {
                        d.model.clone()
                    },
                    model_json: if star {
                        rest_json.clone()
                    } else {
                        d.model_json.clone()
                    },
                    model_header: if star {
                        http::HeaderValue::from_str(rest).ok()
                    } else {
                        d.model_header.clone()
                    },
                    weight: d.weight,
                    priority: d.priority,
                    timeout: d.timeout,
                    price,
                    cost_rank: price.map_or(u64::MAX, |p| p.input.saturating_add(p.output)),
                    rpm: d.rpm,
                    tpm: d.tpm,
                    first_token_timeout: d.first_token_timeout,
                    idle_timeout: d.idle_timeout,
                    total_timeout: d.total_timeout,
                    capabilities: if star {
                        catalog::builtin(rest).unwrap_or(d.capabilities)
                    } else {
                        d.capabilities
                    },
                    // Health is tracked per wildcard deployment (per provider), not per model.
                    health: d.health.clone(),
                }
            })
            .collect::<Vec<Deployment>>();
        let reserve_price = deployments
            .iter()
            .filter_map(|d| d.price)
            .chain(template.reserve_price)
            .reduce(Price::max);
        let unpriced = deployments.iter().any(|d| d.price.is_none());
        Some(Arc::new(Route {
            name: Arc::from(name),
            deployments,
            fallbacks: template.fallbacks.clone(),
            reserve_price,
            unpriced,
            cache: template.cache,
            class_fallbacks: template.class_fallbacks.clone(),
            strategy: template.strategy,
            retries: template.retries,
            breaker: template.breaker,
            local_only: template.local_only,
            hedge: template.hedge,
            ttft: template.ttft.clone(),
            complexity: None,
            rr: AtomicUsize::new(0),
        }))
    }

    /// Whether a model name is served (exactly, by alias or by a wildcard route).
    pub fn serves(&self, name: &str) -> bool {
        self.routes.contains_key(name)
            || self
                .wildcards
                .iter()
                .any(|(p, _)| name.len() > p.len() && name.starts_with(p.as_str()))
    }

    /// Public model names (aliases included), sorted.
    pub fn names(&self) -> &[String] {
        &self.names
    }

    /// The live state of every deployment of `provider`, with the breaker settings of a
    /// route that uses it (for active health checks).
    pub fn deployments_of(&self, provider: &str) -> Vec<(Arc<Health>, BreakerConfig)> {
        let mut out: Vec<(Arc<Health>, BreakerConfig)> = Vec::new();
        for r in self
            .routes
            .values()
            .chain(self.wildcards.iter().map(|(_, r)| r))
        {
            for d in r
                .deployments
                .iter()
                .filter(|d| &*d.provider.name == provider)
            {
                if !out.iter().any(|(h, _)| Arc::ptr_eq(h, &d.health)) {
                    out.push((d.health.clone(), r.breaker));
                }
            }
        }
        out
    }

    /// Every deployment's live state, by (provider, model).
    pub fn health(&self) -> &[(Arc<str>, Arc<str>, Arc<Health>)] {
        &self.health
    }

    pub fn candidates<'a>(&'a self, route: &'a Route) -> Vec<&'a Deployment> {
        self.plan(route).candidates
    }

    /// The order to try deployments in: the route's own, tier by tier (each tier ordered by
    /// the route's strategy), then each fallback route's, skipping repeats, open breakers
    /// and deployments the locality rules forbid.
    pub fn plan<'a>(&'a self, route: &'a Route) -> Plan<'a> {
        self.plan_for(route, None)
    }

    /// [`ModelTable::plan`], leaving out deployments that lack what `needs` asks for.
    pub fn plan_for<'a>(&'a self, route: &'a Route, needs: Option<&Needs>) -> Plan<'a> {
        let mut plan = Plan::with_capacity(route.deployments.len());
        let class_fallbacks = FallbackClass::ALL
            .iter()
            .any(|c| self.class_fallbacks(route, *c).next().is_some());
        // The plain one-deployment route pays for nothing else.
        if route.deployments.len() == 1
            && route.fallbacks.is_empty()
            && needs.is_none()
            && !class_fallbacks
        {
            let d = &route.deployments[0];
            if self.allowed(route, d) {
                if d.available() {
                    plan.candidates.push(d);
                } else {
                    plan.skipped_open = 1;
                }
            } else {
                plan.skipped_locality = 1;
            }
            return plan;
        }
        self.push_route(route, route, needs, &mut plan);
        for f in &route.fallbacks {
            if let Some(fr) = self.routes.get(&**f) {
                // The locality of the requested route still applies to its fallbacks.
                self.push_route(route, fr, needs, &mut plan);
            }
        }
        if class_fallbacks {
            for class in FallbackClass::ALL {
                for target in self.class_fallbacks(route, class) {
                    let more = self.plan_fallback(route, target, needs);
                    plan.conditional
                        .extend(more.candidates.into_iter().map(|d| (class, d)));
                }
            }
        }
        plan
    }

    /// When no deployment of `route` has a context window large enough: the plan of its
    /// first context-window fallback route that has one.
    pub fn plan_larger_context<'a>(
        &'a self,
        route: &'a Route,
        needs: Option<&Needs>,
    ) -> Option<Plan<'a>> {
        self.class_fallbacks(route, FallbackClass::ContextWindowExceeded)
            .map(|target| self.plan_fallback(route, target, needs))
            .find(|p| !p.candidates.is_empty())
    }

    /// The routes to try after `route` failed with an error of `class`: its own list for
    /// the class, then the global one; never `route` itself.
    pub fn class_fallbacks<'t>(
        &'t self,
        route: &'t Route,
        class: FallbackClass,
    ) -> impl Iterator<Item = &'t Arc<Route>> + 't {
        let i = class.index();
        route.class_fallbacks[i]
            .iter()
            .chain(&self.global_class_fallbacks[i])
            .filter(move |name| ***name != *route.name)
            .filter_map(|name| self.routes.get(&**name))
    }

    /// The plan for fallback route `target` of `requested` (whose locality rules apply).
    pub fn plan_fallback<'a>(
        &'a self,
        requested: &Route,
        target: &'a Route,
        needs: Option<&Needs>,
    ) -> Plan<'a> {
        let mut plan = Plan::with_capacity(target.deployments.len());
        self.push_route(requested, target, needs, &mut plan);
        plan
    }

    fn allowed(&self, requested: &Route, d: &Deployment) -> bool {
        d.provider.locality == Locality::OnPrem || !(self.on_prem_only || requested.local_only)
    }

    fn push_route<'a>(
        &self,
        requested: &Route,
        route: &'a Route,
        needs: Option<&Needs>,
        plan: &mut Plan<'a>,
    ) {
        let mut tier: Vec<&'a Deployment> = Vec::with_capacity(route.deployments.len());
        let mut i = 0;
        while i < route.deployments.len() {
            let priority = route.deployments[i].priority;
            tier.clear();
            while i < route.deployments.len() && route.deployments[i].priority == priority {
                let d = &route.deployments[i];
                i += 1;
                if plan
                    .candidates
                    .iter()
                    .any(|c| Arc::ptr_eq(&c.health, &d.health))
                {
                    continue;
                }
                let missing = needs.and_then(|n| d.capabilities.missing(n));
                if !self.allowed(requested, d) {
                    plan.skipped_locality += 1;
                } else if let Some(m) = missing {
                    plan.skipped_capability += 1;
                    plan.missing.get_or_insert(m);
                } else if !d.available() {
                    plan.skipped_open += 1;
                } else {
                    tier.push(d);
                }
            }
            strategy::order(route.strategy, &mut tier, &route.rr, needs);
            plan.candidates.extend_from_slice(&tier);
        }
    }
}

/// The deployment's override, else the model's, else the built-in catalog's (by provider
/// model, then public model name).
/// Every route and deployment without a price, as `sluice config check` and start-up list
/// them. A wildcard route is listed when its `*` deployments serve names the catalog may not
/// price (its known names are priced per request).
pub fn unpriced(cfg: &Config) -> Vec<String> {
    let mut out = Vec::new();
    for m in &cfg.models {
        for d in &m.deployments {
            let provider = cfg
                .providers
                .get(d.provider)
                .map_or("?", |p| p.name.as_str());
            if d.model == "*" {
                if d.price.is_none() && m.price.is_none() {
                    out.push(format!(
                        "route `{}` (provider `{provider}`): models the built-in catalog does not \
                         price are unpriced",
                        m.name
                    ));
                }
            } else if deployment_price(m, d).is_none() {
                out.push(format!(
                    "route `{}` deployment `{provider}/{}` has no price",
                    m.name, d.model
                ));
            }
        }
    }
    out
}

fn deployment_price(
    m: &crate::config::ModelConfig,
    d: &crate::config::DeploymentConfig,
) -> Option<Price> {
    d.price
        .or(m.price)
        .or_else(|| prices::builtin(&d.model))
        .or_else(|| prices::builtin(&m.name))
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

fn arcs(lists: &[Vec<String>; 4]) -> [Vec<Arc<str>>; 4] {
    lists
        .clone()
        .map(|l| l.iter().map(|n| Arc::from(n.as_str())).collect())
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    pub(super) fn table(yaml: &str) -> (ModelTable, Vec<Arc<Provider>>) {
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

    #[test]
    fn wildcard_routes_keep_their_state_and_class_fallbacks_join_the_sequence() {
        let (t, _) = table(concat!(
            "providers:\n  - {name: a, kind: mock}\n  - {name: b, kind: mock}\n",
            "models:\n  - name: w/*\n    strategy: round_robin\n    deployments:\n",
            "      - {provider: a, model: '*'}\n      - {provider: b, model: '*'}\n",
            "    fallbacks_by_class: {rate_limited: [big]}\n",
            "  - name: big\n    deployments: [{provider: b, model: large}]\n",
        ));
        let r1 = t.resolve("w/one").unwrap();
        let r2 = t.resolve("w/one").unwrap();
        assert!(
            Arc::ptr_eq(&r1, &r2),
            "the same route (and round-robin state) each time"
        );
        let firsts: Vec<String> = (0..4)
            .map(|_| {
                let r = t.resolve("w/one").unwrap();
                t.plan(&r).candidates[0].provider.name.to_string()
            })
            .collect();
        assert_eq!(firsts, ["a", "b", "a", "b"], "round robin across requests");
        let plan = t.plan(&r1);
        assert_eq!(plan.candidates.len(), 2);
        assert_eq!(plan.conditional.len(), 1);
        assert_eq!(plan.conditional[0].0, FallbackClass::RateLimited);
        assert_eq!(&*plan.conditional[0].1.model, "large");
    }
}

#[cfg(test)]
mod plan_tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use rand::{Rng, SeedableRng};

    const STRATEGIES: [&str; 7] = [
        "weighted",
        "round_robin",
        "least_outstanding",
        "lowest_latency",
        "lowest_cost",
        "most_headroom",
        "cheapest_capable",
    ];

    /// Property: whatever the strategy, tiers, breaker states, learned rate limits, locality
    /// and the request's needs, a plan holds exactly the allowed, capable deployments whose
    /// breaker lets traffic through and whose upstream has capacity left, each once, in
    /// non-decreasing priority.
    #[test]
    fn plans_never_hold_open_or_disallowed_deployments() {
        let mut rng = rand::rngs::StdRng::seed_from_u64(5);
        let open = BreakerConfig {
            failures: 1,
            cooldown: Duration::from_secs(60),
            ..BreakerConfig::default()
        };
        for case in 0..300 {
            let n = rng.gen_range(1..=10);
            let strategy = STRATEGIES[rng.gen_range(0..STRATEGIES.len())];
            let local_only = rng.gen_bool(0.3);
            let mut yaml = String::from("providers:\n");
            for i in 0..n {
                let loc = if rng.gen_bool(0.5) {
                    "on_prem"
                } else {
                    "cloud"
                };
                yaml += &format!(
                    "  - {{name: p{i}, kind: openai_compatible, base_url: \"http://127.0.0.1:9/v1\", locality: {loc}}}\n"
                );
            }
            // local_only needs one on-prem deployment to validate.
            yaml += &format!(
                "  - {{name: onprem, kind: mock}}\nmodels:\n  - name: m\n    strategy: {strategy}\n    data_policy: {}\n    deployments:\n",
                if local_only { "local_only" } else { "any" }
            );
            for i in 0..n {
                yaml += &format!(
                    "      - {{provider: p{i}, model: x{i}, weight: {}, priority: {}, price: {{input: {}, output: 1}}, capabilities: {{vision: {}, tools: {}, context_window: {}}}}}\n",
                    rng.gen_range(1..5),
                    rng.gen_range(0..3),
                    rng.gen_range(0..100),
                    rng.gen_bool(0.5),
                    rng.gen_bool(0.5),
                    rng.gen_range(50..5000),
                );
            }
            yaml += "      - {provider: onprem, model: local, price: {input: 1, output: 1}}\n";
            let (t, _) = super::tests::table(&yaml);
            let route = t.get("m").unwrap();
            for d in &route.deployments {
                if rng.gen_bool(0.3) {
                    d.health.record_failure(&open);
                }
                d.health.record_success(rng.gen_range(1..10_000));
                if rng.gen_bool(0.3) {
                    d.health.record_failure(&open);
                }
                if rng.gen_bool(0.3) {
                    let mut h = http::HeaderMap::new();
                    h.insert(
                        "x-ratelimit-remaining-requests",
                        http::HeaderValue::from(rng.gen_range(0..3)),
                    );
                    h.insert("x-ratelimit-limit-requests", http::HeaderValue::from(3));
                    d.health.learn_rate_limits(&h);
                }
            }
            for _ in 0..5 {
                let needs = rng.gen_bool(0.5).then(|| Needs {
                    vision: rng.gen_bool(0.3),
                    tools: rng.gen_bool(0.3),
                    prompt_tokens: rng.gen_range(0..3000),
                    ..Needs::default()
                });
                let plan = t.plan_for(route, needs.as_ref());
                let ok = |d: &Deployment| {
                    d.available()
                        && (!local_only || d.provider.locality == Locality::OnPrem)
                        && needs.is_none_or(|n| d.capabilities.missing(&n).is_none())
                };
                for d in &plan.candidates {
                    assert!(ok(d), "case {case}: {} should not be planned", d.model);
                }
                let expected = route.deployments.iter().filter(|d| ok(d)).count();
                assert_eq!(plan.candidates.len(), expected, "case {case}");
                assert!(
                    plan.candidates
                        .windows(2)
                        .all(|w| w[0].priority <= w[1].priority),
                    "case {case}: tiers in order"
                );
                assert_eq!(
                    plan.candidates.len()
                        + plan.skipped_open as usize
                        + plan.skipped_locality as usize
                        + plan.skipped_capability as usize,
                    route.deployments.len()
                );
                if strategy == "cheapest_capable" {
                    if let Some(n) = &needs {
                        // Within a tier, cheapest estimate first.
                        assert!(
                            plan.candidates
                                .windows(2)
                                .all(|w| w[0].priority < w[1].priority
                                    || w[0].estimated_cost(n) <= w[1].estimated_cost(n)),
                            "case {case}: cheapest first"
                        );
                    }
                }
            }
        }
    }

    #[test]
    fn round_robin_and_lowest_cost_orders() {
        let yaml = concat!(
            "providers:\n  - {name: a, kind: mock}\n  - {name: b, kind: mock}\n  - {name: c, kind: mock}\n",
            "models:\n  - name: rr\n    strategy: round_robin\n    deployments: [{provider: a, model: x}, {provider: b, model: y}, {provider: c, model: z}]\n",
            "  - name: cost\n    strategy: lowest_cost\n    deployments:\n",
            "      - {provider: a, model: x, price: {input: 5, output: 5}}\n",
            "      - {provider: b, model: y, price: {input: 1, output: 2}}\n",
            "      - {provider: c, model: z, price: {input: 3, output: 3}}\n",
        );
        let (t, _) = super::tests::table(yaml);
        let rr = t.get("rr").unwrap();
        let firsts: Vec<String> = (0..6)
            .map(|_| t.candidates(rr)[0].model.to_string())
            .collect();
        assert_eq!(firsts, ["x", "y", "z", "x", "y", "z"]);
        let cost = t.get("cost").unwrap();
        let order: Vec<String> = t
            .candidates(cost)
            .iter()
            .map(|d| d.model.to_string())
            .collect();
        assert_eq!(order, ["y", "z", "x"]);
    }
}
