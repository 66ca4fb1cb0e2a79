//! The page at `GET /`: what this server is and how to point clients at it.

/// Headers of the page: HTML, never cached, no scripts, no sniffing.
pub const HEADERS: [(&str, &str); 4] = [
    ("content-type", "text/html; charset=utf-8"),
    ("cache-control", "no-store"),
    ("x-content-type-options", "nosniff"),
    (
        "content-security-policy",
        "default-src 'none'; style-src 'unsafe-inline'",
    ),
];

/// The page for a mirror reached at `public_base` (e.g. `http://mirror.internal:8090`; taken
/// from the request's Host header unless `public_url` is set, so it is escaped).
pub fn page(public_base: &str) -> String {
    let base = escape(public_base);
    let version = env!("CARGO_PKG_VERSION");
    format!(
        r#"<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<title>hubcache: Hugging Face Hub mirror</title>
<style>body{{font-family:sans-serif;max-width:48rem;margin:2rem auto;padding:0 1rem;line-height:1.5}}pre{{background:#f4f4f4;padding:.75rem;overflow-x:auto}}</style>
</head>
<body>
<h1>hubcache</h1>
<p>This is a caching mirror of the <a href="https://huggingface.co">Hugging Face Hub</a>
(hubcache {version}). Models, datasets and spaces are fetched from the Hub once, then served
from this server's disk. Point your clients at it with <code>HF_ENDPOINT</code>:</p>
<pre>export HF_ENDPOINT={base}</pre>
<p>Then use them as usual:</p>
<pre>hf download openai-community/gpt2
python -c "from huggingface_hub import snapshot_download; snapshot_download('openai-community/gpt2')"
curl -LO {base}/openai-community/gpt2/resolve/main/config.json</pre>
<p><code>transformers</code>, <code>datasets</code>, <code>hf_transfer</code> and the Rust
<code>hf-hub</code> crate read <code>HF_ENDPOINT</code> too. Tokens (<code>HF_TOKEN</code>,
<code>hf auth login</code>) work as usual: gated and private repos are served only to tokens the
Hub authorised.</p>
<p>Metrics for Prometheus: <a href="{base}/metrics">{base}/metrics</a>.</p>
</body>
</html>
"#
    )
}

/// Escapes text for HTML element content and double-quoted attributes.
fn escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_page_tells_how_to_set_hf_endpoint() {
        let html = page("http://mirror.internal:8090");
        assert!(html.contains("export HF_ENDPOINT=http://mirror.internal:8090</pre>"));
        assert!(html.contains("curl -LO http://mirror.internal:8090/openai-community/gpt2/"));
    }

    #[test]
    fn a_hostile_host_is_escaped() {
        let html = page("http://x\"><script>alert(1)</script>");
        assert!(!html.contains("<script>"));
        assert!(html.contains("&lt;script&gt;"));
        assert!(!html.contains("x\">"));
    }
}
