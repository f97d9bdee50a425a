//! The SMTP probe: `220` banner, `250` to EHLO, optionally STARTTLS (and
//! EHLO again over TLS) and a test message to a configured mailbox
//! (`MAIL FROM`, `RCPT TO`, `DATA`, `250` after the data), then QUIT.

use std::time::{SystemTime, UNIX_EPOCH};

use mailherd_config::CheckSection;
use tokio::time::Instant;

use crate::conversation::Conversation;
use crate::{Goodbye, Verdict, DEFAULT_EHLO_NAME};

pub(crate) async fn probe(check: &CheckSection, deadline: Instant) -> Result<Verdict, String> {
    let mut conversation = Conversation::connect(check, deadline).await?;
    let (code, banner) = conversation.read_smtp_reply("banner", deadline).await?;
    let banner = banner.into_iter().next().unwrap_or_default();
    if code != 220 {
        return Err(format!("unexpected banner: {banner}"));
    }
    let ehlo_name = check.ehlo_name.as_deref().unwrap_or(DEFAULT_EHLO_NAME);
    let keywords = ehlo(&mut conversation, ehlo_name, "EHLO reply", deadline).await?;

    if check.starttls == Some(true) {
        if !keywords.iter().any(|keyword| keyword == "STARTTLS") {
            return Err("the server does not offer STARTTLS in its EHLO reply".to_string());
        }
        conversation.send("STARTTLS", "STARTTLS", deadline).await?;
        let (code, reply) = conversation
            .read_smtp_reply("STARTTLS reply", deadline)
            .await?;
        if code != 220 {
            return Err(format!("STARTTLS refused: {}", reply[0]));
        }
        conversation = conversation.start_tls(check, deadline).await?;
        // RFC 3207: forget what was learnt before TLS and ask again.
        ehlo(
            &mut conversation,
            ehlo_name,
            "EHLO reply over TLS",
            deadline,
        )
        .await?;
    }

    let detail = match &check.test_rcpt {
        None => banner,
        Some(rcpt) => {
            let queued =
                send_test_message(&mut conversation, check, ehlo_name, rcpt, deadline).await?;
            format!("{banner} | test message: {queued}")
        }
    };
    Ok(Verdict {
        detail,
        goodbye: Some(Goodbye::line(conversation, "QUIT", "221")),
    })
}

/// Sends EHLO and returns the extension keywords of a `250` reply
/// (uppercased first words of the lines after the greeting line).
async fn ehlo(
    conversation: &mut Conversation,
    ehlo_name: &str,
    what: &str,
    deadline: Instant,
) -> Result<Vec<String>, String> {
    conversation
        .send(&format!("EHLO {ehlo_name}"), "EHLO", deadline)
        .await?;
    let (code, reply) = conversation.read_smtp_reply(what, deadline).await?;
    if code != 250 {
        return Err(format!("EHLO rejected: {}", reply[0]));
    }
    Ok(reply
        .iter()
        .skip(1)
        .filter_map(|line| line.get(4..))
        .filter_map(|text| text.split_whitespace().next())
        .map(|keyword| keyword.to_ascii_uppercase())
        .collect())
}

/// One test transaction; returns the `250` reply to the data (which names
/// the queue id).
async fn send_test_message(
    conversation: &mut Conversation,
    check: &CheckSection,
    ehlo_name: &str,
    rcpt: &str,
    deadline: Instant,
) -> Result<String, String> {
    // Without `test_from`, the mailbox writes to itself; `""` is `<>`.
    let from = check.test_from.as_deref().unwrap_or(rcpt);
    for (command, what, accepted) in [
        (format!("MAIL FROM:<{from}>"), "MAIL FROM", &[250][..]),
        // 251: "user not local; will forward" is an acceptance too.
        (format!("RCPT TO:<{rcpt}>"), "RCPT TO", &[250, 251][..]),
        ("DATA".to_string(), "DATA", &[354][..]),
    ] {
        conversation.send(&command, what, deadline).await?;
        let (code, reply) = conversation
            .read_smtp_reply(&format!("{what} reply"), deadline)
            .await?;
        if !accepted.contains(&code) {
            return Err(format!("{what} refused: {}", reply[0]));
        }
    }
    let message = test_message(&check.name, ehlo_name, from, rcpt, SystemTime::now());
    conversation
        .send_raw(message.as_bytes(), "the test message", deadline)
        .await?;
    let (code, reply) = conversation
        .read_smtp_reply("reply to the test message", deadline)
        .await?;
    if code != 250 {
        return Err(format!("test message refused: {}", reply[0]));
    }
    Ok(reply[0].clone())
}

/// The test message, ending with the `CRLF.CRLF` that closes DATA. No line
/// starts with a dot, so no dot-stuffing is needed.
fn test_message(
    check_name: &str,
    ehlo_name: &str,
    from: &str,
    rcpt: &str,
    now: SystemTime,
) -> String {
    let since_epoch = now.duration_since(UNIX_EPOCH).unwrap_or_default();
    let date = rfc5322_date(since_epoch.as_secs());
    // Operator text goes into headers: no line break may end a header early.
    let check_name: String = check_name
        .chars()
        .map(|ch| if ch.is_control() { ' ' } else { ch })
        .collect();
    let from_header = if from.is_empty() { rcpt } else { from };
    let message_id = format!(
        "{}.{}@{}",
        since_epoch.as_nanos(),
        std::process::id(),
        ehlo_name
    );
    format!(
        "From: <{from_header}>\r\n\
         To: <{rcpt}>\r\n\
         Subject: mailherd probe {check_name}\r\n\
         Date: {date}\r\n\
         Message-ID: <{message_id}>\r\n\
         X-Mailherd-Probe: {check_name}\r\n\
         \r\n\
         A health probe of mailherd (check {check_name}) sent this at {date}.\r\n\
         It can be deleted.\r\n\
         .\r\n"
    )
}

/// `Mon, 23 Nov 2026 05:33:58 +0000` for seconds since the epoch (UTC).
fn rfc5322_date(seconds: u64) -> String {
    const WEEKDAYS: [&str; 7] = ["Thu", "Fri", "Sat", "Sun", "Mon", "Tue", "Wed"];
    const MONTHS: [&str; 12] = [
        "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
    ];
    let days = seconds / 86_400;
    let time_of_day = seconds % 86_400;
    // Howard Hinnant's civil_from_days, for days since 1970-01-01.
    let z = days as i64 + 719_468;
    let era = z.div_euclid(146_097);
    let day_of_era = z.rem_euclid(146_097);
    let year_of_era =
        (day_of_era - day_of_era / 1_460 + day_of_era / 36_524 - day_of_era / 146_096) / 365;
    let day_of_year = day_of_era - (365 * year_of_era + year_of_era / 4 - year_of_era / 100);
    let month_index = (5 * day_of_year + 2) / 153;
    let day = day_of_year - (153 * month_index + 2) / 5 + 1;
    let month = if month_index < 10 {
        month_index + 3
    } else {
        month_index - 9
    };
    let year = year_of_era + era * 400 + i64::from(month <= 2);
    format!(
        "{}, {:02} {} {} {:02}:{:02}:{:02} +0000",
        WEEKDAYS[(days % 7) as usize],
        day,
        MONTHS[(month - 1) as usize],
        year,
        time_of_day / 3_600,
        time_of_day % 3_600 / 60,
        time_of_day % 60
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn dates_are_rfc5322() {
        assert_eq!(rfc5322_date(0), "Thu, 01 Jan 1970 00:00:00 +0000");
        assert_eq!(rfc5322_date(951_782_400), "Tue, 29 Feb 2000 00:00:00 +0000");
        assert_eq!(
            rfc5322_date(1_795_412_038),
            "Mon, 23 Nov 2026 05:33:58 +0000"
        );
    }

    #[test]
    fn the_test_message_ends_data_and_keeps_headers_on_one_line() {
        let message = test_message(
            "smtp\r\nBcc: x@evil.test",
            "n1.lab.test",
            "",
            "probe@lab.test",
            UNIX_EPOCH + Duration::from_secs(0),
        );
        assert!(message.ends_with("\r\n.\r\n"));
        assert!(message.starts_with("From: <probe@lab.test>\r\nTo: <probe@lab.test>\r\n"));
        assert!(!message.contains("\r\nBcc:"), "{message}");
        assert!(message.contains("Date: Thu, 01 Jan 1970 00:00:00 +0000\r\n"));
        assert!(!message
            .lines()
            .any(|line| line.starts_with('.') && line != "."));
    }
}
