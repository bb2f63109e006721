//! Looks at both data planes' paths after every event: when each path sent
//! data and how much (for shares, series and failover times), data on a path
//! its data plane holds failed or still probing (an invariant), and data on
//! uplink 2 while uplink 1 has an active path (what the backup and metered
//! policies are about).

use std::cell::RefCell;
use std::collections::BTreeMap;
use std::net::IpAddr;
use std::rc::Rc;
use std::time::Duration;

use transitloom_proto_core::dataplane::{DataPlane, Path, PathState};
use transitloom_proto_core::{AssocId, PathId, UplinkId};

use crate::world::{HostId, World};

/// Alpha's side: its paths carry the data.
pub(super) const DATA: usize = 0;
/// Beta's side: its paths carry the ACKs.
pub(super) const ACKS: usize = 1;

/// What one side sent over one of alpha's two links.
#[derive(Debug, Default)]
pub(super) struct Lane {
    /// Each event in which the side's data counter of a path over this link
    /// grew: (time since the start, bytes).
    pub sends: Vec<(Duration, u64)>,
    /// Bytes sent over this link while the side had an active path over
    /// alpha's link 1 before and after the event.
    pub while_link1_active: u64,
}

/// What the watch saw. `lanes[side][link]`, with side [`DATA`] or [`ACKS`]
/// and link 0 or 1 for alpha's links 1 and 2.
#[derive(Debug, Default)]
pub(super) struct Seen {
    pub lanes: [[Lane; 2]; 2],
    /// Per (side, path): its data counter and whether it was failed or
    /// probing, at the last look.
    paths: BTreeMap<(usize, PathId), (u64, bool)>,
    /// Per side: whether it had an active path over link 1 at the last look.
    link1_active: [bool; 2],
}

/// Which of alpha's links `path` of `side` goes over: alpha's by its
/// uplink, beta's by the alpha address it goes to.
fn link_of(side: usize, path: &Path, alpha_ips: [IpAddr; 2]) -> Option<usize> {
    if side == DATA {
        [UplinkId(0), UplinkId(1)]
            .iter()
            .position(|&u| u == path.uplink)
    } else {
        alpha_ips.iter().position(|&ip| ip == path.remote.ip())
    }
}

/// Watches association `assoc` on `alpha` and `beta` (whose mesh reaches
/// alpha at `alpha_ips`) from now on; adds the invariant "no data on a
/// failed or probing path".
pub(super) fn install(
    world: &mut World,
    hosts: [HostId; 2],
    assoc: AssocId,
    alpha_ips: [IpAddr; 2],
) -> Rc<RefCell<Seen>> {
    let seen = Rc::new(RefCell::new(Seen::default()));
    let shared = Rc::clone(&seen);
    world.add_invariant("no data on a failed or probing path", move |w| {
        let at = w.elapsed();
        let mut seen = shared.borrow_mut();
        let Seen {
            lanes,
            paths,
            link1_active,
        } = &mut *seen;
        let mut violation = Ok(());
        for (side, &host) in hosts.iter().enumerate() {
            let Some(view) = w
                .app_ref::<DataPlane>(host)
                .and_then(|h| h.machine.association(assoc))
            else {
                continue;
            };
            let active_now = view
                .paths()
                .any(|p| p.state == PathState::Active && link_of(side, p, alpha_ips) == Some(0));
            let active_before = std::mem::replace(&mut link1_active[side], active_now);
            for path in view.paths() {
                let idle = matches!(path.state, PathState::Failed | PathState::Probing);
                let (tx, was_idle) = paths.entry((side, path.id)).or_insert((0, true));
                let grew = path.tx.bytes.saturating_sub(*tx);
                if grew > 0 {
                    if *was_idle && idle {
                        violation = Err(format!(
                            "{} sent {grew} bytes on path {} to {}, {}",
                            w.host_name(host),
                            path.id,
                            path.remote,
                            path.state.as_str()
                        ));
                    }
                    if let Some(link) = link_of(side, path, alpha_ips) {
                        let lane = &mut lanes[side][link];
                        lane.sends.push((at, grew));
                        if active_before && active_now {
                            lane.while_link1_active += grew;
                        }
                    }
                }
                *tx = path.tx.bytes;
                *was_idle = idle;
            }
        }
        violation
    });
    seen
}
