//! Container detection and every container reader (zip, npy, tar, joblib,
//! compressed streams, legacy torch) on arbitrary bytes: never a panic, a
//! hang or an allocation beyond the limits.
#![no_main]

use hermetic_pickle::{scan_bytes, Limits, Policy};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let limits = Limits {
        max_decompressed: 64 << 20,
        ..Limits::default()
    };
    let _ = scan_bytes(data, "fuzz", &Policy::default(), &limits);
});
