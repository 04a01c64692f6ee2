//! Which globals a stream calls: direct REDUCE/NEWOBJ/BUILD calls,
//! calls forwarded through known wrappers, and the containers a call's
//! result fills.

use super::*;

impl<'a> Machine<'_, 'a> {
    pub(super) fn mark_called(
        &mut self,
        callable: u32,
        op: Opcode,
        offset: usize,
    ) -> Result<Option<usize>, Stop> {
        match &self.values[callable as usize] {
            Sym::Global(g) | Sym::PersId(Some(g)) => {
                let g = *g;
                self.globals[g].called = true;
                Ok(Some(g))
            }
            other => {
                let what = describe(other);
                self.finding(
                    Verdict::Dangerous,
                    FindingCode::IndirectCall,
                    offset,
                    format!("{} calls {what}, not a named global: the callable is computed at load time", op.name()),
                );
                Ok(None)
            }
        }
    }

    /// Calls through helpers that call their first argument (`copyreg.__newobj__`,
    /// `copyreg._reconstructor`, `torch._tensor._rebuild_from_type_v2`) also
    /// call that argument.
    pub(super) fn mark_forwarded_call(&mut self, callee: usize, args: u32) {
        let g = &self.globals[callee];
        let forwards = matches!(
            (g.module.as_str(), g.name.as_str()),
            ("copyreg", "__newobj__" | "__newobj_ex__" | "_reconstructor")
                | ("torch._tensor", "_rebuild_from_type_v2")
        );
        if !forwards {
            return;
        }
        if let Sym::Tuple(head) = &self.values[args as usize] {
            let targets: Vec<usize> = head
                .items()
                .iter()
                .take(2)
                .filter_map(|i| match &self.values[*i as usize] {
                    Sym::Global(g) => Some(*g),
                    _ => None,
                })
                .collect();
            for t in targets {
                self.globals[t].called = true;
            }
        }
    }

    pub(super) fn container_target(
        &mut self,
        target: u32,
        op: Opcode,
        offset: usize,
        expected: fn(&Sym) -> bool,
    ) {
        let sym = &self.values[target as usize];
        if expected(sym) {
            return;
        }
        if let Sym::Call(callee) = sym {
            // Instances of a model's own classes (already reported) may be
            // list or dict subclasses. Of the allowlisted constructors only
            // the mappings take items; anything else would be made to call a
            // method that BUILD may have replaced.
            let allowed = match callee {
                None => true,
                Some(g) => {
                    let g = &self.globals[*g];
                    !self.policy.is_safe(&g.module, &g.name)
                        || (matches!(op, Opcode::SETITEM | Opcode::SETITEMS)
                            && matches!(
                                (g.module.as_str(), g.name.as_str()),
                                ("collections", "OrderedDict" | "Counter" | "defaultdict")
                                    | ("builtins", "dict")
                            ))
                        // deque's own extend and append (its pickles use APPENDS).
                        || (matches!(op, Opcode::APPEND | Opcode::APPENDS)
                            && (g.module.as_str(), g.name.as_str()) == ("collections", "deque"))
                }
            };
            if allowed {
                return;
            }
        }
        // On anything but its own container type the unpickler looks up and
        // calls a method (`append`, `extend`, `__setitem__`, `add`) by name.
        let what = describe(sym);
        self.finding(
            Verdict::Dangerous,
            FindingCode::MethodCall,
            offset,
            format!(
                "{} on {what} makes the unpickler call a method of it by name",
                op.name()
            ),
        );
    }
}
