use super::*;

#[test]
fn safetensors_check_is_strict() {
    let header = br#"{"a":{"dtype":"F32","shape":[1],"data_offsets":[0,4]}}  "#;
    let mut d = (header.len() as u64).to_le_bytes().to_vec();
    d.extend_from_slice(header);
    d.extend_from_slice(&[0, 0, 0, 0]);
    assert!(is_safetensors(&d));
    assert_eq!(sniff(&d), Kind::Safetensors);
    d[8] = b'[';
    assert!(!is_safetensors(&d));
    let mut huge = u64::MAX.to_le_bytes().to_vec();
    huge.push(b'{');
    assert!(!is_safetensors(&huge));
}

#[test]
fn sniff_kinds() {
    assert_eq!(sniff(b"\x80\x04K\x01."), Kind::Pickle);
    assert_eq!(sniff(b"hello world\n"), Kind::None);
    assert_eq!(sniff(b""), Kind::None);
    assert_eq!(sniff(b"\x93NUMPY\x01\x00"), Kind::Npy);
    assert_eq!(
        sniff(b"\x1f\x8b\x08\x00"),
        Kind::Compressed(Compression::Gzip)
    );
}

/// Scans files made by real torch, numpy and joblib (see the generator
/// script in the report of this change). `HERMETIC_REAL_DIR` names the
/// directory; an `expect.txt` there holds `file format verdict` lines.
#[test]
#[ignore = "needs files generated with torch/numpy/joblib; set HERMETIC_REAL_DIR"]
fn real_files() {
    let Ok(dir) = std::env::var("HERMETIC_REAL_DIR") else {
        return;
    };
    let dir = std::path::PathBuf::from(dir);
    let expect = std::fs::read_to_string(dir.join("expect.txt")).unwrap_or_default();
    let mut paths: Vec<_> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    paths.sort();
    let mut failures = Vec::new();
    for p in paths {
        let t = std::time::Instant::now();
        let r = crate::scan_file(&p, &Policy::default(), &Limits::default());
        let ms = t.elapsed().as_secs_f64() * 1000.0;
        let name = p.file_name().unwrap().to_string_lossy().to_string();
        let codes: Vec<String> = r
            .all_findings()
            .map(|f| format!("{}:{}", f.code, f.severity))
            .collect();
        let streams: Vec<&str> = r.streams.iter().map(|s| s.name.as_str()).collect();
        println!(
            "{name:24} {:18} {:10} {ms:9.2}ms streams={streams:?} findings={codes:?}",
            r.format,
            r.verdict.as_str()
        );
        for line in expect.lines() {
            let parts: Vec<&str> = line.split_whitespace().collect();
            if parts.len() == 3
                && parts[0] == name
                && (parts[1] != r.format || parts[2] != r.verdict.as_str())
            {
                failures.push(format!(
                    "{name}: expected {} {}, got {} {}",
                    parts[1], parts[2], r.format, r.verdict
                ));
            }
        }
    }
    assert!(failures.is_empty(), "{failures:#?}");
}

#[test]
fn loc_names() {
    let top = Loc::default();
    assert_eq!(top.stream_name(), "pickle");
    assert_eq!(top.named("payload"), "payload");
    let entry = top.member("archive/data.pkl", 64);
    assert_eq!(entry.stream_name(), "archive/data.pkl");
    assert_eq!(entry.base, 64);
    let npy = top.member("a.npy", 10);
    assert_eq!(npy.named("payload"), "a.npy:payload");
    let z = top.decompressed("zlib");
    assert_eq!(z.stream_name(), "zlib:pickle");
    assert_eq!(z.base, 0);
    let nested = entry.member("x.pkl", 5);
    assert_eq!(nested.stream_name(), "archive/data.pkl:x.pkl");
}
