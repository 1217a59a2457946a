//! Who may do what: authentication now; rate limits, budgets and content rules join here.

pub mod auth;
pub mod content;
