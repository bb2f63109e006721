//! The multiwan summary: goodput, shares, reordering, drops, and for each
//! cut the failover, the stall and the recovery; and the per-path series.

use std::collections::BTreeMap;
use std::time::Duration;

use transitloom_proto_core::dataplane::{DataEvent, DataPlane};
use transitloom_proto_core::{PathId, UplinkId};

use super::watch::{Seen, ACKS, DATA};
use super::{measure, Rig, ASSOC, BUCKET, RECOVERED, RECOVERY_WINDOW, START, WARMUP};
use super::{BETA_DELAY, BETA_RATE_BPS};
use crate::apps::TcpOverUdp;
use crate::scenario::{ms, Summary};
use crate::world::{Dir, HostId};

fn share(part: u64, whole: u64) -> String {
    format!("{:.1} %", 100.0 * part as f64 / whole.max(1) as f64)
}

/// Fills `summary` from the finished run.
pub(super) fn summarize(summary: &mut Summary, rig: &Rig, seen: &Seen, duration: Duration) {
    let world = &rig.world;
    let [one, two] = &rig.links;
    summary.row("link 1", one.describe());
    summary.row("link 2", two.describe());
    summary.row(
        "beta link",
        format!(
            "{} Gbit/s, {} ms one way",
            BETA_RATE_BPS / 1_000_000_000,
            BETA_DELAY.as_millis()
        ),
    );
    summary.row("TCP window (buffers)", format!("{} kB", rig.buffer / 1_000));
    let tx = &world
        .app_ref::<TcpOverUdp>(rig.sender)
        .expect("installed")
        .machine;
    let rx = &world
        .app_ref::<TcpOverUdp>(rig.receiver)
        .expect("installed")
        .machine;
    summary.row(
        "established at",
        rx.established_at().map_or("never".to_owned(), ms),
    );
    let from = START + WARMUP;
    let window = duration.saturating_sub(from).max(Duration::from_millis(1));
    let goodput = rx.bytes_between(from, duration) as f64 * 8.0 / window.as_secs_f64();
    let sum = one.rate_bps + two.rate_bps;
    summary.row("goodput", format!("{:.2} Mbit/s", goodput / 1e6));
    summary.row(
        "goodput / sum of links",
        format!("{:.1} %", 100.0 * goodput / sum),
    );
    summary.row(
        "goodput / best link",
        format!("{:.1} %", 100.0 * goodput / one.rate_bps.max(two.rate_bps)),
    );
    summary.row("bytes delivered", rx.received());
    summary.row("corrupt bytes", rx.corrupt());
    let out = tx.stats();
    summary.row(
        "retransmitted segments",
        format!(
            "{} of {} ({:.2} %)",
            out.retransmitted,
            out.packets_out,
            100.0 * out.retransmitted as f64 / out.packets_out.max(1) as f64
        ),
    );
    let inn = rx.stats();
    summary.row(
        "reordered packets",
        format!(
            "{} of {} ({:.2} %)",
            inn.reordered,
            inn.packets_in,
            100.0 * inn.reordered as f64 / inn.packets_in.max(1) as f64
        ),
    );
    summary.row("reorder extent", format!("{} packets", inn.reorder_extent));
    let rtt = match out.rtt_mean() {
        Some(mean) => format!("{} / {} / {}", ms(out.rtt_min), ms(mean), ms(out.rtt_max)),
        None => "no sample".to_owned(),
    };
    summary.row("TCP RTT min / mean / max", rtt);

    let total = |side: usize| -> u64 {
        seen.lanes[side]
            .iter()
            .map(|l| measure::bytes_in(&l.sends, Duration::ZERO, duration))
            .sum()
    };
    for (side, what) in [(DATA, "data"), (ACKS, "ack")] {
        let all = total(side);
        for link in 0..2 {
            let bytes = measure::bytes_in(&seen.lanes[side][link].sends, Duration::ZERO, duration);
            summary.row(&format!("uplink {} {what} bytes", link + 1), bytes);
            summary.row(
                &format!("uplink {} {what} share", link + 1),
                share(bytes, all),
            );
        }
    }
    let carried = world
        .app_ref::<DataPlane>(rig.alpha)
        .and_then(|a| a.machine.association(ASSOC).map(|v| v.counters()))
        .map_or(0, |c| c.ingress.bytes);
    summary.row("data bytes carried (alpha's ingress)", carried);
    summary.row(
        "uplink 2 data while uplink 1 active",
        seen.lanes[DATA][1].while_link1_active,
    );
    summary.row(
        "uplink 2 ack bytes while uplink 1 active",
        seen.lanes[ACKS][1].while_link1_active,
    );
    let switches = |host: HostId| {
        world
            .app_ref::<DataPlane>(host)
            .expect("installed")
            .events
            .iter()
            .filter(|(_, e)| matches!(e, DataEvent::PathSwitched { .. }))
            .count()
    };
    summary.row(
        "path switches (alpha / beta)",
        format!("{} / {}", switches(rig.alpha), switches(rig.beta)),
    );
    for (i, &wire) in rig.wires.iter().enumerate() {
        for (dir, name) in [(Dir::ToSegment, "up"), (Dir::ToEndpoint, "down")] {
            let s = world.link(wire, dir).stats();
            summary.row(
                &format!("link {} {name} drops (queue / random / down)", i + 1),
                format!(
                    "{} / {} / {}",
                    s.dropped_queue, s.dropped_loss, s.dropped_down
                ),
            );
        }
    }
    cuts(summary, rig, seen, rx.arrivals(), duration);

    for link in 0..2 {
        for (t, rate) in measure::rates(&seen.lanes[DATA][link].sends, BUCKET, duration)
            .into_iter()
            .enumerate()
        {
            summary.series.push((
                format!("uplink {} data (Mbit/s)", link + 1),
                t as f64 * BUCKET.as_secs_f64(),
                rate,
            ));
        }
    }
    for (t, rate) in measure::rates(rx.arrivals(), BUCKET, duration)
        .into_iter()
        .enumerate()
    {
        summary.series.push((
            "TCP goodput (Mbit/s)".to_owned(),
            t as f64 * BUCKET.as_secs_f64(),
            rate,
        ));
    }
}

/// For each cut: how long data and ACKs kept going onto the dead link, when
/// its data plane declared the path failed, the receiver's longest stall,
/// and when the flow was back at [`RECOVERED`] of its goodput (at most the
/// surviving link's rate); for each restore, when data went on the link
/// again.
fn cuts(
    summary: &mut Summary,
    rig: &Rig,
    seen: &Seen,
    reads: &[(Duration, u64)],
    duration: Duration,
) {
    let alpha = rig
        .world
        .app_ref::<DataPlane>(rig.alpha)
        .expect("installed");
    // The uplink of each of alpha's paths, to place its failure events.
    let alpha_paths: BTreeMap<PathId, UplinkId> = alpha
        .machine
        .association(ASSOC)
        .map(|view| view.paths().map(|p| (p.id, p.uplink)).collect())
        .unwrap_or_default();
    let alpha_events = &alpha.events;
    for (i, link) in rig.links.iter().enumerate() {
        let n = i + 1;
        let Some(cut) = link.cut.filter(|&c| c < duration) else {
            continue;
        };
        let until = link.restore.unwrap_or(duration).min(duration);
        summary.row(&format!("link {n} cut at"), ms(cut));
        let second = Duration::from_secs(1);
        summary.row(
            &format!("uplink {n} data in the second before the cut"),
            measure::bytes_in(&seen.lanes[DATA][i].sends, cut.saturating_sub(second), cut),
        );
        for (side, what) in [(DATA, "data"), (ACKS, "acks")] {
            let last = measure::last_in(&seen.lanes[side][i].sends, cut, until);
            summary.row(
                &format!("uplink {n} {what} stopped after cut"),
                last.map_or("0.0 ms (none after the cut)".to_owned(), |at| ms(at - cut)),
            );
        }
        let failed = alpha_events.iter().find_map(|(at, e)| match e {
            DataEvent::PathFailed { path, .. }
                if *at >= cut && alpha_paths.get(path) == Some(&UplinkId(i as u16)) =>
            {
                Some(*at - cut)
            }
            _ => None,
        });
        summary.row(
            &format!("uplink {n} path failed after cut"),
            failed.map_or("never".to_owned(), ms),
        );
        let (stall, _) = measure::longest_gap(reads, cut, until);
        summary.row(&format!("stall after link {n} cut"), ms(stall));
        let other = &rig.links[1 - i];
        if other.up_at(cut) {
            // Back to RECOVERED of what the flow had before the cut, or of
            // the surviving link if that is less.
            let from = START + WARMUP;
            let before = (cut > from).then(|| {
                measure::bytes_in(reads, from, cut) as f64 * 8.0 / (cut - from).as_secs_f64()
            });
            let target_bps = before.map_or(other.rate_bps, |b| b.min(other.rate_bps));
            let needed = target_bps * RECOVERED / 8.0 * RECOVERY_WINDOW.as_secs_f64();
            let (_, stall_end) = measure::longest_gap(reads, cut, until);
            let back = measure::recovered_at(reads, stall_end, RECOVERY_WINDOW, needed as u64)
                .filter(|&at| at <= until);
            summary.row(
                &format!("recovered after link {n} cut"),
                back.map_or("never".to_owned(), |at| {
                    format!(
                        "{} (to {:.1} Mbit/s over {})",
                        ms(at - cut),
                        target_bps * RECOVERED / 1e6,
                        ms(RECOVERY_WINDOW)
                    )
                }),
            );
        }
        if let Some(restore) = link.restore.filter(|&r| r < duration) {
            let again = measure::first_from(&seen.lanes[DATA][i].sends, restore);
            summary.row(
                &format!("uplink {n} data again after restore"),
                again.map_or("never".to_owned(), |at| ms(at - restore)),
            );
        }
    }
}
