//! Version 2 of the tree (docs/SPEC.md, section 10): class records, enum
//! members, callables by reference and a few standard-library values. This
//! module holds the syntax rules a writer and a reader both check, and the
//! listing of the classes and callables a tree names.
//!
//! Names are data here: nothing in this crate resolves or imports them.

use crate::tree::{Node, NodeId, Tree};
use std::collections::HashMap;

pub use crate::syntax::{
    is_class_name, is_date, is_datetime, is_decimal, is_identifier, is_import_name, is_time,
    is_timedelta, is_utc_offset, is_uuid, ATTRS_VERSION, TYPED_VERSION, VIEWS_VERSION,
};

/// What kind of thing a tree names by `module:qualname`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum RefKind {
    /// A class record (`$object`): an instance rebuilt from its fields.
    Object,
    /// An enum member (`$enum`).
    Enum,
    /// A function or class by reference (`$callable`, or the function of a
    /// `$partial`).
    Callable,
}

impl RefKind {
    pub fn as_str(&self) -> &'static str {
        match self {
            RefKind::Object => "object",
            RefKind::Enum => "enum",
            RefKind::Callable => "callable",
        }
    }
}

/// One name a tree uses, with how often it appears and (for class records)
/// the field names of its first appearance.
#[derive(Clone, Debug, PartialEq)]
pub struct NamedRef {
    pub kind: RefKind,
    pub name: String,
    pub count: usize,
    pub fields: Vec<String>,
}

impl Tree {
    /// The version a document holding this tree must declare: 2 if any node
    /// is a section-10 node, else 1.
    pub fn required_version(&self) -> u64 {
        let based = |n: &Node| matches!(n, Node::Tensor(t) if t.base.is_some());
        if self.nodes.iter().any(|n| matches!(n, Node::Attrs { .. })) {
            ATTRS_VERSION
        } else if self.nodes.iter().any(based) {
            VIEWS_VERSION
        } else if self.nodes.iter().any(Node::is_typed) {
            TYPED_VERSION
        } else {
            1
        }
    }

    /// Every class, enum and callable name reachable from `from` (following
    /// `$ref`s), in document order of first appearance.
    pub fn named_refs(&self, from: NodeId) -> Vec<NamedRef> {
        let mut out: Vec<NamedRef> = Vec::new();
        let mut index: HashMap<(RefKind, String), usize> = HashMap::new();
        let mut seen = vec![false; self.nodes.len()];
        let mut stack = vec![from];
        let mut note = |kind: RefKind, name: &str, fields: &[String]| match index
            .get(&(kind, name.to_string()))
        {
            Some(&i) => out[i].count += 1,
            None => {
                index.insert((kind, name.to_string()), out.len());
                out.push(NamedRef {
                    kind,
                    name: name.to_string(),
                    count: 1,
                    fields: fields.to_vec(),
                });
            }
        };
        while let Some(id) = stack.pop() {
            let id = self.resolve(id);
            if std::mem::replace(&mut seen[id], true) {
                continue;
            }
            match &self.nodes[id] {
                Node::Object { shape, .. } => note(RefKind::Object, &shape.class, &shape.fields),
                Node::Enum { class, .. } => note(RefKind::Enum, class, &[]),
                Node::Callable(name) => note(RefKind::Callable, name, &[]),
                Node::Partial { func, .. } => note(RefKind::Callable, func, &[]),
                _ => {}
            }
            self.push_children_rev(id, &mut stack);
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names() {
        for ok in [
            "a:B",
            "__main__:Config",
            "pkg.mod:Outer.Inner",
            "tests.t:test_x.<locals>.Cfg",
            "m:f.<locals>.g.<locals>.H",
            "mödule:Klasse",
        ] {
            assert!(is_class_name(ok), "{ok}");
        }
        for bad in [
            "",
            "a",
            ":B",
            "a:",
            "a.:B",
            "a:B.",
            "1a:B",
            "a:<locals>.B",
            "a:B.<locals>",
            "a:B.<lambda>",
            "a:B:C",
            "a b:C",
            "a:B.<locals>.<locals>.C",
        ] {
            assert!(!is_class_name(bad), "{bad}");
        }
        assert!(is_import_name("torch._C._nn:gelu"));
        assert!(!is_import_name("m:f.<locals>.g"));
    }

    #[test]
    fn datetimes() {
        for ok in [
            "2024-02-29T13:45:00",
            "0001-01-01T00:00:00.000001",
            "2024-01-02T03:04:05+00:00",
            "2024-01-02T03:04:05.123456-05:30",
            "2024-01-02T03:04:05+05:30:15.000001",
            "2024-01-02T03:04:05+01:00[Europe/Paris]",
            "2024-01-02T03:04:05-03:00[America/Argentina/Buenos_Aires]",
            "2024-01-02T03:04:05+00:00[Etc/GMT+5]",
        ] {
            assert!(is_datetime(ok), "{ok}");
        }
        for bad in [
            "2024-01-02",
            "2024-01-02 03:04:05",
            "2024-13-02T03:04:05",
            "0000-01-02T03:04:05",
            "2024-01-02T24:00:00",
            "2024-01-02T03:04:05.12",
            "2024-01-02T03:04:05Z",
            "2024-01-02T03:04:05+24:00",
            "2024-01-02T03:04:05[Europe/Paris]",
            "2024-01-02T03:04:05+01:00[../etc/passwd]",
            "2024-01-02T03:04:05+01:00[]",
            "2024-01-02T03:04:05+01:00[a//b]",
        ] {
            assert!(!is_datetime(bad), "{bad}");
        }
        assert!(is_date("1999-12-31"));
        assert!(!is_date("1999-12-32") && !is_date("99-12-31") && !is_date("1999/12/31"));
    }

    #[test]
    fn uuids_decimals_timedeltas() {
        assert!(is_uuid("12345678-9abc-def0-1234-56789abcdef0"));
        assert!(!is_uuid("12345678-9ABC-def0-1234-56789abcdef0"));
        assert!(!is_uuid("123456789abcdef0123456789abcdef0"));
        for ok in [
            "0", "-0", "1.5", "1.", ".5", "1E+5", "-1.23e-7", "Infinity", "-Inf", "NaN", "sNaN12",
            "-nan",
        ] {
            assert!(is_decimal(ok), "{ok}");
        }
        for bad in [
            "", ".", "e5", "1e", "1e+", "1.2.3", "0x10", "1_000", " 1", "NaNx", "infinit",
        ] {
            assert!(!is_decimal(bad), "{bad}");
        }
        assert!(is_timedelta(-1, 86_399, 999_999));
        assert!(!is_timedelta(0, 86_400, 0) && !is_timedelta(0, 0, -1));
        assert!(!is_timedelta(1_000_000_000, 0, 0));
    }
}
