//! What a signup may ask for: the local part's syntax, the offered
//! domains, the password policy (length and a known-weak list), the name.
//!
//! Pure: [`Policy::check`] returns every reason at once, so the form can
//! show them all and the API answers 422 with the list.

use std::collections::BTreeSet;

use serde::Serialize;

/// Local parts nobody may sign up for: the addresses RFC 2142 and mail
/// operations reserve, and names that would let an account pose as staff.
const RESERVED_LOCAL_PARTS: &[&str] = &[
    "abuse",
    "admin",
    "administrator",
    "hostmaster",
    "info",
    "mailer-daemon",
    "noc",
    "no-reply",
    "noreply",
    "postmaster",
    "root",
    "security",
    "support",
    "webmaster",
    "www",
];

/// Passwords that are refused whatever their length: the most common
/// ones of public breach lists (lower case; compared case-insensitively).
/// `signup.weak_passwords_file` adds more.
const KNOWN_WEAK_PASSWORDS: &[&str] = &[
    "123456",
    "password",
    "12345678",
    "qwerty",
    "123456789",
    "12345",
    "1234",
    "111111",
    "1234567",
    "dragon",
    "123123",
    "baseball",
    "abc123",
    "football",
    "monkey",
    "letmein",
    "696969",
    "shadow",
    "master",
    "666666",
    "qwertyuiop",
    "123321",
    "mustang",
    "1234567890",
    "michael",
    "654321",
    "superman",
    "1qaz2wsx",
    "7777777",
    "121212",
    "000000",
    "qazwsx",
    "123qwe",
    "killer",
    "trustno1",
    "jordan",
    "jennifer",
    "zxcvbnm",
    "asdfgh",
    "hunter",
    "buster",
    "soccer",
    "harley",
    "batman",
    "andrew",
    "tigger",
    "sunshine",
    "iloveyou",
    "2000",
    "charlie",
    "robert",
    "thomas",
    "hockey",
    "ranger",
    "daniel",
    "starwars",
    "klaster",
    "112233",
    "george",
    "computer",
    "michelle",
    "jessica",
    "pepper",
    "1111",
    "zxcvbn",
    "555555",
    "11111111",
    "131313",
    "freedom",
    "777777",
    "pass",
    "maggie",
    "159753",
    "aaaaaa",
    "ginger",
    "princess",
    "joshua",
    "cheese",
    "amanda",
    "summer",
    "love",
    "ashley",
    "nicole",
    "chelsea",
    "biteme",
    "matthew",
    "access",
    "yankees",
    "987654321",
    "dallas",
    "austin",
    "thunder",
    "taylor",
    "matrix",
    "password1",
    "password123",
    "passw0rd",
    "p@ssw0rd",
    "p@ssword",
    "qwerty123",
    "qwertyuiop123",
    "1q2w3e4r",
    "1q2w3e4r5t",
    "1q2w3e4r5t6y",
    "welcome",
    "welcome1",
    "welcome123",
    "changeme",
    "letmein123",
    "administrator",
    "admin123",
    "iloveyou123",
    "abcdefgh",
    "abcd1234",
    "abc12345",
    "a1b2c3d4",
    "aa123456",
    "secret",
    "secret123",
    "mailbox",
    "email123",
    "0123456789",
    "9876543210",
    "1234512345",
    "qwertzuiop",
    "asdfghjkl",
    "asdfasdf",
    "zaq12wsx",
    "!qaz2wsx",
    "football1",
    "baseball1",
    "superman1",
    "sunshine1",
    "princess1",
    "dragon123",
    "monkey123",
    "whatever",
    "trustno1!",
];

/// The rules of one signup service.
#[derive(Debug, Clone)]
pub struct Policy {
    pub domains: Vec<String>,
    pub min_password_length: usize,
    weak_passwords: BTreeSet<String>,
}

/// A signup request, as the form and the API send it.
#[derive(Debug, Clone, Default)]
pub struct Request {
    pub local_part: String,
    pub domain: String,
    pub password: String,
    pub name: String,
}

/// A request that passed: normalised (lower-case address, trimmed name).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Account {
    pub local_part: String,
    pub domain: String,
    pub password: String,
    pub name: String,
}

impl Account {
    pub fn address(&self) -> String {
        format!("{}@{}", self.local_part, self.domain)
    }
}

/// Why a request is invalid: a field and a sentence, as the API lists them.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Reason {
    pub field: &'static str,
    pub message: String,
}

/// Longest password accepted: hashing is cheap, but a megabyte password is
/// an attack on the service, not a password.
pub const MAX_PASSWORD_LENGTH: usize = 256;
/// Longest display name.
pub const MAX_NAME_LENGTH: usize = 100;

impl Policy {
    /// `extra_weak` are more known-weak passwords (the weak-passwords file).
    pub fn new(domains: Vec<String>, min_password_length: usize, extra_weak: &[String]) -> Policy {
        let weak_passwords = KNOWN_WEAK_PASSWORDS
            .iter()
            .map(|p| p.to_string())
            .chain(extra_weak.iter().map(|p| p.trim().to_lowercase()))
            .filter(|p| !p.is_empty())
            .collect();
        Policy {
            domains,
            min_password_length,
            weak_passwords,
        }
    }

    /// Every reason `request` is refused, or the normalised account.
    pub fn check(&self, request: &Request) -> Result<Account, Vec<Reason>> {
        let mut reasons = Vec::new();
        let local_part = request.local_part.trim().to_lowercase();
        let domain = request.domain.trim().to_lowercase();
        let name = request.name.trim().to_string();
        let mut reason = |field, message: String| reasons.push(Reason { field, message });

        if let Err(message) = check_local_part(&local_part) {
            reason("local_part", message);
        } else if RESERVED_LOCAL_PARTS.contains(&local_part.as_str()) {
            reason("local_part", format!("`{local_part}` is reserved"));
        }
        if !self.domains.contains(&domain) {
            reason(
                "domain",
                format!(
                    "`{}` is not offered here (choose one of: {})",
                    request.domain,
                    self.domains.join(", ")
                ),
            );
        }
        let length = request.password.chars().count();
        if length < self.min_password_length {
            reason(
                "password",
                format!(
                    "is too short: {length} characters, at least {} needed",
                    self.min_password_length
                ),
            );
        } else if length > MAX_PASSWORD_LENGTH {
            reason(
                "password",
                format!("is too long: at most {MAX_PASSWORD_LENGTH} characters"),
            );
        } else if self.is_weak(&request.password, &local_part) {
            reason(
                "password",
                "is a commonly used password (on known-weak lists) or the address itself; choose another"
                    .to_string(),
            );
        }
        if request.password.chars().any(char::is_control) {
            reason(
                "password",
                "must not contain control characters".to_string(),
            );
        }
        if name.chars().count() > MAX_NAME_LENGTH {
            reason(
                "name",
                format!("is too long: at most {MAX_NAME_LENGTH} characters"),
            );
        }
        if name.chars().any(|c| c.is_control() || c == ':') {
            reason(
                "name",
                "must not contain control characters or `:`".to_string(),
            );
        }
        if !reasons.is_empty() {
            return Err(reasons);
        }
        Ok(Account {
            local_part,
            domain,
            password: request.password.clone(),
            name,
        })
    }

    fn is_weak(&self, password: &str, local_part: &str) -> bool {
        let lower = password.to_lowercase();
        self.weak_passwords.contains(&lower)
            || (!local_part.is_empty() && lower == local_part)
            // One character repeated ("aaaaaaaaaa") or a plain run of digits.
            || lower.chars().all(|c| lower.starts_with(c))
    }
}

/// A local part the service makes: lower-case letters, digits, and `.`,
/// `-`, `_` between them; 1 to 64 characters; no two dots in a row. Narrower
/// than RFC 5321 on purpose: these work in every client and in a
/// passwd-file and a Postfix map alike.
pub fn check_local_part(local: &str) -> Result<(), String> {
    if local.is_empty() {
        return Err("must not be empty".to_string());
    }
    if local.len() > 64 {
        return Err(format!(
            "is too long: {} characters, at most 64",
            local.len()
        ));
    }
    if let Some(bad) = local
        .chars()
        .find(|c| !(c.is_ascii_lowercase() || c.is_ascii_digit() || ".-_".contains(*c)))
    {
        return Err(format!(
            "contains {bad:?}: use letters a-z, digits, and . - _ between them"
        ));
    }
    let first = local.chars().next().expect("not empty");
    let last = local.chars().last().expect("not empty");
    if !first.is_ascii_alphanumeric() || !last.is_ascii_alphanumeric() {
        return Err("must begin and end with a letter or a digit".to_string());
    }
    if local.contains("..") {
        return Err("must not contain two dots in a row".to_string());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy() -> Policy {
        Policy::new(vec!["example.net".into()], 10, &["Correct-Horse".into()])
    }

    fn request(local: &str, domain: &str, password: &str) -> Request {
        Request {
            local_part: local.into(),
            domain: domain.into(),
            password: password.into(),
            name: "Alice".into(),
        }
    }

    fn fields(result: Result<Account, Vec<Reason>>) -> Vec<&'static str> {
        result
            .err()
            .unwrap_or_default()
            .iter()
            .map(|r| r.field)
            .collect()
    }

    #[test]
    fn a_good_request_is_normalised() {
        let account = policy()
            .check(&request(" Alice.B ", "Example.NET", "tr0ub4dor&3x"))
            .unwrap();
        assert_eq!(account.address(), "alice.b@example.net");
        assert_eq!(account.name, "Alice");
    }

    #[test]
    fn every_reason_is_reported_at_once() {
        let reasons = policy()
            .check(&request("-bad", "other.org", "short"))
            .unwrap_err();
        let fields: Vec<_> = reasons.iter().map(|r| r.field).collect();
        assert_eq!(fields, ["local_part", "domain", "password"]);
        assert!(reasons[1].message.contains("example.net"), "{reasons:?}");
    }

    #[test]
    fn local_part_syntax() {
        for bad in [
            "",
            "a..b",
            ".a",
            "a.",
            "a b",
            "a+b",
            "ä",
            "a@b",
            &"x".repeat(65),
        ] {
            assert!(check_local_part(bad).is_err(), "{bad:?} accepted");
        }
        for good in ["a", "a.b", "a-b_c", "x1", &"x".repeat(64)] {
            assert!(check_local_part(good).is_ok(), "{good:?} refused");
        }
        assert_eq!(
            fields(policy().check(&request("postmaster", "example.net", "tr0ub4dor&3x"))),
            ["local_part"]
        );
    }

    #[test]
    fn weak_passwords_are_refused_whatever_their_case() {
        for weak in [
            "Password123",
            "qwertyuiop",
            "correct-horse",
            "aaaaaaaaaaaa",
            "alice.b.c.d",
        ] {
            let result = policy().check(&request("alice.b.c.d", "example.net", weak));
            assert_eq!(fields(result), ["password"], "{weak} accepted");
        }
    }
}
