//! SIGHUP: the node reads its configuration file again, with the same
//! strict parser and checks as at start-up, and applies what changed in its
//! services and associations, and which uplinks are `enabled`. Anything
//! else (name, data directory, coordinators, trust anchor, the uplinks'
//! other keys, status address, …) takes a restart:
//! a file that changes it, or that is invalid, is refused with the file, the
//! key and the reason, and the node keeps running as it was.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::Path;

use transitloom_proto_core::node::{Reconfigured, ServiceSpec};
use transitloom_proto_core::ServiceId;

use super::setup::{refuse_unsupported, Setup};
use crate::config::{ConfigError, IngressTable, NodeConfig, INGRESS_FILE};
use crate::status::ReloadStatus;

/// A reloaded configuration that may be applied.
#[derive(Debug)]
pub(crate) struct Plan {
    /// The new configuration.
    pub(crate) config: NodeConfig,
    /// Each association's ingress address, in config order (kept in the
    /// data directory already).
    pub(crate) ingress: Vec<SocketAddr>,
    /// The node's services and the peers they consent to.
    pub(crate) services: Vec<ServiceSpec>,
}

/// Reads `setup`'s file again and checks it against the running
/// configuration; assigns and keeps ingress addresses of new associations
/// exactly as start-up does. `running` are the node's services now, whose
/// ids are kept.
///
/// # Errors
/// The first problem, as `FILE: KEY: REASON`.
pub(crate) fn plan(setup: &Setup, running: &[ServiceSpec]) -> Result<Plan, ConfigError> {
    let config = NodeConfig::load(&setup.config.file)?;
    refuse_unsupported(&config)?;
    refuse_restart_keys(&setup.config, &config)?;
    let mut table = IngressTable::load(&config.data_dir)?;
    let ingress = table.assign(&config)?;
    table.save(&config.data_dir).map_err(|err| ConfigError {
        file: config.data_dir.join(INGRESS_FILE),
        key: "(file)".to_owned(),
        reason: format!("cannot be written: {err}"),
    })?;
    let mut ids: BTreeMap<&str, ServiceId> =
        running.iter().map(|s| (s.name.as_str(), s.id)).collect();
    let mut next = running.iter().map(|s| s.id.0).max().unwrap_or(0);
    for s in &config.services {
        ids.entry(s.name.as_str()).or_insert_with(|| {
            next += 1;
            ServiceId(next)
        });
    }
    let services = super::service_specs(&config, &ingress, |name| ids[name]);
    Ok(Plan {
        config,
        ingress,
        services,
    })
}

/// Refuses a change to anything but services, associations and the
/// uplinks' `enabled`.
fn refuse_restart_keys(old: &NodeConfig, new: &NodeConfig) -> Result<(), ConfigError> {
    let changed = |key: &str, was: String| {
        ConfigError {
        file: new.file.clone(),
        key: key.to_owned(),
        reason: format!(
            "changed (was {was}), which takes a restart (a reload applies services, associations and uplinks' `enabled` only)"
        ),
    }
    };
    let path = |p: &Path| format!("{:?}", p.display().to_string());
    if old.name != new.name {
        return Err(changed("name", format!("{:?}", old.name)));
    }
    if old.data_dir != new.data_dir {
        return Err(changed("data_dir", path(&old.data_dir)));
    }
    if old.coordinators != new.coordinators || old.coordinator_names != new.coordinator_names {
        return Err(changed("coordinators", format!("{:?}", old.coordinators)));
    }
    if old.coordinator_name != new.coordinator_name {
        return Err(changed(
            "coordinator_name",
            format!("{:?}", old.coordinator_name),
        ));
    }
    if old.root_ca != new.root_ca {
        return Err(changed("root_ca", path(&old.root_ca)));
    }
    if old.status_listen != new.status_listen {
        return Err(changed("status_listen", old.status_listen.to_string()));
    }
    if old.advertise_private != new.advertise_private {
        return Err(changed(
            "advertise_private",
            old.advertise_private.to_string(),
        ));
    }
    let (was, now) = (&old.relay, &new.relay);
    let show = |ip: Option<std::net::IpAddr>| ip.map_or("unset".to_owned(), |ip| ip.to_string());
    if was.data != now.data {
        return Err(changed("relay.data", was.data.to_string()));
    }
    if was.listen_ip != now.listen_ip {
        return Err(changed("relay.listen_ip", show(was.listen_ip)));
    }
    if was.advertise_ip != now.advertise_ip {
        return Err(changed("relay.advertise_ip", show(was.advertise_ip)));
    }
    if was.port_range != now.port_range {
        let range = was
            .port_range
            .map_or("unset".to_owned(), |r| format!("{}-{}", r.low, r.high));
        return Err(changed("relay.port_range", range));
    }
    let limits = [
        (
            "relay.quota_per_node",
            was.quota_per_node.into(),
            now.quota_per_node.into(),
        ),
        (
            "relay.max_allocations",
            was.max_allocations.into(),
            now.max_allocations.into(),
        ),
        (
            "relay.rate_limit_mbps",
            was.rate_limit_mbps,
            now.rate_limit_mbps,
        ),
        (
            "relay.idle_timeout_s",
            was.idle_timeout_s,
            now.idle_timeout_s,
        ),
    ];
    for (key, was, now) in limits {
        if was != now {
            return Err(changed(key, was.to_string()));
        }
    }
    if old.punch != new.punch {
        return Err(changed("nat", format!("{:?}", old.punch)));
    }
    if old.reorder_bound != new.reorder_bound {
        return Err(changed("reorder_bound", old.reorder_bound.to_string()));
    }
    if old.tcp_fallback.quic_bound != new.tcp_fallback.quic_bound {
        return Err(changed(
            "tcp_fallback_after_ms",
            old.tcp_fallback.quic_bound.as_millis().to_string(),
        ));
    }
    if old.tcp_fallback.quic_retry != new.tcp_fallback.quic_retry {
        return Err(changed(
            "quic_retry_s",
            old.tcp_fallback.quic_retry.as_secs().to_string(),
        ));
    }
    if old.uplinks.len() != new.uplinks.len() {
        return Err(changed(
            "uplink",
            format!("{} [[uplink]] tables", old.uplinks.len()),
        ));
    }
    for (i, (a, b)) in old.uplinks.iter().zip(&new.uplinks).enumerate() {
        // `enabled` reloads; nothing else of an uplink does.
        let same = crate::config::UplinkConfig {
            enabled: b.enabled,
            ..a.clone()
        };
        if same != *b {
            return Err(changed(&format!("uplink[{i}]"), format!("{a:?}")));
        }
    }
    if old.join_token != new.join_token {
        // Read only by a node that starts unenrolled: nothing to apply.
        tracing::info!(file = %new.file.display(), "join_token changed: it is read only when the node starts without a certificate");
    }
    Ok(())
}

/// One line of what a reload changed, for logs and status.
pub(crate) fn summary(report: &Reconfigured) -> String {
    if report.is_empty() {
        return "no change".to_owned();
    }
    let assoc = |v: &[(String, String)]| {
        v.iter()
            .map(|(s, p)| format!("{s} to {p}"))
            .collect::<Vec<_>>()
            .join(", ")
    };
    let mut parts = Vec::new();
    for (what, list) in [
        ("services added", report.services_added.join(", ")),
        ("services removed", report.services_removed.join(", ")),
        ("services retargeted", report.services_retargeted.join(", ")),
        ("associations added", assoc(&report.associations_added)),
        ("associations removed", assoc(&report.associations_removed)),
        ("ingress moved", assoc(&report.ingress_moved)),
    ] {
        if !list.is_empty() {
            parts.push(format!("{what}: {list}"));
        }
    }
    parts.join("; ")
}

impl ReloadStatus {
    /// Records an applied reload at `unix_s`.
    pub(crate) fn applied(&mut self, unix_s: u64, detail: String) {
        self.applied += 1;
        self.last_result = Some("applied".to_owned());
        self.last_unix_s = Some(unix_s);
        self.last_detail = Some(detail);
    }

    /// Records a refused reload at `unix_s`.
    pub(crate) fn refused(&mut self, unix_s: u64, reason: String) {
        self.refused += 1;
        self.last_result = Some("refused".to_owned());
        self.last_unix_s = Some(unix_s);
        self.last_detail = Some(reason);
    }
}
