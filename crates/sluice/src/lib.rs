//! Sluice, an AI gateway: one control point between every client and every model.
//! The request pipeline and its order are documented in [`app`].

pub mod api;
pub mod app;
pub mod cache;
pub mod canonical;
pub mod cli;
pub mod config;
pub mod edge;
pub mod error;
pub mod fleet;
#[doc(hidden)]
pub mod fuzzing;
pub mod policy;
pub mod providers;
pub mod router;
pub mod server;
pub mod store;
pub mod telemetry;
