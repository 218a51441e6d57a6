//! Store and Redis connection strings with their secrets hidden, for logs and error messages.
//!
//! libpq accepts a password in several places (`user:pass@` in a URL, `?password=` in its query, `password=` in a
//! key/value string, quoted or percent-encoded), so hiding it by searching the text misses some. PostgreSQL
//! strings are parsed with tokio-postgres (the parser that connects with them) and written out again from the
//! parsed parts, without the password; other URLs (Redis) with the `url` crate. What neither parses is hidden
//! whole.

use tokio_postgres::config::Host;
use url::Url;

/// What is shown for a string no parser understood.
const UNPARSABLE: &str = "<connection string hidden: it could not be parsed>";

/// `text` without its password (or other secret), for messages.
pub fn redact(text: &str) -> String {
    let text = text.trim();
    let scheme = text.split_once("://").map(|(scheme, _)| scheme.to_ascii_lowercase());
    match scheme.as_deref() {
        Some("postgres" | "postgresql") | None => redact_postgres(text, scheme.as_deref()),
        Some(_) => redact_url(text),
    }
}

/// A PostgreSQL URL or key/value string, written again from its parsed parts in the form it came in.
fn redact_postgres(text: &str, scheme: Option<&str>) -> String {
    let Ok(config) = text.parse::<tokio_postgres::Config>() else { return UNPARSABLE.into() };
    let hosts: Vec<String> = config
        .get_hosts()
        .iter()
        .map(|host| match host {
            Host::Tcp(name) => name.clone(),
            #[cfg(unix)]
            Host::Unix(path) => path.display().to_string(),
        })
        .collect();
    let ports = config.get_ports();
    let port_of = |i: usize| ports.get(i).or(if ports.len() == 1 { ports.first() } else { None });
    let password = config.get_password().map(|_| "***");
    match scheme {
        Some(scheme) => {
            let mut out = format!("{scheme}://");
            if let Some(user) = config.get_user() {
                out.push_str(user);
                if let Some(hidden) = password {
                    out.push(':');
                    out.push_str(hidden);
                }
                out.push('@');
            } else if let Some(hidden) = password {
                out.push_str(&format!(":{hidden}@"));
            }
            let authority: Vec<String> = hosts
                .iter()
                .enumerate()
                .map(|(i, host)| match port_of(i) {
                    Some(port) => format!("{host}:{port}"),
                    None => host.clone(),
                })
                .collect();
            out.push_str(&authority.join(","));
            if let Some(db) = config.get_dbname() {
                out.push('/');
                out.push_str(db);
            }
            out
        }
        None => {
            let mut parts = Vec::new();
            if !hosts.is_empty() {
                parts.push(format!("host={}", hosts.join(",")));
            }
            if !ports.is_empty() {
                let ports: Vec<String> = ports.iter().map(u16::to_string).collect();
                parts.push(format!("port={}", ports.join(",")));
            }
            if let Some(user) = config.get_user() {
                parts.push(format!("user={user}"));
            }
            if let Some(db) = config.get_dbname() {
                parts.push(format!("dbname={db}"));
            }
            if let Some(hidden) = password {
                parts.push(format!("password={hidden}"));
            }
            parts.join(" ")
        }
    }
}

/// Any other URL (Redis): the password of its userinfo and secret-looking query values hidden.
fn redact_url(text: &str) -> String {
    let Ok(mut url) = Url::parse(text) else { return UNPARSABLE.into() };
    if url.password().is_some() && url.set_password(Some("***")).is_err() {
        return UNPARSABLE.into();
    }
    if url.query().is_some() {
        let pairs: Vec<(String, String)> = url
            .query_pairs()
            .map(|(key, value)| {
                let secret = ["pass", "secret", "token", "key"].iter().any(|s| key.to_ascii_lowercase().contains(s));
                (key.into_owned(), if secret { "***".into() } else { value.into_owned() })
            })
            .collect();
        url.query_pairs_mut().clear().extend_pairs(pairs);
    }
    url.to_string()
}

#[cfg(test)]
mod tests {
    use super::redact;

    fn hides(text: &str, secret: &str) -> String {
        let shown = redact(text);
        assert!(!shown.contains(secret), "{text:?} shown as {shown:?}");
        shown
    }

    #[test]
    fn postgres_urls_never_show_their_password() {
        assert_eq!(
            hides("postgres://flowork:s3cret@db:5432/flowork", "s3cret"),
            "postgres://flowork:***@db:5432/flowork"
        );
        assert_eq!(redact("postgres://flowork@db:5433/flowork"), "postgres://flowork@db:5433/flowork");
        assert_eq!(redact("postgres://db/flowork"), "postgres://db:5432/flowork");
        assert_eq!(hides("postgresql://u:p%40ss@h/d", "p%40ss"), "postgresql://u:***@h:5432/d");
        assert!(!redact("postgresql://u:p%40ss@h/d").contains("p@ss"));
        assert_eq!(
            hides("postgres://flowork@db/flowork?password=s3cret&sslmode=disable", "s3cret"),
            "postgres://flowork:***@db:5432/flowork"
        );
        assert_eq!(hides("postgres://db/x?user=u&password=p%20w%3Dd", "p%20w"), "postgres://u:***@db:5432/x");
        assert_eq!(hides("postgresql://u:s3cret@h1:5432,h2:5433/d", "s3cret"), "postgresql://u:***@h1:5432,h2:5433/d");
        // tokio-postgres (like libpq) knows the scheme in lowercase only: anything else is hidden whole.
        assert_eq!(hides("POSTGRES://u:s3cret@h/d", "s3cret"), super::UNPARSABLE);
    }

    #[test]
    fn key_value_strings_never_show_their_password() {
        assert_eq!(
            hides("host=db port=5432 user=flowork password=s3cret dbname=flowork", "s3cret"),
            "host=db port=5432 user=flowork dbname=flowork password=***"
        );
        assert_eq!(hides("host=db password='a b' user=u", "a b"), "host=db user=u password=***");
        assert_eq!(hides(r"host=db password='it\'s' user=u", "it"), "host=db user=u password=***");
        assert_eq!(hides("password = s3cret host=db", "s3cret"), "host=db password=***");
        assert_eq!(redact("host=db user=u"), "host=db user=u");
    }

    #[test]
    fn what_does_not_parse_is_hidden_whole() {
        for text in [
            "host=db password='unterminated",
            "host=db sslpassword=s3cret",
            "postgres://u:s3cret@h:notaport/d",
            "password=s3cret bogus",
            "redis://u:s3cret@[::1",
        ] {
            assert_eq!(redact(text), super::UNPARSABLE, "{text}");
        }
    }

    #[test]
    fn redis_urls_never_show_their_password() {
        assert_eq!(hides("redis://:s3cret@redis:6379", "s3cret"), "redis://:***@redis:6379");
        assert_eq!(hides("rediss://default:s3cret@redis:6380/0", "s3cret"), "rediss://default:***@redis:6380/0");
        assert_eq!(
            hides("redis://redis:6379/?password=s3cret&db=1", "s3cret"),
            "redis://redis:6379/?password=***&db=1"
        );
        assert_eq!(redact("redis://127.0.0.1:6379"), "redis://127.0.0.1:6379");
    }
}
