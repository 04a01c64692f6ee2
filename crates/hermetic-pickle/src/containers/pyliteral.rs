//! A reader for the Python literals `ast.literal_eval` accepts, enough to
//! read a `.npy` header the way `numpy.lib.format` does.
//!
//! Supported: str and bytes literals (all prefixes but `f`, single and triple
//! quotes, escapes, implicit concatenation), int/float/complex numbers with
//! unary signs and `a+bj`, `True`/`False`/`None`, tuples, lists, dicts, sets
//! and `set()`, comments and line continuations. Anything else is an error,
//! and so is nesting deeper than [`MAX_DEPTH`].

/// Deepest nesting of brackets accepted.
pub const MAX_DEPTH: usize = 100;

/// A Python literal value.
#[derive(Clone, Debug, PartialEq)]
pub enum PyValue {
    Str(String),
    Bytes(Vec<u8>),
    /// An integer; `None` when it does not fit an `i64`.
    Int(Option<i64>),
    Float(f64),
    Complex,
    Bool(bool),
    None,
    Tuple(Vec<PyValue>),
    List(Vec<PyValue>),
    Dict(Vec<(PyValue, PyValue)>),
    Set(Vec<PyValue>),
}

impl PyValue {
    /// The value of `key` in a dict, the last one when a key repeats (as
    /// Python's dict display does).
    pub fn get(&self, key: &str) -> Option<&PyValue> {
        match self {
            PyValue::Dict(items) => items
                .iter()
                .rev()
                .find(|(k, _)| matches!(k, PyValue::Str(s) if s == key))
                .map(|(_, v)| v),
            _ => None,
        }
    }

    /// Whether Python's `isinstance(v, int)` holds (bool included).
    pub fn is_int(&self) -> bool {
        matches!(self, PyValue::Int(_) | PyValue::Bool(_))
    }
}

/// Why a text is not a literal.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("not a Python literal at character {offset}: {reason}")]
pub struct LiteralError {
    /// Offset in characters of the text.
    pub offset: usize,
    pub reason: &'static str,
}

/// Evaluates `text` as `ast.literal_eval` would.
pub fn literal_eval(text: &str) -> Result<PyValue, LiteralError> {
    let chars: Vec<char> = text.chars().collect();
    let mut p = P {
        s: &chars,
        i: 0,
        depth: 0,
    };
    p.ws();
    let v = p.expr()?;
    p.ws();
    if p.i != chars.len() {
        return Err(p.err("unexpected text after the literal"));
    }
    Ok(v)
}

struct P<'a> {
    s: &'a [char],
    i: usize,
    depth: usize,
}

impl P<'_> {
    fn err(&self, reason: &'static str) -> LiteralError {
        LiteralError {
            offset: self.i,
            reason,
        }
    }

    fn peek(&self) -> Option<char> {
        self.s.get(self.i).copied()
    }

    fn peek_at(&self, n: usize) -> Option<char> {
        self.s.get(self.i + n).copied()
    }

    fn ws(&mut self) {
        while let Some(c) = self.peek() {
            match c {
                ' ' | '\t' | '\n' | '\r' | '\x0c' => self.i += 1,
                '#' => {
                    while self.peek().is_some_and(|c| c != '\n') {
                        self.i += 1;
                    }
                }
                '\\' if matches!(self.peek_at(1), Some('\n')) => self.i += 2,
                '\\' if self.peek_at(1) == Some('\r') && self.peek_at(2) == Some('\n') => {
                    self.i += 3
                }
                _ => break,
            }
        }
    }

    fn eat(&mut self, c: char) -> bool {
        self.ws();
        if self.peek() == Some(c) {
            self.i += 1;
            true
        } else {
            false
        }
    }

    fn expr(&mut self) -> Result<PyValue, LiteralError> {
        self.ws();
        match self.peek() {
            Some('-') | Some('+') => {
                let neg = self.peek() == Some('-');
                self.i += 1;
                self.enter()?;
                let v = self.expr();
                self.depth -= 1;
                let v = v?;
                let v = match v {
                    PyValue::Int(Some(n)) if neg => PyValue::Int(n.checked_neg()),
                    PyValue::Int(n) => PyValue::Int(n),
                    PyValue::Float(f) => PyValue::Float(if neg { -f } else { f }),
                    PyValue::Complex => PyValue::Complex,
                    _ => return Err(self.err("sign on a value that is not a number")),
                };
                Ok(v)
            }
            Some(c)
                if c.is_ascii_digit()
                    || (c == '.' && self.peek_at(1).is_some_and(|d| d.is_ascii_digit())) =>
            {
                let v = self.number()?;
                // `1+2j`: a real and an imaginary literal.
                let save = self.i;
                self.ws();
                if matches!(self.peek(), Some('+') | Some('-')) && !matches!(v, PyValue::Complex) {
                    self.i += 1;
                    self.ws();
                    if self.peek().is_some_and(|c| c.is_ascii_digit() || c == '.') {
                        if let PyValue::Complex = self.number()? {
                            return Ok(PyValue::Complex);
                        }
                    }
                    return Err(self.err("binary operator on non-complex numbers"));
                }
                self.i = save;
                Ok(v)
            }
            Some('(') => self.seq('(', ')'),
            Some('[') => self.seq('[', ']'),
            Some('{') => self.brace(),
            Some(c) if c == '\'' || c == '"' || c.is_alphabetic() || c == '_' => {
                self.word_or_string()
            }
            Some(_) => Err(self.err("unexpected character")),
            None => Err(self.err("unexpected end of text")),
        }
    }

    fn enter(&mut self) -> Result<(), LiteralError> {
        self.depth += 1;
        if self.depth > MAX_DEPTH {
            return Err(self.err("nested too deeply"));
        }
        Ok(())
    }

    fn seq(&mut self, open: char, close: char) -> Result<PyValue, LiteralError> {
        self.i += 1;
        self.enter()?;
        let mut items = Vec::new();
        let mut comma = false;
        loop {
            if self.eat(close) {
                break;
            }
            items.push(self.expr()?);
            if self.eat(',') {
                comma = true;
                continue;
            }
            if self.eat(close) {
                break;
            }
            return Err(self.err("expected `,` or a closing bracket"));
        }
        self.depth -= 1;
        Ok(match open {
            '(' if items.len() == 1 && !comma => items.pop().unwrap_or(PyValue::None),
            '(' => PyValue::Tuple(items),
            _ => PyValue::List(items),
        })
    }

    fn brace(&mut self) -> Result<PyValue, LiteralError> {
        self.i += 1;
        self.enter()?;
        if self.eat('}') {
            self.depth -= 1;
            return Ok(PyValue::Dict(Vec::new()));
        }
        let first = self.expr()?;
        let v = if self.eat(':') {
            let mut items = vec![(first, self.expr()?)];
            loop {
                if self.eat('}') {
                    break;
                }
                if !self.eat(',') {
                    return Err(self.err("expected `,` in a dict"));
                }
                if self.eat('}') {
                    break;
                }
                let k = self.expr()?;
                if !self.eat(':') {
                    return Err(self.err("expected `:` in a dict"));
                }
                items.push((k, self.expr()?));
            }
            PyValue::Dict(items)
        } else {
            let mut items = vec![first];
            loop {
                if self.eat('}') {
                    break;
                }
                if !self.eat(',') {
                    return Err(self.err("expected `,` in a set"));
                }
                if self.eat('}') {
                    break;
                }
                items.push(self.expr()?);
            }
            PyValue::Set(items)
        };
        self.depth -= 1;
        Ok(v)
    }

    fn word_or_string(&mut self) -> Result<PyValue, LiteralError> {
        let start = self.i;
        while self.peek().is_some_and(|c| c.is_alphanumeric() || c == '_') {
            self.i += 1;
        }
        let word: String = self.s[start..self.i].iter().collect();
        if matches!(self.peek(), Some('\'') | Some('"')) {
            self.i = start;
            return self.strings();
        }
        match word.as_str() {
            "True" => Ok(PyValue::Bool(true)),
            "False" => Ok(PyValue::Bool(false)),
            "None" => Ok(PyValue::None),
            "set" => {
                if self.eat('(') && self.eat(')') {
                    Ok(PyValue::Set(Vec::new()))
                } else {
                    Err(self.err("only `set()` is a literal call"))
                }
            }
            _ => Err(self.err("a name that is not a literal")),
        }
    }

    /// One or more adjacent string literals, concatenated.
    fn strings(&mut self) -> Result<PyValue, LiteralError> {
        let mut text: Option<String> = None;
        let mut bytes: Option<Vec<u8>> = None;
        loop {
            self.ws();
            let start = self.i;
            while self.peek().is_some_and(|c| c.is_ascii_alphabetic()) {
                self.i += 1;
            }
            if !matches!(self.peek(), Some('\'') | Some('"')) {
                self.i = start;
                break;
            }
            let prefix: String = self.s[start..self.i]
                .iter()
                .collect::<String>()
                .to_ascii_lowercase();
            let (raw, is_bytes) = match prefix.as_str() {
                "" | "u" => (false, false),
                "r" => (true, false),
                "b" => (false, true),
                "br" | "rb" => (true, true),
                _ => return Err(self.err("string prefix that is not a literal")),
            };
            let body = self.string_body(raw, is_bytes)?;
            if is_bytes {
                if text.is_some() {
                    return Err(self.err("bytes and str literals concatenated"));
                }
                let mut b = Vec::with_capacity(body.len());
                for c in body {
                    b.push(u8::try_from(c).map_err(|_| self.err("non-ASCII byte literal"))?);
                }
                bytes.get_or_insert_with(Vec::new).extend_from_slice(&b);
            } else {
                if bytes.is_some() {
                    return Err(self.err("bytes and str literals concatenated"));
                }
                let mut s = String::new();
                for c in body {
                    s.push(
                        char::from_u32(c).ok_or_else(|| self.err("lone surrogate in a string"))?,
                    );
                }
                text.get_or_insert_with(String::new).push_str(&s);
            }
        }
        match (text, bytes) {
            (Some(t), None) => Ok(PyValue::Str(t)),
            (None, Some(b)) => Ok(PyValue::Bytes(b)),
            _ => Err(self.err("expected a string")),
        }
    }

    /// The code points of one quoted literal; `self.i` is at the opening quote.
    fn string_body(&mut self, raw: bool, is_bytes: bool) -> Result<Vec<u32>, LiteralError> {
        let q = self.peek().ok_or_else(|| self.err("expected a quote"))?;
        let triple = self.peek_at(1) == Some(q) && self.peek_at(2) == Some(q);
        self.i += if triple { 3 } else { 1 };
        let mut out = Vec::new();
        loop {
            let c = self.peek().ok_or_else(|| self.err("unterminated string"))?;
            if c == q {
                if !triple {
                    self.i += 1;
                    return Ok(out);
                }
                if self.peek_at(1) == Some(q) && self.peek_at(2) == Some(q) {
                    self.i += 3;
                    return Ok(out);
                }
                out.push(c as u32);
                self.i += 1;
                continue;
            }
            if c == '\n' && !triple {
                return Err(self.err("newline in a string"));
            }
            if c != '\\' {
                out.push(c as u32);
                self.i += 1;
                continue;
            }
            let e = self
                .peek_at(1)
                .ok_or_else(|| self.err("unterminated string"))?;
            if raw {
                // A backslash keeps the next character, quote included.
                out.push('\\' as u32);
                out.push(e as u32);
                self.i += 2;
                continue;
            }
            self.i += 2;
            match e {
                '\n' => {}
                '\\' => out.push('\\' as u32),
                '\'' => out.push('\'' as u32),
                '"' => out.push('"' as u32),
                'a' => out.push(7),
                'b' => out.push(8),
                'f' => out.push(12),
                'n' => out.push(10),
                'r' => out.push(13),
                't' => out.push(9),
                'v' => out.push(11),
                '0'..='7' => {
                    let mut v = e.to_digit(8).unwrap_or(0);
                    for _ in 0..2 {
                        match self.peek().and_then(|d| d.to_digit(8)) {
                            Some(d) => {
                                v = v * 8 + d;
                                self.i += 1;
                            }
                            None => break,
                        }
                    }
                    out.push(if is_bytes { v & 0xff } else { v });
                }
                'x' => out.push(self.hex_digits(2)?),
                'u' if !is_bytes => out.push(self.hex_digits(4)?),
                'U' if !is_bytes => {
                    let v = self.hex_digits(8)?;
                    if v > 0x10ffff {
                        return Err(self.err("code point out of range"));
                    }
                    out.push(v);
                }
                'N' if !is_bytes => return Err(self.err("named unicode escapes are not supported")),
                other => {
                    out.push('\\' as u32);
                    out.push(other as u32);
                }
            }
        }
    }

    fn hex_digits(&mut self, n: usize) -> Result<u32, LiteralError> {
        let mut v = 0u32;
        for _ in 0..n {
            let d = self
                .peek()
                .and_then(|c| c.to_digit(16))
                .ok_or_else(|| self.err("truncated hex escape"))?;
            v = v * 16 + d;
            self.i += 1;
        }
        Ok(v)
    }

    fn number(&mut self) -> Result<PyValue, LiteralError> {
        let start = self.i;
        while self
            .peek()
            .is_some_and(|c| c.is_ascii_alphanumeric() || c == '_' || c == '.')
            || (matches!(self.peek(), Some('+') | Some('-'))
                && matches!(self.s.get(self.i.wrapping_sub(1)), Some('e') | Some('E'))
                && !self.s[start..self.i].iter().any(|c| matches!(c, 'x' | 'X')))
        {
            self.i += 1;
        }
        let text: String = self.s[start..self.i]
            .iter()
            .filter(|&&c| c != '_')
            .collect();
        let lower = text.to_ascii_lowercase();
        if let Some(body) = lower.strip_suffix('j') {
            return if !body.is_empty() && body.parse::<f64>().is_ok() {
                Ok(PyValue::Complex)
            } else {
                Err(self.err("bad imaginary literal"))
            };
        }
        let radix = |prefix: &str, r: u32| {
            lower.strip_prefix(prefix).map(|digits| {
                if digits.is_empty() {
                    return Err(());
                }
                match i64::from_str_radix(digits, r) {
                    Ok(v) => Ok(PyValue::Int(Some(v))),
                    Err(_) if digits.chars().all(|c| c.is_digit(r)) => Ok(PyValue::Int(None)),
                    Err(_) => Err(()),
                }
            })
        };
        for (prefix, r) in [("0x", 16), ("0o", 8), ("0b", 2)] {
            if let Some(v) = radix(prefix, r) {
                return v.map_err(|_| self.err("bad integer literal"));
            }
        }
        if lower.chars().all(|c| c.is_ascii_digit()) {
            return Ok(PyValue::Int(lower.parse::<i64>().ok()));
        }
        lower
            .parse::<f64>()
            .map(PyValue::Float)
            .map_err(|_| self.err("bad number"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn numpy_headers() {
        let v =
            literal_eval("{'descr': '<f8', 'fortran_order': False, 'shape': (3, 4), }          \n")
                .unwrap();
        assert_eq!(v.get("descr"), Some(&PyValue::Str("<f8".into())));
        assert_eq!(v.get("fortran_order"), Some(&PyValue::Bool(false)));
        assert_eq!(
            v.get("shape"),
            Some(&PyValue::Tuple(vec![
                PyValue::Int(Some(3)),
                PyValue::Int(Some(4))
            ]))
        );
        let v = literal_eval(
            "{'descr': [('x', '<f8'), ('y', '|O')], 'shape': (3,), 'fortran_order': True}",
        )
        .unwrap();
        assert!(matches!(v.get("descr"), Some(PyValue::List(l)) if l.len() == 2));
        assert_eq!(
            literal_eval("(5,)").unwrap(),
            PyValue::Tuple(vec![PyValue::Int(Some(5))])
        );
        assert_eq!(literal_eval("(5)").unwrap(), PyValue::Int(Some(5)));
    }

    #[test]
    fn strings() {
        assert_eq!(literal_eval(r"'|' 'O'").unwrap(), PyValue::Str("|O".into()));
        assert_eq!(literal_eval(r"'\x4f'").unwrap(), PyValue::Str("O".into()));
        assert_eq!(literal_eval(r"'\117'").unwrap(), PyValue::Str("O".into()));
        assert_eq!(
            literal_eval(r"u'\u004f'").unwrap(),
            PyValue::Str("O".into())
        );
        assert_eq!(
            literal_eval(r"r'\x4f'").unwrap(),
            PyValue::Str(r"\x4f".into())
        );
        assert_eq!(
            literal_eval(r#"'''a'b'''"#).unwrap(),
            PyValue::Str("a'b".into())
        );
        assert_eq!(
            literal_eval("b'ab'").unwrap(),
            PyValue::Bytes(b"ab".to_vec())
        );
        assert!(literal_eval("b'a' 'b'").is_err());
        assert!(literal_eval("f'x'").is_err());
        assert!(literal_eval(r"'\N{LATIN CAPITAL LETTER O}'").is_err());
    }

    #[test]
    fn numbers_and_names() {
        assert_eq!(literal_eval("-3").unwrap(), PyValue::Int(Some(-3)));
        assert_eq!(literal_eval("0x1_0").unwrap(), PyValue::Int(Some(16)));
        assert_eq!(literal_eval("10**3").ok(), None);
        assert_eq!(literal_eval("1e3").unwrap(), PyValue::Float(1000.0));
        assert_eq!(literal_eval("1+2j").unwrap(), PyValue::Complex);
        assert_eq!(literal_eval("1+2").ok(), None);
        assert_eq!(
            literal_eval("99999999999999999999999").unwrap(),
            PyValue::Int(None)
        );
        assert_eq!(literal_eval("set()").unwrap(), PyValue::Set(vec![]));
        assert_eq!(
            literal_eval("{1, 2}").unwrap(),
            PyValue::Set(vec![PyValue::Int(Some(1)), PyValue::Int(Some(2))])
        );
        assert!(literal_eval("os.system('x')").is_err());
        assert!(literal_eval("{'a': 1} # comment\n").is_ok());
    }

    #[test]
    fn depth_is_bounded() {
        let deep = "(".repeat(100_000);
        assert!(literal_eval(&deep).is_err());
        let deep = "-".repeat(100_000) + "1";
        assert!(literal_eval(&deep).is_err());
    }
}
