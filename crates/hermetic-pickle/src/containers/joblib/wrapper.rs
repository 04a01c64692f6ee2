//! What a joblib stream's `NumpyArrayWrapper` records say: their class,
//! attributes, dtype and layout, read off the symbolic stack.

use super::*;

impl Machine {
    /// The class an object was made from, seeing through copyreg helpers.
    pub(super) fn class_of(&self, obj: u32) -> Option<(&str, &str)> {
        let V::Obj { callable, args, .. } = &self.values[obj as usize] else {
            return None;
        };
        let V::Global(m, n, _) = &self.values[*callable as usize] else {
            return None;
        };
        if m == "copyreg"
            && matches!(
                n.as_str(),
                "_reconstructor" | "__newobj__" | "__newobj_ex__"
            )
        {
            let V::Tuple(items) = &self.values[(*args)? as usize] else {
                return None;
            };
            let V::Global(m, n, _) = &self.values[*items.first()? as usize] else {
                return None;
            };
            return Some((m, n));
        }
        Some((m, n))
    }

    /// Offsets of the pickling machinery that rebuilt a wrapper under
    /// protocols 0 and 1: `copyreg._reconstructor(cls, builtins.object, None)`
    /// (or `copyreg.__newobj__`). They are part of joblib's placeholder.
    pub(super) fn wrapper_machinery(&self, obj: u32) -> Vec<usize> {
        let V::Obj { callable, args, .. } = &self.values[obj as usize] else {
            return Vec::new();
        };
        let V::Global(m, n, at) = &self.values[*callable as usize] else {
            return Vec::new();
        };
        match (m.as_str(), n.as_str()) {
            ("copyreg", "__newobj__") => vec![*at],
            ("copyreg", "_reconstructor") => {
                let Some(V::Tuple(items)) = args.map(|a| &self.values[a as usize]) else {
                    return Vec::new();
                };
                match items.as_slice() {
                    [_, base, state] => {
                        match (&self.values[*base as usize], &self.values[*state as usize]) {
                            (V::Global(bm, bn, b_at), V::None)
                                if bm == "builtins" && bn == "object" =>
                            {
                                vec![*at, *b_at]
                            }
                            _ => Vec::new(),
                        }
                    }
                    _ => Vec::new(),
                }
            }
            _ => Vec::new(),
        }
    }

    pub(super) fn wrapper_kind(&self, obj: u32) -> Option<WrapperKind> {
        match self.class_of(obj)? {
            (MODULE, "NumpyArrayWrapper") => Some(WrapperKind::Inline),
            (MODULE | "joblib.numpy_pickle_compat", "NDArrayWrapper" | "ZNDArrayWrapper") => {
                Some(WrapperKind::Companion)
            }
            _ => None,
        }
    }

    pub(super) fn str_of(&self, id: u32) -> Option<&str> {
        match &self.values[id as usize] {
            V::Str(Some(s)) => Some(s),
            _ => None,
        }
    }

    /// The wrapper's attributes: `__init__` arguments, then each BUILD state
    /// (a dict, or a `(state, slotstate)` pair) in order; last one wins.
    pub(super) fn attribute(&self, obj: u32, name: &str) -> Attr {
        let V::Obj {
            callable,
            args,
            init,
            states,
        } = &self.values[obj as usize]
        else {
            return Attr::Missing;
        };
        let mut found = Attr::Missing;
        let direct =
            matches!(&self.values[*callable as usize], V::Global(m, _, _) if m != "copyreg");
        if *init && direct {
            if let Some(V::Tuple(items)) = args.map(|a| &self.values[a as usize]) {
                const PARAMS: [&str; 6] = [
                    "subclass",
                    "shape",
                    "order",
                    "dtype",
                    "allow_mmap",
                    "numpy_array_alignment_bytes",
                ];
                if let Some(i) = PARAMS.iter().position(|p| *p == name) {
                    found = match items.get(i) {
                        Some(&v) => Attr::Value(v),
                        None if name == "numpy_array_alignment_bytes" => Attr::Default16,
                        None => Attr::Missing,
                    };
                }
            }
        }
        for &s in states {
            let dicts: Vec<u32> = match &self.values[s as usize] {
                V::Dict(_) => vec![s],
                V::Tuple(pair) if pair.len() == 2 => pair.clone(),
                _ => Vec::new(),
            };
            for d in dicts {
                if let V::Dict(items) = &self.values[d as usize] {
                    for &(k, v) in items {
                        if self.str_of(k) == Some(name) {
                            found = Attr::Value(v);
                        }
                    }
                }
            }
        }
        found
    }

    /// `(itemsize, hasobject)` of a pickled `numpy.dtype`.
    pub(super) fn dtype_info(&self, id: u32, depth: u32) -> Result<(u64, bool), String> {
        if depth > 16 {
            return Err("dtype nested too deeply".into());
        }
        let V::Obj {
            callable,
            args,
            states,
            ..
        } = &self.values[id as usize]
        else {
            return Err("the dtype is not a reconstructed numpy.dtype".into());
        };
        match &self.values[*callable as usize] {
            V::Global(m, n, _) if (m == "numpy" || m.starts_with("numpy.")) && n == "dtype" => {}
            _ => return Err("the dtype is not built by numpy.dtype".into()),
        }
        let typestr = match args.map(|a| &self.values[a as usize]) {
            Some(V::Tuple(items)) => items.first().and_then(|&i| self.str_of(i)),
            _ => None,
        }
        .ok_or("the dtype has no type string")?;
        let code = typestr.trim_start_matches(['<', '>', '|', '=']);
        let kind = code.chars().next().ok_or("empty dtype type string")?;
        let digits: String = code
            .chars()
            .skip(1)
            .take_while(|c| c.is_ascii_digit())
            .collect();
        let mut has_object = kind == 'O';
        let mut elsize: Option<i64> = None;
        if let Some(&state) = states.last() {
            if let V::Tuple(items) = &self.values[state as usize] {
                if let Some(&V::Int(e)) = items.get(5).map(|&i| &self.values[i as usize]) {
                    elsize = Some(e);
                }
                if let Some(&V::Int(flags)) = items.get(7).map(|&i| &self.values[i as usize]) {
                    has_object |= flags & 1 != 0;
                }
                if let Some(V::Tuple(sub)) = items.get(2).map(|&i| &self.values[i as usize]) {
                    if let Some(&base) = sub.first() {
                        has_object |= self.dtype_info(base, depth + 1)?.1;
                    }
                }
                if let Some(V::Dict(fields)) = items.get(4).map(|&i| &self.values[i as usize]) {
                    for &(_, f) in fields {
                        if let V::Tuple(parts) = &self.values[f as usize] {
                            if let Some(&dt) = parts.first() {
                                has_object |= self.dtype_info(dt, depth + 1)?.1;
                            }
                        }
                    }
                }
            }
        }
        let itemsize = match elsize {
            Some(e) if e > 0 => e as u64,
            _ => digits
                .parse::<u64>()
                .map_err(|_| format!("cannot tell the item size of dtype `{typestr}`"))?,
        };
        Ok((itemsize, has_object))
    }

    pub(super) fn layout(&self, wrapper: u32) -> Result<Layout, String> {
        let dtype = match self.attribute(wrapper, "dtype") {
            Attr::Value(v) => v,
            _ => return Err("the wrapper has no dtype".into()),
        };
        let (itemsize, has_object) = self.dtype_info(dtype, 0)?;
        if has_object {
            return Ok(Layout::Object);
        }
        let shape = match self.attribute(wrapper, "shape") {
            Attr::Value(v) => v,
            _ => return Err("the wrapper has no shape".into()),
        };
        let V::Tuple(dims) = &self.values[shape as usize] else {
            return Err("the wrapper's shape is not a tuple".into());
        };
        let mut count: u64 = 1;
        for &d in dims {
            let V::Int(n) = self.values[d as usize] else {
                return Err("the wrapper's shape holds something other than integers".into());
            };
            let n = u64::try_from(n).map_err(|_| "the wrapper's shape is negative".to_string())?;
            count = count
                .checked_mul(n)
                .ok_or("the wrapper's shape overflows")?;
        }
        let nbytes = count
            .checked_mul(itemsize)
            .ok_or("the array size overflows")?;
        let padded = match self.attribute(wrapper, "numpy_array_alignment_bytes") {
            Attr::Missing => false,
            Attr::Default16 => true,
            Attr::Value(v) => !matches!(self.values[v as usize], V::None),
        };
        Ok(Layout::Raw { padded, nbytes })
    }
}

pub(super) enum Attr {
    Missing,
    Value(u32),
    /// `__init__`'s default `numpy_array_alignment_bytes=16`.
    Default16,
}
