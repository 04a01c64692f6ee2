//! Call-site patterns: `module:qualname`, each side a glob where `*` matches
//! any run of characters (dots included) and `?` matches one character. As
//! in hermetic's scan policies, a module side ending in `.*` also matches the
//! package itself (`torch.multiprocessing.*` matches `torch.multiprocessing`).

use crate::ManifestError;
use std::fmt;

/// A glob over one side of a call site (or over a module name).
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct Glob(String);

impl Glob {
    pub fn new(text: &str) -> Self {
        Glob(text.to_string())
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    pub fn matches(&self, text: &str) -> bool {
        wildcard(self.0.as_bytes(), text.as_bytes())
    }

    /// Module globs: `pkg.*` also matches `pkg`.
    pub fn matches_module(&self, module: &str) -> bool {
        self.matches(module) || self.0.strip_suffix(".*").is_some_and(|p| p == module)
    }
}

impl fmt::Debug for Glob {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Glob({:?})", self.0)
    }
}

/// Iterative wildcard matching with single-star backtracking: linear in
/// practice, never exponential.
fn wildcard(p: &[u8], t: &[u8]) -> bool {
    let (mut pi, mut ti) = (0usize, 0usize);
    let mut star: Option<(usize, usize)> = None;
    while ti < t.len() {
        if pi < p.len() && (p[pi] == b'?' || p[pi] == t[ti]) {
            // `?` matches one byte; call sites are compared byte-wise, and a
            // non-ASCII `?` match is at worst stricter, never looser.
            pi += 1;
            ti += 1;
        } else if pi < p.len() && p[pi] == b'*' {
            star = Some((pi, ti));
            pi += 1;
        } else if let Some((sp, st)) = star {
            pi = sp + 1;
            ti = st + 1;
            star = Some((sp, st + 1));
        } else {
            return false;
        }
    }
    while pi < p.len() && p[pi] == b'*' {
        pi += 1;
    }
    pi == p.len()
}

/// A `module:qualname` call-site pattern.
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct CallerPattern {
    text: String,
    module: Glob,
    qualname: Glob,
}

impl CallerPattern {
    pub fn parse(text: &str) -> Result<Self, ManifestError> {
        let bad = |why: &str| ManifestError::BadCallerPattern {
            pattern: text.to_string(),
            why: why.to_string(),
        };
        let (module, qualname) = text
            .split_once(':')
            .ok_or_else(|| bad("expected `module:qualname`"))?;
        if qualname.contains(':') {
            return Err(bad("more than one `:`"));
        }
        if module.is_empty() || qualname.is_empty() {
            return Err(bad("module and qualname must not be empty"));
        }
        if text.chars().any(|c| c.is_whitespace() || c.is_control()) {
            return Err(bad("whitespace is not allowed"));
        }
        Ok(CallerPattern {
            text: text.to_string(),
            module: Glob::new(module),
            qualname: Glob::new(qualname),
        })
    }

    pub fn as_str(&self) -> &str {
        &self.text
    }

    /// Whether the frame `module:qualname` matches.
    pub fn matches(&self, frame: &str) -> bool {
        match frame.split_once(':') {
            Some((m, q)) => self.module.matches_module(m) && self.qualname.matches(q),
            None => false,
        }
    }
}

impl fmt::Debug for CallerPattern {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "CallerPattern({:?})", self.text)
    }
}

impl fmt::Display for CallerPattern {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.text)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wildcards() {
        assert!(wildcard(b"*", b""));
        assert!(wildcard(b"a*c", b"abbbc"));
        assert!(wildcard(b"a?c", b"abc"));
        assert!(!wildcard(b"a?c", b"ac"));
        assert!(wildcard(b"*.recv", b"x.y.recv"));
        assert!(!wildcard(b"*.recv", b"x.y.recv2"));
        assert!(wildcard(b"**a**", b"bab"));
        // Pathological input stays fast.
        let t = vec![b'a'; 10_000];
        assert!(!wildcard(b"*a*a*a*a*a*b", &t));
    }

    #[test]
    fn caller_patterns() {
        let p = CallerPattern::parse("multiprocessing.*:*").unwrap();
        assert!(p.matches("multiprocessing.queues:Queue.get"));
        assert!(p.matches("multiprocessing:anything"));
        assert!(!p.matches("multiprocessingx:f"));
        assert!(!p.matches("mymultiprocessing.queues:Queue.get"));
        let p = CallerPattern::parse("app.train:load_*").unwrap();
        assert!(p.matches("app.train:load_model"));
        assert!(!p.matches("app.train:Trainer.load_model"));
        assert!(!p.matches("app.training:load_model"));
        let p = CallerPattern::parse("__main__:<module>").unwrap();
        assert!(p.matches("__main__:<module>"));
        for bad in ["nocolon", ":f", "m:", "a:b:c", "a b:c"] {
            assert!(CallerPattern::parse(bad).is_err(), "{bad}");
        }
    }
}
