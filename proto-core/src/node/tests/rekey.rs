//! A new key epoch from the coordinator reaches both nodes, which switch
//! keys without dropping sockets or paths while data keeps crossing.

use super::*;

/// The association's sockets and paths, without the traffic counters.
fn shape(view: &AssociationView<'_>) -> Kept {
    let mut kept = kept(view);
    kept.paths.iter_mut().for_each(|p| (p.3, p.4) = (0, 0));
    (kept.ingress_packets, kept.delivered_packets) = (0, 0);
    kept
}

#[test]
fn a_periodic_rekey_changes_the_key_under_traffic_without_dropping_anything() {
    let mut mesh = running_mesh();
    mesh.coordinator.set_assoc_key_lifetime(60);
    let view = mesh.assoc(0, "wg0", "beta/wg0").unwrap();
    let (id, first_key) = (view.spec().id, view.spec().key);
    let before = [
        shape(&view),
        shape(&mesh.assoc(1, "wg0", "alpha/wg0").unwrap()),
    ];
    let delivered = mesh.hosts[1].local.len();
    let mut sent = 0;
    for i in 0..700u32 {
        mesh.service_sends(0, "wg0", "beta/wg0", &[(i % 250) as u8 + 1; 120]);
        sent += 1;
        mesh.run(Duration::from_millis(100));
    }
    mesh.run(Duration::from_millis(50));
    for (host, peer) in [(0, "beta/wg0"), (1, "alpha/wg0")] {
        let view = mesh.assoc(host, "wg0", peer).unwrap();
        assert_eq!(view.spec().id, id);
        assert_ne!(view.spec().key, first_key, "host {host} has the new key");
        assert_eq!(
            shape(&view),
            before[host],
            "host {host}: sockets and paths kept"
        );
        let events = &mesh.hosts[host].events;
        assert!(
            events.contains(&NodeEvent::Rekeyed {
                assoc: id,
                epoch: 2
            }),
            "host {host}: {events:?}"
        );
        assert!(
            !events.contains(&NodeEvent::Withdrawn { assoc: id }),
            "host {host}: {events:?}"
        );
    }
    assert_eq!(
        mesh.assoc(0, "wg0", "beta/wg0").unwrap().spec().key,
        mesh.assoc(1, "wg0", "alpha/wg0").unwrap().spec().key
    );
    assert_eq!(mesh.hosts[1].local.len() - delivered, sent, "nothing lost");
}
