//! The event pipeline: jobs accepted by the API, run by handlers on tokio tasks,
//! recorded step by step in the store, and pushed to channels as they progress.
//!
//! - `model`: what a job is.
//! - `handler`: the trait every handler implements, and what a running job sees.
//! - `handlers`: the built-in handlers (`file-upload`, `chat-analysis`, `relay`,
//!   `http`).
//! - `files`: content-addressed storage for uploads.
//! - `chat_analysis`: the analysis behind `chat-analysis`.
//! - `runner`: the workers that claim jobs, run them with timeouts and retries, and
//!   push their events.

mod chat_analysis;
pub mod files;
mod handler;
mod handlers;
mod model;
mod runner;

use serde_json::Value;

pub use handler::{Handler, HandlerError, JobContext};
pub use model::{Job, JobFilter, JobStatus, NewJob, Progress, ResultStatus, Step, WebhookResult};
pub(crate) use runner::retain_outcome;
pub use runner::{JobRuntime, StartError, job_payload, spawn_workers};

use crate::protocol::ChannelName;

/// Fills a channel template: `{jobId}`, `{eventType}` and `{metadata.FIELD}` (a
/// string or number field of the metadata object).
///
/// # Errors
///
/// A placeholder it does not know, or a metadata field that is missing.
pub fn render_channel(
    template: &str,
    job_id: &str,
    event_type: &str,
    metadata: &Value,
) -> Result<String, String> {
    let mut out = String::with_capacity(template.len() + 36);
    let mut rest = template;
    while let Some(open) = rest.find('{') {
        out.push_str(&rest[..open]);
        let Some(close) = rest[open..].find('}') else {
            return Err(format!("unclosed '{{' in channel template {template:?}"));
        };
        let name = &rest[open + 1..open + close];
        out.push_str(&placeholder(name, job_id, event_type, metadata)?);
        rest = &rest[open + close + 1..];
    }
    out.push_str(rest);
    Ok(out)
}

fn placeholder(
    name: &str,
    job_id: &str,
    event_type: &str,
    metadata: &Value,
) -> Result<String, String> {
    match name {
        "jobId" => Ok(job_id.to_owned()),
        "eventType" => Ok(event_type.to_owned()),
        _ => {
            let Some(field) = name.strip_prefix("metadata.") else {
                return Err(format!(
                    "unknown placeholder {{{name}}}; use {{jobId}}, {{eventType}} or \
                     {{metadata.FIELD}}"
                ));
            };
            match metadata.get(field) {
                Some(Value::String(text)) => Ok(text.clone()),
                Some(Value::Number(number)) => Ok(number.to_string()),
                _ => Err(format!(
                    "the channel template needs metadata.{field}, a string or a number"
                )),
            }
        }
    }
}

/// Checks a configured channel template: its placeholders are known, and filled
/// with typical values it makes a valid channel name.
///
/// # Errors
///
/// What is wrong with the template.
pub fn check_channel_template(template: &str) -> Result<(), String> {
    let sample_metadata = sample_metadata(template);
    let sample_id = "0190c0de-0000-7000-8000-000000000000";
    let rendered = render_channel(template, sample_id, "event-type", &sample_metadata)?;
    ChannelName::parse(&rendered)
        .map(|_| ())
        .map_err(|error| format!("makes channel names like {rendered:?}: {error}"))
}

/// Metadata with a value for every `{metadata.FIELD}` of a template.
fn sample_metadata(template: &str) -> Value {
    let fields = template
        .split("{metadata.")
        .skip(1)
        .filter_map(|rest| rest.split('}').next())
        .map(|field| (field.to_owned(), Value::String("x".into())));
    Value::Object(fields.collect())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn templates_fill_ids_types_and_metadata() {
        let metadata = json!({"room": "lobby", "user": 7});
        let rendered = render_channel(
            "chat-{metadata.room}-{metadata.user}-{jobId}",
            "j1",
            "t",
            &metadata,
        );
        assert_eq!(rendered.unwrap(), "chat-lobby-7-j1");
        assert_eq!(
            render_channel("{eventType}", "j", "relay", &metadata).unwrap(),
            "relay"
        );
    }

    #[test]
    fn bad_templates_are_explained() {
        assert!(check_channel_template("job-{jobId}").is_ok());
        assert!(check_channel_template("private-{metadata.user}").is_ok());
        assert!(
            check_channel_template("job-{id}")
                .unwrap_err()
                .contains("unknown placeholder")
        );
        assert!(
            check_channel_template("job {jobId}")
                .unwrap_err()
                .contains("channel names")
        );
        let missing = render_channel("c-{metadata.room}", "j", "t", &json!({}));
        assert!(missing.unwrap_err().contains("metadata.room"));
    }
}
