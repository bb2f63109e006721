//! Admission lapses when its token expires (DESIGN §4: a node is admitted
//! with a valid certificate *and* a valid token). The coordinator remembers
//! the expiry of the newest token each node holds (granted, or presented in
//! a hello); when it passes without a fresh one — a node partitioned from
//! the coordinator cannot refresh — the node's associations are withdrawn
//! and its peers, which still talk to the coordinator, drop the forwarding
//! state. A hello with a fresh token ends the lapse.

use std::collections::{BTreeMap, BTreeSet};

/// Token expiries and the nodes whose admission has lapsed.
#[derive(Debug, Default)]
pub(crate) struct Lapses {
    /// The newest token expiry per node (Unix seconds).
    expires: BTreeMap<String, u64>,
    /// The same, earliest first, for the timer.
    due: BTreeSet<(u64, String)>,
    /// Nodes whose newest token expired.
    lapsed: BTreeSet<String>,
}

impl Lapses {
    /// `node` holds a token valid until `expires_unix_s`.
    pub(crate) fn token(&mut self, node: &str, expires_unix_s: u64) {
        let newest = self.expires.get(node).copied();
        if newest.is_some_and(|e| e >= expires_unix_s) {
            return;
        }
        if let Some(old) = newest {
            self.due.remove(&(old, node.to_owned()));
        }
        self.expires.insert(node.to_owned(), expires_unix_s);
        self.due.insert((expires_unix_s, node.to_owned()));
    }

    /// A hello with a valid token: the lapse, if any, is over. True when
    /// the node had lapsed.
    pub(crate) fn revive(&mut self, node: &str) -> bool {
        self.lapsed.remove(node)
    }

    /// Forgets `node` (revoked: its tokens are void anyway).
    pub(crate) fn forget(&mut self, node: &str) {
        if let Some(old) = self.expires.remove(node) {
            self.due.remove(&(old, node.to_owned()));
        }
        self.lapsed.remove(node);
    }

    /// When the next token expires (Unix seconds).
    pub(crate) fn next(&self) -> Option<u64> {
        self.due.first().map(|(at, _)| *at)
    }

    /// Lapses every node whose newest token expired by `now_unix_s`, and
    /// returns them in name order.
    pub(crate) fn expire(&mut self, now_unix_s: u64) -> Vec<String> {
        let mut out = Vec::new();
        while let Some((at, _)) = self.due.first() {
            if *at > now_unix_s {
                break;
            }
            let Some((_, node)) = self.due.pop_first() else {
                break;
            };
            self.expires.remove(&node);
            self.lapsed.insert(node.clone());
            out.push(node);
        }
        out.sort();
        out
    }

    /// Nodes whose admission lapsed.
    pub(crate) fn lapsed(&self) -> &BTreeSet<String> {
        &self.lapsed
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_newest_token_decides_and_a_hello_revives() {
        let mut lapses = Lapses::default();
        lapses.token("alpha", 100);
        lapses.token("beta", 150);
        lapses.token("alpha", 200);
        // An older token never shortens the newest.
        lapses.token("alpha", 120);
        assert_eq!(lapses.next(), Some(150));
        assert!(lapses.expire(149).is_empty());
        assert_eq!(lapses.expire(150), vec!["beta".to_owned()]);
        assert!(lapses.lapsed().contains("beta"));
        assert_eq!(lapses.expire(199), Vec::<String>::new());
        assert_eq!(lapses.expire(10_000), vec!["alpha".to_owned()]);
        assert_eq!(lapses.next(), None);
        assert!(lapses.revive("beta"));
        assert!(!lapses.revive("beta"));
        lapses.forget("alpha");
        assert!(lapses.lapsed().is_empty());
    }
}
