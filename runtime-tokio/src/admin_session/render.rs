//! Admin replies as the text `tlctl` prints: aligned tables with a header
//! row, or one sentence when a list is empty.

use transitloom_proto_core::control::msg::{AssocInfo, NodeInfo};

/// Left-aligned columns separated by two spaces; the last column is not
/// padded.
fn table(header: &[&str], rows: &[Vec<String>]) -> String {
    let mut widths: Vec<usize> = header.iter().map(|h| h.len()).collect();
    for row in rows {
        for (w, cell) in widths.iter_mut().zip(row) {
            *w = (*w).max(cell.len());
        }
    }
    let mut out = String::new();
    let header: Vec<String> = header.iter().map(|h| (*h).to_owned()).collect();
    for row in std::iter::once(&header).chain(rows) {
        let last = row.len().saturating_sub(1);
        for (i, (cell, w)) in row.iter().zip(&widths).enumerate() {
            if i == last {
                out.push_str(cell);
            } else {
                out.push_str(&format!("{cell:<w$}  "));
            }
        }
        out.push('\n');
    }
    out
}

fn yes(flag: bool) -> String {
    if flag { "yes" } else { "no" }.to_owned()
}

/// `tlctl node list`: enrolled nodes. Invited nodes appear once they have
/// enrolled (the coordinator keeps only a digest of a join token).
pub fn nodes(nodes: &[NodeInfo]) -> String {
    if nodes.is_empty() {
        return "no node has enrolled yet (invited nodes appear once they enroll)\n".to_owned();
    }
    let rows: Vec<Vec<String>> = nodes
        .iter()
        .map(|n| {
            vec![
                n.name.to_string(),
                n.node_id.to_string(),
                n.state.as_str().to_owned(),
                yes(n.connected),
            ]
        })
        .collect();
    table(&["NAME", "ID", "ADMISSION", "CONNECTED"], &rows)
}

/// `tlctl assoc list`: every association the coordinator knows, installed,
/// waiting (an end not admitted or not declaring the service) or deleted by
/// an admin.
pub fn assocs(assocs: &[AssocInfo]) -> String {
    if assocs.is_empty() {
        return "no association exists\n".to_owned();
    }
    let rows: Vec<Vec<String>> = assocs
        .iter()
        .map(|a| {
            vec![
                a.assoc.to_string(),
                a.a.to_string(),
                a.b.to_string(),
                a.epoch.to_string(),
                a.origin.as_str().to_owned(),
                a.state.as_str().to_owned(),
                yes(a.up),
            ]
        })
        .collect();
    table(
        &["ID", "A", "B", "EPOCH", "ORIGIN", "STATE", "ENDS ONLINE"],
        &rows,
    )
}

/// `tlctl status`: the coordinator's status document as `key  value`
/// lines, the coordinator's name first, a nested object's fields as
/// `part.key` and a null part left out; text that is not a JSON object is
/// printed as it is.
pub fn status(json: &str) -> String {
    let Ok(serde_json::Value::Object(fields)) = serde_json::from_str::<serde_json::Value>(json)
    else {
        return format!("{json}\n");
    };
    let mut keys: Vec<&String> = fields.keys().collect();
    keys.sort_by_key(|k| (k.as_str() != "coordinator", k.as_str()));
    let text_of = |value: &serde_json::Value| match value {
        serde_json::Value::String(s) => s.clone(),
        other => other.to_string(),
    };
    let mut rows: Vec<Vec<String>> = Vec::new();
    for k in keys {
        match &fields[k] {
            // A part that does not apply (a lone coordinator's cluster).
            serde_json::Value::Null => {}
            // One level of nesting reads as `part.key`.
            serde_json::Value::Object(inner) => {
                for (sub, value) in inner {
                    rows.push(vec![format!("{k}.{sub}"), text_of(value)]);
                }
            }
            other => rows.push(vec![k.clone(), text_of(other)]),
        }
    }
    let text = table(&["", ""], &rows);
    // Drop the empty header line.
    text.split_once('\n')
        .map_or(text.clone(), |(_, rest)| rest.to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;
    use transitloom_proto_core::control::msg::{
        AdmissionState, AssocOrigin, AssocState, Name, PeerRef,
    };
    use transitloom_proto_core::{AssocId, NodeId};

    #[test]
    fn node_table_is_aligned() {
        let n = |name: &str, id, state, connected| NodeInfo {
            node_id: NodeId(id),
            name: Name::new(name).unwrap(),
            state,
            connected,
            last_seen_unix_s: 0,
        };
        let text = nodes(&[
            n("alpha", 1, AdmissionState::Admitted, true),
            n("b", 12, AdmissionState::Pending, false),
        ]);
        assert_eq!(
            text,
            "NAME   ID       ADMISSION  CONNECTED\n\
             alpha  node#1   admitted   yes\n\
             b      node#12  pending    no\n"
        );
        assert!(nodes(&[]).starts_with("no node has enrolled yet"));
    }

    #[test]
    fn assoc_table_names_both_ends() {
        let peer = |s: &str| s.parse::<PeerRef>().unwrap();
        let text = assocs(&[AssocInfo {
            assoc: AssocId(3),
            a: peer("alpha/wg0"),
            b: peer("beta/wg0"),
            epoch: 1,
            origin: AssocOrigin::Admin,
            state: AssocState::Deleted,
            up: false,
        }]);
        assert!(
            text.contains("assoc#3  alpha/wg0  beta/wg0  1      admin   deleted  no"),
            "{text}"
        );
    }

    #[test]
    fn status_puts_the_coordinator_first() {
        let text = status(r#"{"nodes":2,"coordinator":"hub","online":1}"#);
        assert_eq!(text, "coordinator  hub\nnodes        2\nonline       1\n");
        assert_eq!(status("not json"), "not json\n");
    }

    #[test]
    fn status_flattens_the_cluster_and_leaves_out_what_does_not_apply() {
        let alone = status(r#"{"coordinator":"hub","nodes":2,"cluster":null}"#);
        assert_eq!(alone, "coordinator  hub\nnodes        2\n");
        let member = status(r#"{"coordinator":"hub-a","cluster":{"role":"leader","pending":0}}"#);
        assert_eq!(
            member,
            "coordinator      hub-a\ncluster.pending  0\ncluster.role     leader\n"
        );
    }
}
