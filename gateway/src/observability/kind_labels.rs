//! Which job kinds may be named on the tokenless `/metrics` and `/status`: a closed set per engine, so users
//! choosing kinds can neither grow those pages without bound nor write text of their own on them.
//!
//! A kind is named when it is built in, or once the engine has finished a job of it successfully: only the
//! engine's own handlers (the operator's code) can make that happen, whatever kinds users send. At most
//! `MAX_LEARNED_KINDS` are learned per engine; every other kind is counted and shown as `other`. What is learned
//! lives in this process (it is learned again after a restart, at the first success of each kind).

use std::collections::{HashMap, HashSet};
use std::sync::{Mutex, PoisonError};

/// The kinds the Rust engine ships (`engine/src/handlers/`): always named.
pub const BUILTIN_KINDS: &[&str] = &["echo", "sleep", "http", "exec", "llm"];

/// Kinds learned per engine beyond the built-in ones.
pub const MAX_LEARNED_KINDS: usize = 50;

/// The label of every kind outside the closed set.
pub const OTHER_KIND: &str = "other";

/// The kinds each engine has shown it handles.
#[derive(Debug, Default)]
pub struct KindLabels {
    learned: Mutex<HashMap<String, HashSet<String>>>,
}

impl KindLabels {
    /// Notes that `engine` finished a job of `kind` successfully (ignored past the cap).
    pub fn learn(&self, engine: &str, kind: &str) {
        if BUILTIN_KINDS.contains(&kind) {
            return;
        }
        let mut learned = self.learned.lock().unwrap_or_else(PoisonError::into_inner);
        let kinds = learned.entry(engine.to_string()).or_default();
        if kinds.len() < MAX_LEARNED_KINDS {
            kinds.insert(kind.to_string());
        }
    }

    /// The name `kind` goes by on `engine` in public: itself when in the closed set, else `other`.
    pub fn label<'a>(&self, engine: &str, kind: &'a str) -> &'a str {
        if BUILTIN_KINDS.contains(&kind) {
            return kind;
        }
        let learned = self.learned.lock().unwrap_or_else(PoisonError::into_inner);
        if learned.get(engine).is_some_and(|kinds| kinds.contains(kind)) { kind } else { OTHER_KIND }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_builtin_and_succeeded_kinds_are_named_and_learning_is_capped() {
        let kinds = KindLabels::default();
        assert_eq!(kinds.label("e", "echo"), "echo");
        assert_eq!(kinds.label("e", "upper"), OTHER_KIND);
        kinds.learn("e", "upper");
        assert_eq!(kinds.label("e", "upper"), "upper");
        assert_eq!(kinds.label("f", "upper"), OTHER_KIND, "learned per engine");
        for i in 0..MAX_LEARNED_KINDS * 2 {
            kinds.learn("e", &format!("k{i}"));
        }
        let named = (0..MAX_LEARNED_KINDS * 2).filter(|i| kinds.label("e", &format!("k{i}")) != OTHER_KIND).count();
        assert_eq!(named, MAX_LEARNED_KINDS - 1, "the cap counts `upper` too");
    }
}
