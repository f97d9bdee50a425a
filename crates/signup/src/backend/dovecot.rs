//! The `dovecot` backend: a Dovecot passwd-file and a Postfix virtual
//! mailbox map on the shared volume.
//!
//! Only the master mounts the volume, so the service writes only when its
//! own agent says it is the master (checked by the caller before every
//! write). Every change happens under an exclusive `flock` on
//! `USERS_FILE.lock`, reads the current file, and replaces it atomically
//! (a temporary file in the same directory, fsync, rename, fsync of the
//! directory): concurrent signups, from this process or another, never
//! lose an entry, and a crash never leaves half a file. The Postfix map is
//! written first (idempotently) and the passwd-file last: the passwd-file
//! entry is what makes an address exist, so a crash in between is
//! repaired by the next attempt.
//!
//! A line: `ADDRESS:{SSHA512}HASH:UID:GID:NAME:MAIL_ROOT/DOMAIN/LOCAL::userdb_quota_rule=*:storage=QM`;
//! Dovecot reads a changed passwd-file on the next login.

use std::fs::{File, OpenOptions};
use std::io::Write;
use std::os::unix::fs::{MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use base64::Engine;
use mailherd_config::DovecotBackendSection;
use nix::fcntl::{Flock, FlockArg};
use rand::RngCore;
use sha2::{Digest, Sha512};

use super::{BackendError, NewMailbox};

#[derive(Clone)]
pub struct DovecotBackend {
    section: DovecotBackendSection,
}

impl DovecotBackend {
    pub fn new(section: DovecotBackendSection) -> DovecotBackend {
        DovecotBackend { section }
    }

    pub fn users_file(&self) -> &Path {
        &self.section.users_file
    }

    /// Makes the mailbox; blocking file I/O, run it off the async threads.
    pub fn create(&self, new: &NewMailbox) -> Result<String, BackendError> {
        let section = &self.section;
        let account = &new.account;
        let address = account.address();
        let failed = |what: &str, path: &Path, error: std::io::Error| {
            BackendError::Failed(format!("{what} {}: {error}", path.display()))
        };
        let directory = section
            .users_file
            .parent()
            .ok_or_else(|| BackendError::Failed("users_file has no directory".into()))?;
        if !directory.is_dir() {
            // The volume is not mounted here (not the master, or mid-failover).
            return Err(BackendError::NotMaster(format!(
                "{} does not exist: is the shared volume mounted on this node?",
                directory.display()
            )));
        }
        let lock_path = lock_path(&section.users_file);
        let lock_file = OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .mode(0o600)
            .open(&lock_path)
            .map_err(|e| failed("cannot open", &lock_path, e))?;
        let _lock = Flock::lock(lock_file, FlockArg::LockExclusive)
            .map_err(|(_, errno)| failed("cannot lock", &lock_path, errno.into()))?;

        let users = read_or_empty(&section.users_file)
            .map_err(|e| failed("cannot read", &section.users_file, e))?;
        let names: Vec<&str> = users
            .lines()
            .filter(|line| !line.trim_start().starts_with('#'))
            .filter_map(|line| line.split(':').next())
            .map(str::trim)
            .filter(|name| !name.is_empty())
            .collect();
        if names.iter().any(|name| name.eq_ignore_ascii_case(&address)) {
            return Err(BackendError::Exists { address });
        }
        let in_domain = names
            .iter()
            .filter(|name| {
                name.rsplit_once('@')
                    .is_some_and(|(_, domain)| domain.eq_ignore_ascii_case(&account.domain))
            })
            .count() as u64;
        if in_domain >= new.max_mailboxes_per_domain {
            return Err(BackendError::DomainFull {
                domain: account.domain.clone(),
                limit: new.max_mailboxes_per_domain.to_string(),
            });
        }

        let home = section
            .mail_root
            .join(&account.domain)
            .join(&account.local_part);
        make_maildir(&home, section.uid, section.gid)
            .map_err(|e| failed("cannot make the Maildir", &home, e))?;

        if let Some(map) = &section.postfix_map {
            let (kind, path) = map.split_once(':').expect("validated as TYPE:PATH");
            let path = PathBuf::from(path);
            let text = read_or_empty(&path).map_err(|e| failed("cannot read", &path, e))?;
            let listed = text
                .lines()
                .filter_map(|line| line.split_whitespace().next())
                .any(|key| key.eq_ignore_ascii_case(&address));
            if !listed {
                let line = format!("{address} {}/{}/\n", account.domain, account.local_part);
                replace_atomically(&path, &format!("{}{line}", with_newline(&text)))
                    .map_err(|e| failed("cannot write", &path, e))?;
            }
            if kind != "texthash" {
                postmap(kind, &path)?;
            }
        }

        let line = format!(
            "{address}:{password}:{uid}:{gid}:{name}:{home}::userdb_quota_rule=*:storage={quota}M\n",
            password = ssha512(&account.password),
            uid = section.uid,
            gid = section.gid,
            name = account.name,
            home = home.display(),
            quota = new.quota_mib,
        );
        replace_atomically(
            &section.users_file,
            &format!("{}{line}", with_newline(&users)),
        )
        .map_err(|e| failed("cannot write", &section.users_file, e))?;
        tracing::info!(%address, users_file = %section.users_file.display(), "mailbox added");
        Ok(address)
    }
}

fn lock_path(users_file: &Path) -> PathBuf {
    let mut name = users_file.as_os_str().to_owned();
    name.push(".lock");
    PathBuf::from(name)
}

fn read_or_empty(path: &Path) -> std::io::Result<String> {
    match std::fs::read_to_string(path) {
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => Ok(String::new()),
        other => other,
    }
}

fn with_newline(text: &str) -> String {
    if text.is_empty() || text.ends_with('\n') {
        text.to_string()
    } else {
        format!("{text}\n")
    }
}

/// Dovecot's `{SSHA512}`: base64 of SHA-512(password + salt) followed by
/// the salt.
pub fn ssha512(password: &str) -> String {
    let mut salt = [0u8; 16];
    rand::rng().fill_bytes(&mut salt);
    let mut hasher = Sha512::new();
    hasher.update(password.as_bytes());
    hasher.update(salt);
    let mut hashed = hasher.finalize().to_vec();
    hashed.extend_from_slice(&salt);
    format!(
        "{{SSHA512}}{}",
        base64::engine::general_purpose::STANDARD.encode(hashed)
    )
}

/// Replaces `path` with `content`: a temporary file beside it (keeping the
/// old file's mode and owner), fsync, rename, fsync of the directory.
fn replace_atomically(path: &Path, content: &str) -> std::io::Result<()> {
    let directory = path.parent().unwrap_or(Path::new("/"));
    let file_name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let temporary = directory.join(format!(".{file_name}.{}.tmp", std::process::id()));
    let old = std::fs::metadata(path).ok();
    let mode = old.as_ref().map(|m| m.mode() & 0o7777).unwrap_or(0o640);
    {
        let mut file = OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(mode)
            .open(&temporary)?;
        file.set_permissions(std::fs::Permissions::from_mode(mode))?;
        if let Some(old) = &old {
            std::os::unix::fs::fchown(&file, Some(old.uid()), Some(old.gid()))?;
        }
        file.write_all(content.as_bytes())?;
        file.sync_all()?;
    }
    if let Err(error) = std::fs::rename(&temporary, path) {
        let _ = std::fs::remove_file(&temporary);
        return Err(error);
    }
    File::open(directory)?.sync_all()
}

/// `home/{cur,new,tmp}` owned by the mail user, private.
fn make_maildir(home: &Path, uid: u32, gid: u32) -> std::io::Result<()> {
    for sub in ["cur", "new", "tmp"] {
        std::fs::create_dir_all(home.join(sub))?;
    }
    let mut path = home.to_path_buf();
    // The domain directory and the home: created here, so owned here.
    for _ in 0..2 {
        std::os::unix::fs::chown(&path, Some(uid), Some(gid))?;
        if path == home {
            std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o700))?;
        }
        path.pop();
    }
    for sub in ["cur", "new", "tmp"] {
        let sub = home.join(sub);
        std::os::unix::fs::chown(&sub, Some(uid), Some(gid))?;
        std::fs::set_permissions(&sub, std::fs::Permissions::from_mode(0o700))?;
    }
    Ok(())
}

/// Where `postmap` is looked for.
const POSTMAP: &[&str] = &["/usr/sbin/postmap", "/usr/bin/postmap"];

fn postmap(kind: &str, path: &Path) -> Result<(), BackendError> {
    let binary = POSTMAP
        .iter()
        .find(|p| Path::new(p).exists())
        .ok_or_else(|| {
            BackendError::Failed(format!(
                "postfix_map is {kind}: but postmap is not installed ({})",
                POSTMAP.join(", ")
            ))
        })?;
    let target = format!("{kind}:{}", path.display());
    let output = std::process::Command::new(binary)
        .arg(&target)
        .output()
        .map_err(|e| BackendError::Failed(format!("cannot run {binary} {target}: {e}")))?;
    if !output.status.success() {
        return Err(BackendError::Failed(format!(
            "{binary} {target} failed ({}): {}",
            output.status,
            String::from_utf8_lossy(&output.stderr).trim()
        )));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ssha512_is_hash_then_salt() {
        let text = ssha512("secret");
        let encoded = text.strip_prefix("{SSHA512}").unwrap();
        let raw = base64::engine::general_purpose::STANDARD
            .decode(encoded)
            .unwrap();
        assert_eq!(raw.len(), 64 + 16);
        let (hash, salt) = raw.split_at(64);
        let mut hasher = Sha512::new();
        hasher.update(b"secret");
        hasher.update(salt);
        assert_eq!(hash, hasher.finalize().as_slice());
    }
}
