//! GTID positions as MariaDB writes them (`0-1-100,1-2-7`: one
//! `domain-server-sequence` per replication domain) and the comparisons
//! a promotion needs: has this server applied what it received, is that
//! server ahead of this one.

use std::collections::BTreeMap;
use std::fmt;

/// One GTID: `domain-server-sequence`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct Gtid {
    pub domain: u32,
    pub server: u32,
    pub sequence: u64,
}

/// A position: the last GTID of each domain.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct GtidPos(BTreeMap<u32, Gtid>);

impl GtidPos {
    /// Parses `@@gtid_slave_pos`, `Gtid_IO_Pos` and the like; empty text is
    /// the empty position.
    pub fn parse(text: &str) -> Result<GtidPos, String> {
        let mut domains = BTreeMap::new();
        for part in text.split(',').map(str::trim).filter(|p| !p.is_empty()) {
            let fields: Vec<&str> = part.split('-').collect();
            let [domain, server, sequence] = fields.as_slice() else {
                return Err(format!("`{part}` is not a GTID (domain-server-sequence)"));
            };
            let gtid = Gtid {
                domain: domain
                    .parse()
                    .map_err(|_| format!("`{part}`: bad domain id"))?,
                server: server
                    .parse()
                    .map_err(|_| format!("`{part}`: bad server id"))?,
                sequence: sequence
                    .parse()
                    .map_err(|_| format!("`{part}`: bad sequence number"))?,
            };
            domains.insert(gtid.domain, gtid);
        }
        Ok(GtidPos(domains))
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    pub fn domain(&self, domain: u32) -> Option<&Gtid> {
        self.0.get(&domain)
    }

    /// Whether this position is at or past `other` in every domain of
    /// `other` (sequence numbers grow within a domain, whichever server
    /// wrote them): a replica whose applied position covers its received
    /// position has nothing left in its relay log.
    pub fn covers(&self, other: &GtidPos) -> bool {
        other.0.values().all(|theirs| {
            self.0
                .get(&theirs.domain)
                .is_some_and(|ours| ours.sequence >= theirs.sequence)
        })
    }

    /// How many transactions `other` has that this position lacks (the sum
    /// over domains of the sequence gap): the size of a relay log not yet
    /// applied.
    pub fn behind(&self, other: &GtidPos) -> u64 {
        other
            .0
            .values()
            .map(|theirs| {
                let ours = self.0.get(&theirs.domain).map_or(0, |g| g.sequence);
                theirs.sequence.saturating_sub(ours)
            })
            .sum()
    }

    /// The GTIDs of this position that `master` cannot have: a later
    /// sequence number in a domain, or the same number written by another
    /// server. A server with such transactions diverged from the master: it
    /// holds commits the master never got, and cannot follow it without
    /// losing them.
    pub fn diverged_from(&self, master: &GtidPos) -> Vec<Gtid> {
        self.0
            .values()
            .filter(|ours| match master.0.get(&ours.domain) {
                None => true,
                Some(theirs) => {
                    ours.sequence > theirs.sequence
                        || (ours.sequence == theirs.sequence && ours.server != theirs.server)
                }
            })
            .copied()
            .collect()
    }
}

impl fmt::Display for Gtid {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}-{}-{}", self.domain, self.server, self.sequence)
    }
}

impl fmt::Display for GtidPos {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let parts: Vec<String> = self.0.values().map(Gtid::to_string).collect();
        if parts.is_empty() {
            f.write_str("(empty)")
        } else {
            f.write_str(&parts.join(","))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pos(text: &str) -> GtidPos {
        GtidPos::parse(text).unwrap()
    }

    #[test]
    fn parses_and_prints_positions() {
        assert_eq!(pos("0-1-100, 1-2-7").to_string(), "0-1-100,1-2-7");
        assert!(pos("").is_empty());
        assert_eq!(pos("").to_string(), "(empty)");
        assert!(GtidPos::parse("0-1").is_err());
        assert!(GtidPos::parse("x-1-2").is_err());
    }

    #[test]
    fn coverage_is_per_domain_by_sequence() {
        let cases = [
            // applied, received, drained
            ("0-1-100", "0-1-100", true),
            ("0-1-99", "0-1-100", false),
            ("0-2-101", "0-1-100", true),
            ("0-1-100", "0-1-100,1-2-5", false),
            ("0-1-100,1-2-5", "0-1-100", true),
            ("", "", true),
            ("0-1-3", "", true),
            ("", "0-1-1", false),
        ];
        for (applied, received, drained) in cases {
            assert_eq!(
                pos(applied).covers(&pos(received)),
                drained,
                "{applied} covers {received}"
            );
        }
        assert_eq!(pos("0-1-97,1-2-5").behind(&pos("0-1-100,1-2-6")), 4);
        assert_eq!(pos("0-1-100").behind(&pos("0-1-100")), 0);
    }

    #[test]
    fn divergence_is_a_later_or_foreign_transaction() {
        // The old master wrote 0-1-105; the new master only got 0-1-100 and
        // went on with its own 0-2-101: 0-1-105 is lost to the new master.
        assert_eq!(
            pos("0-1-105").diverged_from(&pos("0-2-101")),
            vec![Gtid {
                domain: 0,
                server: 1,
                sequence: 105
            }]
        );
        // Everything the old master wrote reached the new one.
        assert!(pos("0-1-100").diverged_from(&pos("0-2-101")).is_empty());
        assert!(pos("0-1-100").diverged_from(&pos("0-1-100")).is_empty());
        // Same number, other writer: two histories.
        assert_eq!(pos("0-1-100").diverged_from(&pos("0-2-100")).len(), 1);
        // A domain the master never saw.
        assert_eq!(pos("0-1-5,7-1-1").diverged_from(&pos("0-1-5")).len(), 1);
    }
}
