//! Mail templates (minijinja): a subject, a plain-text and an HTML template per
//! [`MailKind`], read once at start from the operator's folder, each file that is
//! missing there taken from the copies built into the binary.
//!
//! Files are `<kind>.subject.txt`, `<kind>.txt` and `<kind>.html` (kinds:
//! `verification`, `password_reset`, `email_change`, `newsletter_confirmation`,
//! `campaign`), plus `layout.html` that the HTML templates extend. HTML templates are
//! auto-escaped; text and subject templates are not (they are not markup).

use std::path::{Path, PathBuf};

use minijinja::{AutoEscape, Environment, UndefinedBehavior};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

/// Each kind of mail Gatehouse sends, with the variables its templates receive.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum MailKind {
    /// Confirms a new account's address: `app_name`, `email`, `name` (may be null), `link`.
    Verification,
    /// Lets a user choose a new password: `app_name`, `email`, `name`, `link`.
    PasswordReset,
    /// Confirms a new address for an account: `app_name`, `email` (the new one), `name`, `link`.
    EmailChange,
    /// Double opt-in of a newsletter subscription: `app_name`, `email`, `name`, `link`.
    NewsletterConfirmation,
    /// A newsletter campaign: `app_name`, `email`, `name`, `subject`, `text`, `html`
    /// (the administrator's markup, inserted unescaped), `unsubscribe_url`.
    Campaign,
}

impl MailKind {
    pub const ALL: [MailKind; 5] = [
        MailKind::Verification,
        MailKind::PasswordReset,
        MailKind::EmailChange,
        MailKind::NewsletterConfirmation,
        MailKind::Campaign,
    ];

    /// The name used in template file names, the outbox and the API.
    pub fn as_str(self) -> &'static str {
        match self {
            MailKind::Verification => "verification",
            MailKind::PasswordReset => "password_reset",
            MailKind::EmailChange => "email_change",
            MailKind::NewsletterConfirmation => "newsletter_confirmation",
            MailKind::Campaign => "campaign",
        }
    }
}

/// The three parts of a mail, rendered.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RenderedMail {
    pub subject: String,
    pub text: String,
    pub html: String,
}

/// A template that could not be read, parsed or rendered.
#[derive(Debug, thiserror::Error)]
pub enum TemplateError {
    #[error("cannot read mail template {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("mail template {name}: {source:#}")]
    Template {
        name: String,
        source: minijinja::Error,
    },
}

/// The copies of `templates/mail/` built into the binary.
const BUILT_IN: &[(&str, &str)] = &[
    (
        "layout.html",
        include_str!("../../templates/mail/layout.html"),
    ),
    (
        "verification.subject.txt",
        include_str!("../../templates/mail/verification.subject.txt"),
    ),
    (
        "verification.txt",
        include_str!("../../templates/mail/verification.txt"),
    ),
    (
        "verification.html",
        include_str!("../../templates/mail/verification.html"),
    ),
    (
        "password_reset.subject.txt",
        include_str!("../../templates/mail/password_reset.subject.txt"),
    ),
    (
        "password_reset.txt",
        include_str!("../../templates/mail/password_reset.txt"),
    ),
    (
        "password_reset.html",
        include_str!("../../templates/mail/password_reset.html"),
    ),
    (
        "email_change.subject.txt",
        include_str!("../../templates/mail/email_change.subject.txt"),
    ),
    (
        "email_change.txt",
        include_str!("../../templates/mail/email_change.txt"),
    ),
    (
        "email_change.html",
        include_str!("../../templates/mail/email_change.html"),
    ),
    (
        "newsletter_confirmation.subject.txt",
        include_str!("../../templates/mail/newsletter_confirmation.subject.txt"),
    ),
    (
        "newsletter_confirmation.txt",
        include_str!("../../templates/mail/newsletter_confirmation.txt"),
    ),
    (
        "newsletter_confirmation.html",
        include_str!("../../templates/mail/newsletter_confirmation.html"),
    ),
    (
        "campaign.subject.txt",
        include_str!("../../templates/mail/campaign.subject.txt"),
    ),
    (
        "campaign.txt",
        include_str!("../../templates/mail/campaign.txt"),
    ),
    (
        "campaign.html",
        include_str!("../../templates/mail/campaign.html"),
    ),
];

/// The mail templates of an instance, loaded once at start and shared (as `Arc`).
pub struct MailTemplates {
    env: Environment<'static>,
    /// Which files came from the operator's folder, for the start-up log.
    overridden: Vec<String>,
}

impl std::fmt::Debug for MailTemplates {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MailTemplates")
            .field("overridden", &self.overridden)
            .finish_non_exhaustive()
    }
}

impl MailTemplates {
    /// The built-in templates, each replaced by the file of the same name in `dir` when
    /// there is one. A missing `dir` means no replacements.
    pub fn load(dir: &Path) -> Result<Self, TemplateError> {
        let mut env = new_environment();
        let mut overridden = Vec::new();
        for (name, built_in) in BUILT_IN {
            let path = dir.join(name);
            let source = match std::fs::read_to_string(&path) {
                Ok(source) => {
                    overridden.push((*name).to_string());
                    source
                }
                Err(err) if err.kind() == std::io::ErrorKind::NotFound => built_in.to_string(),
                Err(source) => return Err(TemplateError::Read { path, source }),
            };
            env.add_template_owned(*name, source)
                .map_err(|source| TemplateError::Template {
                    name: path.display().to_string(),
                    source,
                })?;
        }
        Ok(Self { env, overridden })
    }

    /// The built-in templates only.
    pub fn built_in() -> Self {
        Self::load(Path::new("")).expect("the built-in mail templates are valid")
    }

    /// Names of the templates replaced by the operator's files.
    pub fn overridden(&self) -> &[String] {
        &self.overridden
    }

    /// Renders the subject, text and HTML templates of `kind` with `context`.
    pub fn render(
        &self,
        kind: MailKind,
        context: &serde_json::Value,
    ) -> Result<RenderedMail, TemplateError> {
        let render = |suffix: &str| {
            let name = format!("{}.{suffix}", kind.as_str());
            self.env
                .get_template(&name)
                .and_then(|template| template.render(context))
                .map_err(|source| TemplateError::Template { name, source })
        };
        Ok(RenderedMail {
            subject: one_line(&render("subject.txt")?),
            text: render("txt")?,
            html: render("html")?,
        })
    }
}

fn new_environment() -> Environment<'static> {
    let mut env = Environment::new();
    // A misspelt variable fails the render instead of silently sending a mail with a
    // blank link; `{% if name %}` still works for optional values.
    env.set_undefined_behavior(UndefinedBehavior::SemiStrict);
    env.set_keep_trailing_newline(true);
    // minijinja's HTML escaping also escapes `/`, which turns every link into
    // `https:&#x2f;&#x2f;…`: valid, but unreadable in a mail's source and disliked by
    // spam filters. Escaping the five markup characters is what HTML needs.
    env.set_formatter(|out, state, value| {
        if state.auto_escape() == AutoEscape::Html
            && !value.is_safe()
            && !value.is_undefined()
            && !value.is_none()
        {
            Ok(out.write_str(&escape_html(&value.to_string()))?)
        } else {
            minijinja::escape_formatter(out, state, value)
        }
    });
    env
}

/// Text made safe to put in HTML content or a quoted attribute.
pub fn escape_html(text: &str) -> String {
    let mut escaped = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => escaped.push_str("&amp;"),
            '<' => escaped.push_str("&lt;"),
            '>' => escaped.push_str("&gt;"),
            '"' => escaped.push_str("&quot;"),
            '\'' => escaped.push_str("&#39;"),
            c => escaped.push(c),
        }
    }
    escaped
}

/// Subjects are one header line: line breaks and runs of spaces become one space.
fn one_line(text: &str) -> String {
    text.split_whitespace().collect::<Vec<_>>().join(" ")
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn context() -> serde_json::Value {
        json!({
            "app_name": "Acme",
            "link": "https://acme.test/verify?token=abc&x=1",
            "email": "ann@example.com",
            "name": "<Ann & Co>",
        })
    }

    #[test]
    fn every_kind_renders_all_three_parts() {
        let templates = MailTemplates::built_in();
        let mut context = context();
        context["subject"] = json!("News");
        context["text"] = json!("Plain news");
        context["html"] = json!("<p>HTML news</p>");
        context["unsubscribe_url"] = json!("https://acme.test/unsub?token=u");
        for kind in MailKind::ALL {
            let mail = templates.render(kind, &context).unwrap();
            assert!(!mail.subject.is_empty(), "{kind:?}");
            assert!(!mail.subject.contains('\n'), "{kind:?}");
            assert!(mail.text.contains("ann@example.com"), "{kind:?}");
            assert!(mail.html.contains("<!DOCTYPE html>"), "{kind:?}");
        }
    }

    #[test]
    fn html_is_escaped_and_text_is_not() {
        let mail = MailTemplates::built_in()
            .render(MailKind::Verification, &context())
            .unwrap();
        assert!(mail.html.contains("&lt;Ann &amp; Co&gt;"), "{}", mail.html);
        assert!(
            mail.html
                .contains("href=\"https://acme.test/verify?token=abc&amp;x=1\""),
            "{}",
            mail.html
        );
        assert!(!mail.html.contains("<Ann"), "{}", mail.html);
        assert!(mail.text.contains("Hello <Ann & Co>,"), "{}", mail.text);
        assert!(mail.text.contains("https://acme.test/verify?token=abc&x=1"));
        assert_eq!(mail.subject, "Verify your Acme email");
    }

    #[test]
    fn a_missing_variable_is_an_error_not_a_blank() {
        let err = MailTemplates::built_in()
            .render(
                MailKind::PasswordReset,
                &json!({"app_name": "Acme", "email": "a@b.c"}),
            )
            .unwrap_err();
        assert!(err.to_string().contains("password_reset"), "{err}");
    }

    #[test]
    fn operator_files_replace_built_in_ones() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(
            dir.path().join("verification.subject.txt"),
            "Welcome to {{ app_name }}\n\n",
        )
        .unwrap();
        let templates = MailTemplates::load(dir.path()).unwrap();
        assert_eq!(templates.overridden(), ["verification.subject.txt"]);
        let mail = templates
            .render(MailKind::Verification, &context())
            .unwrap();
        assert_eq!(mail.subject, "Welcome to Acme");
        assert!(mail.text.contains("confirm that ann@example.com"));
    }

    #[test]
    fn a_broken_operator_template_names_its_file() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("campaign.html"), "{% if %}").unwrap();
        let err = MailTemplates::load(dir.path()).unwrap_err();
        assert!(err.to_string().contains("campaign.html"), "{err}");
    }
}
