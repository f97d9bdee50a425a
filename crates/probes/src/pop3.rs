//! The POP3 probe: `+OK` greeting, CAPA, optionally STLS (and CAPA again
//! over TLS) and USER/PASS, then QUIT.

use mailherd_config::CheckSection;
use tokio::time::Instant;

use crate::conversation::{starts_with_ignore_case, Conversation, MAX_REPLY_LINES};
use crate::{login_password, Goodbye, Verdict};

pub(crate) async fn probe(check: &CheckSection, deadline: Instant) -> Result<Verdict, String> {
    let mut conversation = Conversation::connect(check, deadline).await?;
    let greeting = conversation.read_line("greeting", deadline).await?;
    if !starts_with_ignore_case(&greeting, "+OK") {
        return Err(format!("unexpected greeting: {greeting}"));
    }
    let mut capabilities = capa(&mut conversation, deadline).await?;

    if check.starttls == Some(true) {
        // A server without CAPA (RFC 1939 only) may still know STLS: try it.
        if capabilities
            .as_ref()
            .is_some_and(|names| !names.iter().any(|name| name == "STLS"))
        {
            return Err("the server does not offer STLS in its CAPA".to_string());
        }
        command(&mut conversation, "STLS", "STLS", deadline).await?;
        conversation = conversation.start_tls(check, deadline).await?;
        // RFC 2595 §4: capabilities before TLS are not to be trusted.
        capabilities = capa(&mut conversation, deadline).await?;
    }

    let mut detail = greeting;
    if let Some(user) = &check.user {
        if capabilities
            .as_ref()
            .is_some_and(|names| !names.iter().any(|name| name == "USER"))
        {
            return Err(
                "the server does not offer USER here: add `starttls = true` or use `tls = true`"
                    .to_string(),
            );
        }
        let password = login_password(check)?;
        command(&mut conversation, &format!("USER {user}"), "USER", deadline).await?;
        command(
            &mut conversation,
            &format!("PASS {}", password.expose()),
            "PASS",
            deadline,
        )
        .await?;
        detail = format!("{detail} | logged in as {user}");
    }
    Ok(Verdict {
        detail,
        goodbye: Some(Goodbye::line(conversation, "QUIT", "+OK")),
    })
}

/// CAPA: the uppercased capability names, or `None` when the server does
/// not know CAPA (`-ERR`), which RFC 2449 allows.
async fn capa(
    conversation: &mut Conversation,
    deadline: Instant,
) -> Result<Option<Vec<String>>, String> {
    conversation.send("CAPA", "CAPA", deadline).await?;
    let status = conversation.read_line("CAPA reply", deadline).await?;
    if starts_with_ignore_case(&status, "-ERR") {
        return Ok(None);
    }
    if !starts_with_ignore_case(&status, "+OK") {
        return Err(format!("malformed CAPA reply: {status}"));
    }
    let mut names = Vec::new();
    for _ in 0..MAX_REPLY_LINES {
        let line = conversation.read_line("CAPA list", deadline).await?;
        if line == "." {
            return Ok(Some(names));
        }
        if let Some(name) = line.split_whitespace().next() {
            names.push(name.to_ascii_uppercase());
        }
    }
    Err(format!("CAPA list has more than {MAX_REPLY_LINES} lines"))
}

/// Sends `line` and expects `+OK`. `what` names the command in messages
/// (never the line: PASS holds the password).
async fn command(
    conversation: &mut Conversation,
    line: &str,
    what: &str,
    deadline: Instant,
) -> Result<(), String> {
    conversation.send(line, what, deadline).await?;
    let reply = conversation
        .read_line(&format!("{what} reply"), deadline)
        .await?;
    if starts_with_ignore_case(&reply, "+OK") {
        Ok(())
    } else {
        Err(format!("{what} refused: {reply}"))
    }
}
