//! The statements that change replication, built as text (pure, so that
//! quoting and the GTID options are tested without a server).

/// A MariaDB string literal: quoted, with backslash escapes for what would
/// end or bend it.
pub fn quote(text: &str) -> String {
    let mut quoted = String::with_capacity(text.len() + 2);
    quoted.push('\'');
    for ch in text.chars() {
        match ch {
            '\'' => quoted.push_str("\\'"),
            '\\' => quoted.push_str("\\\\"),
            '\0' => quoted.push_str("\\0"),
            '\n' => quoted.push_str("\\n"),
            '\r' => quoted.push_str("\\r"),
            '\x1a' => quoted.push_str("\\Z"),
            ch => quoted.push(ch),
        }
    }
    quoted.push('\'');
    quoted
}

/// `'user'@'host'`.
pub fn account(user: &str, host: &str) -> String {
    format!("{}@{}", quote(user), quote(host))
}

/// How a replica is pointed at its master.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChangeMaster<'a> {
    pub host: String,
    pub port: u16,
    pub user: &'a str,
    pub password: &'a str,
    /// Merge what this server wrote itself into `gtid_slave_pos` first
    /// (`MASTER_DEMOTE_TO_SLAVE=1`, MariaDB 10.10+): an old master's own
    /// transactions are then not asked for again.
    pub demote: bool,
}

/// Seconds between a replica's attempts to reach its master: short, so a
/// master that comes back is found again soon.
pub const CONNECT_RETRY_S: u32 = 5;

impl ChangeMaster<'_> {
    /// `CHANGE MASTER TO ... MASTER_USE_GTID=slave_pos`: GTID, never a file
    /// and position. Holds the password: never log it.
    pub fn statement(&self) -> String {
        let mut sql = format!(
            "CHANGE MASTER TO MASTER_HOST={}, MASTER_PORT={}, MASTER_USER={}, \
             MASTER_PASSWORD={}, MASTER_CONNECT_RETRY={CONNECT_RETRY_S}, \
             MASTER_USE_GTID=slave_pos",
            quote(&self.host),
            self.port,
            quote(self.user),
            quote(self.password),
        );
        if self.demote {
            sql.push_str(", MASTER_DEMOTE_TO_SLAVE=1");
        }
        sql
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quoting_keeps_the_literal_closed() {
        assert_eq!(quote("plain"), "'plain'");
        assert_eq!(quote("it's"), "'it\\'s'");
        assert_eq!(quote("a\\'; DROP"), "'a\\\\\\'; DROP'");
        assert_eq!(quote("a\nb\0"), "'a\\nb\\0'");
        assert_eq!(account("repl", "%"), "'repl'@'%'");
    }

    #[test]
    fn change_master_uses_gtid_and_no_file_position() {
        let change = ChangeMaster {
            host: "10.0.0.11".into(),
            port: 3306,
            user: "repl",
            password: "p'w",
            demote: false,
        };
        let sql = change.statement();
        assert_eq!(
            sql,
            "CHANGE MASTER TO MASTER_HOST='10.0.0.11', MASTER_PORT=3306, MASTER_USER='repl', \
             MASTER_PASSWORD='p\\'w', MASTER_CONNECT_RETRY=5, MASTER_USE_GTID=slave_pos"
        );
        assert!(!sql.contains("MASTER_LOG_FILE") && !sql.contains("MASTER_LOG_POS"));
        let demote = ChangeMaster {
            demote: true,
            ..change
        };
        assert!(demote.statement().ends_with(", MASTER_DEMOTE_TO_SLAVE=1"));
    }
}
