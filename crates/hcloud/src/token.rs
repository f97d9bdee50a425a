//! [`Token`]: the Hetzner Cloud API token.
//!
//! A token grants full control of a project, so it is read from a file
//! (mode 0600, outside the config) or from the environment, and it has no
//! way to be printed: `Debug` and `Display` say `<redacted>` and errors about
//! it name where it came from, never what it is.

use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// The environment variable the official tools read the token from.
pub const TOKEN_ENV_VAR: &str = "HCLOUD_TOKEN";

/// A Hetzner Cloud API token. Cheap to clone; never printed.
#[derive(Clone, PartialEq, Eq)]
pub struct Token {
    /// Shared so clones (one per client, per driver) do not copy the secret
    /// around the heap more than needed.
    secret: Arc<str>,
}

/// Why a token could not be had. Names the file or variable, not the token.
#[derive(Debug, thiserror::Error)]
pub enum TokenError {
    #[error("cannot read the hcloud token file {}: {source}", path.display())]
    Unreadable {
        path: PathBuf,
        source: std::io::Error,
    },

    #[error("the hcloud token file {} is empty", path.display())]
    EmptyFile { path: PathBuf },

    #[error("environment variable {var} is not set (it should hold the hcloud token)")]
    NotSet { var: String },

    #[error("environment variable {var} is empty (it should hold the hcloud token)")]
    EmptyVar { var: String },

    /// The token holds characters an HTTP header cannot carry; a token
    /// pasted with a stray control character would otherwise fail later
    /// with a less helpful message.
    #[error("the hcloud token from {origin} contains characters not allowed in an HTTP header")]
    Invalid { origin: String },
}

impl Token {
    /// A token given directly (tests, the simulator's own config).
    /// Surrounding whitespace is trimmed.
    pub fn new(secret: impl AsRef<str>) -> Result<Token, TokenError> {
        Token::checked(secret.as_ref().trim(), "the given string")
    }

    /// Reads the token from `path`, trimming surrounding whitespace (files
    /// written with `echo` end in a newline).
    pub fn from_file(path: impl AsRef<Path>) -> Result<Token, TokenError> {
        let path = path.as_ref();
        let content = std::fs::read_to_string(path).map_err(|source| TokenError::Unreadable {
            path: path.to_path_buf(),
            source,
        })?;
        let secret = content.trim();
        if secret.is_empty() {
            return Err(TokenError::EmptyFile {
                path: path.to_path_buf(),
            });
        }
        Token::checked(secret, &format!("file {}", path.display()))
    }

    /// Reads the token from [`TOKEN_ENV_VAR`] (`HCLOUD_TOKEN`).
    pub fn from_env() -> Result<Token, TokenError> {
        Token::from_env_var(TOKEN_ENV_VAR)
    }

    /// Reads the token from the environment variable `var`.
    pub fn from_env_var(var: &str) -> Result<Token, TokenError> {
        let value = std::env::var(var).map_err(|_| TokenError::NotSet {
            var: var.to_string(),
        })?;
        let secret = value.trim();
        if secret.is_empty() {
            return Err(TokenError::EmptyVar {
                var: var.to_string(),
            });
        }
        Token::checked(secret, &format!("environment variable {var}"))
    }

    /// The secret itself, for the `Authorization` header. The long name is
    /// deliberate: every use is easy to find and to review.
    pub fn expose_secret(&self) -> &str {
        &self.secret
    }

    fn checked(secret: &str, origin: &str) -> Result<Token, TokenError> {
        // Visible ASCII only: what a bearer token consists of, and what an
        // HTTP header value can carry without surprises.
        if secret.is_empty() || !secret.bytes().all(|byte| byte.is_ascii_graphic()) {
            return Err(TokenError::Invalid {
                origin: origin.to_string(),
            });
        }
        Ok(Token {
            secret: Arc::from(secret),
        })
    }
}

impl fmt::Debug for Token {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Token(<redacted>)")
    }
}

impl fmt::Display for Token {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("<redacted>")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debug_and_display_are_redacted() {
        let token = Token::new("s3cr3t-token").unwrap();
        assert_eq!(format!("{token:?}"), "Token(<redacted>)");
        assert_eq!(format!("{token}"), "<redacted>");
        assert_eq!(token.expose_secret(), "s3cr3t-token");
    }

    #[test]
    fn new_trims_and_rejects_what_a_header_cannot_carry() {
        assert_eq!(Token::new("  abc\n").unwrap().expose_secret(), "abc");
        let error = Token::new("ab c").unwrap_err();
        assert!(matches!(error, TokenError::Invalid { .. }));
        assert!(!error.to_string().contains("ab c"));
        assert!(Token::new("   ").is_err());
    }
}
