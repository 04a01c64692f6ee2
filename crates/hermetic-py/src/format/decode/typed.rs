//! Typed nodes: class records, enums and callables by reference handed to
//! the Python hooks of the chosen load mode (plain, `type=`, `allow=`).

use super::*;

impl<'a, 'py> Builder<'a, 'py> {
    pub(super) fn typed(&mut self, id: NodeId) -> PyResult<Bound<'py, PyAny>> {
        let py = self.py;
        let tree = self.tree;
        let helpers = |b: &mut Self| b.helpers();
        Ok(match &tree.nodes[id] {
            Node::Object { shape, values } => {
                let hooks = self.hooks()?.clone();
                let shared = self
                    .memo_of
                    .get(id)
                    .is_some_and(|n| self.shared.contains(n));
                if let Some((record, _)) = self.direct.clone() {
                    // A dict subclass with `cls` and `shared` slots.
                    let r = record.call0()?;
                    let names = self.shape_names(shape);
                    for ((name, v), key) in shape.fields.iter().zip(values).zip(names.iter()) {
                        self.path.push(Seg::Field(name));
                        let value = self.build(*v)?;
                        self.path.pop();
                        r.set_item(key, value)?;
                    }
                    r.setattr(intern!(py, "cls"), self.name(&shape.class))?;
                    r.setattr(intern!(py, "shared"), PyBool::new(py, shared))?;
                    return Ok(r);
                }
                let d = PyDict::new(py);
                let names = self.shape_names(shape);
                for ((name, v), key) in shape.fields.iter().zip(values).zip(names.iter()) {
                    self.path.push(Seg::Field(name));
                    let value = self.build(*v)?;
                    self.path.pop();
                    d.set_item(key, value)?;
                }
                let class = &shape.class;
                let args = PyTuple::new(
                    py,
                    [
                        self.name(class).into_any(),
                        d.into_any(),
                        PyBool::new(py, shared).to_owned().into_any(),
                    ],
                )?;
                self.call(&hooks, intern!(py, "object"), args)?
            }
            Node::Enum { class, value } => {
                let hooks = self.hooks()?.clone();
                self.path.push(Seg::Text(".value".into()));
                let v = self.build(*value)?;
                self.path.pop();
                let args = PyTuple::new(py, [self.name(class).into_any(), v])?;
                if let Some((_, enum_ref)) = &self.direct {
                    // A tuple subclass: (class, value).
                    return enum_ref.call1((args,));
                }
                self.call(&hooks, intern!(py, "enum"), args)?
            }
            Node::Callable(name) => {
                let hooks = self.hooks()?.clone();
                let args = PyTuple::new(py, [self.name(name)])?;
                self.call(&hooks, intern!(py, "callable"), args)?
            }
            Node::Partial {
                func,
                args,
                keywords,
            } => {
                let hooks = self.hooks()?.clone();
                let mut built = Vec::with_capacity(args.len());
                for (i, &a) in args.iter().enumerate() {
                    self.path.push(Seg::Arg(i));
                    built.push(self.build(a)?);
                    self.path.pop();
                }
                let kw = self.build_fields(keywords)?;
                let call_args = PyTuple::new(
                    py,
                    [
                        self.name(func).into_any(),
                        PyTuple::new(py, built)?.into_any(),
                        kw.into_any(),
                    ],
                )?;
                self.call(&hooks, intern!(py, "partial"), call_args)?
            }
            Node::Datetime(t) => {
                let h = helpers(self)?;
                self.call(
                    &h,
                    intern!(py, "_datetime"),
                    PyTuple::new(py, [t.as_str()])?,
                )?
            }
            Node::Date(t) => {
                let h = helpers(self)?;
                self.call(&h, intern!(py, "_date"), PyTuple::new(py, [t.as_str()])?)?
            }
            Node::Timedelta {
                days,
                seconds,
                microseconds,
            } => {
                let h = helpers(self)?;
                let args = PyTuple::new(py, [*days, *seconds, *microseconds])?;
                self.call(&h, intern!(py, "_timedelta"), args)?
            }
            Node::Time(t) => {
                let h = helpers(self)?;
                self.call(&h, intern!(py, "_time"), PyTuple::new(py, [t.as_str()])?)?
            }
            Node::Timezone { offset, name } => {
                let h = helpers(self)?;
                let args = (offset.as_str(), name.as_deref()).into_pyobject(py)?;
                self.call(&h, intern!(py, "_timezone"), args)?
            }
            Node::PurePath { windows, text } => {
                let h = helpers(self)?;
                let args = (*windows, text.as_str()).into_pyobject(py)?;
                self.call(&h, intern!(py, "_pure_path"), args)?
            }
            Node::Path(t) => {
                let h = helpers(self)?;
                self.call(&h, intern!(py, "_path"), PyTuple::new(py, [t.as_str()])?)?
            }
            Node::Uuid(t) => {
                let h = helpers(self)?;
                self.call(&h, intern!(py, "_uuid"), PyTuple::new(py, [t.as_str()])?)?
            }
            Node::Decimal(t) => {
                let h = helpers(self)?;
                self.call(&h, intern!(py, "_decimal"), PyTuple::new(py, [t.as_str()])?)?
            }
            _ => unreachable!("typed() is only called on version-2 nodes"),
        })
    }
}
