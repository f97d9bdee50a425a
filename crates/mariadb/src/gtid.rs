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

    /// The GTIDs of this position that the master's binary log does not
    /// hold, by its `@@gtid_binlog_state` (the last GTID of every server in
    /// every domain): a server with such transactions diverged from the
    /// master — it holds commits the master never got — and cannot follow
    /// it without losing them. Comparing positions alone would miss a
    /// transaction whose sequence number the master later reused for one
    /// of its own (an old master's last commit, made durable by crash
    /// recovery, that no replica had received).
    pub fn missing_from(&self, master: &GtidState) -> Vec<Gtid> {
        self.0
            .values()
            .filter(|ours| !master.holds(ours))
            .copied()
            .collect()
    }
}

/// `@@gtid_binlog_state`: the last GTID each server wrote in each domain,
/// as far as this server's binary log knows.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct GtidState(Vec<Gtid>);

impl GtidState {
    pub fn parse(text: &str) -> Result<GtidState, String> {
        let mut gtids = Vec::new();
        for part in text.split(',').map(str::trim).filter(|p| !p.is_empty()) {
            // One GTID at a time through the position parser.
            let one = GtidPos::parse(part)?;
            gtids.extend(one.0.into_values());
        }
        Ok(GtidState(gtids))
    }

    /// Whether the binary log holds `gtid`: the same server wrote it, or a
    /// later one, in its domain (a server's sequence numbers only grow).
    pub fn holds(&self, gtid: &Gtid) -> bool {
        self.0.iter().any(|ours| {
            ours.domain == gtid.domain
                && ours.server == gtid.server
                && ours.sequence >= gtid.sequence
        })
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
    fn the_binlog_state_tells_which_transactions_the_master_holds() {
        let state = |text: &str| GtidState::parse(text).unwrap();
        // The old master made 0-1-43 durable, no replica had it, and the new
        // master (server 2) went on from 0-1-42: the position comparison
        // would miss it (43 < 124), the binlog state does not.
        assert_eq!(
            pos("0-1-43").missing_from(&state("0-1-42,0-2-124")),
            vec![Gtid {
                domain: 0,
                server: 1,
                sequence: 43
            }]
        );
        // Everything the old master wrote reached the new one.
        assert!(pos("0-1-50")
            .missing_from(&state("0-1-50,0-2-80"))
            .is_empty());
        // The old master wrote 0-1-105; the new master only got 0-1-100.
        assert_eq!(
            pos("0-1-105").missing_from(&state("0-1-100,0-2-101")).len(),
            1
        );
        // A server or a domain the master never saw.
        assert_eq!(pos("0-3-1").missing_from(&state("0-1-50")).len(), 1);
        assert_eq!(pos("0-1-5,7-1-1").missing_from(&state("0-1-5")).len(), 1);
        assert!(GtidState::parse("0-1").is_err());
    }
}
