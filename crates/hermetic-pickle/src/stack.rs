//! The unpickler's object stack, mark stack and memo: one implementation for
//! every machine that walks a pickle (the symbolic analysis, the evaluator,
//! the joblib walk), so they cannot disagree on which value an opcode sees.
//!
//! Entries are `u32` handles into each machine's own value arena; what a
//! value is stays the machine's business. The discipline is CPython's C
//! unpickler's (`Modules/_pickle.c`): one flat stack, a mark is the stack's
//! length when MARK ran, and an opcode sees only the values above the
//! innermost mark (the "fence"). The structural opcodes, which only move
//! handles (MARK, POP, POP_MARK, DUP and the memo's GET/PUT/MEMOIZE), are
//! carried out here, in [`Stack::apply`].

use std::collections::HashMap;

use crate::opcodes::Opcode;
use crate::parser::Arg;

/// Why a stack operation failed; each machine turns it into its own error
/// with [`StackError::describe`], so the words are the same everywhere.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum StackError {
    /// A pop with nothing above the fence (CPython: "unpickling stack underflow").
    Underflow,
    /// An opcode that reads the top value, with nothing above the fence.
    Empty,
    /// An opcode that needs a MARK, with none open.
    NoMark,
    /// TUPLE1-3 with fewer values above the fence.
    TooFew(usize),
    /// A memo index that is negative or not an integer.
    BadMemoKey,
    /// GET of a key that was never stored.
    MemoMissing(u64),
}

impl StackError {
    pub(crate) fn describe(self, op: Opcode) -> String {
        let op = op.name();
        match self {
            StackError::Underflow => {
                format!("{op} pops from an empty stack (unpickling stack underflow)")
            }
            StackError::Empty => format!("{op} needs a value on the stack"),
            StackError::NoMark => format!("{op} needs a MARK, but none is on the stack"),
            StackError::TooFew(n) => format!("{op} needs {n} values on the stack"),
            StackError::BadMemoKey => "negative or oversized memo index".into(),
            StackError::MemoMissing(k) => {
                format!("{op} reads memo entry {k}, which was never stored")
            }
        }
    }
}

/// The memo: dense for the small consecutive keys picklers write, a map for
/// anything else, so a hostile key costs no more than one entry. The dense
/// part never holds more than `2 * len + 1025` slots.
#[derive(Default)]
pub(crate) struct Memo {
    dense: Vec<u32>,
    sparse: HashMap<u64, u32>,
    len: usize,
}

impl Memo {
    const EMPTY: u32 = u32::MAX;

    pub(crate) fn get(&self, key: u64) -> Option<u32> {
        match usize::try_from(key).ok().and_then(|k| self.dense.get(k)) {
            Some(&v) if v != Self::EMPTY => Some(v),
            _ => self.sparse.get(&key).copied(),
        }
    }

    /// Stores `value` under `key`. `len` stays the exact number of distinct
    /// keys, as `len(memo)` is in CPython: MEMOIZE stores under it, so a
    /// miscount would make a machine read a different object than the
    /// unpickler does.
    pub(crate) fn insert(&mut self, key: u64, value: u32) {
        debug_assert!(value != Self::EMPTY);
        let k = usize::try_from(key).unwrap_or(usize::MAX);
        // Growth is bounded by the number of entries stored, not by the dense
        // part's length: keys that each double the last would otherwise
        // double the vector with every put (a 99-byte stream asked for 4 GB).
        if k >= self.dense.len() && k <= self.len.saturating_mul(2).saturating_add(1024) {
            self.dense.resize(k + 1, Self::EMPTY);
        }
        if k < self.dense.len() {
            if self.dense[k] == Self::EMPTY && self.sparse.remove(&key).is_none() {
                self.len += 1;
            }
            self.dense[k] = value;
        } else if self.sparse.insert(key, value).is_none() {
            self.len += 1;
        }
    }

    pub(crate) fn len(&self) -> usize {
        self.len
    }
}

/// The object stack, its marks and the memo.
#[derive(Default)]
pub(crate) struct Stack {
    items: Vec<u32>,
    /// Where each open MARK starts in `items`: one number per MARK, as
    /// CPython keeps its marks, so deep nesting costs four bytes a level.
    marks: Vec<u32>,
    memo: Memo,
}

impl Stack {
    pub(crate) fn push(&mut self, v: u32) {
        self.items.push(v);
    }

    /// Values above the innermost MARK.
    pub(crate) fn frame_len(&self) -> usize {
        self.items.len() - self.marks.last().map_or(0, |&m| m as usize)
    }

    pub(crate) fn pop(&mut self) -> Result<u32, StackError> {
        if self.frame_len() == 0 {
            return Err(StackError::Underflow);
        }
        self.items.pop().ok_or(StackError::Underflow)
    }

    pub(crate) fn top(&self) -> Result<u32, StackError> {
        if self.frame_len() == 0 {
            return Err(StackError::Empty);
        }
        self.items.last().copied().ok_or(StackError::Empty)
    }

    /// Replaces the top value (joblib's arrays take their wrapper's place).
    pub(crate) fn replace_top(&mut self, v: u32) -> Result<(), StackError> {
        if self.frame_len() == 0 {
            return Err(StackError::Empty);
        }
        let t = self.items.last_mut().ok_or(StackError::Empty)?;
        *t = v;
        Ok(())
    }

    /// The values above the innermost MARK, which is closed.
    pub(crate) fn pop_mark(&mut self) -> Result<Vec<u32>, StackError> {
        let mark = self.marks.pop().ok_or(StackError::NoMark)?;
        Ok(self.items.split_off(mark as usize))
    }

    /// The top `n` values (TUPLE1-3), which must lie above the fence.
    pub(crate) fn pop_n(&mut self, n: usize) -> Result<Vec<u32>, StackError> {
        if self.frame_len() < n {
            return Err(StackError::TooFew(n));
        }
        Ok(self.items.split_off(self.items.len() - n))
    }

    /// What the stack holds, marks included: the measure the stack limit
    /// bounds.
    pub(crate) fn depth(&self) -> usize {
        self.items.len() + self.marks.len()
    }

    /// Whether nothing is left: no values and no open marks.
    pub(crate) fn is_clear(&self) -> bool {
        self.items.is_empty() && self.marks.is_empty()
    }

    /// Carries out `op` if it only moves handles (MARK, POP, POP_MARK, DUP,
    /// GET, PUT, MEMOIZE and their variants) and returns whether it was one.
    pub(crate) fn apply(&mut self, op: Opcode, arg: &Arg<'_>) -> Result<bool, StackError> {
        use Opcode::*;
        match op {
            MARK => self.marks.push(self.items.len() as u32),
            // CPython pops the innermost mark when nothing is above it.
            POP if self.frame_len() == 0 => {
                self.pop_mark()?;
            }
            POP => {
                self.items.pop();
            }
            POP_MARK => {
                self.pop_mark()?;
            }
            DUP => {
                let t = self.top()?;
                self.items.push(t);
            }
            GET | BINGET | LONG_BINGET => {
                let key = memo_key(arg)?;
                let v = self.memo.get(key).ok_or(StackError::MemoMissing(key))?;
                self.items.push(v);
            }
            PUT | BINPUT | LONG_BINPUT => {
                let key = memo_key(arg)?;
                let t = self.top()?;
                self.memo.insert(key, t);
            }
            MEMOIZE => {
                let t = self.top()?;
                let key = self.memo.len() as u64;
                self.memo.insert(key, t);
            }
            _ => return Ok(false),
        }
        Ok(true)
    }
}

fn memo_key(arg: &Arg<'_>) -> Result<u64, StackError> {
    match arg {
        Arg::Int(v) if *v >= 0 => Ok(*v as u64),
        Arg::Bool(b) => Ok(*b as u64),
        _ => Err(StackError::BadMemoKey),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_fence_hides_values_below_a_mark() {
        let mut s = Stack::default();
        s.push(7);
        s.apply(Opcode::MARK, &Arg::None).unwrap();
        assert_eq!(s.top(), Err(StackError::Empty));
        assert_eq!(s.pop(), Err(StackError::Underflow));
        assert_eq!(s.pop_n(1), Err(StackError::TooFew(1)));
        assert_eq!(s.replace_top(1), Err(StackError::Empty));
        assert_eq!(
            s.apply(Opcode::DUP, &Arg::None),
            Err(StackError::Empty),
            "DUP may not copy a value below the mark"
        );
        // POP with nothing above the fence closes the mark, as CPython does.
        assert!(s.apply(Opcode::POP, &Arg::None).unwrap());
        assert_eq!(s.top(), Ok(7));
        assert!(!s.is_clear());
    }

    #[test]
    fn pop_without_a_mark_on_an_empty_stack_fails() {
        let mut s = Stack::default();
        assert_eq!(s.apply(Opcode::POP, &Arg::None), Err(StackError::NoMark));
        assert_eq!(s.pop_mark(), Err(StackError::NoMark));
    }

    #[test]
    fn memo_keys_follow_cpython() {
        let mut s = Stack::default();
        s.push(3);
        s.apply(Opcode::MEMOIZE, &Arg::None).unwrap();
        s.apply(Opcode::BINPUT, &Arg::Int(5)).unwrap();
        s.push(4);
        s.apply(Opcode::MEMOIZE, &Arg::None).unwrap(); // len(memo) == 2
        s.apply(Opcode::GET, &Arg::Int(2)).unwrap();
        assert_eq!(s.top(), Ok(4));
        assert_eq!(
            s.apply(Opcode::GET, &Arg::Int(9)),
            Err(StackError::MemoMissing(9))
        );
        assert_eq!(
            s.apply(Opcode::PUT, &Arg::Int(-1)),
            Err(StackError::BadMemoKey)
        );
        assert!(!s.apply(Opcode::TUPLE, &Arg::None).unwrap());
    }

    /// Memo puts whose keys each double the last: the memo's size follows
    /// the number of entries, not the largest key.
    #[test]
    fn growing_memo_keys_cost_one_entry_each() {
        let mut m = Memo::default();
        let mut k: u64 = 1024;
        for i in 0..64 {
            m.insert(k, i);
            k = k.saturating_mul(2).saturating_add(1);
        }
        assert!(m.dense.len() <= 2 * 64 + 1025, "{}", m.dense.len());
    }

    /// MEMOIZE stores under `len(memo)`, so the count must stay exact when
    /// keys move from the sparse part into a grown dense part.
    #[test]
    fn memo_len_is_exact_across_growth() {
        let mut m = Memo::default();
        m.insert(3000, 1); // sparse: far past the dense part
        for k in 0..3001 {
            m.insert(k, 2);
        }
        assert_eq!(m.len(), 3001);
        assert_eq!(m.get(3000), Some(2));
        let mut m = Memo::default();
        m.insert(2000, 7);
        for k in 0..1500 {
            m.insert(k, 0);
        }
        assert_eq!(m.get(2000), Some(7), "a sparse key under the dense range");
        assert_eq!(m.len(), 1501);
    }
}
