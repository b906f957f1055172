//! Where a running sensor's rules come from: the pack directory (or the pack
//! built into the binary when the packaged directory is absent), plus local
//! rules that replace pack rules by id.

use std::collections::HashSet;
use std::path::{Path, PathBuf};

use super::config::DEFAULT_RULES_DIR;
use super::{RuleLoadError, RuleLoadErrors, RuleSet, RulesConfig};

mod embedded {
    include!(concat!(env!("OUT_DIR"), "/embedded_rules.rs"));
}

fn one(file: &Path, message: String) -> RuleLoadErrors {
    RuleLoadErrors(vec![RuleLoadError {
        file: file.to_path_buf(),
        line: None,
        message,
    }])
}

fn read_dir_sources(dir: &Path) -> Result<Vec<(PathBuf, String)>, RuleLoadErrors> {
    fn walk(dir: &Path, out: &mut Vec<PathBuf>) -> std::io::Result<()> {
        for entry in std::fs::read_dir(dir)? {
            let p = entry?.path();
            if p.is_dir() {
                walk(&p, out)?;
            } else if p.extension().is_some_and(|e| e == "rhai") {
                out.push(p);
            }
        }
        Ok(())
    }
    let mut files = Vec::new();
    walk(dir, &mut files).map_err(|e| one(dir, format!("cannot read rules directory: {e}")))?;
    files.sort();
    files
        .into_iter()
        .map(|f| match std::fs::read_to_string(&f) {
            Ok(src) => Ok((f, src)),
            Err(e) => Err(one(&f, format!("cannot read: {e}"))),
        })
        .collect()
}

/// The pack's sources and the directory they are reported under.
fn pack_sources(cfg: &RulesConfig) -> Result<(PathBuf, Vec<(PathBuf, String)>), RuleLoadErrors> {
    if cfg.dir.exists() {
        return Ok((cfg.dir.clone(), read_dir_sources(&cfg.dir)?));
    }
    if cfg.dir == Path::new(DEFAULT_RULES_DIR) {
        tracing::info!(
            "{DEFAULT_RULES_DIR} does not exist; using the default rule pack built into this binary"
        );
        let dir = PathBuf::from("<built-in>");
        let sources = embedded::EMBEDDED_RULES
            .iter()
            .map(|(name, src)| (dir.join(name), (*src).to_string()))
            .collect();
        return Ok((dir, sources));
    }
    Err(one(
        &cfg.dir,
        "rules directory does not exist (rules.dir or --rules)".into(),
    ))
}

/// Load the configured rules; all or nothing, every error with file and line.
pub fn load_configured(cfg: &RulesConfig) -> Result<RuleSet, RuleLoadErrors> {
    cfg.validate().map_err(|m| one(&cfg.dir, m))?;
    let (dir, mut sources) = pack_sources(cfg)?;
    let local = match &cfg.local_dir {
        Some(d) if d.exists() => read_dir_sources(d)?,
        _ => Vec::new(),
    };
    if !local.is_empty() {
        // A local rule wins over the pack's rule with the same id.
        let local_dir = cfg.local_dir.clone().unwrap_or_default();
        let local_set = RuleSet::from_sources(&local_dir, local.clone(), cfg)?;
        let local_ids: HashSet<&str> = local_set
            .rules()
            .iter()
            .map(|r| r.meta.id.as_str())
            .collect();
        let pack_set = RuleSet::from_sources(&dir, sources.clone(), cfg)?;
        let replaced: HashSet<String> = pack_set
            .rules()
            .iter()
            .filter(|r| local_ids.contains(r.meta.id.as_str()))
            .map(|r| r.file.clone())
            .collect();
        sources.retain(|(f, _)| {
            let shown = f.display().to_string();
            !replaced
                .iter()
                .any(|r| shown.ends_with(r.as_str()) || r.ends_with(shown.as_str()))
        });
        for id in &local_ids {
            tracing::info!(rule = %id, "local rule in use");
        }
        sources.extend(local);
    }
    if sources.is_empty() {
        return Err(one(&dir, "no *.rhai rule files".into()));
    }
    RuleSet::from_sources(&dir, sources, cfg)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn embedded_pack_loads_when_the_packaged_dir_is_absent() {
        let cfg = RulesConfig::default();
        if Path::new(DEFAULT_RULES_DIR).exists() {
            return; // a package is installed on this machine; nothing to prove here
        }
        let set = load_configured(&cfg).expect("embedded pack compiles");
        assert!(set.len() >= 10);
    }

    #[test]
    fn local_rule_replaces_pack_rule_by_id() {
        let pack = std::env::temp_dir().join(format!("gw-pack-{}", std::process::id()));
        let local = std::env::temp_dir().join(format!("gw-local-{}", std::process::id()));
        std::fs::create_dir_all(&pack).unwrap();
        std::fs::create_dir_all(&local).unwrap();
        let rule = |id: &str, title: &str| {
            format!(
                "let rule = #{{ id: \"{id}\", title: \"{title}\", severity: \"low\", description: \"d\", kinds: [\"http_request\"], mitre: [] }};\nfalse\n"
            )
        };
        std::fs::write(pack.join("a.rhai"), rule("T-1", "pack one")).unwrap();
        std::fs::write(pack.join("b.rhai"), rule("T-2", "pack two")).unwrap();
        std::fs::write(local.join("mine.rhai"), rule("T-1", "local one")).unwrap();
        let cfg = RulesConfig {
            dir: pack.clone(),
            local_dir: Some(local.clone()),
            ..RulesConfig::default()
        };
        let set = load_configured(&cfg).unwrap();
        let titles: Vec<_> = set.rules().iter().map(|r| r.meta.title.clone()).collect();
        assert_eq!(set.len(), 2, "{titles:?}");
        assert!(titles.contains(&"local one".to_string()));
        assert!(titles.contains(&"pack two".to_string()));
        let _ = std::fs::remove_dir_all(&pack);
        let _ = std::fs::remove_dir_all(&local);
    }
}
