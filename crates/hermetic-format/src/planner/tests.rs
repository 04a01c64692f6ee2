use super::*;

fn spec(dtype: Dtype, shape: &[u64], strides: &[i64], pos: i64) -> ViewSpec {
    ViewSpec {
        kind: TensorKind::Torch,
        dtype,
        shape: shape.to_vec(),
        strides: strides.to_vec(),
        pos,
        requires_grad: None,
        np_dtype: None,
        device: None,
    }
}

fn dict(p: &mut Planner, items: Vec<(&str, NodeId)>) -> NodeId {
    let pairs = items
        .into_iter()
        .map(|(k, v)| (p.tree.push(Node::Str(k.into())), v))
        .collect();
    p.tree.push(Node::Dict(pairs))
}

#[test]
fn flat_dict_names_are_keys_and_ties_are_aliases() {
    let mut p = Planner::new();
    let a = p
        .add_view("wte".into(), 1, 24, spec(Dtype::F32, &[2, 3], &[12, 4], 0))
        .unwrap();
    let b = p
        .add_view(
            "lm_head".into(),
            1,
            24,
            spec(Dtype::F32, &[2, 3], &[12, 4], 0),
        )
        .unwrap();
    let c = p
        .add_view("bias".into(), 2, 8, spec(Dtype::F64, &[1], &[8], 0))
        .unwrap();
    let root = dict(&mut p, vec![("wte", a), ("lm_head", b), ("bias", c)]);
    let (plan, origins) = p.finish(root, vec![]).unwrap();
    let names: Vec<&str> = plan.entries.iter().map(|e| e.name.as_str()).collect();
    assert_eq!(names, ["wte", "bias"]);
    assert_eq!(
        plan.metadata,
        vec![("lm_head".to_string(), "wte".to_string())]
    );
    assert_eq!(
        origins[0],
        EntryOrigin::Storage {
            key: 1,
            lo: 0,
            hi: 24
        }
    );
    let tree = plan.tree.unwrap();
    assert!(tree.tensors().iter().all(|t| t.view.is_none()));
}

#[test]
fn a_tensor_reached_again_is_an_alias_too() {
    // {"wte": W, "lm_head": W}: one object, the second a `$ref`.
    let mut p = Planner::new();
    let a = p
        .add_view("wte".into(), 1, 24, spec(Dtype::F32, &[2, 3], &[12, 4], 0))
        .unwrap();
    // Memo numbers: the root dict 0, then the tensors.
    let r = p.tree.push(Node::Ref(1));
    p.add_alias("lm_head".into(), a);
    // A name that is an entry's is not an alias.
    let c = p
        .add_view("bias".into(), 2, 8, spec(Dtype::F64, &[1], &[8], 0))
        .unwrap();
    p.add_alias("bias".into(), a);
    let root = dict(&mut p, vec![("wte", a), ("lm_head", r), ("bias", c)]);
    let (plan, _) = p.finish(root, vec![]).unwrap();
    let names: Vec<&str> = plan.entries.iter().map(|e| e.name.as_str()).collect();
    assert_eq!(names, ["wte", "bias"]);
    assert_eq!(plan.metadata, vec![("lm_head".into(), "wte".into())]);
}

#[test]
fn views_get_entries_of_their_own_and_a_base() {
    let mut p = Planner::new();
    // q, k, v = rows 0..4, 4..8, 8..12 of a 12x4 float32 storage, and its
    // transpose.
    let mut ids = Vec::new();
    for (n, pos) in [("q", 0), ("k", 64), ("v", 128)] {
        let s = spec(Dtype::F32, &[4, 4], &[16, 4], pos);
        ids.push((n, p.add_view(n.into(), 7, 192, s).unwrap()));
    }
    let s = spec(Dtype::F32, &[4, 12], &[4, 16], 0);
    ids.push(("wt", p.add_view("wt".into(), 7, 192, s).unwrap()));
    let root = dict(&mut p, ids);
    let (plan, origins) = p.finish(root, vec![]).unwrap();
    plan.validate().unwrap();
    let names: Vec<&str> = plan.entries.iter().map(|e| e.name.as_str()).collect();
    assert_eq!(names, ["q", "k", "v", "wt"]);
    let follows: Vec<bool> = plan.entries.iter().map(|e| e.follows).collect();
    assert_eq!(follows, [false, true, true, false]);
    assert_eq!(plan.entries[3].shape, vec![4, 12]);
    assert_eq!(
        origins[1],
        EntryOrigin::Storage {
            key: 7,
            lo: 64,
            hi: 128
        }
    );
    assert!(matches!(
        origins[3],
        EntryOrigin::Gather { lo: 0, hi: 192, .. }
    ));
    let tree = plan.tree.unwrap();
    let t = tree.tensors();
    assert_eq!((t[0].base.as_deref(), t[0].view.is_none()), (None, true));
    assert_eq!(t[1].base.as_deref(), Some("q"));
    assert_eq!(t[1].view.as_ref().map(|v| v.offset), Some(64));
    assert_eq!(t[3].base.as_deref(), Some("q"));
    assert_eq!(
        t[3].view.as_ref().and_then(|v| v.strides.clone()),
        Some(vec![4, 16])
    );
    assert_eq!(tree.required_version(), crate::typed::VIEWS_VERSION);
}

#[test]
fn overlapping_views_are_copies_and_aliases_stay_one_entry() {
    let mut p = Planner::new();
    let w = spec(Dtype::I32, &[4, 4], &[16, 4], 0);
    let a = p.add_view("w".into(), 1, 64, w.clone()).unwrap();
    let b = p.add_view("tied".into(), 1, 64, w).unwrap();
    let row = spec(Dtype::I32, &[4], &[4], 16);
    let c = p.add_view("row".into(), 1, 64, row).unwrap();
    let root = dict(&mut p, vec![("w", a), ("tied", b), ("row", c)]);
    let (plan, origins) = p.finish(root, vec![]).unwrap();
    let names: Vec<&str> = plan.entries.iter().map(|e| e.name.as_str()).collect();
    assert_eq!(names, ["w", "row"]);
    assert_eq!(plan.metadata, vec![("tied".to_string(), "w".to_string())]);
    // row is dense but overlaps w: a copy of its 16 bytes, based on w.
    assert_eq!(
        origins[1],
        EntryOrigin::Storage {
            key: 1,
            lo: 16,
            hi: 32
        }
    );
    assert!(!plan.entries[1].follows);
    let tree = plan.tree.unwrap();
    let t = tree.tensors();
    assert_eq!(t[2].base.as_deref(), Some("w"));
    assert_eq!(t[2].view.as_ref().map(|v| v.offset), Some(16));
}

#[test]
fn names_never_collide() {
    let mut p = Planner::new();
    let a = p
        .add_view("a.b".into(), 1, 4, spec(Dtype::F32, &[1], &[4], 0))
        .unwrap();
    let b = p
        .add_view("a.b".into(), 2, 4, spec(Dtype::F32, &[1], &[4], 0))
        .unwrap();
    let (x, _) = p.add_bytes("a.b".into(), 2000);
    let root = p.tree.push(Node::List(vec![a, b, x]));
    let (plan, _) = p.finish(root, vec![]).unwrap();
    let names: Vec<&str> = plan.entries.iter().map(|e| e.name.as_str()).collect();
    assert_eq!(names, ["a.b", "a.b~1", "a.b~2"]);
    plan.validate().unwrap();
}

#[test]
fn path_names() {
    assert_eq!(path_name(&[]), "tensor");
    assert_eq!(
        path_name(&[
            PathPart::Key("state".into()),
            PathPart::Index(0),
            PathPart::Key("exp_avg".into())
        ]),
        "state.0.exp_avg"
    );
}
