//! safetensors files: nothing in them runs, but a file that starts like one
//! and cannot be read as one is reported, never taken for a clean file.

use super::{le_u64, Loc, Scanner};
use crate::codes::FindingCode;
use crate::policy::Verdict;

/// The safetensors readers' bound on the JSON header.
const MAX_HEADER: u64 = 100_000_000;

/// Scans data that starts like a safetensors file (a little-endian header
/// length, then `{`): checks that the header is JSON whose tensors lie
/// inside the file and cover its data exactly, as the `safetensors`
/// package's validation requires. `None` when it does not start like one.
pub(crate) fn scan_safetensors(data: &[u8], loc: &Loc, sc: &mut Scanner<'_>) -> Option<String> {
    let n = le_u64(data, 0)?;
    if data.get(8) != Some(&b'{') || !(2..=MAX_HEADER).contains(&n) {
        return None;
    }
    let end = 8 + n as usize;
    let mut problem = |reason: String| {
        sc.finding(
            loc,
            Verdict::Suspicious,
            FindingCode::MalformedContainer,
            0,
            format!("safetensors file no reader can load: {reason}"),
        );
    };
    let Some(header) = data.get(8..end) else {
        // Only call it safetensors when the rest of the header so far is
        // text, so binary data that happens to start with `{` at byte 8 is
        // not mistaken for a cut-off file.
        if data[8..]
            .iter()
            .all(|&b| b == b'\n' || b == b'\t' || (0x20..0x7f).contains(&b) || b >= 0x80)
        {
            problem(format!(
                "the header is {n} bytes but the file ends {} bytes in (truncated)",
                data.len() - 8
            ));
            return Some("safetensors".into());
        }
        return None;
    };
    let value: serde_json::Value = match serde_json::from_slice(header) {
        Ok(v) => v,
        Err(e) => {
            problem(format!("the header is not JSON: {e}"));
            return Some("safetensors".into());
        }
    };
    let Some(entries) = value.as_object() else {
        problem("the header is not a JSON object".into());
        return Some("safetensors".into());
    };
    let body = (data.len() - end) as u64;
    let mut covered: u64 = 0;
    for (name, entry) in entries {
        if name == "__metadata__" {
            continue;
        }
        let offsets = entry
            .get("data_offsets")
            .and_then(|o| o.as_array())
            .and_then(|o| Some((o.first()?.as_u64()?, o.get(1)?.as_u64()?)));
        match offsets {
            Some((a, b)) if a <= b && b <= body => covered = covered.max(b),
            Some((_, b)) if b > body => {
                problem(format!(
                    "tensor `{}` ends at byte {b} of the data, but the file holds {body} (truncated)",
                    super::display_name(name.as_bytes())
                ));
                return Some("safetensors".into());
            }
            _ => {
                problem(format!(
                    "tensor `{}` has no valid data_offsets",
                    super::display_name(name.as_bytes())
                ));
                return Some("safetensors".into());
            }
        }
    }
    if covered != body {
        problem(format!(
            "the tensors cover {covered} bytes of data, but the file holds {body}"
        ));
    }
    Some("safetensors".into())
}

#[cfg(test)]
mod tests {
    use crate::{scan_bytes, Limits, Policy, Verdict};

    fn file(header: &str, body: usize) -> Vec<u8> {
        let mut d = (header.len() as u64).to_le_bytes().to_vec();
        d.extend_from_slice(header.as_bytes());
        d.extend(std::iter::repeat_n(0u8, body));
        d
    }

    #[test]
    fn truncated_files_are_findings() {
        let h = r#"{"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]}}"#;
        let ok = file(h, 8);
        let r = scan_bytes(&ok, "t", &Policy::default(), &Limits::default());
        assert_eq!(
            (r.format.as_str(), r.verdict),
            ("safetensors", Verdict::Safe)
        );
        for cut in [ok.len() - 1, ok.len() - 8, 20] {
            let r = scan_bytes(&ok[..cut], "t", &Policy::default(), &Limits::default());
            assert_eq!(r.format, "safetensors", "cut at {cut}");
            assert_eq!(r.verdict, Verdict::Suspicious, "cut at {cut}: {r:?}");
        }
    }
}
