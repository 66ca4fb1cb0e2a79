//! hubcache: a self-hosted Hugging Face Hub mirror built as a module on Pingora.
//!
//! Module map (dependencies point one way): `proxy` → `meta`, `cache` → `fetch` → `store`;
//! `fetch`/`meta` → `upstream`; `hf` and `config` import nothing else of ours.
//! See `docs/architecture.md`.

pub mod admin;
pub mod app;
pub mod cache;
pub mod config;
pub mod fetch;
pub mod hf;
pub mod import;
pub mod logging;
pub mod meta;
pub mod proxy;
pub mod store;
pub mod upstream;
