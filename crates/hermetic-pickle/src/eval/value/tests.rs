use super::*;

#[test]
fn value_is_small() {
    assert!(std::mem::size_of::<Value<'_>>() <= 40);
}

#[test]
fn dtype_aliases() {
    assert_eq!(TorchDtype::from_attr("float"), Some(TorchDtype::Float32));
    assert_eq!(TorchDtype::from_attr("chalf"), Some(TorchDtype::Complex32));
    assert_eq!(TorchDtype::from_attr("nope"), None);
    for name in crate::policy::TORCH_DTYPES {
        assert!(TorchDtype::from_attr(name).is_some(), "{name}");
    }
    for p in crate::policy::TORCH_STORAGE_PREFIXES {
        let d = TorchDtype::from_storage_class(&format!("{p}Storage")).unwrap();
        assert_eq!(d.storage_class(), format!("{p}Storage"));
    }
}

#[test]
fn dict_items_follow_python() {
    let mut a = Arena::new();
    let mut b = Budget::new(1 << 20);
    let k1 = a
        .push(
            Value::Str(Str {
                bytes: Cow::Borrowed(b"a"),
                utf8: true,
            }),
            &mut b,
        )
        .unwrap();
    let k2 = a
        .push(
            Value::Str(Str {
                bytes: Cow::Borrowed(b"a"),
                utf8: true,
            }),
            &mut b,
        )
        .unwrap();
    let one = a.push(Value::Int(1), &mut b).unwrap();
    let fl = a.push(Value::Float(1.0), &mut b).unwrap();
    let items = a.dict_items(&[(k1, NONE), (one, NONE), (k2, TRUE), (fl, FALSE)]);
    assert_eq!(items, vec![(k1, TRUE), (one, FALSE)]);
}
