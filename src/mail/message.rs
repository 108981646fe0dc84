//! Turns an outbox row into an RFC 5322 message: multipart/alternative with a text and
//! an HTML part, Message-ID, Date, and the row's extra headers.

use lettre::message::header::{HeaderName, HeaderValue};
use lettre::message::{Mailbox, MultiPart};
use lettre::Message;

use super::outbox::OutboxMail;

/// The Message-ID of an outbox row: the same on every attempt, so that a receiver can
/// recognise a mail delivered twice after a crash between sending and recording it.
pub fn message_id(outbox_id: &str, from: &Mailbox) -> String {
    format!("<{outbox_id}@{}>", from.email.domain())
}

/// Builds the message of `mail`. An error means the row can never be sent.
pub fn build(mail: &OutboxMail, from: &Mailbox) -> Result<Message, String> {
    let address = mail
        .recipient
        .parse()
        .map_err(|err| format!("recipient {:?}: {err}", mail.recipient))?;
    let to = Mailbox::new(mail.recipient_name.clone(), address);
    let mut message = Message::builder()
        .from(from.clone())
        .to(to)
        .subject(mail.subject.clone())
        .message_id(Some(message_id(&mail.id, from)))
        .date_now()
        .multipart(MultiPart::alternative_plain_html(
            mail.text_body.clone(),
            mail.html_body.clone(),
        ))
        .map_err(|err| format!("cannot build the message: {err}"))?;
    let headers = mail
        .extra_headers()
        .map_err(|err| format!("stored headers are unreadable: {err}"))?;
    for (name, value) in headers {
        let name = HeaderName::new_from_ascii(name.clone())
            .map_err(|_| format!("invalid header name {name:?}"))?;
        message
            .headers_mut()
            .insert_raw(HeaderValue::new(name, value));
    }
    Ok(message)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row() -> OutboxMail {
        OutboxMail {
            id: "0b5c".into(),
            kind: "campaign".into(),
            recipient: "ann@example.com".into(),
            recipient_name: Some("Ann Ä".into()),
            subject: "Größe".into(),
            text_body: "plain".into(),
            html_body: "<p>html</p>".into(),
            headers: r#"[["List-Unsubscribe","<https://x.test/u?t=1>"],["List-Unsubscribe-Post","List-Unsubscribe=One-Click"]]"#.into(),
            campaign_id: None,
            status: "sending".into(),
            attempts: 1,
            next_attempt_at: 0,
            claimed_by: None,
            claimed_until: None,
            last_error: None,
            created_at: 0,
            updated_at: 0,
            finished_at: None,
        }
    }

    #[test]
    fn messages_have_both_parts_and_all_headers() {
        let from: Mailbox = "Acme <news@acme.test>".parse().unwrap();
        let raw = String::from_utf8(build(&row(), &from).unwrap().formatted()).unwrap();
        assert!(raw.contains("Message-ID: <0b5c@acme.test>"), "{raw}");
        assert!(raw.contains("Date: "), "{raw}");
        assert!(raw.contains("multipart/alternative"), "{raw}");
        assert!(raw.contains("text/plain"), "{raw}");
        assert!(raw.contains("text/html"), "{raw}");
        assert!(
            raw.contains("List-Unsubscribe: <https://x.test/u?t=1>"),
            "{raw}"
        );
        assert!(
            raw.contains("List-Unsubscribe-Post: List-Unsubscribe=One-Click"),
            "{raw}"
        );
    }

    #[test]
    fn an_invalid_recipient_is_a_permanent_problem() {
        let from: Mailbox = "news@acme.test".parse().unwrap();
        let mut row = row();
        row.recipient = "nobody".into();
        assert!(build(&row, &from).unwrap_err().contains("recipient"));
    }
}
