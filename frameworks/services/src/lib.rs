//! The long-running services framework (in the spirit of Marathon).
//!
//! # Layout
//! - [`app`]: app definitions (Marathon field names and defaults) and their
//!   validation, which lists every problem at once.

pub mod app;
pub mod scheduler;
