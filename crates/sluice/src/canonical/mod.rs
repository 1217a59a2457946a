//! Our own request / response / usage types, independent of any wire format.

pub mod usage;

pub use usage::Usage;
