//! Round trips and refusals of the tree's JSON.

use super::*;
use crate::dtype::Dtype;

fn round_trip(json: &str) -> Tree {
    let t = Tree::from_json(json, "<t>").unwrap_or_else(|e| panic!("{json}: {e}"));
    assert_eq!(t.to_json().unwrap(), json);
    t
}

#[test]
fn scalars_and_containers() {
    round_trip(r#"{"$dict":["a",1,"b",[1.5,-0.0,null,true,"x"],3,{"$tuple":[]}]}"#);
    round_trip(r#"{"$float":"7ff8000000000000"}"#);
    round_trip(r#"{"$complex":[1.0,{"$float":"fff0000000000000"}]}"#);
    round_trip(r#"{"$int":"-1ffffffffffffffff"}"#);
    round_trip(r#"[{"$bytes":"AAE="},{"$ref":0},{"$ref":1}]"#);
    round_trip(r#"{"$tensor":"w"}"#);
    round_trip(
        r#"{"$ndarray":{"dtype":"F32","entry":"a","offset":4,"shape":[2,3],"strides":[4,8]}}"#,
    );
}

#[test]
fn memo_numbers_follow_document_order() {
    let t = round_trip(r#"[[1],{"$dict":["k",[2]]},{"$ref":2}]"#);
    assert_eq!(t.memo.len(), 4);
    let Node::List(items) = &t.nodes[t.memo[3]] else {
        panic!("memo 3 is the list [2]")
    };
    assert_eq!(t.nodes[items[0]], Node::Int(2));
    assert!(matches!(
        t.nodes[t.resolve(t.nodes.len() - 1)],
        Node::Dict(_)
    ));
}

#[test]
fn rejects() {
    for bad in [
        r#"{}"#,
        r#"{"$dict":["a"]}"#,
        r#"{"$tuple":[],"$list":[]}"#,
        r#"{"$ref":0}"#,
        r#"{"$tuple":[{"$ref":0}]}"#,
        r#"{"$int":"12"}"#,
        r#"{"$int":"0x12"}"#,
        r#"{"$float":"3ff0000000000000"}"#,
        r#"{"$what":1}"#,
        r#"18446744073709551615"#,
        r#"{"$tensor":{"entry":"a","dtype":"F99","shape":[]}}"#,
        r#"{"$tensor":{"entry":"a","np_dtype":"<f4"}}"#,
        r#"{"$tensor":{"entry":"a","extra":1}}"#,
        r#"[1] [2]"#,
    ] {
        assert!(Tree::from_json(bad, "<t>").is_err(), "{bad}");
    }
}

#[test]
fn torch_names_come_from_closed_tables() {
    round_trip(r#"[{"$torch_dtype":"bfloat16"},{"$torch_device":"cuda:1"}]"#);
    for (bad, what) in [
        (
            r#"[{"$torch_dtype":"_inductor"}]"#,
            "$torch_dtype \"_inductor\"",
        ),
        (r#"[{"$torch_dtype":"onnx"}]"#, "$torch_dtype \"onnx\""),
        (
            r#"[{"$torch_dtype":"nn.Module"}]"#,
            "$torch_dtype \"nn.Module\"",
        ),
        (
            r#"[{"$torch_device":"_dynamo"}]"#,
            "$torch_device \"_dynamo\"",
        ),
    ] {
        let e = Tree::from_json(bad, "f.safetensors")
            .unwrap_err()
            .to_string();
        assert!(e.contains("f.safetensors"), "{e}");
        assert!(e.contains("tree[0]"), "{e}");
        assert!(e.contains(what), "{e}");
        assert!(e.contains("expected"), "{e}");
    }
}

#[test]
fn typed_nodes() {
    let t = round_trip(
        r#"{"$object":["m:Cfg","lr",0.1,"act",{"$callable":"torch._C._nn:gelu"},"norm",{"$enum":["m:Norm","layer"]},"sub",{"$object":["m:f.<locals>.Sub"]},"again",{"$ref":1}]}"#,
    );
    assert_eq!(t.required_version(), 2);
    let refs = t.named_refs(t.root);
    let names: Vec<_> = refs
        .iter()
        .map(|r| (r.kind.as_str(), r.name.as_str(), r.count))
        .collect();
    assert_eq!(
        names,
        [
            ("object", "m:Cfg", 1),
            ("callable", "torch._C._nn:gelu", 1),
            ("enum", "m:Norm", 1),
            ("object", "m:f.<locals>.Sub", 1),
        ]
    );
    assert_eq!(refs[0].fields, ["lr", "act", "norm", "sub", "again"]);
    round_trip(r#"{"$partial":["m:f",[1,[2]],["k",{"$ref":1}]]}"#);
    round_trip(
        r#"[{"$datetime":"2024-01-02T03:04:05.000001+01:00[Europe/Paris]"},{"$date":"2024-01-02"},{"$timedelta":[-1,5,7]},{"$path":"a/b"},{"$uuid":"12345678-9abc-def0-1234-56789abcdef0"},{"$decimal":"-1.50E+3"}]"#,
    );
    assert_eq!(Tree::from_json("[1]", "<t>").unwrap().required_version(), 1);
    // Later objects of a shape (class and field names) refer to it by number.
    let t = round_trip(
        r#"[{"$object":["m:P","x",1,"y",{"$enum":["m:E",1]}]},{"$object":[1,2,{"$enum":[0,2]}]},{"$object":["m:P","x",3]},{"$object":[2,4]},{"$object":["m:T","t",{"$object":["m:T","t",null]}]},{"$object":[3,{"$object":[3,null]}]}]"#,
    );
    let Node::List(items) = &t.nodes[t.root] else {
        panic!("a list")
    };
    let Node::Object { shape, values } = &t.nodes[items[1]] else {
        panic!("an object")
    };
    assert_eq!(shape.class, "m:P");
    assert_eq!(shape.fields, ["x", "y"]);
    assert_eq!(values.len(), 2);
}

#[test]
fn typed_rejects() {
    for bad in [
        r#"{"$object":[]}"#,
        r#"{"$object":["nocolon"]}"#,
        r#"{"$object":["m:C","a"]}"#,
        r#"{"$object":["m:C","a",1,"a",2]}"#,
        r#"{"$object":["m:C","not-ident",1]}"#,
        r#"{"$object":["m:C",1,1]}"#,
        r#"{"$object":["m:C","x",{"$ref":0}]}"#,
        r#"{"$object":["m:C","x",[{"$ref":0}]]}"#,
        r#"{"$enum":["m:E"]}"#,
        r#"{"$enum":["m:E",1,2]}"#,
        r#"{"$callable":"m:f.<locals>.g"}"#,
        r#"{"$callable":"os.system"}"#,
        r#"{"$partial":["m:f",[]]}"#,
        r#"{"$partial":["m:f",[],[],[]]}"#,
        r#"{"$partial":["m:f",[{"$ref":0}],[]]}"#,
        r#"{"$partial":["m:f.<locals>.g",[],[]]}"#,
        r#"{"$datetime":"2024-01-02"}"#,
        r#"{"$date":"2024-1-2"}"#,
        r#"{"$timedelta":[0,86400,0]}"#,
        r#"{"$timedelta":[0,0]}"#,
        r#"{"$uuid":"x"}"#,
        r#"{"$decimal":"1e"}"#,
        r#"{"$path":1}"#,
        r#"[{"$object":["m:P","x",1]},{"$object":[0]}]"#,
        r#"[{"$object":["m:P","x",1]},{"$object":[0,1,2]}]"#,
        r#"[{"$object":["m:P","x",1]},{"$object":[1,1]}]"#,
        r#"[{"$enum":["m:E",1]},{"$object":[0,1]}]"#,
        r#"[{"$object":["m:P","x",1]},{"$enum":[0,1]}]"#,
        r#"{"$object":["m:T","t",{"$object":[0,null]}]}"#,
        r#"{"$object":[0]}"#,
    ] {
        assert!(Tree::from_json(bad, "<t>").is_err(), "{bad}");
    }
    // Class records count towards the nesting limit.
    let deep =
        r#"{"$object":["m:C","x","#.repeat(MAX_DEPTH + 1) + "1" + &"]}".repeat(MAX_DEPTH + 1);
    let e = Tree::from_json(&deep, "<t>").unwrap_err();
    assert_eq!(e.code(), "limit_exceeded", "{e}");
}

#[test]
fn cycles_through_lists_are_fine() {
    round_trip(r#"[{"$ref":0}]"#);
    round_trip(r#"{"$dict":["self",{"$ref":0}]}"#);
}

#[test]
fn depth_is_bounded() {
    let deep = "[".repeat(MAX_DEPTH + 1) + &"]".repeat(MAX_DEPTH + 1);
    let e = Tree::from_json(&deep, "<t>").unwrap_err();
    assert_eq!(e.code(), "limit_exceeded", "{e}");
    let ok = "[".repeat(MAX_DEPTH) + &"]".repeat(MAX_DEPTH);
    Tree::from_json(&ok, "<t>").unwrap();
    let very = "[".repeat(100_000);
    assert!(Tree::from_json(&very, "<t>").is_err());
}

#[test]
fn extents() {
    let v = View {
        dtype: Dtype::F32,
        shape: vec![2, 3],
        strides: Some(vec![4, 8]),
        offset: 4,
    };
    assert_eq!(view_extent(&v), Some(Some((4, 4 + 4 + 16 + 4))));
    let neg = View {
        dtype: Dtype::I8,
        shape: vec![3],
        strides: Some(vec![-1]),
        offset: 2,
    };
    assert_eq!(view_extent(&neg), Some(Some((0, 3))));
}
