//! hubcache: a self-hosted Hugging Face Hub mirror built as a module on Pingora.
//!
//! Module map (dependencies point one way): `proxy` → `meta`, `cache` → `fetch` → `store`;
//! `fetch`/`meta` → `upstream`; `hf`, `config` and `live` import nothing else of ours.
//! `app` composes them; `lifecycle` (signals, reload, upgrade, drain) drives the process.
//! See `docs/architecture.md`.

pub mod admin;
pub mod alerts;
pub mod app;
pub mod bounded;
pub mod cache;
pub mod config;
pub mod events;
pub mod evict;
pub mod export;
pub mod fetch;
pub mod hf;
pub mod import;
pub mod lifecycle;
pub mod live;
pub mod logging;
pub mod meta;
pub mod plugins;
pub mod proxy;
pub mod store;
pub mod tls;
pub mod upstream;
pub mod warmup;
