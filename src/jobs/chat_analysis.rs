//! The analysis behind the `chat-analysis` handler: it reads a chat transcript from a
//! job's payload and reports who spoke how much, how quickly people answered each
//! other, which language the chat is in, how positive or negative it reads, and which
//! words it uses most.
//!
//! This module owns the checking of the payload ([`parse_messages`]) and the report
//! ([`analyze`]). Both are pure functions: no I/O, no logging, no async. Where they run
//! (`analyze` is CPU-bound), how long they may take and what becomes of the report is
//! the handler's business.
//!
//! Known limits:
//! - A word is a run of letters and digits, so scripts written without spaces
//!   (Chinese, Japanese, Thai) count a whole run as one word, and their word counts
//!   and top terms mean little. A tokenizer per script would fix that.
//! - VADER's lexicon is English. Other languages score mostly neutral; the report
//!   still gives their numbers, which a reader should take with the detected language
//!   in mind.
//! - The language is detected once for the whole chat, so a chat that mixes
//!   languages is reported as its main one, and its stop words are that language's.

use std::cmp::Reverse;
use std::collections::{BTreeMap, HashMap, HashSet};

use chrono::{DateTime, TimeDelta, Utc};
use serde::Serialize;
use serde_json::{Map, Number, Value};
use vader_parity::SentimentIntensityAnalyzer;
use whatlang::Lang;

/// The most messages one payload may carry; [`parse_messages`] refuses more.
pub(super) const MAX_MESSAGES: usize = 10_000;

/// How many terms `topTerms` lists.
const TOP_TERMS: usize = 10;

/// Shares are whole numbers of these units, so that they have 4 decimals.
const SHARE_UNITS: u64 = 10_000;

/// A compound score at least this far from 0 makes a message positive or negative,
/// the cut-off VADER's authors recommend.
const SENTIMENT_THRESHOLD: f64 = 0.05;

/// Stop words used when the language is unknown or has no list of its own.
const FALLBACK_STOP_WORDS: &str = "en";

/// How many characters of a refused string an error message quotes.
const QUOTED_CHARS: usize = 40;

/// One chat message as sent in the payload.
#[derive(Debug, Clone, PartialEq)]
pub(super) struct ChatMessage {
    /// Who wrote it: never blank. Names are compared exactly, case included.
    pub user: String,
    /// What was written; may be empty.
    pub text: String,
    /// When it was sent.
    pub ts: DateTime<Utc>,
}

/// Reads and checks `payload.messages`: an array of 1 to [`MAX_MESSAGES`] objects, each
/// with a non-blank string `user`, a string `text`, and a `ts` that is either an RFC 3339
/// time or a number of Unix seconds (fractions allowed). Other fields are ignored, and
/// the messages are returned in payload order.
///
/// # Errors
///
/// The first problem found, naming the message and field and saying why, for example
/// `messages[3].ts: expected an RFC 3339 time or Unix seconds, got "yesterday" (…)`.
pub(super) fn parse_messages(payload: &Value) -> Result<Vec<ChatMessage>, String> {
    message_list(payload)?
        .iter()
        .enumerate()
        .map(|(index, message)| parse_message(index, message))
        .collect()
}

/// Finds the `messages` array and checks its length.
fn message_list(payload: &Value) -> Result<&Vec<Value>, String> {
    let Value::Object(fields) = payload else {
        let got = kind(payload);
        return Err(format!(
            "payload: expected an object with a messages array, got {got}"
        ));
    };
    let list = match fields.get("messages") {
        Some(Value::Array(list)) => list,
        Some(other) => return Err(format!("messages: expected an array, got {}", kind(other))),
        None => return Err("messages: missing; expected an array of messages".to_owned()),
    };

    if list.is_empty() {
        return Err("messages: empty; at least one message is needed".to_owned());
    }
    if list.len() > MAX_MESSAGES {
        let count = list.len();
        return Err(format!(
            "messages: {count} messages; at most {MAX_MESSAGES} are allowed"
        ));
    }
    Ok(list)
}

/// Checks one message; `index` is its position, for the error.
fn parse_message(index: usize, message: &Value) -> Result<ChatMessage, String> {
    let Value::Object(fields) = message else {
        let got = kind(message);
        return Err(format!("messages[{index}]: expected an object, got {got}"));
    };

    // Each field is checked on its own; the first bad one, in this order, is reported.
    let user = field(fields, "user").and_then(parse_user);
    let text = field(fields, "text").and_then(parse_text);
    let ts = field(fields, "ts").and_then(parse_ts);
    let at = |name: &'static str| move |why| format!("messages[{index}].{name}: {why}");
    Ok(ChatMessage {
        user: user.map_err(at("user"))?,
        text: text.map_err(at("text"))?,
        ts: ts.map_err(at("ts"))?,
    })
}

/// A field of a message, or why it cannot be read.
fn field<'a>(fields: &'a Map<String, Value>, name: &str) -> Result<&'a Value, String> {
    fields.get(name).ok_or_else(|| "missing".to_owned())
}

fn parse_user(value: &Value) -> Result<String, String> {
    match value {
        Value::String(user) if user.trim().is_empty() => Err("blank; expected a name".to_owned()),
        Value::String(user) => Ok(user.clone()),
        other => Err(format!("expected a string, got {}", kind(other))),
    }
}

fn parse_text(value: &Value) -> Result<String, String> {
    match value {
        Value::String(text) => Ok(text.clone()),
        other => Err(format!("expected a string, got {}", kind(other))),
    }
}

fn parse_ts(value: &Value) -> Result<DateTime<Utc>, String> {
    const EXPECTED: &str = "expected an RFC 3339 time or Unix seconds";
    match value {
        Value::String(text) => DateTime::parse_from_rfc3339(text)
            .map(|time| time.with_timezone(&Utc))
            .map_err(|error| format!("{EXPECTED}, got {} ({error})", quoted(text))),
        Value::Number(number) => {
            from_unix_seconds(number).ok_or_else(|| format!("{EXPECTED}; {number} is out of range"))
        }
        other => Err(format!("{EXPECTED}, got {}", kind(other))),
    }
}

/// A time from Unix seconds; `None` outside the years chrono can represent.
fn from_unix_seconds(number: &Number) -> Option<DateTime<Utc>> {
    // Whole seconds are taken exactly.
    if let Some(seconds) = number.as_i64() {
        return DateTime::from_timestamp(seconds, 0);
    }

    // Fractions go through f64, which for present-day times is precise to well under
    // a microsecond. Anything past ±1e15 s is far outside chrono's range anyway, and
    // the check keeps the cast to i64 exact.
    let seconds = number.as_f64()?;
    let whole = seconds.floor();
    if !whole.is_finite() || whole.abs() > 1e15 {
        return None;
    }
    let nanos = ((seconds - whole) * 1e9).round().min(999_999_999.0);
    DateTime::from_timestamp(whole as i64, nanos as u32)
}

/// What kind of JSON value this is, for error messages.
fn kind(value: &Value) -> &'static str {
    match value {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

/// `text` quoted for an error message, cut short so a huge value stays out of it.
fn quoted(text: &str) -> String {
    match text.char_indices().nth(QUOTED_CHARS) {
        Some((cut, _)) => format!("{:?}…", &text[..cut]),
        None => format!("{text:?}"),
    }
}

/// The analysis, as JSON. Messages are read in `ts` order; messages with the same `ts`
/// keep their order in the slice. An empty slice gives zeros, empty lists and nulls.
///
/// The report (every share, mean and score is rounded: shares and sentiment to 4
/// decimals, seconds to 3):
/// - `messageCount`, `wordCount`. A word is a run of letters and digits; an
///   apostrophe inside a word keeps it whole ("don't", "appear'd").
/// - `participants`: `{user, messages, words, messageShare, wordShare}`, most messages
///   first, then by name. Each kind of share adds up to exactly 1; `wordShare` is null
///   when the chat has no words at all.
/// - `responseTimes`: `{overall, byResponder}`. A reply is a message whose author is
///   not the author of the message just before it, and its response time is the gap
///   between the two. `overall` is `{replies, meanSeconds, medianSeconds}` (null mean
///   and median when there are no replies); `byResponder` has the same per replying
///   user, plus `user`, most replies first, then by name.
/// - `language`: `{code, name, confidence}` with an ISO 639-3 code such as `"eng"` and
///   the English name of the language, or null when it cannot be told.
/// - `sentiment`: VADER scores. `messages` has `{index, user, compound, label}` per
///   message in time order, where `index` is the message's position in the slice (so
///   in `payload.messages`) and `label` is `positive` (compound ≥ 0.05), `negative`
///   (≤ -0.05) or `neutral`. `overall` is `{compound, positive, negative, neutral}`:
///   the mean compound (null with no messages) and how many messages have each label.
///   `byParticipant` is `{user, compound}` with each user's mean compound, in the
///   order of `participants`.
/// - `topTerms`: `{term, count}` for the 10 most used lowercased words, most first,
///   then alphabetically; stop words of the detected language (English when it has
///   no list), numbers and one-character words are left out.
pub(super) fn analyze(messages: &[ChatMessage]) -> Value {
    // Everything reads the messages in time order, with their words split once.
    let lines = in_time_order(messages);
    let detected = whatlang::detect(&full_text(&lines));
    let stop_words = stop_words_for(detected.as_ref().map(whatlang::Info::lang));

    let report = Report {
        message_count: lines.len(),
        word_count: lines.iter().map(|line| line.words.len()).sum(),
        participants: participants(&lines),
        response_times: response_times(&lines),
        language: detected.map(|info| Language::from_info(&info)),
        sentiment: sentiment(&lines),
        top_terms: top_terms(&lines, &stop_words),
    };
    to_json(&report)
}

/// A message with its position in the input and its words.
struct Line<'a> {
    index: usize,
    message: &'a ChatMessage,
    words: Vec<&'a str>,
}

impl Line<'_> {
    fn user(&self) -> &str {
        &self.message.user
    }
}

/// The messages sorted by `ts`; the sort is stable, so ties keep their input order.
fn in_time_order(messages: &[ChatMessage]) -> Vec<Line<'_>> {
    let mut lines: Vec<Line<'_>> = messages
        .iter()
        .enumerate()
        .map(|(index, message)| Line {
            index,
            message,
            words: words(&message.text),
        })
        .collect();
    lines.sort_by_key(|line| line.message.ts);
    lines
}

/// The words of `text`: runs of letters and digits. An apostrophe (straight or curly)
/// inside a word keeps it whole, and one at either end is dropped ("'tis" is "tis").
fn words(text: &str) -> Vec<&str> {
    text.split(|c: char| !c.is_alphanumeric() && !is_apostrophe(c))
        .map(|word| word.trim_matches(is_apostrophe))
        .filter(|word| !word.is_empty())
        .collect()
}

fn is_apostrophe(c: char) -> bool {
    c == '\'' || c == '\u{2019}'
}

/// Every message's text, one per line, for language detection.
fn full_text(lines: &[Line<'_>]) -> String {
    let texts: Vec<&str> = lines
        .iter()
        .map(|line| line.message.text.as_str())
        .collect();
    texts.join("\n")
}

/// The report, serialized as [`analyze`] documents it.
#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct Report {
    message_count: usize,
    word_count: usize,
    participants: Vec<Participant>,
    response_times: ResponseTimes,
    language: Option<Language>,
    sentiment: Sentiment,
    top_terms: Vec<TermCount>,
}

/// The report as JSON.
#[expect(
    clippy::expect_used,
    reason = "the report holds only strings, numbers, options and lists, which always \
              serialize (a non-finite float becomes null)"
)]
fn to_json(report: &Report) -> Value {
    serde_json::to_value(report).expect("the report always serializes")
}

/// How much one user wrote.
#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct Participant {
    user: String,
    messages: usize,
    words: usize,
    message_share: f64,
    word_share: Option<f64>,
}

fn participants(lines: &[Line<'_>]) -> Vec<Participant> {
    // Tally messages and words per user, then put most messages first, then by name.
    let mut tally: BTreeMap<&str, Tally> = BTreeMap::new();
    for line in lines {
        let user = tally.entry(line.user()).or_default();
        user.messages += 1;
        user.words += line.words.len();
    }
    let mut tally: Vec<(&str, Tally)> = tally.into_iter().collect();
    tally.sort_by_key(|&(user, counts)| (Reverse(counts.messages), user));

    // Shares come last: which one gets a rounding unit depends on the order.
    let message_shares = shares(&tally.iter().map(|(_, t)| t.messages).collect::<Vec<_>>());
    let word_shares = shares(&tally.iter().map(|(_, t)| t.words).collect::<Vec<_>>());
    tally
        .iter()
        .enumerate()
        .map(|(i, &(user, counts))| Participant {
            user: user.to_owned(),
            messages: counts.messages,
            words: counts.words,
            // With participants there are messages, so there are message shares.
            message_share: message_shares.as_ref().map_or(0.0, |shares| shares[i]),
            word_share: word_shares.as_ref().map(|shares| shares[i]),
        })
        .collect()
}

/// One user's messages and words.
#[derive(Default, Clone, Copy)]
struct Tally {
    messages: usize,
    words: usize,
}

/// Each count's fraction of the total, with 4 decimals, adding up to exactly 1; `None`
/// when the total is 0.
///
/// Rounding each fraction on its own can leave the sum at 0.9999 or 1.0001, so this
/// uses the largest-remainder method: every share gets its fraction rounded down to a
/// whole number of 1/10,000ths, and the units still missing go one each to the largest
/// remainders (the earliest count on a tie).
fn shares(counts: &[usize]) -> Option<Vec<f64>> {
    let total: u64 = counts.iter().map(|&count| count as u64).sum();
    if total == 0 {
        return None;
    }

    // Floors and remainders, in units.
    let scaled: Vec<(u64, u64)> = counts
        .iter()
        .map(|&count| {
            (
                count as u64 * SHARE_UNITS / total,
                count as u64 * SHARE_UNITS % total,
            )
        })
        .collect();
    let mut units: Vec<u64> = scaled.iter().map(|&(floor, _)| floor).collect();

    // Hand out the missing units; there are fewer of them than counts.
    let missing = SHARE_UNITS - units.iter().sum::<u64>();
    let mut by_remainder: Vec<usize> = (0..counts.len()).collect();
    by_remainder.sort_by(|&a, &b| scaled[b].1.cmp(&scaled[a].1));
    for &i in by_remainder.iter().take(missing as usize) {
        units[i] += 1;
    }
    Some(
        units
            .iter()
            .map(|&unit| unit as f64 / SHARE_UNITS as f64)
            .collect(),
    )
}

/// Response times, overall and per replying user.
#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct ResponseTimes {
    overall: ReplyStats,
    by_responder: Vec<ResponderStats>,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct ResponderStats {
    user: String,
    #[serde(flatten)]
    stats: ReplyStats,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct ReplyStats {
    replies: usize,
    mean_seconds: Option<f64>,
    median_seconds: Option<f64>,
}

fn response_times(lines: &[Line<'_>]) -> ResponseTimes {
    // A reply is a message from someone other than the previous message's author.
    let mut all = Vec::new();
    let mut by_user: BTreeMap<&str, Vec<f64>> = BTreeMap::new();
    for pair in lines.windows(2) {
        let [before, after] = pair else { continue };
        if before.user() != after.user() {
            let gap = seconds(after.message.ts - before.message.ts);
            all.push(gap);
            by_user.entry(after.user()).or_default().push(gap);
        }
    }

    // Most replies first, then by name.
    let mut by_responder: Vec<ResponderStats> = by_user
        .into_iter()
        .map(|(user, mut gaps)| ResponderStats {
            user: user.to_owned(),
            stats: ReplyStats::of(&mut gaps),
        })
        .collect();
    by_responder.sort_by(|a, b| {
        b.stats
            .replies
            .cmp(&a.stats.replies)
            .then_with(|| a.user.cmp(&b.user))
    });
    ResponseTimes {
        overall: ReplyStats::of(&mut all),
        by_responder,
    }
}

/// A duration in seconds, with its fraction; the lines are in time order, so it is
/// never negative.
fn seconds(gap: TimeDelta) -> f64 {
    gap.num_seconds() as f64 + f64::from(gap.subsec_nanos()) / 1e9
}

impl ReplyStats {
    /// The statistics of these gaps, which it sorts.
    fn of(gaps: &mut [f64]) -> ReplyStats {
        gaps.sort_by(f64::total_cmp);
        ReplyStats {
            replies: gaps.len(),
            mean_seconds: mean(gaps).map(|mean| round(mean, 3)),
            median_seconds: median(gaps).map(|median| round(median, 3)),
        }
    }
}

fn mean(values: &[f64]) -> Option<f64> {
    (!values.is_empty()).then(|| values.iter().sum::<f64>() / values.len() as f64)
}

/// The median of sorted values: the middle one, or the mean of the middle two.
fn median(sorted: &[f64]) -> Option<f64> {
    let middle = sorted.len() / 2;
    match sorted.len() {
        0 => None,
        len if len % 2 == 1 => Some(sorted[middle]),
        _ => Some((sorted[middle - 1] + sorted[middle]) / 2.0),
    }
}

fn round(value: f64, decimals: i32) -> f64 {
    let scale = 10f64.powi(decimals);
    (value * scale).round() / scale
}

/// The detected language.
#[derive(Serialize)]
struct Language {
    code: &'static str,
    name: &'static str,
    confidence: f64,
}

impl Language {
    fn from_info(info: &whatlang::Info) -> Language {
        Language {
            code: info.lang().code(),
            name: info.lang().eng_name(),
            confidence: round(info.confidence(), 4),
        }
    }
}

/// VADER sentiment: overall, per user and per message.
#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct Sentiment {
    overall: OverallSentiment,
    by_participant: Vec<UserSentiment>,
    messages: Vec<MessageSentiment>,
}

#[derive(Serialize)]
struct OverallSentiment {
    compound: Option<f64>,
    positive: usize,
    negative: usize,
    neutral: usize,
}

#[derive(Serialize)]
struct UserSentiment {
    user: String,
    compound: f64,
}

#[derive(Serialize)]
struct MessageSentiment {
    index: usize,
    user: String,
    compound: f64,
    label: Label,
}

#[derive(Serialize, Debug, Clone, Copy, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
enum Label {
    Positive,
    Negative,
    Neutral,
}

impl Label {
    fn of(compound: f64) -> Label {
        if compound >= SENTIMENT_THRESHOLD {
            Label::Positive
        } else if compound <= -SENTIMENT_THRESHOLD {
            Label::Negative
        } else {
            Label::Neutral
        }
    }
}

fn sentiment(lines: &[Line<'_>]) -> Sentiment {
    // Score each message once; the overall and per-user figures are built from these.
    let analyzer = SentimentIntensityAnalyzer::new();
    let messages: Vec<MessageSentiment> = lines
        .iter()
        .map(|line| {
            let compound = analyzer.polarity_scores(&line.message.text).compound;
            MessageSentiment {
                index: line.index,
                user: line.user().to_owned(),
                compound,
                label: Label::of(compound),
            }
        })
        .collect();

    let count = |label| messages.iter().filter(|m| m.label == label).count();
    let compounds: Vec<f64> = messages.iter().map(|m| m.compound).collect();
    let overall = OverallSentiment {
        compound: mean(&compounds).map(|mean| round(mean, 4)),
        positive: count(Label::Positive),
        negative: count(Label::Negative),
        neutral: count(Label::Neutral),
    };
    Sentiment {
        overall,
        by_participant: by_participant(&messages),
        messages,
    }
}

/// Each user's mean compound, in the order of `participants`: most messages first,
/// then by name.
fn by_participant(messages: &[MessageSentiment]) -> Vec<UserSentiment> {
    let mut scores: BTreeMap<&str, Vec<f64>> = BTreeMap::new();
    for message in messages {
        scores
            .entry(&message.user)
            .or_default()
            .push(message.compound);
    }

    let mut scores: Vec<(&str, Vec<f64>)> = scores.into_iter().collect();
    scores.sort_by_key(|(user, compounds)| (Reverse(compounds.len()), *user));
    scores
        .into_iter()
        .map(|(user, compounds)| UserSentiment {
            user: user.to_owned(),
            compound: mean(&compounds).map_or(0.0, |mean| round(mean, 4)),
        })
        .collect()
}

/// A term and how often it was used.
#[derive(Serialize)]
struct TermCount {
    term: String,
    count: usize,
}

fn top_terms(lines: &[Line<'_>], stop_words: &HashSet<&str>) -> Vec<TermCount> {
    // Count every word that counts as a term, lowercased, with curly apostrophes
    // made straight as the stop word lists write them.
    let mut counts: HashMap<String, usize> = HashMap::new();
    for word in lines.iter().flat_map(|line| &line.words) {
        let term = word.to_lowercase().replace('\u{2019}', "'");
        if is_term(&term, stop_words) {
            *counts.entry(term).or_default() += 1;
        }
    }

    let mut terms: Vec<TermCount> = counts
        .into_iter()
        .map(|(term, count)| TermCount { term, count })
        .collect();
    terms.sort_by(|a, b| b.count.cmp(&a.count).then_with(|| a.term.cmp(&b.term)));
    terms.truncate(TOP_TERMS);
    terms
}

/// Whether a lowercased word is worth listing: two characters or more, not a number,
/// not a stop word.
fn is_term(term: &str, stop_words: &HashSet<&str>) -> bool {
    term.chars().nth(1).is_some()
        && !term.chars().all(char::is_numeric)
        && !stop_words.contains(term)
}

/// The stop words of `lang`, or English ones when it is unknown or has no list.
fn stop_words_for(lang: Option<Lang>) -> HashSet<&'static str> {
    let list = lang
        .and_then(|lang| stop_words::lookup(iso_639_1(lang)))
        .or_else(|| stop_words::lookup(FALLBACK_STOP_WORDS))
        .unwrap_or_default();
    list.iter().copied().collect()
}

/// The ISO 639-1 code of a language, which is how the `stop-words` crate names its
/// lists (whatlang gives ISO 639-3). A language the crate has no list for simply
/// finds none. Norwegian Bokmål maps to `no`, the code of the crate's Norwegian list.
fn iso_639_1(lang: Lang) -> &'static str {
    // No wildcard arm: a language added to whatlang must be added here too.
    match lang {
        Lang::Afr => "af",
        Lang::Aka => "ak",
        Lang::Amh => "am",
        Lang::Ara => "ar",
        Lang::Aze => "az",
        Lang::Bel => "be",
        Lang::Ben => "bn",
        Lang::Bul => "bg",
        Lang::Cat => "ca",
        Lang::Ces => "cs",
        Lang::Cmn => "zh",
        Lang::Cym => "cy",
        Lang::Dan => "da",
        Lang::Deu => "de",
        Lang::Ell => "el",
        Lang::Eng => "en",
        Lang::Epo => "eo",
        Lang::Est => "et",
        Lang::Fin => "fi",
        Lang::Fra => "fr",
        Lang::Guj => "gu",
        Lang::Heb => "he",
        Lang::Hin => "hi",
        Lang::Hrv => "hr",
        Lang::Hun => "hu",
        Lang::Hye => "hy",
        Lang::Ind => "id",
        Lang::Ita => "it",
        Lang::Jav => "jv",
        Lang::Jpn => "ja",
        Lang::Kan => "kn",
        Lang::Kat => "ka",
        Lang::Khm => "km",
        Lang::Kor => "ko",
        Lang::Lat => "la",
        Lang::Lav => "lv",
        Lang::Lit => "lt",
        Lang::Mal => "ml",
        Lang::Mar => "mr",
        Lang::Mkd => "mk",
        Lang::Mya => "my",
        Lang::Nep => "ne",
        Lang::Nld => "nl",
        Lang::Nob => "no",
        Lang::Ori => "or",
        Lang::Pan => "pa",
        Lang::Pes => "fa",
        Lang::Pol => "pl",
        Lang::Por => "pt",
        Lang::Ron => "ro",
        Lang::Rus => "ru",
        Lang::Sin => "si",
        Lang::Slk => "sk",
        Lang::Slv => "sl",
        Lang::Sna => "sn",
        Lang::Spa => "es",
        Lang::Srp => "sr",
        Lang::Swe => "sv",
        Lang::Tam => "ta",
        Lang::Tel => "te",
        Lang::Tgl => "tl",
        Lang::Tha => "th",
        Lang::Tuk => "tk",
        Lang::Tur => "tr",
        Lang::Ukr => "uk",
        Lang::Urd => "ur",
        Lang::Uzb => "uz",
        Lang::Vie => "vi",
        Lang::Yid => "yi",
        Lang::Zul => "zu",
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    /// Hamlet, Act I, Scene 1, as a four-person chat (see its `source` field).
    const SCENE: &str = include_str!("../../tests/fixtures/chat_public_domain.json");

    fn scene() -> Vec<ChatMessage> {
        let payload: Value = serde_json::from_str(SCENE).unwrap();
        parse_messages(&payload).unwrap()
    }

    fn message(user: &str, text: &str, ts: &str) -> ChatMessage {
        let ts = DateTime::parse_from_rfc3339(ts)
            .unwrap()
            .with_timezone(&Utc);
        ChatMessage {
            user: user.to_owned(),
            text: text.to_owned(),
            ts,
        }
    }

    /// Messages from one user a minute apart, for tests where time does not matter.
    fn said(user: &str, texts: &[&str]) -> Vec<ChatMessage> {
        let start = DateTime::from_timestamp(1_767_607_200, 0).unwrap();
        texts
            .iter()
            .enumerate()
            .map(|(i, text)| ChatMessage {
                user: user.to_owned(),
                text: (*text).to_owned(),
                ts: start + TimeDelta::minutes(i as i64),
            })
            .collect()
    }

    fn parse_error(payload: Value) -> String {
        parse_messages(&payload).unwrap_err()
    }

    /// A payload with one message whose `ts` is `ts`.
    fn with_ts(ts: Value) -> Value {
        json!({"messages": [{"user": "ana", "text": "hi", "ts": ts}]})
    }

    fn users(list: &Value) -> Vec<&str> {
        list.as_array()
            .unwrap()
            .iter()
            .map(|entry| entry["user"].as_str().unwrap())
            .collect()
    }

    fn terms(report: &Value) -> Vec<(&str, u64)> {
        let list = report["topTerms"].as_array().unwrap();
        list.iter()
            .map(|entry| {
                (
                    entry["term"].as_str().unwrap(),
                    entry["count"].as_u64().unwrap(),
                )
            })
            .collect()
    }

    /// Ten-thousandths in a share, which must be a whole number of them.
    fn share_units(share: &Value) -> u64 {
        let units = share.as_f64().unwrap() * 10_000.0;
        assert!(
            (units - units.round()).abs() < 1e-6,
            "{share} has more than 4 decimals"
        );
        units.round() as u64
    }

    #[test]
    fn the_scene_parses_with_its_four_speakers() {
        let payload: Value = serde_json::from_str(SCENE).unwrap();
        assert!(
            payload["source"]
                .as_str()
                .unwrap()
                .contains("Hamlet, Act I, Scene 1")
        );

        let messages = scene();
        assert_eq!(messages.len(), 31);
        assert_eq!(messages[0].user, "ben");
        assert_eq!(messages[0].text, "Who's there?");
        assert_eq!(messages[0].ts, message("x", "", "2026-01-05T23:58:00Z").ts);
    }

    #[test]
    fn participants_and_shares_match_hand_counts() {
        let report = analyze(&scene());
        assert_eq!(report["messageCount"], 31);
        assert_eq!(report["wordCount"], 277);

        // Counted by hand from the fixture: (user, messages, words), in report order.
        let expected = [
            ("ben", 12, 113),
            ("ana", 8, 54),
            ("caro", 7, 85),
            ("dev", 4, 25),
        ];
        let participants = report["participants"].as_array().unwrap();
        assert_eq!(participants.len(), expected.len());
        for (entry, (user, messages, words)) in participants.iter().zip(expected) {
            assert_eq!(entry["user"], user);
            assert_eq!(entry["messages"], messages);
            assert_eq!(entry["words"], words);
            let message_share = entry["messageShare"].as_f64().unwrap();
            let word_share = entry["wordShare"].as_f64().unwrap();
            assert!(
                (message_share - f64::from(messages) / 31.0).abs() <= 0.00005,
                "{entry}"
            );
            assert!(
                (word_share - f64::from(words) / 277.0).abs() <= 0.00005,
                "{entry}"
            );
        }

        // Each kind of share adds up to exactly 1.
        let total = |key: &str| {
            participants
                .iter()
                .map(|p| share_units(&p[key]))
                .sum::<u64>()
        };
        assert_eq!(total("messageShare"), 10_000);
        assert_eq!(total("wordShare"), 10_000);
    }

    #[test]
    fn shares_that_do_not_divide_evenly_still_add_up_to_one() {
        // Thirds round to 0.3333 each; the unit left over goes to the first.
        assert_eq!(shares(&[1, 1, 1]), Some(vec![0.3334, 0.3333, 0.3333]));
        // 2/3 = 0.66666 has the larger remainder, so it takes the unit.
        assert_eq!(shares(&[1, 2]), Some(vec![0.3333, 0.6667]));
        assert_eq!(shares(&[5, 0]), Some(vec![1.0, 0.0]));
        assert_eq!(shares(&[0, 0]), None);

        // Seven equal parts leave 4 units over, which must all be handed out.
        let sevenths = shares(&[1; 7]).unwrap();
        let units: u64 = sevenths.iter().map(|s| (s * 10_000.0).round() as u64).sum();
        assert_eq!(units, 10_000);
    }

    #[test]
    fn participants_with_equal_counts_are_ordered_by_name() {
        let mut chat = said("zoe", &["one", "two"]);
        chat.extend(said("amy", &["three", "four"]));
        chat.extend(said("bob", &["five"]));
        let report = analyze(&chat);
        assert_eq!(users(&report["participants"]), ["amy", "zoe", "bob"]);
        assert_eq!(
            users(&report["sentiment"]["byParticipant"]),
            ["amy", "zoe", "bob"]
        );
    }

    /// A hand-made chat, in time order; caro's first message gives `ts` as Unix seconds.
    fn standup() -> Vec<(&'static str, &'static str, Value)> {
        vec![
            (
                "ana",
                "Morning! Is the release ready?",
                json!("2026-01-05T10:00:00Z"),
            ),
            (
                "ben",
                "Almost, one test is failing.",
                json!("2026-01-05T10:00:30Z"),
            ),
            ("ben", "Fixing it now.", json!("2026-01-05T10:00:40Z")),
            ("ana", "Great, thanks.", json!("2026-01-05T10:01:40Z")),
            ("caro", "I can review it.", json!(1_767_607_310.5)), // 10:01:50.5
            ("ana", "Perfect.", json!("2026-01-05T11:02:10+01:00")), // 10:02:10Z
            ("ben", "Done, it is merged.", json!("2026-01-05T10:05:10Z")),
            ("caro", "Thanks!", json!("2026-01-05T10:05:20Z")),
            ("ben", "Anytime.", json!("2026-01-05T10:05:50Z")),
        ]
    }

    /// The standup chat sent out of order: payload position i holds message SHUFFLE[i].
    const SHUFFLE: [usize; 9] = [6, 0, 4, 2, 8, 1, 3, 7, 5];

    fn shuffled_standup() -> Vec<ChatMessage> {
        let chat = standup();
        let messages: Vec<Value> = SHUFFLE
            .iter()
            .map(|&i| json!({"user": chat[i].0, "text": chat[i].1, "ts": chat[i].2}))
            .collect();
        parse_messages(&json!({ "messages": messages })).unwrap()
    }

    #[test]
    fn response_times_match_hand_computed_values() {
        let report = analyze(&shuffled_standup());
        let times = &report["responseTimes"];

        // Replies (gap in seconds): ben 30, ana 60, caro 10.5, ana 19.5, ben 180,
        // caro 10, ben 30. Ben's "Fixing it now." follows himself and is no reply.
        // Sorted: 10, 10.5, 19.5, 30, 30, 60, 180; mean 340 / 7.
        assert_eq!(
            times["overall"],
            json!({"replies": 7, "meanSeconds": 48.571, "medianSeconds": 30.0})
        );
        assert_eq!(
            times["byResponder"],
            json!([
                {"user": "ben", "replies": 3, "meanSeconds": 80.0, "medianSeconds": 30.0},
                {"user": "ana", "replies": 2, "meanSeconds": 39.75, "medianSeconds": 39.75},
                {"user": "caro", "replies": 2, "meanSeconds": 10.25, "medianSeconds": 10.25},
            ])
        );
    }

    #[test]
    fn only_a_change_of_speaker_is_a_reply() {
        // 31 lines, two of which follow their own author's line.
        let report = analyze(&scene());
        assert_eq!(report["responseTimes"]["overall"]["replies"], 28);

        let monologue = analyze(&said("ana", &["one", "two", "three"]));
        assert_eq!(
            monologue["responseTimes"],
            json!({
                "overall": {"replies": 0, "meanSeconds": null, "medianSeconds": null},
                "byResponder": [],
            })
        );
    }

    #[test]
    fn messages_at_the_same_time_keep_their_payload_order() {
        let at = "2026-01-05T10:00:00Z";
        let chat = [message("ana", "first", at), message("ben", "second", at)];
        let report = analyze(&chat);
        let overall = &report["responseTimes"]["overall"];
        assert_eq!(
            *overall,
            json!({"replies": 1, "meanSeconds": 0.0, "medianSeconds": 0.0})
        );
        assert_eq!(users(&report["responseTimes"]["byResponder"]), ["ben"]);
    }

    #[test]
    fn clearly_positive_and_negative_messages_get_their_labels() {
        let chat = said(
            "ana",
            &[
                "I love this, thank you so much!",
                "This is terrible, I hate it.",
                "The meeting is at noon.",
            ],
        );
        let report = analyze(&chat);
        let scored = &report["sentiment"]["messages"];
        assert_eq!(scored[0]["label"], "positive");
        assert!(scored[0]["compound"].as_f64().unwrap() > 0.5);
        assert_eq!(scored[1]["label"], "negative");
        assert!(scored[1]["compound"].as_f64().unwrap() < -0.5);
        assert_eq!(scored[2]["label"], "neutral");
        // The mean of 0.8109, -0.7783 and 0, the scores Python's vaderSentiment gives.
        assert_eq!(
            report["sentiment"]["overall"],
            json!({
                "compound": round((0.8109 - 0.7783) / 3.0, 4),
                "positive": 1,
                "negative": 1,
                "neutral": 1,
            })
        );
    }

    #[test]
    fn the_scene_has_a_warm_welcome_and_a_dreaded_sight() {
        let report = analyze(&scene());
        let scored = report["sentiment"]["messages"].as_array().unwrap();
        let text_of = |entry: &Value| {
            scene()[entry["index"].as_u64().unwrap() as usize]
                .text
                .clone()
        };

        // "Welcome, Dev: welcome, good Caro."
        assert_eq!(text_of(&scored[21]), "Welcome, Dev: welcome, good Caro.");
        assert_eq!(scored[21]["label"], "positive");
        // "… touching this dreaded sight, twice seen of us."
        assert!(text_of(&scored[24]).contains("dreaded sight"));
        assert_eq!(scored[24]["label"], "negative");
    }

    #[test]
    fn questions_and_exclamations_alone_are_neutral() {
        // Punctuation only strengthens a feeling the words carry; with none, the score
        // stays 0. (The `vader_sentiment` crate scores these lines negative.)
        let report = analyze(&said(
            "ana",
            &["Who's there?", "Stand, ho! Who's there?", "Holla! Ben!"],
        ));
        for entry in report["sentiment"]["messages"].as_array().unwrap() {
            assert_eq!(entry["compound"], 0.0, "{entry}");
            assert_eq!(entry["label"], "neutral", "{entry}");
        }
    }

    #[test]
    fn sentiment_totals_are_means_and_counts_of_the_messages() {
        let report = analyze(&scene());
        let sentiment = &report["sentiment"];
        let scored = sentiment["messages"].as_array().unwrap();
        assert_eq!(scored.len(), 31);
        let compound = |entry: &Value| entry["compound"].as_f64().unwrap();

        // Overall: the mean compound, and label counts that cover every message.
        let mean = scored.iter().map(compound).sum::<f64>() / 31.0;
        let overall = &sentiment["overall"];
        assert!((overall["compound"].as_f64().unwrap() - mean).abs() <= 0.00005);
        let labels = ["positive", "negative", "neutral"].map(|l| overall[l].as_u64().unwrap());
        assert_eq!(labels.iter().sum::<u64>(), 31);
        for label in ["positive", "negative", "neutral"] {
            let counted = scored
                .iter()
                .filter(|entry| entry["label"] == label)
                .count();
            assert_eq!(overall[label], counted, "{label}");
        }

        // Per participant: each user's mean, in the order of `participants`.
        assert_eq!(
            users(&sentiment["byParticipant"]),
            users(&report["participants"])
        );
        for entry in sentiment["byParticipant"].as_array().unwrap() {
            let own: Vec<f64> = scored
                .iter()
                .filter(|m| m["user"] == entry["user"])
                .map(compound)
                .collect();
            let mean = own.iter().sum::<f64>() / own.len() as f64;
            assert!((compound(entry) - mean).abs() <= 0.00005, "{entry}");
        }
    }

    #[test]
    fn sentiment_lists_messages_in_time_order_with_their_payload_index() {
        let report = analyze(&shuffled_standup());
        let scored = report["sentiment"]["messages"].as_array().unwrap();
        let indexes: Vec<u64> = scored
            .iter()
            .map(|entry| entry["index"].as_u64().unwrap())
            .collect();
        // Where each message of the time line sits in SHUFFLE.
        assert_eq!(indexes, [1, 5, 3, 6, 2, 8, 0, 7, 4]);
        assert_eq!(scored[0]["user"], "ana");
        assert_eq!(scored[7]["label"], "positive"); // caro: "Thanks!"
    }

    #[test]
    fn an_english_chat_is_detected_as_english() {
        let report = analyze(&scene());
        assert_eq!(report["language"]["code"], "eng");
        assert_eq!(report["language"]["name"], "English");
        let confidence = report["language"]["confidence"].as_f64().unwrap();
        assert!((0.5..=1.0).contains(&confidence), "{confidence}");
    }

    fn french_chat() -> Vec<ChatMessage> {
        said(
            "ana",
            &[
                "Bonjour à tous, vous avez goûté le gâteau de Marie ?",
                "Oui, le gâteau était délicieux, merci beaucoup !",
                "Je voudrais la recette du gâteau pour dimanche.",
                "Nous pourrions préparer un autre gâteau ensemble la semaine prochaine.",
            ],
        )
    }

    #[test]
    fn french_and_german_chats_are_detected_as_such() {
        let report = analyze(&french_chat());
        assert_eq!(report["language"]["code"], "fra");
        assert_eq!(report["language"]["name"], "French");

        let german = said(
            "ben",
            &[
                "Guten Morgen, habt ihr den Bericht schon gelesen?",
                "Ja, der Bericht ist sehr gründlich, aber ziemlich lang.",
                "Ich schreibe morgen eine kurze Zusammenfassung für das Team.",
                "Danke, das wäre wirklich hilfreich für unsere Besprechung.",
            ],
        );
        let report = analyze(&german);
        assert_eq!(report["language"]["code"], "deu");
        assert_eq!(report["language"]["name"], "German");
        assert_eq!(terms(&report)[0], ("bericht", 2));
    }

    #[test]
    fn no_language_is_reported_for_a_chat_without_words() {
        let report = analyze(&said("ana", &["", "!!!", "42"]));
        assert_eq!(report["language"], Value::Null);
    }

    #[test]
    fn top_terms_leave_out_stop_words_and_count_content_words() {
        let report = analyze(&scene());
        let top = terms(&report);
        assert_eq!(top.len(), 10);

        // "night" is said six times: three "good night"s, "to-night", "this night" and
        // "Last night"; "good" is an English stop word and stays out.
        assert_eq!(top[0], ("night", 6));
        for stop_word in ["the", "and", "you", "of", "good", "tis"] {
            assert!(
                top.iter().all(|&(term, _)| term != stop_word),
                "{stop_word} in {top:?}"
            );
        }

        // Most used first, then alphabetical.
        let order = top
            .windows(2)
            .all(|w| w[0].1 > w[1].1 || (w[0].1 == w[1].1 && w[0].0 < w[1].0));
        assert!(order, "{top:?}");
    }

    #[test]
    fn top_terms_use_the_stop_words_of_the_detected_language() {
        let report = analyze(&french_chat());
        let top = terms(&report);
        assert_eq!(top[0], ("gâteau", 4));
        for stop_word in ["vous", "nous", "je", "le", "la", "de", "du", "un"] {
            assert!(
                top.iter().all(|&(term, _)| term != stop_word),
                "{stop_word} in {top:?}"
            );
        }
    }

    #[test]
    fn top_terms_skip_numbers_and_single_characters() {
        let chat = said(
            "ana",
            &[
                "ü 42 zebra apple",
                "Ü 42 3.14 zebra apple mango",
                "Apple 2026 ü",
            ],
        );
        assert_eq!(
            terms(&analyze(&chat)),
            [("apple", 3), ("zebra", 2), ("mango", 1)]
        );
    }

    #[test]
    fn a_language_without_stop_words_falls_back_to_english() {
        assert!(stop_words_for(Some(Lang::Fra)).contains("vous"));
        // The stop-words crate has no Welsh list.
        assert!(stop_words_for(Some(Lang::Cym)).contains("the"));
        assert!(stop_words_for(None).contains("the"));
    }

    #[test]
    fn every_language_maps_to_its_stop_word_list_where_one_exists() {
        // whatlang languages the stop-words crate has no list for; any other code that
        // finds no list is a typo in `iso_639_1`.
        let without_list = [
            "ak", "am", "az", "be", "cy", "jv", "ka", "km", "kn", "mk", "ml", "my", "ne", "or",
            "pa", "si", "sn", "sr", "ta", "te", "tk", "uz", "yi",
        ];
        for &lang in Lang::all() {
            let code = iso_639_1(lang);
            let found = stop_words::lookup(code).is_some();
            assert!(
                found || without_list.contains(&code),
                "{lang:?} maps to {code}"
            );
        }
    }

    #[test]
    fn words_keep_inner_apostrophes_and_split_on_the_rest() {
        assert_eq!(
            words("'Tis appear'd to-night, don’t — 3.5 ok"),
            ["Tis", "appear'd", "to", "night", "don’t", "3", "5", "ok"]
        );
        assert!(words(" ... — !").is_empty());
    }

    #[test]
    fn a_chat_without_words_has_null_word_shares() {
        let report = analyze(&said("ana", &["", "!!!"]));
        assert_eq!(report["wordCount"], 0);
        assert_eq!(report["participants"][0]["messageShare"], 1.0);
        assert_eq!(report["participants"][0]["wordShare"], Value::Null);
        assert_eq!(report["topTerms"], json!([]));
    }

    #[test]
    fn an_empty_slice_gives_an_empty_report() {
        let report = analyze(&[]);
        assert_eq!(report["messageCount"], 0);
        assert_eq!(report["participants"], json!([]));
        assert_eq!(report["responseTimes"]["overall"]["replies"], 0);
        assert_eq!(report["language"], Value::Null);
        assert_eq!(
            report["sentiment"]["overall"],
            json!({"compound": null, "positive": 0, "negative": 0, "neutral": 0})
        );
        assert_eq!(report["topTerms"], json!([]));
    }

    #[test]
    fn ts_may_be_rfc_3339_or_unix_seconds() {
        let ts = |value: Value| parse_messages(&with_ts(value)).unwrap()[0].ts;
        let expected = message("x", "", "2026-01-05T10:00:00Z").ts;
        assert_eq!(ts(json!("2026-01-05T10:00:00Z")), expected);
        assert_eq!(ts(json!("2026-01-05T11:00:00+01:00")), expected);
        assert_eq!(ts(json!(1_767_607_200)), expected);
        assert_eq!(
            ts(json!(1_767_607_200.25)),
            expected + TimeDelta::milliseconds(250)
        );
        assert_eq!(
            ts(json!(-1.5)),
            DateTime::from_timestamp(-2, 500_000_000).unwrap()
        );
    }

    #[test]
    fn a_bad_ts_is_named_with_the_reason() {
        let error = parse_error(with_ts(json!("yesterday")));
        assert!(
            error.starts_with(
                "messages[0].ts: expected an RFC 3339 time or Unix seconds, got \"yesterday\" ("
            ),
            "{error}"
        );
        assert_eq!(
            parse_error(with_ts(json!(true))),
            "messages[0].ts: expected an RFC 3339 time or Unix seconds, got a boolean"
        );
        assert_eq!(
            parse_error(with_ts(json!(1e20))),
            "messages[0].ts: expected an RFC 3339 time or Unix seconds; 1e+20 is out of range"
        );
        // A date without a time is not RFC 3339.
        assert!(parse_error(with_ts(json!("2026-01-05"))).starts_with("messages[0].ts: "));
    }

    #[test]
    fn a_bad_field_is_named_with_its_message() {
        let payload = |third: Value| {
            json!({"messages": [
                {"user": "ana", "text": "hi", "ts": 1},
                {"user": "ben", "text": "hello", "ts": 2},
                third,
            ]})
        };
        let cases = [
            (json!({"text": "hi", "ts": 3}), "messages[2].user: missing"),
            (
                json!({"user": " ", "text": "hi", "ts": 3}),
                "messages[2].user: blank; expected a name",
            ),
            (
                json!({"user": 7, "text": "hi", "ts": 3}),
                "messages[2].user: expected a string, got a number",
            ),
            (
                json!({"user": "caro", "ts": 3}),
                "messages[2].text: missing",
            ),
            (
                json!({"user": "caro", "text": null, "ts": 3}),
                "messages[2].text: expected a string, got null",
            ),
            (
                json!({"user": "caro", "text": "hi"}),
                "messages[2].ts: missing",
            ),
            (
                json!("caro: hi"),
                "messages[2]: expected an object, got a string",
            ),
        ];
        for (third, expected) in cases {
            assert_eq!(parse_error(payload(third)), expected);
        }
    }

    #[test]
    fn the_message_list_must_be_a_non_empty_array() {
        assert_eq!(
            parse_error(json!({"messages": []})),
            "messages: empty; at least one message is needed"
        );
        assert_eq!(
            parse_error(json!({"messages": {"0": "hi"}})),
            "messages: expected an array, got an object"
        );
        assert_eq!(
            parse_error(json!({"message": []})),
            "messages: missing; expected an array of messages"
        );
        assert_eq!(
            parse_error(json!(["hi"])),
            "payload: expected an object with a messages array, got an array"
        );
    }

    #[test]
    fn at_most_ten_thousand_messages_are_accepted() {
        let one = json!({"user": "ana", "text": "hi", "ts": 0});
        let payload = |count: usize| json!({"messages": vec![one.clone(); count]});
        assert_eq!(
            parse_messages(&payload(MAX_MESSAGES)).unwrap().len(),
            10_000
        );
        assert_eq!(
            parse_error(payload(MAX_MESSAGES + 1)),
            "messages: 10001 messages; at most 10000 are allowed"
        );
    }

    #[test]
    fn long_bad_values_are_cut_short_in_errors() {
        let error = parse_error(with_ts(json!("y".repeat(5_000))));
        assert!(
            error.contains(&format!("\"{}\"…", "y".repeat(40))),
            "{error}"
        );
        assert!(error.len() < 200, "{error}");
    }

    #[test]
    fn extra_fields_are_ignored() {
        let payload = json!({
            "source": "test",
            "messages": [{"id": 9, "user": "ana", "text": "hi", "ts": 0, "edited": true}],
        });
        assert_eq!(parse_messages(&payload).unwrap()[0].user, "ana");
    }
}
