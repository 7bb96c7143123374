//! Subjects: the people to erase, as the DBA names them, turned into what Matomo stored.
//!
//! A user id is typed as the application sent it to the tracker. Matomo's tracker sanitises the
//! `uid` parameter before storing it: 4-byte characters become U+FFFD when the database charset
//! is not utf8mb4, line breaks and NUL bytes are dropped, HTML entities are decoded and the result
//! is HTML-escaped (`&`, `"`, `'`, `<`, `>`). `log_visit.user_id` holds that string cut to 200
//! characters; `idvisitor` is the first 8 bytes of SHA-1 of the uncut string. With
//! pseudonymisation on, both are based on `sha1(sanitised . useridsalt)` instead.
//!
//! This module never touches the database and never logs a raw identifier: everything that
//! leaves it for logs or receipts is a `receipt_hash`.

use crate::error::usage;
use sha1::{Digest, Sha1};
use sha2::Sha256;
use std::io::{BufRead, BufReader, Read};
use std::path::Path;

/// Matomo's `UserId::MAXLENGTH`: characters, not bytes.
pub const USER_ID_MAX_CHARS: usize = 200;

/// One form of a user id as Matomo may have stored it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StoredUserId {
    /// Exactly what `log_visit.user_id` holds (escaped, cut to 200 characters).
    pub stored: String,
    /// `idvisitor` that Matomo derives from it when user id and visitor id are linked.
    pub idvisitor: [u8; 8],
}

/// A subject named by user id, with every stored form to look for.
#[derive(Clone, Debug)]
pub struct UserIdSubject {
    /// Plain form first, then the pseudonym form when the install has a user-id salt.
    pub forms: Vec<StoredUserId>,
    pub receipt_hash: String,
}

/// Options of the install that change how a user id is stored.
#[derive(Clone, Debug, Default)]
pub struct StorageRules {
    /// `log_visit.user_id` is not utf8mb4: 4-byte characters were replaced by U+FFFD.
    pub replace_4byte: bool,
    /// Option `useridsalt`, present once pseudonymisation was ever set up.
    pub pseudonym_salt: Option<String>,
}

impl UserIdSubject {
    pub fn new(typed: &str, rules: &StorageRules) -> anyhow::Result<UserIdSubject> {
        let sanitised = sanitise(typed, rules.replace_4byte);
        if sanitised.is_empty() {
            return Err(usage(
                "a user id is empty (after removing line breaks and NUL bytes, as Matomo does); \
                 Matomo never stores an empty user id: remove it from the input",
            ));
        }
        let mut forms = vec![stored_form(&sanitised)];
        if let Some(salt) = &rules.pseudonym_salt {
            let pseudonym = hex::encode(Sha1::digest(format!("{sanitised}{salt}").as_bytes()));
            forms.push(stored_form(&pseudonym));
        }
        Ok(UserIdSubject {
            receipt_hash: receipt_hash(&sanitised),
            forms,
        })
    }
}

fn stored_form(sanitised: &str) -> StoredUserId {
    let digest = Sha1::digest(sanitised.as_bytes());
    let mut idvisitor = [0u8; 8];
    idvisitor.copy_from_slice(&digest[..8]);
    StoredUserId {
        stored: sanitised.chars().take(USER_ID_MAX_CHARS).collect(),
        idvisitor,
    }
}

/// Matomo's tracker input sanitising for a string parameter, in its order.
pub fn sanitise(raw: &str, replace_4byte: bool) -> String {
    let mut value: String = if replace_4byte {
        raw.chars()
            .map(|c| if (c as u32) >= 0x10000 { '\u{FFFD}' } else { c })
            .collect()
    } else {
        raw.to_owned()
    };
    value.retain(|c| c != '\n' && c != '\r');
    // Limitation: html-escape decodes the HTML5 entity table; PHP's html_entity_decode with
    // ENT_QUOTES uses HTML 4.01's, so a name that exists only in HTML5 (`&apos;`, `&nbsp` forms
    // are fine) is decoded here but kept by Matomo. Such ids are vanishingly rare; a PHP-table
    // decoder would fix it.
    let mut value = html_escape::decode_html_entities(&value).into_owned();
    value.retain(|c| c != '\0');
    escape_html(&value)
}

/// PHP's htmlspecialchars with ENT_QUOTES: five characters, `'` as `&#039;`.
fn escape_html(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 8);
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#039;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            _ => out.push(c),
        }
    }
    out
}

/// The only form of a subject identifier that may appear in logs, plans and receipts.
pub fn receipt_hash(identifier: &str) -> String {
    let digest = Sha256::digest(format!("matomo-erase:{identifier}").as_bytes());
    hex::encode(&digest[..8])
}

/// Parses a 16-hex-digit visitor id as Matomo's `visitorId` segment accepts it.
pub fn parse_visitor_id(text: &str) -> anyhow::Result<[u8; 8]> {
    let t = text.trim();
    let mut out = [0u8; 8];
    if t.len() != 16 || hex::decode_to_slice(t, &mut out).is_err() {
        return Err(usage(format!(
            "invalid visitor id {:?}: a visitor id is exactly 16 hexadecimal digits \
             (as shown in Matomo's visitor log), e.g. 59efd53f1af69d6b",
            crate::report::elide(t)
        )));
    }
    Ok(out)
}

/// Reads user ids one a line from a file or `-` (stdin), streaming: memory does not grow with
/// the input. Blank lines are skipped; every other line is a user id as it is (only the line
/// ending is removed), since spaces are significant in a user id.
pub struct UserIdLines {
    reader: Box<dyn BufRead + Send>,
    line_no: usize,
    buf: Vec<u8>,
}

impl UserIdLines {
    pub fn open(path: &Path) -> anyhow::Result<UserIdLines> {
        let reader: Box<dyn BufRead + Send> = if path.as_os_str() == "-" {
            Box::new(BufReader::new(std::io::stdin()))
        } else {
            let file = std::fs::File::open(path).map_err(|e| {
                usage(format!(
                    "cannot read {}: {e}; give an existing file with one id a line",
                    path.display()
                ))
            })?;
            Box::new(BufReader::with_capacity(1 << 16, file))
        };
        Ok(UserIdLines {
            reader,
            line_no: 0,
            buf: Vec::new(),
        })
    }

    pub fn from_reader(reader: impl Read + Send + 'static) -> UserIdLines {
        UserIdLines {
            reader: Box::new(BufReader::new(reader)),
            line_no: 0,
            buf: Vec::new(),
        }
    }

    /// The next user id, or None at the end of the input.
    pub fn next_id(&mut self) -> anyhow::Result<Option<String>> {
        loop {
            self.buf.clear();
            let n = self.reader.read_until(b'\n', &mut self.buf)?;
            if n == 0 {
                return Ok(None);
            }
            self.line_no += 1;
            while matches!(self.buf.last(), Some(b'\n' | b'\r')) {
                self.buf.pop();
            }
            // A byte-order mark that editors put at the start of a file is not part of the id.
            if self.line_no == 1 && self.buf.starts_with(&[0xEF, 0xBB, 0xBF]) {
                self.buf.drain(..3);
            }
            if self.buf.is_empty() {
                continue;
            }
            let line = std::str::from_utf8(&self.buf).map_err(|_| {
                usage(format!(
                    "line {} of the ids file is not valid UTF-8; save the file as UTF-8",
                    self.line_no
                ))
            })?;
            return Ok(Some(line.to_owned()));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escapes_like_matomos_tracker() {
        assert_eq!(
            sanitise("<script>_x(13)</script>", false),
            "&lt;script&gt;_x(13)&lt;/script&gt;"
        );
        assert_eq!(
            sanitise("o'brien & \"co\"", false),
            "o&#039;brien &amp; &quot;co&quot;"
        );
        // Entities are decoded first, so an already escaped id is not escaped twice.
        assert_eq!(sanitise("a&amp;b", false), "a&amp;b");
        assert_eq!(sanitise("caf&eacute;", false), "café");
        assert_eq!(sanitise("line\r\nbreak\0", false), "linebreak");
    }

    #[test]
    fn four_byte_characters_replaced_only_without_utf8mb4() {
        assert_eq!(sanitise("a😀b", false), "a😀b");
        assert_eq!(sanitise("a😀b", true), "a\u{FFFD}b");
    }

    #[test]
    fn idvisitor_is_sha1_prefix_of_the_uncut_escaped_id() {
        let s = UserIdSubject::new("alice.peer@example.org", &StorageRules::default()).unwrap();
        assert_eq!(hex::encode(s.forms[0].idvisitor), "59efd53f1af69d6b");
        assert_eq!(s.forms.len(), 1);
    }

    #[test]
    fn long_id_is_cut_after_escaping_and_hashed_uncut() {
        let typed = format!("{}'tail", "x".repeat(197));
        let s = UserIdSubject::new(&typed, &StorageRules::default()).unwrap();
        // 197 x + "&#0" = 200 characters: the entity is split, as Matomo's mb_substr does.
        assert_eq!(s.forms[0].stored, format!("{}&#0", "x".repeat(197)));
        let full = format!("{}&#039;tail", "x".repeat(197));
        let digest = Sha1::digest(full.as_bytes());
        assert_eq!(&s.forms[0].idvisitor[..], &digest[..8]);
    }

    #[test]
    fn pseudonym_form_uses_the_salt() {
        let rules = StorageRules {
            replace_4byte: false,
            pseudonym_salt: Some("pepper".into()),
        };
        let s = UserIdSubject::new("bob", &rules).unwrap();
        let pseudonym = hex::encode(Sha1::digest(b"bobpepper"));
        assert_eq!(s.forms[1].stored, pseudonym);
        let digest = Sha1::digest(pseudonym.as_bytes());
        assert_eq!(&s.forms[1].idvisitor[..], &digest[..8]);
    }

    #[test]
    fn empty_and_bad_input_is_refused() {
        assert!(UserIdSubject::new("", &StorageRules::default()).is_err());
        assert!(UserIdSubject::new("\r\n", &StorageRules::default()).is_err());
        assert!(parse_visitor_id("59efd53f1af69d6").is_err());
        assert!(parse_visitor_id("59efd53f1af69d6z").is_err());
        assert_eq!(parse_visitor_id("59EFD53F1AF69D6B").unwrap()[0], 0x59);
    }

    #[test]
    fn user_id_lines_skip_blanks_and_keep_spaces() {
        let mut lines =
            UserIdLines::from_reader(std::io::Cursor::new(b"\xEF\xBB\xBFa\r\n\n b \nc".to_vec()));
        assert_eq!(lines.next_id().unwrap().as_deref(), Some("a"));
        assert_eq!(lines.next_id().unwrap().as_deref(), Some(" b "));
        assert_eq!(lines.next_id().unwrap().as_deref(), Some("c"));
        assert_eq!(lines.next_id().unwrap(), None);
    }
}
