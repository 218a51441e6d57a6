//! Serde's refusals of a request's JSON body or query string, in plain words: which field, and what it must be.
//!
//! Serde says `unknown variant 'none', expected one of 'queued', 'running' at line 1 column 20` or `invalid type:
//! string "x", expected u32`: the words of a Rust library, not of the API. The answer names the field and what it
//! accepts instead; the library's text goes to the log.

use std::error::Error as StdError;

/// Where the input was refused, and serde's message without its position.
struct Refusal {
    /// `jobs[2].priority`; empty for the top level.
    path: String,
    message: String,
}

/// A readable explanation of why serde refused a body or query, found along `error`'s source chain.
pub fn explain(error: &(dyn StdError + 'static), what: &str) -> String {
    tracing::debug!(error = %error, "input refused");
    let mut next = Some(error);
    while let Some(error) = next {
        if let Some(e) = error.downcast_ref::<serde_path_to_error::Error<serde_json::Error>>() {
            return explain_json(e.path().to_string(), e.inner(), what);
        }
        if let Some(e) = error.downcast_ref::<serde_json::Error>() {
            return explain_json(String::new(), e, what);
        }
        if let Some(e) = error.downcast_ref::<serde_path_to_error::Error<serde_urlencoded::de::Error>>() {
            return plain_words(Refusal { path: e.path().to_string(), message: e.inner().to_string() }, what);
        }
        next = error.source();
    }
    format!("the {what} could not be read")
}

/// A JSON value refused where a typed one was expected (a batch item), with the same words as a body.
pub fn explain_value<T: serde::de::DeserializeOwned>(value: serde_json::Value, what: &str) -> Result<T, String> {
    serde_path_to_error::deserialize(value).map_err(|e| explain_json(e.path().to_string(), e.inner(), what))
}

fn explain_json(path: String, error: &serde_json::Error, what: &str) -> String {
    use serde_json::error::Category;
    match error.classify() {
        Category::Data => {
            // serde_json appends " at line L column C" to data errors; the field's name says more.
            let text = error.to_string();
            let message = match text.rfind(" at line ") {
                Some(at) if error.line() > 0 => text[..at].to_string(),
                _ => text,
            };
            plain_words(Refusal { path, message }, what)
        }
        Category::Eof => format!("the {what} is not valid JSON: it ends too early"),
        Category::Syntax | Category::Io => {
            format!("the {what} is not valid JSON (near line {}, column {})", error.line(), error.column())
        }
    }
}

/// The text between the first pair of backticks after `marker`, if any.
fn quoted_after<'a>(text: &'a str, marker: &str) -> Option<&'a str> {
    let rest = text.strip_prefix(marker)?;
    let rest = rest.strip_prefix('`')?;
    rest.split_once('`').map(|(name, _)| name)
}

/// `` `a`, `b` `` / `` `a` or `b` `` (serde's list of what is allowed) as `a, b`.
fn allowed_list(expected: &str) -> String {
    let names: Vec<&str> = expected.split('`').skip(1).step_by(2).collect();
    if names.is_empty() { expected.to_string() } else { names.join(", ") }
}

/// What a serde "expected ..." means, in the API's words.
fn expected_words(expected: &str) -> String {
    let expected = expected.trim();
    let unsigned = ["u8", "u16", "u32", "u64", "u128", "usize"];
    let signed = ["i8", "i16", "i32", "i64", "i128", "isize"];
    if unsigned.contains(&expected) {
        "a whole number (0 or more)".into()
    } else if signed.contains(&expected) {
        "a whole number".into()
    } else if expected == "f32" || expected == "f64" {
        "a number".into()
    } else if expected == "a boolean" {
        "true or false".into()
    } else if expected == "a sequence" || expected.starts_with("a sequence") || expected.starts_with("tuple") {
        "a list".into()
    } else if expected.starts_with("struct ") || expected == "a map" {
        "an object".into()
    } else if let Some(name) = expected.strip_prefix("enum ") {
        format!("one of the {name} values")
    } else {
        expected.to_string()
    }
}

/// What serde says it got (`string "x"`, ``integer `5` ``, `map`) as a kind of JSON value.
fn got_words(unexpected: &str) -> &'static str {
    let kind = unexpected.split([' ', '`']).next().unwrap_or_default();
    match kind {
        "string" | "character" => "a string",
        "integer" | "floating" => "a number",
        "boolean" => "true or false",
        "null" | "unit" | "Option" => "null",
        "map" => "an object",
        "sequence" => "a list",
        _ => "a value of another type",
    }
}

fn plain_words(refusal: Refusal, what: &str) -> String {
    let Refusal { path, message } = refusal;
    let field = if path.is_empty() || path == "." { None } else { Some(path.as_str()) };
    let named = |field: Option<&str>| field.map(|f| format!("`{f}`")).unwrap_or_else(|| format!("the {what}"));
    let within = field.map(|f| format!(" in `{f}`")).unwrap_or_default();
    if let Some(name) = quoted_after(&message, "missing field ") {
        return format!("`{name}` is required{within}");
    }
    if let Some(name) = quoted_after(&message, "duplicate field ") {
        return format!("`{name}` is given twice{within}");
    }
    if let Some(name) = quoted_after(&message, "unknown field ") {
        // serde_path_to_error's path already ends in the unknown field; what is allowed is its parent's list.
        let parent = field.and_then(|f| f.rsplit_once('.').map(|(p, _)| p));
        let within = parent.map(|p| format!(" in `{p}`")).unwrap_or_default();
        return match message.split_once(", expected ") {
            Some((_, allowed)) => format!("unknown field `{name}`{within}; allowed: {}", allowed_list(allowed)),
            None => format!("unknown field `{name}`{within}; no fields are allowed there"),
        };
    }
    if let Some(variant) = quoted_after(&message, "unknown variant ") {
        return match message.split_once(", expected ") {
            Some((_, allowed)) => {
                format!("{} must be one of: {} (not {variant:?})", named(field), allowed_list(allowed))
            }
            None => format!("{} cannot be {variant:?}", named(field)),
        };
    }
    if let Some(rest) = message.strip_prefix("invalid type: ")
        && let Some((got, expected)) = rest.split_once(", expected ")
    {
        return format!("{} must be {}, not {}", named(field), expected_words(expected), got_words(got));
    }
    if let Some(rest) = message.strip_prefix("invalid value: ")
        && let Some((got, expected)) = rest.split_once(", expected ")
    {
        let shown = got.split('`').nth(1).map(|v| format!(" (got {v})")).unwrap_or_default();
        return format!("{} must be {}{shown}", named(field), expected_words(expected));
    }
    if let Some(rest) = message.strip_prefix("invalid length ")
        && let Some((_, expected)) = rest.split_once(", expected ")
    {
        return format!("{} must have {}", named(field), expected_words(expected));
    }
    if message.contains("invalid digit") || message.contains("cannot parse integer") {
        return format!("{} must be a whole number", named(field));
    }
    if message.contains("number too large") || message.contains("out of range") {
        return format!("{} is out of range", named(field));
    }
    if message.contains("provided string was not `true` or `false`") {
        return format!("{} must be true or false", named(field));
    }
    // Our own checks (`Deserialize` impls that validate) already speak plainly; say where.
    match field {
        Some(field) => format!("`{field}`: {message}"),
        None => message,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde::Deserialize;

    #[derive(Debug, Deserialize)]
    #[serde(rename_all = "lowercase")]
    #[allow(dead_code)]
    enum Status {
        Queued,
        Running,
    }

    #[derive(Debug, Deserialize)]
    #[serde(deny_unknown_fields)]
    #[allow(dead_code)]
    struct Inner {
        priority: u32,
        #[serde(default)]
        status: Option<Status>,
    }

    #[derive(Debug, Deserialize)]
    #[serde(deny_unknown_fields)]
    #[allow(dead_code)]
    struct Body {
        engine: String,
        #[serde(default)]
        jobs: Vec<Inner>,
        #[serde(default)]
        urgent: Option<bool>,
    }

    fn body_error(json: &str) -> String {
        match axum::Json::<Body>::from_bytes(json.as_bytes()) {
            Ok(body) => panic!("accepted {:?}", body.0),
            Err(rejection) => explain(&rejection, "body"),
        }
    }

    fn query_error(query: &str) -> String {
        let uri: axum::http::Uri = format!("/x?{query}").parse().unwrap();
        match axum::extract::Query::<Inner>::try_from_uri(&uri) {
            Ok(q) => panic!("accepted {:?}", q.0),
            Err(rejection) => explain(&rejection, "query string"),
        }
    }

    fn plain(text: &str) {
        for internal in ["unknown variant", "invalid type", "at line", "Base64", "expected u32", "struct "] {
            assert!(!text.contains(internal), "{text:?} contains {internal:?}");
        }
    }

    #[test]
    fn bodies_are_explained_by_field_and_what_is_allowed() {
        let cases = [
            (
                r#"{"engine": "e", "jobs": [{"priority": 1, "status": "none"}]}"#,
                "`jobs[0].status` must be one of: queued, running (not \"none\")",
            ),
            (
                r#"{"engine": "e", "jobs": [{"priority": "high"}]}"#,
                "`jobs[0].priority` must be a whole number (0 or more), not a string",
            ),
            (
                r#"{"engine": "e", "jobs": [{"priority": -1}]}"#,
                "`jobs[0].priority` must be a whole number (0 or more) (got -1)",
            ),
            (r#"{"engine": 5}"#, "`engine` must be a string, not a number"),
            (r#"{"engine": "e", "urgent": "yes"}"#, "`urgent` must be true or false, not a string"),
            (r#"{"engine": "e", "jobs": {}}"#, "`jobs` must be a list, not an object"),
            (r#"{"jobs": []}"#, "`engine` is required"),
            (r#"{"engine": "e", "jobs": [{}]}"#, "`priority` is required in `jobs[0]`"),
            (r#"{"engine": "e", "colour": 1}"#, "unknown field `colour`; allowed: engine, jobs, urgent"),
            (r#""text""#, "the body must be an object, not a string"),
            (r#"{"engine": "e""#, "the body is not valid JSON: it ends too early"),
            (r#"{"engine": e}"#, "the body is not valid JSON (near line 1, column 12)"),
        ];
        for (json, expected) in cases {
            let text = body_error(json);
            assert_eq!(text, expected, "{json}");
            plain(&text);
        }
    }

    #[test]
    fn query_strings_are_explained_too() {
        assert_eq!(query_error("priority=high"), "`priority` must be a whole number");
        assert_eq!(query_error("priority=1&status=none"), "`status` must be one of: queued, running (not \"none\")");
        assert_eq!(query_error("status=queued"), "`priority` is required");
    }

    #[test]
    fn batch_items_use_the_same_words() {
        let item = serde_json::json!({"priority": 1, "status": "paused"});
        let text = explain_value::<Inner>(item, "item").unwrap_err();
        assert_eq!(text, "`status` must be one of: queued, running (not \"paused\")");
    }
}
