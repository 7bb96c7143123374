//! Subjects: the people to erase, as the DBA names them, turned into what Matomo stored.
//!
//! A user id is typed as the application sent it to the tracker. Matomo's tracker sanitises the
//! `uid` parameter before storing it: 4-byte characters become U+FFFD when the database charset
//! is not utf8mb4, line breaks and NUL bytes are dropped, HTML entities are decoded with PHP's
//! HTML 4.01 rules and the result is HTML-escaped (`&`, `"`, `'`, `<`, `>`). `log_visit.user_id`
//! holds that string cut to 200 characters; `idvisitor` is the first 8 bytes of SHA-1 of the
//! uncut string. With pseudonymisation on, both are based on `sha1(sanitised . useridsalt)`
//! instead.
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
    /// The id sanitised as Matomo stores it in this column first; then, when it has 4-byte
    /// characters and the column keeps them, the same with those replaced by U+FFFD; then the
    /// pseudonym of each, when the install has a user-id salt.
    pub forms: Vec<StoredUserId>,
    pub receipt_hash: String,
}

/// Options of the install that change how a user id is stored.
///
/// Limitation: a `user_id` column in a single-byte character set (latin1) written by a
/// non-strict connection stores a character it lacks as `?` (`Łukasz` as `?ukasz`); that
/// form is not looked for, so such visits are listed neither as matches nor as near matches.
/// Asking the server for each id's stored form (CONVERT to the column's character set) and
/// confirming it by visitor id would find them.
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
        // Matomo replaces 4-byte characters by U+FFFD when its config charset is not utf8mb4,
        // whatever the column can hold, and did so before it supported utf8mb4: a utf8mb4 column
        // may hold either form. The replaced form is what Matomo stores for this typed id under
        // those settings, and its visitor id is derived from it, so by Matomo's own rules its
        // visits are this subject's: ids that differ only in which 4-byte characters they hold
        // were one visitor to Matomo. It is one more exact stored id with its own visitor id,
        // never a pattern. A column that cannot hold 4-byte characters has only this form.
        //
        // Limitation: an id typed with U+FFFD itself where this one has a 4-byte character is
        // stored as the same text with the same visitor id, so its visits are found too;
        // nothing in the database tells the two apart.
        let mut sanitised_forms = vec![sanitised.clone()];
        if !rules.replace_4byte {
            let replaced = sanitise(typed, true);
            if replaced != sanitised {
                sanitised_forms.push(replaced);
            }
        }
        let mut forms: Vec<StoredUserId> = sanitised_forms.iter().map(|s| stored_form(s)).collect();
        if let Some(salt) = &rules.pseudonym_salt {
            for s in &sanitised_forms {
                let pseudonym = hex::encode(Sha1::digest(format!("{s}{salt}").as_bytes()));
                forms.push(stored_form(&pseudonym));
            }
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

    let mut value = html_entities::decode(&value);
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

/// PHP's `html_entity_decode($s, ENT_QUOTES, 'UTF-8')` with its default HTML 4.01 document
/// type, which Matomo's tracker applies to every string parameter.
///
/// Hand-written because no maintained crate decodes with PHP's table: they follow HTML5, whose
/// 2,000-odd names (`&apos;`, `&excl;`, `&AMP;`, `&nbsp` without a semicolon) PHP leaves alone,
/// and whose numeric rules differ (HTML5 maps `&#128;` to `€`; PHP keeps it). Every such
/// difference makes the stored form of a user id differ from what Matomo stored, so a subject
/// would be missed, or another person who was stored under that form would be erased. The rules
/// followed here are those of PHP's `ext/standard/html.c`:
///
/// - `&name;`: a name of ASCII letters and digits, case-sensitive, from the 252 of HTML 4.01.
/// - `&#NNN;`, `&#xHH;`, `&#XHH;`: decoded when the code point is one HTML 4.01 allows.
/// - Anything else (no semicolon, unknown name, code point not allowed) is kept as it is, and
///   the output is never decoded again (`&amp;lt;` becomes `&lt;`).
mod html_entities {
    pub fn decode(s: &str) -> String {
        let mut out = String::with_capacity(s.len());
        let mut copied = 0;
        let mut from = 0;
        while let Some(found) = s[from..].find('&') {
            let amp = from + found;
            match entity_at(&s[amp + 1..]) {
                Some((c, len)) => {
                    out.push_str(&s[copied..amp]);
                    out.push(c);
                    from = amp + 1 + len;
                    copied = from;
                }
                // PHP resumes after the bytes it looked at; none of them can be an `&`, so
                // resuming right after this one finds the same next entity.
                None => from = amp + 1,
            }
        }
        out.push_str(&s[copied..]);
        out
    }

    /// The character of the entity that `rest` (the text after an `&`) starts with, and the
    /// length of that entity without the `&`, semicolon included.
    fn entity_at(rest: &str) -> Option<(char, usize)> {
        let bytes = rest.as_bytes();
        if bytes.first() == Some(&b'#') {
            let (code_point, len) = numeric(&bytes[1..])?;
            let c = char::from_u32(code_point).filter(|_| allowed(code_point))?;
            return Some((c, 1 + len));
        }
        let len = bytes
            .iter()
            .take_while(|b| b.is_ascii_alphanumeric())
            .count();
        if len == 0 || bytes.get(len) != Some(&b';') {
            return None;
        }
        let name = &rest[..len];
        let at = ENTITIES.binary_search_by(|(n, _)| n.cmp(&name)).ok()?;
        Some((ENTITIES[at].1, len + 1))
    }

    /// The code point of `NNN;`, `xHH;` or `XHH;`, and its length with the semicolon.
    fn numeric(bytes: &[u8]) -> Option<(u32, usize)> {
        let hex = matches!(bytes.first(), Some(b'x' | b'X'));
        let mut at = usize::from(hex);
        let radix = if hex { 16 } else { 10 };
        let is_digit = |b: &u8| (*b as char).is_digit(radix);
        if !bytes.get(at).is_some_and(is_digit) {
            return None;
        }
        // PHP reads the digits with C's strtol, which takes a `0x` prefix in base 16: `&#x0x41;`
        // is `A` to PHP.
        if hex
            && bytes.get(at) == Some(&b'0')
            && matches!(bytes.get(at + 1), Some(b'x' | b'X'))
            && bytes.get(at + 2).is_some_and(is_digit)
        {
            at += 2;
        }
        // Any number of digits; past U+10FFFF the value only needs to stay too large.
        let mut value: u32 = 0;
        while let Some(digit) = bytes.get(at).and_then(|b| (*b as char).to_digit(radix)) {
            value = value.saturating_mul(radix).saturating_add(digit);
            at += 1;
        }
        if bytes.get(at) != Some(&b';') || value > 0x10FFFF {
            return None;
        }
        Some((value, at + 1))
    }

    /// PHP's `unicode_cp_is_allowed` for HTML 4.01: the document character set of HTML 4.01's
    /// SGML declaration, so no C0/C1 controls but tab, LF and CR, and no surrogates.
    /// Noncharacters (U+FDD0..U+FDEF, U+xFFFE, U+xFFFF) are allowed: PHP excludes them for
    /// HTML5 only, and PHP 8.2 decodes `&#xFFFE;` with ENT_QUOTES.
    fn allowed(cp: u32) -> bool {
        matches!(cp, 0x09 | 0x0A | 0x0D | 0x20..=0x7E | 0xA0..=0xD7FF | 0xE000..=0x10FFFF)
    }

    /// The 252 character entity references of HTML 4.01 (HTMLlat1, HTMLsymbol, HTMLspecial),
    /// sorted by name in byte order for a binary search. `&lang;` and `&rang;` are U+2329 and
    /// U+232A, as HTML 4.01 defines them (HTML5 moved them to U+27E8 and U+27E9).
    #[rustfmt::skip]
    pub(super) const ENTITIES: [(&str, char); 252] = [
        ("AElig", '\u{00C6}'),    ("Aacute", '\u{00C1}'),   ("Acirc", '\u{00C2}'),
        ("Agrave", '\u{00C0}'),   ("Alpha", '\u{0391}'),    ("Aring", '\u{00C5}'),
        ("Atilde", '\u{00C3}'),   ("Auml", '\u{00C4}'),     ("Beta", '\u{0392}'),
        ("Ccedil", '\u{00C7}'),   ("Chi", '\u{03A7}'),      ("Dagger", '\u{2021}'),
        ("Delta", '\u{0394}'),    ("ETH", '\u{00D0}'),      ("Eacute", '\u{00C9}'),
        ("Ecirc", '\u{00CA}'),    ("Egrave", '\u{00C8}'),   ("Epsilon", '\u{0395}'),
        ("Eta", '\u{0397}'),      ("Euml", '\u{00CB}'),     ("Gamma", '\u{0393}'),
        ("Iacute", '\u{00CD}'),   ("Icirc", '\u{00CE}'),    ("Igrave", '\u{00CC}'),
        ("Iota", '\u{0399}'),     ("Iuml", '\u{00CF}'),     ("Kappa", '\u{039A}'),
        ("Lambda", '\u{039B}'),   ("Mu", '\u{039C}'),       ("Ntilde", '\u{00D1}'),
        ("Nu", '\u{039D}'),       ("OElig", '\u{0152}'),    ("Oacute", '\u{00D3}'),
        ("Ocirc", '\u{00D4}'),    ("Ograve", '\u{00D2}'),   ("Omega", '\u{03A9}'),
        ("Omicron", '\u{039F}'),  ("Oslash", '\u{00D8}'),   ("Otilde", '\u{00D5}'),
        ("Ouml", '\u{00D6}'),     ("Phi", '\u{03A6}'),      ("Pi", '\u{03A0}'),
        ("Prime", '\u{2033}'),    ("Psi", '\u{03A8}'),      ("Rho", '\u{03A1}'),
        ("Scaron", '\u{0160}'),   ("Sigma", '\u{03A3}'),    ("THORN", '\u{00DE}'),
        ("Tau", '\u{03A4}'),      ("Theta", '\u{0398}'),    ("Uacute", '\u{00DA}'),
        ("Ucirc", '\u{00DB}'),    ("Ugrave", '\u{00D9}'),   ("Upsilon", '\u{03A5}'),
        ("Uuml", '\u{00DC}'),     ("Xi", '\u{039E}'),       ("Yacute", '\u{00DD}'),
        ("Yuml", '\u{0178}'),     ("Zeta", '\u{0396}'),     ("aacute", '\u{00E1}'),
        ("acirc", '\u{00E2}'),    ("acute", '\u{00B4}'),    ("aelig", '\u{00E6}'),
        ("agrave", '\u{00E0}'),   ("alefsym", '\u{2135}'),  ("alpha", '\u{03B1}'),
        ("amp", '\u{0026}'),      ("and", '\u{2227}'),      ("ang", '\u{2220}'),
        ("aring", '\u{00E5}'),    ("asymp", '\u{2248}'),    ("atilde", '\u{00E3}'),
        ("auml", '\u{00E4}'),     ("bdquo", '\u{201E}'),    ("beta", '\u{03B2}'),
        ("brvbar", '\u{00A6}'),   ("bull", '\u{2022}'),     ("cap", '\u{2229}'),
        ("ccedil", '\u{00E7}'),   ("cedil", '\u{00B8}'),    ("cent", '\u{00A2}'),
        ("chi", '\u{03C7}'),      ("circ", '\u{02C6}'),     ("clubs", '\u{2663}'),
        ("cong", '\u{2245}'),     ("copy", '\u{00A9}'),     ("crarr", '\u{21B5}'),
        ("cup", '\u{222A}'),      ("curren", '\u{00A4}'),   ("dArr", '\u{21D3}'),
        ("dagger", '\u{2020}'),   ("darr", '\u{2193}'),     ("deg", '\u{00B0}'),
        ("delta", '\u{03B4}'),    ("diams", '\u{2666}'),    ("divide", '\u{00F7}'),
        ("eacute", '\u{00E9}'),   ("ecirc", '\u{00EA}'),    ("egrave", '\u{00E8}'),
        ("empty", '\u{2205}'),    ("emsp", '\u{2003}'),     ("ensp", '\u{2002}'),
        ("epsilon", '\u{03B5}'),  ("equiv", '\u{2261}'),    ("eta", '\u{03B7}'),
        ("eth", '\u{00F0}'),      ("euml", '\u{00EB}'),     ("euro", '\u{20AC}'),
        ("exist", '\u{2203}'),    ("fnof", '\u{0192}'),     ("forall", '\u{2200}'),
        ("frac12", '\u{00BD}'),   ("frac14", '\u{00BC}'),   ("frac34", '\u{00BE}'),
        ("frasl", '\u{2044}'),    ("gamma", '\u{03B3}'),    ("ge", '\u{2265}'),
        ("gt", '\u{003E}'),       ("hArr", '\u{21D4}'),     ("harr", '\u{2194}'),
        ("hearts", '\u{2665}'),   ("hellip", '\u{2026}'),   ("iacute", '\u{00ED}'),
        ("icirc", '\u{00EE}'),    ("iexcl", '\u{00A1}'),    ("igrave", '\u{00EC}'),
        ("image", '\u{2111}'),    ("infin", '\u{221E}'),    ("int", '\u{222B}'),
        ("iota", '\u{03B9}'),     ("iquest", '\u{00BF}'),   ("isin", '\u{2208}'),
        ("iuml", '\u{00EF}'),     ("kappa", '\u{03BA}'),    ("lArr", '\u{21D0}'),
        ("lambda", '\u{03BB}'),   ("lang", '\u{2329}'),     ("laquo", '\u{00AB}'),
        ("larr", '\u{2190}'),     ("lceil", '\u{2308}'),    ("ldquo", '\u{201C}'),
        ("le", '\u{2264}'),       ("lfloor", '\u{230A}'),   ("lowast", '\u{2217}'),
        ("loz", '\u{25CA}'),      ("lrm", '\u{200E}'),      ("lsaquo", '\u{2039}'),
        ("lsquo", '\u{2018}'),    ("lt", '\u{003C}'),       ("macr", '\u{00AF}'),
        ("mdash", '\u{2014}'),    ("micro", '\u{00B5}'),    ("middot", '\u{00B7}'),
        ("minus", '\u{2212}'),    ("mu", '\u{03BC}'),       ("nabla", '\u{2207}'),
        ("nbsp", '\u{00A0}'),     ("ndash", '\u{2013}'),    ("ne", '\u{2260}'),
        ("ni", '\u{220B}'),       ("not", '\u{00AC}'),      ("notin", '\u{2209}'),
        ("nsub", '\u{2284}'),     ("ntilde", '\u{00F1}'),   ("nu", '\u{03BD}'),
        ("oacute", '\u{00F3}'),   ("ocirc", '\u{00F4}'),    ("oelig", '\u{0153}'),
        ("ograve", '\u{00F2}'),   ("oline", '\u{203E}'),    ("omega", '\u{03C9}'),
        ("omicron", '\u{03BF}'),  ("oplus", '\u{2295}'),    ("or", '\u{2228}'),
        ("ordf", '\u{00AA}'),     ("ordm", '\u{00BA}'),     ("oslash", '\u{00F8}'),
        ("otilde", '\u{00F5}'),   ("otimes", '\u{2297}'),   ("ouml", '\u{00F6}'),
        ("para", '\u{00B6}'),     ("part", '\u{2202}'),     ("permil", '\u{2030}'),
        ("perp", '\u{22A5}'),     ("phi", '\u{03C6}'),      ("pi", '\u{03C0}'),
        ("piv", '\u{03D6}'),      ("plusmn", '\u{00B1}'),   ("pound", '\u{00A3}'),
        ("prime", '\u{2032}'),    ("prod", '\u{220F}'),     ("prop", '\u{221D}'),
        ("psi", '\u{03C8}'),      ("quot", '\u{0022}'),     ("rArr", '\u{21D2}'),
        ("radic", '\u{221A}'),    ("rang", '\u{232A}'),     ("raquo", '\u{00BB}'),
        ("rarr", '\u{2192}'),     ("rceil", '\u{2309}'),    ("rdquo", '\u{201D}'),
        ("real", '\u{211C}'),     ("reg", '\u{00AE}'),      ("rfloor", '\u{230B}'),
        ("rho", '\u{03C1}'),      ("rlm", '\u{200F}'),      ("rsaquo", '\u{203A}'),
        ("rsquo", '\u{2019}'),    ("sbquo", '\u{201A}'),    ("scaron", '\u{0161}'),
        ("sdot", '\u{22C5}'),     ("sect", '\u{00A7}'),     ("shy", '\u{00AD}'),
        ("sigma", '\u{03C3}'),    ("sigmaf", '\u{03C2}'),   ("sim", '\u{223C}'),
        ("spades", '\u{2660}'),   ("sub", '\u{2282}'),      ("sube", '\u{2286}'),
        ("sum", '\u{2211}'),      ("sup", '\u{2283}'),      ("sup1", '\u{00B9}'),
        ("sup2", '\u{00B2}'),     ("sup3", '\u{00B3}'),     ("supe", '\u{2287}'),
        ("szlig", '\u{00DF}'),    ("tau", '\u{03C4}'),      ("there4", '\u{2234}'),
        ("theta", '\u{03B8}'),    ("thetasym", '\u{03D1}'), ("thinsp", '\u{2009}'),
        ("thorn", '\u{00FE}'),    ("tilde", '\u{02DC}'),    ("times", '\u{00D7}'),
        ("trade", '\u{2122}'),    ("uArr", '\u{21D1}'),     ("uacute", '\u{00FA}'),
        ("uarr", '\u{2191}'),     ("ucirc", '\u{00FB}'),    ("ugrave", '\u{00F9}'),
        ("uml", '\u{00A8}'),      ("upsih", '\u{03D2}'),    ("upsilon", '\u{03C5}'),
        ("uuml", '\u{00FC}'),     ("weierp", '\u{2118}'),   ("xi", '\u{03BE}'),
        ("yacute", '\u{00FD}'),   ("yen", '\u{00A5}'),      ("yuml", '\u{00FF}'),
        ("zeta", '\u{03B6}'),     ("zwj", '\u{200D}'),      ("zwnj", '\u{200C}'),
    ];
}

/// The only form of a subject identifier that may appear in logs, plans and receipts.
pub fn receipt_hash(identifier: &str) -> String {
    let digest = Sha256::digest(format!("matomo-erase:{identifier}").as_bytes());
    hex::encode(&digest[..8])
}

/// Parses a 16-hex-digit visitor id as Matomo's `visitorId` segment accepts it, given with
/// `--visitor-id`. The error never repeats the value: what was typed into the wrong option is
/// often a person's email address. It shows the value's receipt hash instead.
pub fn parse_visitor_id(text: &str) -> anyhow::Result<[u8; 8]> {
    let t = text.trim();
    let mut out = [0u8; 8];
    if t.len() != 16 || hex::decode_to_slice(t, &mut out).is_err() {
        return Err(usage(format!(
            "invalid visitor id given to --visitor-id (receipt hash {}): a visitor id is exactly \
             16 hexadecimal digits, as shown in Matomo's visitor log, e.g. 59efd53f1af69d6b; give \
             a user id with --user-id instead",
            receipt_hash(t)
        )));
    }
    Ok(out)
}

/// Parses a visit id (`log_visit.idvisit`, a positive whole number). `origin` says where the
/// value came from (`--visit-id`, `line 3 of the visit-ids file`); the error names it and the
/// value's receipt hash, never the value, which may be a person's identifier in the wrong place.
pub fn parse_visit_id(text: &str, origin: &str) -> anyhow::Result<u64> {
    let t = text.trim();
    match t.parse::<u64>() {
        Ok(id) if id > 0 && t.bytes().all(|b| b.is_ascii_digit()) => Ok(id),
        _ => Err(usage(format!(
            "{origin} is not a visit id (receipt hash {}): a visit id is log_visit.idvisit, a \
             positive whole number; give a user id with --user-id and a visitor id with \
             --visitor-id",
            receipt_hash(t)
        ))),
    }
}

/// Reads user ids one a line from a file or `-` (stdin), streaming: memory grows with the
/// longest line, never with the file.
///
/// A line ends at LF, CRLF or a lone CR (classic Mac files, and some exports): Matomo drops CR
/// from a user id, so reading `ann\rbob` as one line would name a third person, `annbob`. Lines
/// that are empty or only whitespace are skipped. Every other line is a user id exactly as it
/// is, since spaces are significant in a user id; lines that start or end with whitespace are
/// counted so that the caller can warn (`whitespace_warnings`, `first_whitespace_line`).
pub struct UserIdLines {
    reader: Box<dyn BufRead + Send>,
    line_no: u64,
    buf: Vec<u8>,
    /// The last line ended with CR: an LF right after it is the rest of that line end.
    after_cr: bool,
    whitespace_warnings: u64,
    first_whitespace_line: Option<u64>,
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
        Ok(UserIdLines::with_reader(reader))
    }

    pub fn from_reader(reader: impl Read + Send + 'static) -> UserIdLines {
        UserIdLines::with_reader(Box::new(BufReader::new(reader)))
    }

    fn with_reader(reader: Box<dyn BufRead + Send>) -> UserIdLines {
        UserIdLines {
            reader,
            line_no: 0,
            buf: Vec::new(),
            after_cr: false,
            whitespace_warnings: 0,
            first_whitespace_line: None,
        }
    }

    /// The next user id, or None at the end of the input.
    pub fn next_id(&mut self) -> anyhow::Result<Option<String>> {
        loop {
            if !self.read_line()? {
                return Ok(None);
            }
            self.line_no += 1;

            // A byte-order mark that editors put at the start of a file is not part of the id.
            if self.line_no == 1 && self.buf.starts_with(&[0xEF, 0xBB, 0xBF]) {
                self.buf.drain(..3);
            }
            let line = std::str::from_utf8(&self.buf).map_err(|_| {
                usage(format!(
                    "line {} of the ids file is not valid UTF-8; save the file as UTF-8",
                    self.line_no
                ))
            })?;
            if line.trim().is_empty() {
                continue;
            }

            if line.starts_with(char::is_whitespace) || line.ends_with(char::is_whitespace) {
                self.whitespace_warnings += 1;
                self.first_whitespace_line.get_or_insert(self.line_no);
            }
            return Ok(Some(line.to_owned()));
        }
    }

    /// The line number of the id that `next_id` returned last (1 for the first line).
    pub fn line(&self) -> u64 {
        self.line_no
    }

    /// How many of the ids returned so far start or end with whitespace, which is kept.
    pub fn whitespace_warnings(&self) -> u64 {
        self.whitespace_warnings
    }

    /// The line number of the first id that starts or ends with whitespace.
    pub fn first_whitespace_line(&self) -> Option<u64> {
        self.first_whitespace_line
    }

    /// Reads the next line into `buf` without its line end; false at the end of the input.
    fn read_line(&mut self) -> std::io::Result<bool> {
        self.buf.clear();
        let mut any = false;
        loop {
            let available = match self.reader.fill_buf() {
                Ok(available) => available,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(e),
            };
            if available.is_empty() {
                return Ok(any);
            }

            let skip = usize::from(self.after_cr && available[0] == b'\n');
            self.after_cr = false;
            let rest = &available[skip..];
            match rest.iter().position(|&b| b == b'\n' || b == b'\r') {
                Some(end) => {
                    self.buf.extend_from_slice(&rest[..end]);
                    self.after_cr = rest[end] == b'\r';
                    self.reader.consume(skip + end + 1);
                    return Ok(true);
                }
                None => {
                    self.buf.extend_from_slice(rest);
                    any |= !rest.is_empty();
                    let used = available.len();
                    self.reader.consume(used);
                }
            }
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
    fn an_id_with_4_byte_characters_has_its_replaced_form_too_each_with_its_visitor_id() {
        let sha1_prefix = |s: &str| hex::encode(&Sha1::digest(s.as_bytes())[..8]);
        let stored = |s: &UserIdSubject| -> Vec<(String, String)> {
            s.forms
                .iter()
                .map(|f| (f.stored.clone(), hex::encode(f.idvisitor)))
                .collect()
        };
        let utf8mb4 = StorageRules::default();
        let s = UserIdSubject::new("ana😀<x", &utf8mb4).unwrap();
        assert_eq!(
            stored(&s),
            [
                ("ana😀&lt;x".to_owned(), sha1_prefix("ana😀&lt;x")),
                (
                    "ana\u{FFFD}&lt;x".to_owned(),
                    sha1_prefix("ana\u{FFFD}&lt;x")
                ),
            ]
        );
        assert_eq!(s.receipt_hash, receipt_hash("ana😀&lt;x"));
        // No 4-byte character: one form. A column without utf8mb4: the replaced form only.
        assert_eq!(UserIdSubject::new("ana", &utf8mb4).unwrap().forms.len(), 1);
        let utf8 = StorageRules {
            replace_4byte: true,
            pseudonym_salt: None,
        };
        assert_eq!(
            stored(&UserIdSubject::new("ana😀<x", &utf8).unwrap()),
            [(
                "ana\u{FFFD}&lt;x".to_owned(),
                sha1_prefix("ana\u{FFFD}&lt;x")
            )]
        );
        // With a salt, each form has its pseudonym.
        let salted = StorageRules {
            replace_4byte: false,
            pseudonym_salt: Some("pepper".into()),
        };
        let forms: Vec<String> = UserIdSubject::new("😀", &salted)
            .unwrap()
            .forms
            .into_iter()
            .map(|f| f.stored)
            .collect();
        assert_eq!(
            forms,
            [
                "😀".to_owned(),
                "\u{FFFD}".to_owned(),
                hex::encode(Sha1::digest("😀pepper".as_bytes())),
                hex::encode(Sha1::digest("\u{FFFD}pepper".as_bytes())),
            ]
        );
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
    fn entities_are_decoded_with_phps_html401_table_only() {
        let decode = html_entities::decode;
        // Names: HTML 4.01's, case-sensitive; HTML5-only names stay as they are.
        assert_eq!(decode("caf&eacute; &Eacute;&amp;&lt;&gt;"), "café É&<>");
        assert_eq!(
            decode("it&apos;s a&excl;b x&AMP;y &nbsp"),
            "it&apos;s a&excl;b x&AMP;y &nbsp"
        );
        assert_eq!(
            decode("&lang;&rang;&euro;&nbsp;&frac12;"),
            "\u{2329}\u{232A}€\u{A0}½"
        );
        // ENT_QUOTES: both quotes, by name and by number.
        assert_eq!(decode("&quot;&#039;&#39;&#x27;&#X27;&#00039;"), "\"'''''");
        // Numbers: only code points HTML 4.01 allows.
        assert_eq!(
            decode("&#9;&#10;&#13;&#32;&#x7E;&#xA0;&#x1F600;"),
            "\t\n\r ~\u{A0}😀"
        );
        // Noncharacters are allowed in HTML 4.01, as PHP 8.2 decodes them.
        assert_eq!(
            decode("&#xE000;&#xFDD0;&#xFFFE;&#x1FFFF;&#x10FFFF;"),
            "\u{E000}\u{FDD0}\u{FFFE}\u{1FFFF}\u{10FFFF}"
        );
        for kept in [
            "&#0;", "&#8;", "&#11;", "&#12;", "&#31;", "&#127;", "&#128;", "&#x9F;",
        ] {
            assert_eq!(decode(kept), kept);
        }
        for kept in [
            "&#xD800;",
            "&#xDFFF;",
            "&#x110000;",
            "&#99999999999999999999;",
        ] {
            assert_eq!(decode(kept), kept);
        }
        // PHP reads the digits with C's strtol, which takes a `0x` prefix after PHP's own `x`.
        assert_eq!(decode("&#x0x41;&#X0X42;&#x0x;"), "AB&#x0x;");
        // Not entities: no semicolon, empty, unknown, a NUL in the name.
        for kept in [
            "&amp", "&#65", "&#x;", "&#;", "&;", "&", "&#x41 ;", "&amp\0;", "&foo;",
        ] {
            assert_eq!(decode(kept), kept);
        }
        // One pass, and an `&` that starts nothing does not hide the entity after it.
        assert_eq!(decode("&amp;lt; &&amp; &#&#65; é&amp;é"), "&lt; && &#A é&é");
    }

    #[test]
    fn entity_table_is_html401s_sorted_for_the_binary_search() {
        let table = &html_entities::ENTITIES;
        assert!(table.windows(2).all(|w| w[0].0 < w[1].0));
        let find = |name: &str| table.iter().find(|(n, _)| *n == name).map(|(_, c)| *c);
        assert_eq!(find("nbsp"), Some('\u{A0}'));
        assert_eq!(find("yuml"), Some('ÿ'));
        assert_eq!(find("Yuml"), Some('Ÿ'));
        assert_eq!(find("thetasym"), Some('\u{3D1}'));
        assert_eq!(find("euro"), Some('€'));
        assert_eq!(find("apos"), None);
    }

    #[test]
    fn sanitise_stores_entities_as_matomo_does() {
        assert_eq!(sanitise("it&apos;s", false), "it&amp;apos;s");
        assert_eq!(sanitise("a&excl;b", false), "a&amp;excl;b");
        assert_eq!(sanitise("x&AMP;y", false), "x&amp;AMP;y");
        assert_eq!(sanitise("c&#128;d", false), "c&amp;#128;d");
        assert_eq!(sanitise("o&#39;b", false), "o&#039;b");
        // Line breaks go before decoding: an encoded CR stays. An encoded NUL is no entity.
        assert_eq!(sanitise("a&#13;b&#0;", false), "a\rb&amp;#0;");
    }

    /// A reader that hands out one byte a call, so that every line end straddles two buffers.
    struct OneByteAtATime(std::io::Cursor<Vec<u8>>);

    impl Read for OneByteAtATime {
        fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
            let n = buf.len().min(1);
            self.0.read(&mut buf[..n])
        }
    }

    fn all_ids(lines: &mut UserIdLines) -> Vec<(u64, String)> {
        let mut out = Vec::new();
        while let Some(id) = lines.next_id().unwrap() {
            out.push((lines.line(), id));
        }
        out
    }

    #[test]
    fn user_id_lines_end_at_lf_crlf_and_a_lone_cr() {
        let text = b"ann\rbob\r\ncy\n\r\rdee\r\n\r\neve\r".to_vec();
        let expected = [(1, "ann"), (2, "bob"), (3, "cy"), (6, "dee"), (8, "eve")]
            .map(|(n, s)| (n, s.to_string()))
            .to_vec();
        let mut whole = UserIdLines::from_reader(std::io::Cursor::new(text.clone()));
        assert_eq!(all_ids(&mut whole), expected);
        let mut bytewise = UserIdLines::from_reader(OneByteAtATime(std::io::Cursor::new(text)));
        assert_eq!(all_ids(&mut bytewise), expected);
    }

    #[test]
    fn user_id_lines_skip_whitespace_lines_and_count_ids_with_outer_whitespace() {
        let text = " \t \nann\n bob\n\u{A0}\ncy\t\nd e\n".as_bytes().to_vec();
        let mut lines = UserIdLines::from_reader(std::io::Cursor::new(text));
        let ids = all_ids(&mut lines);
        let ids: Vec<&str> = ids.iter().map(|(_, s)| s.as_str()).collect();
        assert_eq!(ids, ["ann", " bob", "cy\t", "d e"]);
        assert_eq!(lines.whitespace_warnings(), 2);
        assert_eq!(lines.first_whitespace_line(), Some(3));
    }

    #[test]
    fn malformed_subject_values_are_named_by_hash_not_repeated() {
        let email = "alice.peer@example.org";
        let err = parse_visitor_id(email).unwrap_err().to_string();
        assert!(!err.contains("alice"), "{err}");
        assert!(err.contains("--visitor-id"), "{err}");
        assert!(err.contains(&receipt_hash(email)), "{err}");

        let err = parse_visit_id(email, "line 2 of the visit-ids file")
            .unwrap_err()
            .to_string();
        assert!(!err.contains("alice"), "{err}");
        assert!(err.starts_with("line 2 of the visit-ids file"), "{err}");
        assert!(err.contains(&receipt_hash(email)), "{err}");
    }

    #[test]
    fn visit_ids_are_positive_whole_numbers() {
        assert_eq!(parse_visit_id("12", "x").unwrap(), 12);
        assert_eq!(
            parse_visit_id(" 18446744073709551615 ", "x").unwrap(),
            u64::MAX
        );
        for bad in ["0", "+1", "-1", "1.0", "", "18446744073709551616", "1e3"] {
            assert!(parse_visit_id(bad, "x").is_err(), "{bad:?}");
        }
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
