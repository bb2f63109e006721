//! Compiled only with the `lint-proof` feature: CI runs clippy with it and
//! expects `disallowed-methods` to refuse this clock read. If clippy ever
//! passes with this file, proto-core has lost its guard.

#[allow(dead_code)]
pub(crate) fn read_the_clock() -> std::time::Instant {
    std::time::Instant::now()
}
