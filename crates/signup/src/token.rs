//! The form's time-based token: proof that the client fetched the form a
//! while ago, signed so it cannot be made up, and usable once.
//!
//! A token is `ISSUED.NONCE.MAC`: the issue time (Unix seconds), 16 random
//! bytes (hex), and HMAC-SHA256 over both with the service's key (base64).
//! It is accepted from `min_age` after issue until `max_age`: bots that
//! post at once, or replay an old page, fail. Needs no script in the page.
//! Pure apart from the random nonce: time comes in as an argument.

use std::collections::BTreeMap;

use base64::Engine;
use hmac::{Hmac, Mac};
use rand::RngCore;
use sha2::Sha256;

type HmacSha256 = Hmac<Sha256>;

/// Why a token was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TokenError {
    #[error("the form token is missing: load the form (or GET /api/token) first")]
    Missing,
    #[error("the form token is malformed")]
    Malformed,
    #[error("the form token's signature is wrong")]
    BadSignature,
    #[error("the form was sent too fast: wait {wait_s} s more and send it again")]
    TooEarly { wait_s: u64 },
    #[error("the form token has expired: load the form again")]
    Expired,
    #[error("the form token was already used: load the form again")]
    Reused,
}

pub struct Tokens {
    key: Vec<u8>,
    min_age_s: u64,
    max_age_s: u64,
    /// Nonces of accepted tokens until they expire: a token works once.
    used: BTreeMap<String, u64>,
}

impl Tokens {
    pub fn new(key: Vec<u8>, min_age_s: u64, max_age_s: u64) -> Tokens {
        Tokens {
            key,
            min_age_s,
            max_age_s,
            used: BTreeMap::new(),
        }
    }

    pub fn min_age_s(&self) -> u64 {
        self.min_age_s
    }

    fn mac(&self, issued: u64, nonce: &str) -> HmacSha256 {
        let mut mac = HmacSha256::new_from_slice(&self.key).expect("HMAC takes any key length");
        mac.update(format!("{issued}.{nonce}").as_bytes());
        mac
    }

    /// A new token issued at `now` (Unix seconds).
    pub fn issue(&self, now: u64) -> String {
        let mut nonce = [0u8; 16];
        rand::rng().fill_bytes(&mut nonce);
        let nonce: String = nonce.iter().map(|b| format!("{b:02x}")).collect();
        let tag = self.mac(now, &nonce).finalize().into_bytes();
        let tag = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(tag);
        format!("{now}.{nonce}.{tag}")
    }

    /// Accepts `token` at `now` once, or says why not.
    pub fn redeem(&mut self, token: &str, now: u64) -> Result<(), TokenError> {
        let token = token.trim();
        if token.is_empty() {
            return Err(TokenError::Missing);
        }
        let mut parts = token.split('.');
        let (Some(issued), Some(nonce), Some(tag), None) =
            (parts.next(), parts.next(), parts.next(), parts.next())
        else {
            return Err(TokenError::Malformed);
        };
        let issued: u64 = issued.parse().map_err(|_| TokenError::Malformed)?;
        let tag = base64::engine::general_purpose::URL_SAFE_NO_PAD
            .decode(tag)
            .map_err(|_| TokenError::Malformed)?;
        // verify_slice compares in constant time.
        self.mac(issued, nonce)
            .verify_slice(&tag)
            .map_err(|_| TokenError::BadSignature)?;
        let age = now.saturating_sub(issued);
        if issued > now || age < self.min_age_s {
            return Err(TokenError::TooEarly {
                wait_s: (issued + self.min_age_s).saturating_sub(now).max(1),
            });
        }
        if age > self.max_age_s {
            return Err(TokenError::Expired);
        }
        let max_age = self.max_age_s;
        self.used
            .retain(|_, issued| now.saturating_sub(*issued) <= max_age);
        if self.used.insert(nonce.to_string(), issued).is_some() {
            return Err(TokenError::Reused);
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tokens() -> Tokens {
        Tokens::new(b"0123456789abcdef".to_vec(), 3, 600)
    }

    #[test]
    fn a_token_works_once_between_min_and_max_age() {
        let mut tokens = tokens();
        let token = tokens.issue(1_000);
        assert_eq!(
            tokens.redeem(&token, 1_001),
            Err(TokenError::TooEarly { wait_s: 2 })
        );
        assert_eq!(tokens.redeem(&token, 1_003), Ok(()));
        assert_eq!(tokens.redeem(&token, 1_004), Err(TokenError::Reused));
        let old = tokens.issue(1_000);
        assert_eq!(tokens.redeem(&old, 1_601), Err(TokenError::Expired));
    }

    #[test]
    fn forged_and_broken_tokens_are_refused() {
        let mut tokens = tokens();
        let token = tokens.issue(1_000);
        // An earlier issue time would pass the age check: the MAC stops it.
        let forged = token.replacen("1000", "900", 1);
        assert_eq!(tokens.redeem(&forged, 1_010), Err(TokenError::BadSignature));
        let other_key = Tokens::new(b"another key 16 b".to_vec(), 3, 600).issue(1_000);
        assert_eq!(
            tokens.redeem(&other_key, 1_010),
            Err(TokenError::BadSignature)
        );
        assert_eq!(tokens.redeem("", 1_010), Err(TokenError::Missing));
        assert_eq!(tokens.redeem("1.2", 1_010), Err(TokenError::Malformed));
        assert_eq!(tokens.redeem("x.y.z", 1_010), Err(TokenError::Malformed));
    }
}
