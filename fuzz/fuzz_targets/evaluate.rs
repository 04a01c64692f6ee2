//! The safe evaluator on arbitrary bytes, behind its scan and without it:
//! never a panic, a hang or an allocation beyond the limits.
#![no_main]

use hermetic_pickle::eval::{load, Allowed, Flavor, LoadOptions, Mode};
use hermetic_pickle::{Limits, Policy};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let policy = Policy::default();
    for mode in [Mode::Strict, Mode::Inspect] {
        let opts = LoadOptions {
            mode,
            flavor: Flavor::Any,
            policy: &policy,
            limits: Limits {
                max_decompressed: 64 << 20,
                max_eval_memory: 256 << 20,
                ..Limits::default()
            },
            allowed: Allowed::none(),
            encoding: None,
            companions: None,
        };
        let _ = load(data, "fuzz", &opts);
    }
});
