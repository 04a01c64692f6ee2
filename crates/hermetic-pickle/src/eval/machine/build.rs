//! Building values: big decimals, container fills, calls of allowlisted
//! globals, NEWOBJ, opaque objects and `copyreg` reconstruction.

use super::*;

impl<'a> Machine<'a, '_> {
    pub(super) fn big_decimal(&mut self, digits: &[u8]) -> Result<Value<'a>, Problem> {
        if digits.len() > MAX_DECIMAL_DIGITS + 1 {
            return Err(Problem::Limit(format!(
                "an integer of more than {MAX_DECIMAL_DIGITS} decimal digits"
            )));
        }
        let bytes = decimal_to_twos(digits).ok_or_else(|| malformed("bad decimal integer"))?;
        self.heap.budget.charge_problem(bytes.len() as u64)?;
        Ok(long_value(&bytes))
    }

    pub(super) fn extend_list(
        &mut self,
        target: Id,
        items: Vec<Id>,
        op: Opcode,
    ) -> Result<(), Problem> {
        self.charge_items(items.len())?;
        match self.heap.arena.get_mut(target) {
            Value::List(l) => l.extend(items),
            Value::Object(o) => o.list_items.extend(items),
            other => {
                return Err(malformed(format!(
                    "{} on {}: the unpickler would call its `append`/`extend` method",
                    op.name(),
                    other.describe()
                )))
            }
        }
        Ok(())
    }

    pub(super) fn set_items(
        &mut self,
        target: Id,
        pairs: Vec<(Id, Id)>,
        op: Opcode,
    ) -> Result<(), Problem> {
        self.charge_items(2 * pairs.len())?;
        if matches!(self.heap.arena.get(target), Value::Dict(_)) {
            check_hashable(&self.heap, pairs.iter().map(|p| p.0))?;
        }
        match self.heap.arena.get_mut(target) {
            Value::Dict(d) => d.items.extend(pairs),
            Value::Object(o) => o.dict_items.extend(pairs),
            other => {
                return Err(malformed(format!(
                    "{} on {}: the unpickler would call its `__setitem__` method",
                    op.name(),
                    other.describe()
                )))
            }
        }
        Ok(())
    }

    /// `callable(*args)`.
    pub(crate) fn call(&mut self, callable: Id, args: Id, made: Made) -> Result<Id, Problem> {
        if self.heap.arena.seq_of(args).is_none()
            || !matches!(self.heap.arena.get(args), Value::Tuple(_))
        {
            return Err(malformed(format!(
                "the arguments of a call are {}, not a tuple",
                self.heap.arena.get(args).describe()
            )));
        }
        match self.heap.arena.get(callable) {
            Value::Global(g) => match &**g {
                Global::Known(k) => {
                    let k = *k;
                    calls::call_known(&mut self.heap, k, args)
                }
                Global::Foreign { module, name } => {
                    let forwarded = (module == "copyreg" || module == "copy_reg")
                        && matches!(
                            name.as_str(),
                            "_reconstructor" | "__newobj__" | "__newobj_ex__"
                        );
                    let forwarded_made = if name == "_reconstructor" {
                        Made::Reconstructor
                    } else {
                        Made::New
                    };
                    if forwarded {
                        if let Some((&cls, rest)) =
                            self.heap.arena.seq_of(args).and_then(|s| s.split_first())
                        {
                            let rest = rest.to_vec();
                            if let Value::Global(g) = self.heap.arena.get(cls) {
                                if let (Global::Known(k), Mode::Strict, false) =
                                    (&**g, self.heap.ctx.mode, name == "_reconstructor")
                                {
                                    // copyreg.__newobj__(dict, ...) is dict.__new__(dict, ...).
                                    let k = *k;
                                    let rest = self.push_value(Value::Tuple(rest))?;
                                    return calls::new_known(&mut self.heap, k, rest);
                                }
                                if name == "_reconstructor" {
                                    return self.reconstructed(
                                        cls,
                                        rest.first().copied(),
                                        rest.get(1).copied(),
                                    );
                                }
                                let rest = Some(self.push_value(Value::Tuple(rest))?);
                                return self.opaque(cls, rest, None, forwarded_made);
                            }
                        }
                    }
                    self.opaque(callable, Some(args), None, made)
                }
            },
            _ if self.heap.ctx.mode != Mode::Strict => {
                self.opaque(callable, Some(args), None, made)
            }
            other => Err(malformed(format!(
                "a call of {}: only named globals can be called",
                other.describe()
            ))),
        }
    }

    /// `cls.__new__(cls, *args, **kwargs)`.
    pub(super) fn newobj(&mut self, cls: Id, args: Id, kwargs: Option<Id>) -> Result<Id, Problem> {
        if !matches!(self.heap.arena.get(args), Value::Tuple(_)) {
            return Err(malformed(format!(
                "NEWOBJ's arguments are {}, not a tuple",
                self.heap.arena.get(args).describe()
            )));
        }
        if let Some(kw) = kwargs {
            let empty = matches!(self.heap.arena.get(kw), Value::Dict(d) if d.items.is_empty());
            if !empty
                && !matches!(self.heap.arena.get(cls), Value::Global(g) if matches!(**g, Global::Foreign { .. }))
            {
                return Err(unsupported("NEWOBJ_EX with keyword arguments"));
            }
        }
        match self.heap.arena.get(cls) {
            Value::Global(g) => match &**g {
                Global::Known(k) => {
                    let k = *k;
                    calls::new_known(&mut self.heap, k, args)
                }
                Global::Foreign { .. } => self.opaque(cls, Some(args), kwargs, Made::New),
            },
            _ if self.heap.ctx.mode != Mode::Strict => {
                self.opaque(cls, Some(args), kwargs, Made::New)
            }
            other => Err(malformed(format!(
                "NEWOBJ on {}, not a class",
                other.describe()
            ))),
        }
    }

    pub(crate) fn opaque(
        &mut self,
        class: Id,
        args: Option<Id>,
        kwargs: Option<Id>,
        made: Made,
    ) -> Result<Id, Problem> {
        self.object(class, made, args, kwargs, None)
    }

    /// Arguments a standard-library class gets that keep its work bounded.
    pub(super) fn check_inert_call(
        &self,
        module: &str,
        name: &str,
        args: Id,
    ) -> Result<(), Problem> {
        let items = self.heap.arena.seq_of(args).unwrap_or(&[]);
        let global = |id: Id| match self.heap.arena.get(id) {
            Value::Global(g) => match &**g {
                Global::Foreign { module, name } => Some((module.as_str(), name.as_str())),
                Global::Known(_) => None,
            },
            _ => None,
        };
        let refuse = |why: &str| Err(unsupported(format!("{module}.{name} {why}")));
        match (module, name) {
            ("numpy.random._pickle", "__bit_generator_ctor") => {
                // It calls a class it is given: only numpy's bit generators.
                let ok = items.len() <= 1
                    && items.iter().all(|&a| match self.heap.arena.get(a) {
                        Value::Str(_) => true,
                        _ => global(a).is_some_and(|(m, n)| crate::policy::is_bit_generator(m, n)),
                    });
                return if ok {
                    Ok(())
                } else {
                    refuse("called with other than a bit generator's name or class")
                };
            }
            ("numpy.random._pickle", "__randomstate_ctor" | "__generator_ctor") => {
                // (name or bit generator, ctor): the ctor is called with the
                // name, so it may only be numpy's own.
                let made_bit_generator = |a: Id| match self.heap.arena.get(a) {
                    Value::Str(_) => true,
                    Value::Object(o) => global(o.class).is_some_and(|(m, n)| {
                        crate::policy::is_bit_generator(m, n)
                            || (m, n) == ("numpy.random._pickle", "__bit_generator_ctor")
                    }),
                    _ => false,
                };
                let ok = items.len() <= 2
                    && items.first().is_none_or(|&a| made_bit_generator(a))
                    && items.get(1).is_none_or(|&c| {
                        global(c) == Some(("numpy.random._pickle", "__bit_generator_ctor"))
                    });
                return if ok {
                    Ok(())
                } else {
                    refuse("called with other than a bit generator and numpy's own constructor")
                };
            }
            ("torch.distributed.checkpoint.metadata", "_MEM_FORMAT_ENCODING") => {
                // An Enum called with a value looks the member up; with more
                // arguments it would build a new enum class.
                let ok =
                    matches!(items, [v] if matches!(self.heap.arena.get(*v), Value::Int(0..=2)));
                return if ok {
                    Ok(())
                } else {
                    refuse("called with other than one of its values 0, 1 or 2")
                };
            }
            ("numpy.random.bit_generator", "__pyx_unpickle_SeedSequence") => {
                let ok = items.first().and_then(|&c| global(c))
                    == Some(("numpy.random.bit_generator", "SeedSequence"));
                return if ok {
                    Ok(())
                } else {
                    refuse("called for a class other than SeedSequence")
                };
            }
            _ => {}
        }
        if module != "fractions" || name != "Fraction" {
            return Ok(());
        }
        // Fraction("1e999999999") builds 10**999999999, and the gcd of two
        // huge ints is quadratic: ints of at most 4096 bits only.
        let bounded = items.len() <= 2
            && items.iter().all(|&i| match self.heap.arena.get(i) {
                Value::Int(_) | Value::Bool(_) => true,
                Value::BigInt(b) => b.len() <= 512,
                _ => false,
            });
        if bounded {
            Ok(())
        } else {
            Err(unsupported(
                "fractions.Fraction called with other than one or two ints of at most 4096 bits",
            ))
        }
    }

    /// `copyreg._reconstructor(cls, base, state)`.
    pub(super) fn reconstructed(
        &mut self,
        class: Id,
        base: Option<Id>,
        state: Option<Id>,
    ) -> Result<Id, Problem> {
        if self.heap.ctx.mode == Mode::Strict {
            // The base's `__new__` and `__init__` run too: only `object`'s
            // (which run nothing) or a builtin container's are taken.
            let plain_base = base.is_some_and(|b| match self.heap.arena.get(b) {
                Value::Global(g) => match &**g {
                    Global::Foreign { module, name } => module == "builtins" && name == "object",
                    Global::Known(k) => matches!(
                        k.qualname().as_str(),
                        "builtins.dict" | "builtins.list" | "builtins.set" | "builtins.tuple"
                    ),
                },
                _ => false,
            });
            if !plain_base {
                return Err(unsupported(
                    "copyreg._reconstructor with a base other than object or a builtin container",
                ));
            }
        }
        self.object(class, Made::Reconstructor, state, None, base)
    }

    pub(super) fn object(
        &mut self,
        class: Id,
        made: Made,
        args: Option<Id>,
        kwargs: Option<Id>,
        base: Option<Id>,
    ) -> Result<Id, Problem> {
        if self.heap.ctx.mode == Mode::Strict {
            // Only a class the caller trusts is ever rebuilt (by the caller):
            // not a computed callable, not a known data constructor, not a
            // copyreg helper called any other way than as a forwarder.
            let trusted = match self.heap.arena.get(class) {
                Value::Global(g) => match &**g {
                    Global::Foreign { module, name } => {
                        !crate::eval::Allowed::is_forwarder(module, name)
                    }
                    Global::Known(_) => false,
                },
                _ => false,
            };
            if !trusted {
                return Err(malformed(format!(
                    "an object made by {} in strict mode",
                    self.heap.arena.get(class).describe()
                )));
            }
        }
        if let Value::Global(g) = self.heap.arena.get(class) {
            if let Global::Foreign { module, name } = &**g {
                if crate::policy::is_inert_class(module, name) && made != Made::Reconstructor {
                    let kw_empty = kwargs.is_none_or(
                        |k| matches!(self.heap.arena.get(k), Value::Dict(d) if d.items.is_empty()),
                    );
                    if !kw_empty && module == "fractions" && name == "Fraction" {
                        return Err(unsupported("fractions.Fraction with keyword arguments"));
                    }
                    if let Some(a) = args {
                        self.check_inert_call(module, name, a)?;
                    }
                }
            }
        }
        self.push_value(Value::Object(Box::new(Object {
            class,
            made,
            args,
            kwargs,
            base,
            state: None,
            list_items: Vec::new(),
            dict_items: Vec::new(),
        })))
    }
}
