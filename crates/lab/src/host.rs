//! Running host commands and checking that the host has what the lab needs.
//!
//! The lab drives the stock tools (`ip`, `losetup`, `mkfs.ext4`, `unshare`,
//! Postfix, Dovecot) rather than re-implementing them, so an operator can
//! replay any step by hand. [`run`] puts the whole command line and its
//! stderr into the error; [`preflight`] names the Debian package that
//! provides each missing tool.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use anyhow::{bail, Context, Result};

use crate::state::{Manager, Stack};

/// Runs `program args...`, returns its stdout; a failure names the command
/// and carries its stderr.
pub fn run(program: &str, args: &[&str]) -> Result<String> {
    let output = Command::new(program)
        .args(args)
        .stdin(Stdio::null())
        .output()
        .with_context(|| format!("cannot run `{}`", command_line(program, args)))?;
    if !output.status.success() {
        bail!(
            "`{}` failed ({}): {}",
            command_line(program, args),
            output.status,
            String::from_utf8_lossy(&output.stderr).trim()
        );
    }
    Ok(String::from_utf8_lossy(&output.stdout).into_owned())
}

/// `ip args...`.
pub fn ip(args: &[&str]) -> Result<String> {
    run("ip", args)
}

fn command_line(program: &str, args: &[&str]) -> String {
    std::iter::once(program)
        .chain(args.iter().copied())
        .collect::<Vec<_>>()
        .join(" ")
}

/// The last `lines` lines of a log file, or a note why there are none.
/// Makes a secret file once: `length` random alphanumerics (and `suffix`),
/// mode 0600 from its creation on; an existing file is kept as it is.
pub fn write_secret_file(path: &Path, length: usize, suffix: &str) -> Result<()> {
    use rand::distr::{Alphanumeric, SampleString};
    use std::os::unix::fs::OpenOptionsExt;
    if path.exists() {
        return Ok(());
    }
    let secret = Alphanumeric.sample_string(&mut rand::rng(), length);
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
        .with_context(|| format!("cannot create {}", path.display()))?;
    std::io::Write::write_all(&mut file, format!("{secret}{suffix}").as_bytes())
        .with_context(|| format!("cannot write {}", path.display()))
}

pub fn tail(path: &Path, lines: usize) -> String {
    match std::fs::read(path) {
        Ok(bytes) => {
            let text = String::from_utf8_lossy(&bytes);
            let all: Vec<&str> = text.lines().collect();
            let start = all.len().saturating_sub(lines);
            if all.is_empty() {
                format!("({} is empty)", path.display())
            } else {
                all[start..].join("\n")
            }
        }
        Err(error) => format!("(cannot read {}: {error})", path.display()),
    }
}

/// Something the lab runs, and the Debian package that ships it.
struct Requirement {
    /// A command looked up in PATH, or an absolute path.
    what: &'static str,
    package: &'static str,
}

const BASE_REQUIREMENTS: &[Requirement] = &[
    Requirement {
        what: "ip",
        package: "iproute2",
    },
    Requirement {
        what: "losetup",
        package: "mount",
    },
    Requirement {
        what: "mount",
        package: "mount",
    },
    Requirement {
        what: "umount",
        package: "mount",
    },
    Requirement {
        what: "unshare",
        package: "util-linux",
    },
    Requirement {
        what: "mountpoint",
        package: "util-linux",
    },
    Requirement {
        what: "mkfs.ext4",
        package: "e2fsprogs",
    },
];

const MAIL_REQUIREMENTS: &[Requirement] = &[
    Requirement {
        what: "/usr/sbin/postfix",
        package: "postfix",
    },
    Requirement {
        what: "/usr/lib/postfix/sbin/master",
        package: "postfix",
    },
    Requirement {
        what: "/usr/share/postfix/main.cf.debian",
        package: "postfix",
    },
    Requirement {
        what: "/usr/share/postfix/master.cf.dist",
        package: "postfix",
    },
    Requirement {
        what: "/etc/postfix/postfix-files",
        package: "postfix",
    },
    Requirement {
        what: "/usr/sbin/dovecot",
        package: "dovecot-core",
    },
    Requirement {
        what: "/usr/lib/dovecot/imap",
        package: "dovecot-imapd",
    },
    Requirement {
        what: "/usr/lib/dovecot/imap-login",
        package: "dovecot-imapd",
    },
];

const KEEPALIVED_REQUIREMENTS: &[Requirement] = &[
    Requirement {
        what: "keepalived",
        package: "keepalived",
    },
    // The notify script serialises its stack commands with it.
    Requirement {
        what: "flock",
        package: "util-linux",
    },
];

/// `up --haproxy`: HAProxy.
pub fn preflight_haproxy() -> Result<()> {
    check_requirements(&[&Requirement {
        what: crate::front::HAPROXY_BIN,
        package: "haproxy",
    }])
}

/// Finds `program` in PATH (and the sbin directories, which a non-login
/// root shell may lack).
pub fn which(program: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .chain(["/usr/local/sbin", "/usr/sbin", "/sbin", "/usr/bin", "/bin"].map(PathBuf::from))
        .map(|dir| dir.join(program))
        .find(|candidate| is_executable(candidate))
}

pub fn is_executable(path: &Path) -> bool {
    use std::os::unix::fs::PermissionsExt;
    std::fs::metadata(path)
        .map(|meta| meta.is_file() && meta.permissions().mode() & 0o111 != 0)
        .unwrap_or(false)
}

/// Checks that we are root and that every tool of `stack` and `manager` is
/// installed; the error lists the missing Debian packages.
pub fn preflight(stack: Stack, manager: Manager) -> Result<()> {
    if !nix::unistd::geteuid().is_root() {
        bail!("mailherd-lab needs root (it creates namespaces, loop devices and mounts)");
    }
    let mut requirements: Vec<&Requirement> = BASE_REQUIREMENTS.iter().collect();
    if stack == Stack::Mail {
        requirements.extend(MAIL_REQUIREMENTS);
    }
    if manager.is_keepalived() {
        requirements.extend(KEEPALIVED_REQUIREMENTS);
    }
    check_requirements(&requirements)?;
    if !Path::new("/dev/loop-control").exists() {
        bail!("this kernel has no loop device support (/dev/loop-control is missing)");
    }
    Ok(())
}

/// Fails naming every missing tool and the Debian packages that bring them.
fn check_requirements(requirements: &[&Requirement]) -> Result<()> {
    let mut missing: Vec<String> = Vec::new();
    let mut packages: Vec<&str> = Vec::new();
    for requirement in requirements.iter().copied() {
        let present = if requirement.what.starts_with('/') {
            Path::new(requirement.what).exists()
        } else {
            which(requirement.what).is_some()
        };
        if !present {
            missing.push(format!(
                "{} (Debian package {})",
                requirement.what, requirement.package
            ));
            if !packages.contains(&requirement.package) {
                packages.push(requirement.package);
            }
        }
    }
    if !missing.is_empty() {
        bail!(
            "missing on this host: {}; install with `apt-get install {}`",
            missing.join(", "),
            packages.join(" ")
        );
    }
    Ok(())
}

/// The agent binary: `--agent-bin`/`MAILHERD_BIN`, else `mailherd` next to
/// this executable.
pub fn resolve_agent_bin(explicit: Option<&Path>) -> Result<PathBuf> {
    let path = match explicit {
        Some(path) => path.to_path_buf(),
        None => lab_bin()?
            .parent()
            .context("this executable has no parent directory")?
            .join("mailherd"),
    };
    if !is_executable(&path) {
        bail!(
            "the agent binary {} does not exist or is not executable; build it with `cargo build --bins` \
             or point --agent-bin / MAILHERD_BIN at it",
            path.display()
        );
    }
    path.canonicalize()
        .with_context(|| format!("cannot resolve {}", path.display()))
}

/// The keepalived binary of `--manager keepalived`, from PATH.
pub fn resolve_keepalived_bin() -> Result<PathBuf> {
    let path = which("keepalived").context(
        "keepalived is not installed; install it with `apt-get install keepalived` \
         (scripts/install-deps.sh does)",
    )?;
    path.canonicalize()
        .with_context(|| format!("cannot resolve {}", path.display()))
}

/// This executable (nodes run `node-init` and `banner` from it).
pub fn lab_bin() -> Result<PathBuf> {
    std::env::current_exe().context("cannot find this executable's path")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_missing_tool_names_its_debian_package_once() {
        let missing = [
            &Requirement {
                what: "/nonexistent/mailherd-test/postfix",
                package: "imaginary-postfix",
            },
            &Requirement {
                what: "/nonexistent/mailherd-test/postqueue",
                package: "imaginary-postfix",
            },
            &Requirement {
                what: "mailherd-test-no-such-program",
                package: "imaginary-tools",
            },
        ];
        let error = check_requirements(&missing).unwrap_err().to_string();
        assert!(
            error.contains("/nonexistent/mailherd-test/postfix (Debian package imaginary-postfix)"),
            "{error}"
        );
        assert!(
            error.ends_with("install with `apt-get install imaginary-postfix imaginary-tools`"),
            "{error}"
        );
        let present = [&Requirement {
            what: "/bin/sh",
            package: "dash",
        }];
        assert!(check_requirements(&present).is_ok());
    }
}
