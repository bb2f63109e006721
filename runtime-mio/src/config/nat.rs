//! The `[nat]` table: how candidates are punched and paced, and bounded
//! birthday probing (off unless `birthday = true`).

use std::time::Duration;

use transitloom_proto_core::dataplane::{BirthdayConfig, PunchConfig};

use super::toml_walk::{key_error, KeyResult, Section};

/// Most `birthday_sockets`: temporary sockets (file descriptors and NAT
/// mappings) one association may hold at once.
pub const MAX_BIRTHDAY_SOCKETS: u64 = 1_024;
/// Most `birthday_probes` per attempt.
pub const MAX_BIRTHDAY_PROBES: u64 = 16_384;
/// Most packets a second (`punch_max_probes_per_s`, `birthday_rate`).
pub const MAX_RATE: u64 = 1_000;

/// `[nat]`, defaults filled in.
pub(super) fn parse(root: &Section<'_>) -> KeyResult<PunchConfig> {
    let mut punch = PunchConfig::default();
    let Some(nat) = root.opt_table("nat")? else {
        return Ok(punch);
    };
    nat.only(&[
        "punch_pace_ms",
        "punch_max_probes_per_s",
        "birthday",
        "birthday_sockets",
        "birthday_probes",
        "birthday_rate",
    ])?;
    if let Some(ms) = nat.opt_u64("punch_pace_ms", 0, 1_000)? {
        punch.pace = Duration::from_millis(ms);
    }
    if let Some(n) = nat.opt_u64("punch_max_probes_per_s", 1, MAX_RATE)? {
        punch.max_probes_per_s = n as u32;
    }
    let mut birthday = BirthdayConfig::default();
    let sockets = nat.opt_u64("birthday_sockets", 1, MAX_BIRTHDAY_SOCKETS)?;
    let probes = nat.opt_u64("birthday_probes", 1, MAX_BIRTHDAY_PROBES)?;
    let rate = nat.opt_u64("birthday_rate", 1, MAX_RATE)?;
    let on = nat.opt_bool("birthday")?.unwrap_or(false);
    if !on {
        if let Some(key) = [
            ("birthday_sockets", sockets.is_some()),
            ("birthday_probes", probes.is_some()),
            ("birthday_rate", rate.is_some()),
        ]
        .into_iter()
        .find_map(|(k, set)| set.then_some(k))
        {
            return Err(key_error(
                nat.key(key),
                "has no effect without birthday = true",
            ));
        }
        return Ok(punch);
    }
    if let Some(n) = sockets {
        birthday.sockets = n as u16;
    }
    if let Some(n) = probes {
        birthday.probes = n as u32;
    }
    if let Some(n) = rate {
        birthday.rate_per_s = n as u32;
    }
    punch.birthday = Some(birthday);
    Ok(punch)
}
