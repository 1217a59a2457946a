//! Who may do what: authentication, virtual keys and the principal cache, rate limits,
//! budgets and prices. Content rules join here later.

pub mod alerts;
pub mod auth;
pub mod broadcast;
pub mod clock;
pub mod content;
pub mod governance;
pub mod keys;
pub mod limits;
pub mod limits_redis;
pub mod prices;
pub mod roles;
