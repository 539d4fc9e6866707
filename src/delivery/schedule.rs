//! When a failed delivery is tried again.

use std::time::Duration;

use chrono::{DateTime, Utc};

use crate::config::WebhooksConfig;

/// The waits between attempts, with jitter, and the bound on `Retry-After`.
#[derive(Debug, Clone)]
pub struct RetrySchedule {
    steps: Vec<Duration>,
    jitter: f64,
    retry_after_max: Duration,
}

impl RetrySchedule {
    /// The schedule of the `[webhooks]` configuration.
    pub fn new(config: &WebhooksConfig) -> Self {
        RetrySchedule {
            steps: config.schedule.clone(),
            jitter: config.jitter,
            retry_after_max: config.retry_after_max,
        }
    }

    /// Attempts in all.
    pub fn max_attempts(&self) -> u32 {
        u32::try_from(self.steps.len() + 1).unwrap_or(u32::MAX)
    }

    /// The wait after attempt number `attempt` (1 for the first) failed, or `None`
    /// when it was the last. A receiver's `Retry-After` replaces the scheduled wait,
    /// up to `retry_after_max`.
    pub fn wait_after(&self, attempt: u32, retry_after: Option<Duration>) -> Option<Duration> {
        let step = self
            .steps
            .get(usize::try_from(attempt).ok()?.checked_sub(1)?)?;
        if let Some(hint) = retry_after {
            return Some(hint.min(self.retry_after_max));
        }
        // Jitter spreads retries that failed together, so they do not return together.
        let spread = (rand::random::<f64>() * 2.0 - 1.0) * self.jitter;
        Some(step.mul_f64(1.0 + spread))
    }
}

/// Reads a `Retry-After` value: seconds, or an HTTP date.
pub fn retry_after(value: &str, now: DateTime<Utc>) -> Option<Duration> {
    let value = value.trim();
    if let Ok(seconds) = value.parse::<u64>() {
        return Some(Duration::from_secs(seconds));
    }
    let date = DateTime::parse_from_rfc2822(value).ok()?;
    (date.with_timezone(&Utc) - now).to_std().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn schedule(jitter: f64) -> RetrySchedule {
        RetrySchedule {
            steps: vec![Duration::from_secs(5), Duration::from_secs(300)],
            jitter,
            retry_after_max: Duration::from_secs(3600),
        }
    }

    #[test]
    fn waits_follow_the_schedule_then_stop() {
        let schedule = schedule(0.0);
        assert_eq!(schedule.max_attempts(), 3);
        assert_eq!(schedule.wait_after(1, None), Some(Duration::from_secs(5)));
        assert_eq!(schedule.wait_after(2, None), Some(Duration::from_secs(300)));
        assert_eq!(schedule.wait_after(3, None), None);
    }

    #[test]
    fn jitter_stays_within_its_fraction() {
        let schedule = schedule(0.2);
        for _ in 0..200 {
            let wait = schedule.wait_after(2, None).unwrap().as_secs_f64();
            assert!((240.0..=360.0).contains(&wait), "{wait}");
        }
    }

    #[test]
    fn retry_after_replaces_the_wait_within_bounds() {
        let schedule = schedule(0.2);
        let hint = Some(Duration::from_secs(2));
        assert_eq!(schedule.wait_after(1, hint), Some(Duration::from_secs(2)));
        let huge = Some(Duration::from_secs(999_999));
        assert_eq!(
            schedule.wait_after(1, huge),
            Some(Duration::from_secs(3600))
        );
        assert_eq!(
            schedule.wait_after(3, hint),
            None,
            "the last attempt stays the last"
        );
    }

    #[test]
    fn retry_after_takes_seconds_or_a_date() {
        let now = DateTime::parse_from_rfc3339("2026-01-01T00:00:00Z")
            .unwrap()
            .with_timezone(&Utc);
        assert_eq!(retry_after("120", now), Some(Duration::from_secs(120)));
        let date = "Thu, 01 Jan 2026 00:01:00 GMT";
        assert_eq!(retry_after(date, now), Some(Duration::from_secs(60)));
        assert_eq!(retry_after("soon", now), None);
    }
}
