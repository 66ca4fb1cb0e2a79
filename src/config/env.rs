//! `${ENV_VAR}` references in config values that carry credentials (alert URLs, secrets), so
//! they can stay out of the file.

/// Replaces every `${NAME}` in `text` by `lookup(NAME)`. `NAME` is letters, digits and `_`,
/// not starting with a digit; `$$` is a literal `$`; any other `$` is kept as is. The error
/// names the missing variable or the malformed reference, never the value.
pub fn expand(text: &str, lookup: &dyn Fn(&str) -> Option<String>) -> Result<String, String> {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(pos) = rest.find('$') {
        out.push_str(&rest[..pos]);
        let after = &rest[pos + 1..];
        if let Some(tail) = after.strip_prefix('$') {
            out.push('$');
            rest = tail;
        } else if let Some(tail) = after.strip_prefix('{') {
            let Some(end) = tail.find('}') else {
                return Err("has an unterminated ${...} reference".to_string());
            };
            let name = &tail[..end];
            let valid = name
                .chars()
                .next()
                .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
                && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_');
            if !valid {
                return Err(format!(
                    "has an invalid reference ${{{}}} (a variable name is letters, digits and _)",
                    name.chars().take(40).collect::<String>()
                ));
            }
            let value =
                lookup(name).ok_or_else(|| format!("environment variable {name} is not set"))?;
            out.push_str(&value);
            rest = &tail[end + 1..];
        } else {
            out.push('$');
            rest = after;
        }
    }
    out.push_str(rest);
    Ok(out)
}

/// [`expand`] against the process environment.
pub fn expand_from_process(text: &str) -> Result<String, String> {
    expand(text, &|name| std::env::var(name).ok())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(name: &str) -> Option<String> {
        match name {
            "HOOK" => Some("https://h.example/x".into()),
            "KEY" => Some("k1".into()),
            "EMPTY" => Some(String::new()),
            _ => None,
        }
    }

    #[test]
    fn references_are_replaced() {
        assert_eq!(expand("${HOOK}", &env).unwrap(), "https://h.example/x");
        assert_eq!(
            expand("https://q/send?key=${KEY}&a=${KEY}", &env).unwrap(),
            "https://q/send?key=k1&a=k1"
        );
        assert_eq!(expand("${EMPTY}", &env).unwrap(), "");
        assert_eq!(expand("no refs", &env).unwrap(), "no refs");
    }

    #[test]
    fn dollars_without_braces_stay_and_double_dollar_escapes() {
        assert_eq!(expand("a$b", &env).unwrap(), "a$b");
        assert_eq!(expand("cost$", &env).unwrap(), "cost$");
        assert_eq!(expand("$${KEY}", &env).unwrap(), "${KEY}");
        assert_eq!(expand("$$$${KEY}", &env).unwrap(), "$${KEY}");
    }

    #[test]
    fn a_missing_variable_is_named() {
        assert_eq!(
            expand("x${WECOM_HOOK}", &env).unwrap_err(),
            "environment variable WECOM_HOOK is not set"
        );
    }

    #[test]
    fn malformed_references_are_rejected() {
        assert!(expand("${KEY", &env).unwrap_err().contains("unterminated"));
        assert!(expand("${}", &env)
            .unwrap_err()
            .contains("invalid reference"));
        assert!(expand("${1X}", &env)
            .unwrap_err()
            .contains("invalid reference"));
        assert!(expand("${A-B}", &env)
            .unwrap_err()
            .contains("invalid reference"));
    }

    #[test]
    fn process_environment_is_used() {
        // PATH is set in every environment the tests run in.
        let path = std::env::var("PATH").unwrap();
        assert_eq!(expand_from_process("${PATH}").unwrap(), path);
    }
}
