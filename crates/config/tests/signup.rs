//! `[signup]`: the example configs that ship with the package validate,
//! and a broken signup section is refused with file, line and key.

mod common;

use common::{line_starting, parse, problem_about};
use mailherd_config::SignupBackend;

const HETZNER_MAILCOW: &str = include_str!("../../../examples/hetzner-mailcow.toml");
const CLASSIC_WITNESS: &str = include_str!("../../../examples/classic-2-nodes-witness.toml");

#[test]
fn the_packaged_examples_validate() {
    let mailcow = parse(HETZNER_MAILCOW).unwrap_or_else(|p| panic!("hetzner-mailcow.toml:\n{p}"));
    assert_eq!(mailcow.members.len(), 3);
    let signup = mailcow.signup.as_ref().expect("a [signup] section");
    assert_eq!(signup.backend, SignupBackend::Mailcow);
    assert!(mailcow.hetzner.is_some());

    let classic =
        parse(CLASSIC_WITNESS).unwrap_or_else(|p| panic!("classic-2-nodes-witness.toml:\n{p}"));
    assert_eq!(classic.members.len(), 3);
    assert_eq!(
        classic.signup.as_ref().map(|s| s.backend),
        Some(SignupBackend::Dovecot)
    );
}

/// Replaces `from` by `to` in the classic example and expects a problem
/// about `key` on the line that starts with `line_start` (searched from
/// the `[signup]` header on), whose message contains `needle`.
fn refused(from: &str, to: &str, key: &str, line_start: &str, needle: &str) {
    assert!(CLASSIC_WITNESS.contains(from), "the example lacks {from:?}");
    let text = CLASSIC_WITNESS.replacen(from, to, 1);
    let (line, message) = problem_about(&text, key);
    let signup = line_starting(&text, "[signup]", 1);
    assert_eq!(
        line,
        line_starting(&text, line_start, signup),
        "line of {key}"
    );
    assert!(message.contains(needle), "{message:?} lacks {needle:?}");
}

#[test]
fn broken_signup_sections_name_line_and_key() {
    refused(
        "domains = [\"example.org\", \"example.com\"]",
        "domains = [\"example.org\", \"example.org\"]",
        "signup.domains[1]",
        "domains =",
        "offered twice",
    );
    refused(
        "domains = [\"example.org\", \"example.com\"]",
        "domains = [\"Example.org\"]",
        "signup.domains[0]",
        "domains =",
        "lower case",
    );
    refused(
        "per_ip_limit = 3",
        "per_ip_limit = 0",
        "signup.per_ip_limit",
        "per_ip_limit",
        "at least 1",
    );
    refused(
        "global_limit = 30",
        "global_limit = 2",
        "signup.global_limit",
        "global_limit",
        "per_ip_limit (3)",
    );
    refused(
        "quota_mib = 1024\n",
        "quota_mib = 1024\nmin_password_length = 4\n",
        "signup.min_password_length",
        "min_password_length",
        "8 to 128",
    );
    refused(
        "users_file = \"/srv/mail/accounts/users\"",
        "users_file = \"accounts/users\"",
        "signup.dovecot.users_file",
        "users_file",
        "absolute",
    );
    refused(
        "postfix_map = \"hash:/srv/mail/accounts/vmailbox\"",
        "postfix_map = \"mysql:/etc/postfix/x.cf\"",
        "signup.dovecot.postfix_map",
        "postfix_map",
        "unknown map type `mysql`",
    );
    refused("uid = 5000", "uid = 0", "signup.dovecot.uid", "uid", "root");
    refused(
        "backend = \"dovecot\"",
        "backend = \"mailcow\"",
        "signup.backend",
        "backend",
        "needs a [signup.mailcow] section",
    );
    refused(
        "token_key_file = \"/etc/mailherd/signup-token-key\"",
        "token_key_file = \"/etc/mailherd/signup-token-key\"\ntoken_min_age_s = 7200",
        "signup.token_min_age_s",
        "token_min_age_s",
        "below token_max_age_s",
    );
}

#[test]
fn an_unknown_signup_key_is_named_by_the_parser() {
    let text = CLASSIC_WITNESS.replacen("quota_mib = 1024", "quota_mb = 1024", 1);
    let problems = parse(&text).expect_err("an unknown key");
    let text_of = problems.to_string();
    assert!(text_of.contains("quota_mb"), "{text_of}");
    assert!(
        text_of.starts_with(&format!(
            "node.toml:{}:",
            line_starting(&text, "quota_mb", 1)
        )),
        "{text_of}"
    );
}
