//! What a schema migration is, for both drivers: a numbered SQL step that declares whether older builds can
//! still run on the schema it leaves (see `sqlite::migrate` for the rules).

/// One numbered schema step.
pub struct Migration {
    pub version: u32,
    pub name: &'static str,
    pub sql: &'static str,
}

/// Whether builds older than a migration can run on the schema it leaves.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Compat {
    Additive,
    Breaking,
}

impl Compat {
    pub fn as_str(self) -> &'static str {
        match self {
            Compat::Additive => "additive",
            Compat::Breaking => "breaking",
        }
    }
}

impl Migration {
    /// The migration's `-- compat:` declaration; a file without one counts as breaking.
    pub fn compat(&self) -> Compat {
        let declared = self.sql.lines().find_map(|line| line.trim().strip_prefix("-- compat:")).map(str::trim);
        if declared.is_some_and(|d| d.starts_with("additive")) { Compat::Additive } else { Compat::Breaking }
    }
}

/// This build's version, recorded beside each migration it applies.
pub const BUILD: &str = env!("CARGO_PKG_VERSION");

/// The newest version in a migration set.
pub fn latest(set: &[Migration]) -> u32 {
    set.iter().map(|m| m.version).max().unwrap_or(0)
}
