//! The IMAP probe: `* OK` greeting, CAPABILITY, optionally STARTTLS (and
//! CAPABILITY again over TLS) and LOGIN, then LOGOUT.

use mailherd_config::CheckSection;
use tokio::time::Instant;

use crate::conversation::{starts_with_ignore_case, Conversation, MAX_REPLY_LINES};
use crate::{login_password, Goodbye, Verdict};

/// Tags commands `a1`, `a2`, … in order.
struct Tags(u32);

impl Tags {
    fn next(&mut self) -> String {
        self.0 += 1;
        format!("a{}", self.0)
    }
}

pub(crate) async fn probe(check: &CheckSection, deadline: Instant) -> Result<Verdict, String> {
    let mut conversation = Conversation::connect(check, deadline).await?;
    let greeting = conversation.read_line("greeting", deadline).await?;
    // PREAUTH is a server that is up and trusts the connection already.
    let preauth = starts_with_ignore_case(&greeting, "* PREAUTH");
    if !starts_with_ignore_case(&greeting, "* OK") && !preauth {
        return Err(format!("unexpected greeting: {greeting}"));
    }
    let mut tags = Tags(0);
    let mut capabilities = capability(&mut conversation, &mut tags, deadline).await?;

    if check.starttls == Some(true) {
        if !capabilities.iter().any(|c| c == "STARTTLS") {
            return Err("the server does not offer STARTTLS in its CAPABILITY".to_string());
        }
        let tag = tags.next();
        command(&mut conversation, &tag, "STARTTLS", "STARTTLS", deadline).await?;
        conversation = conversation.start_tls(check, deadline).await?;
        // RFC 9051 §6.2.1: capabilities before TLS are not to be trusted.
        capabilities = capability(&mut conversation, &mut tags, deadline).await?;
    }

    let mut detail = greeting;
    if let (Some(user), false) = (&check.user, preauth) {
        if capabilities.iter().any(|c| c == "LOGINDISABLED") {
            return Err(
                "the server refuses LOGIN here (LOGINDISABLED): add `starttls = true` or use `tls = true`"
                    .to_string(),
            );
        }
        let password = login_password(check)?;
        let tag = tags.next();
        let line = format!("LOGIN {} {}", quoted(user), quoted(password.expose()));
        command(&mut conversation, &tag, &line, "LOGIN", deadline).await?;
        detail = format!("{detail} | logged in as {user}");
    }
    let tag = tags.next();
    Ok(Verdict {
        detail,
        goodbye: Some(Goodbye::line_owned(
            conversation,
            format!("{tag} LOGOUT"),
            format!("{tag} "),
        )),
    })
}

/// CAPABILITY: the uppercased capability names.
async fn capability(
    conversation: &mut Conversation,
    tags: &mut Tags,
    deadline: Instant,
) -> Result<Vec<String>, String> {
    let tag = tags.next();
    let untagged = command(conversation, &tag, "CAPABILITY", "CAPABILITY", deadline).await?;
    Ok(untagged
        .iter()
        .filter(|line| starts_with_ignore_case(line, "* CAPABILITY "))
        .flat_map(|line| line["* CAPABILITY ".len()..].split_whitespace())
        .map(|name| name.to_ascii_uppercase())
        .collect())
}

/// Sends `tag line` and reads to the tagged reply, which must be OK.
/// Returns the untagged lines before it. `what` names the command in
/// messages (never the line: it may hold a password).
async fn command(
    conversation: &mut Conversation,
    tag: &str,
    line: &str,
    what: &str,
    deadline: Instant,
) -> Result<Vec<String>, String> {
    conversation
        .send(&format!("{tag} {line}"), what, deadline)
        .await?;
    let reply_what = format!("{what} reply");
    let mut untagged = Vec::new();
    for _ in 0..MAX_REPLY_LINES {
        let reply = conversation.read_line(&reply_what, deadline).await?;
        if let Some(status) = reply
            .strip_prefix(tag)
            .and_then(|rest| rest.strip_prefix(' '))
        {
            if starts_with_ignore_case(status, "OK") {
                return Ok(untagged);
            }
            return Err(format!("{what} refused: {reply}"));
        }
        if starts_with_ignore_case(&reply, "* BYE") {
            return Err(format!("the server hung up at {what}: {reply}"));
        }
        untagged.push(reply);
    }
    Err(format!(
        "{reply_what} has more than {MAX_REPLY_LINES} lines"
    ))
}

/// An IMAP quoted string (RFC 9051 §4.3): `"` and `\` escaped. Validation
/// refuses control characters, which a quoted string cannot carry.
fn quoted(text: &str) -> String {
    let mut out = String::with_capacity(text.len() + 2);
    out.push('"');
    for ch in text.chars() {
        if matches!(ch, '"' | '\\') {
            out.push('\\');
        }
        out.push(ch);
    }
    out.push('"');
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quoted_strings_escape_quotes_and_backslashes() {
        assert_eq!(quoted("alice"), "\"alice\"");
        assert_eq!(quoted("p\"w\\d"), "\"p\\\"w\\\\d\"");
    }
}
