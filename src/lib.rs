//! hubcache: a self-hosted Hugging Face Hub mirror built as a module on Pingora.
//!
//! Module map (dependencies point one way): `proxy` → `meta`, `cache` → `fetch` → `store`;
//! `fetch`/`meta` → `upstream`; `hf` and `config` import nothing else of ours.
//! See `docs/architecture.md`.

pub mod admin;
pub mod alerts;
pub mod app;
pub mod cache;
pub mod config;
pub mod events;
pub mod evict;
pub mod fetch;
pub mod hf;
pub mod import;
pub mod meta;
pub mod plugins;
pub mod proxy;
pub mod store;
pub mod upstream;
