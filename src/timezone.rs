//! Site timezones as Matomo stores them in `site.timezone`, and the local date of a UTC time.
//!
//! Matomo accepts three forms: `UTC`, a manual offset in hours such as `UTC+5.5` or `UTC-9.5`
//! (no DST), and an IANA name (with DST). IANA names resolve through chrono-tz, whose database
//! is compiled in, so no system tzdata is needed.

use chrono::{FixedOffset, NaiveDate, NaiveDateTime, TimeZone};
use std::fmt;
use std::str::FromStr;

#[derive(Clone, Debug, PartialEq)]
pub enum SiteTimezone {
    Named(chrono_tz::Tz),
    Offset(FixedOffset),
}

impl SiteTimezone {
    /// Parses `site.timezone`. The manual-offset notation is Matomo's own (hours as a decimal
    /// number after `UTC`), which no timezone library knows, so it is read here: `UTC` then an
    /// optional signed decimal number of hours, converted to whole seconds.
    pub fn parse(value: &str) -> Option<SiteTimezone> {
        let value = value.trim();
        if let Some(rest) = value.strip_prefix("UTC") {
            if rest.is_empty() {
                return FixedOffset::east_opt(0).map(SiteTimezone::Offset);
            }
            if rest.starts_with('+') || rest.starts_with('-') {
                let hours: f64 = rest.parse().ok()?;
                if !hours.is_finite() || hours.abs() > 14.0 {
                    return None;
                }
                let seconds = (hours * 3600.0).round() as i32;
                return FixedOffset::east_opt(seconds).map(SiteTimezone::Offset);
            }
        }
        chrono_tz::Tz::from_str(value).ok().map(SiteTimezone::Named)
    }

    /// The site-local calendar date of a UTC time, as Matomo's `Date::factory($utc, $tz)` gives.
    pub fn local_date(&self, utc: NaiveDateTime) -> NaiveDate {
        match self {
            SiteTimezone::Named(tz) => tz.from_utc_datetime(&utc).date_naive(),
            SiteTimezone::Offset(off) => off.from_utc_datetime(&utc).date_naive(),
        }
    }

    /// The UTC time at which a site-local date begins. Where a daylight-saving change skips
    /// local midnight, the day begins at the first local time that exists (as PHP's DateTime
    /// moves a time in the gap forward); a date skipped whole (Pacific/Apia, 2011-12-30) begins
    /// and ends when the next one begins.
    pub fn start_of_day_utc(&self, date: NaiveDate) -> NaiveDateTime {
        let midnight = date.and_time(chrono::NaiveTime::MIN);
        match self {
            SiteTimezone::Offset(off) => {
                midnight - chrono::Duration::seconds(off.local_minus_utc().into())
            }
            SiteTimezone::Named(tz) => {
                let mut local = midnight;
                while local.date() == date {
                    if let Some(t) = tz.from_local_datetime(&local).earliest() {
                        return t.naive_utc();
                    }
                    local += chrono::Duration::minutes(15);
                }
                match date.succ_opt() {
                    Some(next) => self.start_of_day_utc(next),
                    None => midnight,
                }
            }
        }
    }

    /// The site-local wall-clock time of a UTC time.
    pub fn local_time(&self, utc: NaiveDateTime) -> NaiveDateTime {
        match self {
            SiteTimezone::Named(tz) => tz.from_utc_datetime(&utc).naive_local(),
            SiteTimezone::Offset(off) => off.from_utc_datetime(&utc).naive_local(),
        }
    }
}

impl fmt::Display for SiteTimezone {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SiteTimezone::Named(tz) => write!(f, "{}", tz.name()),
            SiteTimezone::Offset(off) => write!(f, "UTC{off}"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn utc(s: &str) -> NaiveDateTime {
        NaiveDateTime::parse_from_str(s, "%Y-%m-%d %H:%M:%S").unwrap()
    }

    fn date(s: &str) -> NaiveDate {
        NaiveDate::parse_from_str(s, "%Y-%m-%d").unwrap()
    }

    #[test]
    fn manual_half_hour_offset_moves_the_date_forward() {
        let tz = SiteTimezone::parse("UTC+5.5").unwrap();
        assert_eq!(
            tz.local_date(utc("2024-03-31 18:29:59")),
            date("2024-03-31")
        );
        assert_eq!(
            tz.local_date(utc("2024-03-31 18:30:00")),
            date("2024-04-01")
        );
    }

    #[test]
    fn manual_negative_offset_moves_the_date_back() {
        let tz = SiteTimezone::parse("UTC-9.5").unwrap();
        assert_eq!(
            tz.local_date(utc("2024-04-01 09:29:00")),
            date("2024-03-31")
        );
        assert_eq!(
            tz.local_date(utc("2024-04-01 09:30:00")),
            date("2024-04-01")
        );
    }

    #[test]
    fn named_zone_follows_daylight_saving() {
        let tz = SiteTimezone::parse("Europe/Berlin").unwrap();
        // Winter: UTC+1. Summer (from 2024-03-31 01:00 UTC): UTC+2.
        assert_eq!(
            tz.local_date(utc("2024-03-30 22:59:00")),
            date("2024-03-30")
        );
        assert_eq!(
            tz.local_date(utc("2024-03-30 23:00:00")),
            date("2024-03-31")
        );
        assert_eq!(
            tz.local_date(utc("2024-03-31 21:59:00")),
            date("2024-03-31")
        );
        assert_eq!(
            tz.local_date(utc("2024-03-31 22:00:00")),
            date("2024-04-01")
        );
    }

    #[test]
    fn start_of_a_local_day_in_utc() {
        let berlin = SiteTimezone::parse("Europe/Berlin").unwrap();
        assert_eq!(
            berlin.start_of_day_utc(date("2024-03-31")),
            utc("2024-03-30 23:00:00")
        );
        assert_eq!(
            berlin.start_of_day_utc(date("2024-04-01")),
            utc("2024-03-31 22:00:00")
        );
        let india = SiteTimezone::parse("UTC+5.5").unwrap();
        assert_eq!(
            india.start_of_day_utc(date("2024-04-01")),
            utc("2024-03-31 18:30:00")
        );
        let alaska = SiteTimezone::parse("UTC-9.5").unwrap();
        assert_eq!(
            alaska.start_of_day_utc(date("2024-04-01")),
            utc("2024-04-01 09:30:00")
        );
        // Santiago moved its clocks from 00:00 to 01:00 local on 2024-09-08 (UTC-4 to UTC-3).
        let santiago = SiteTimezone::parse("America/Santiago").unwrap();
        assert_eq!(
            santiago.start_of_day_utc(date("2024-09-08")),
            utc("2024-09-08 04:00:00")
        );
        // Apia skipped 2011-12-30: it begins and ends when 2011-12-31 begins.
        let apia = SiteTimezone::parse("Pacific/Apia").unwrap();
        assert_eq!(
            apia.start_of_day_utc(date("2011-12-30")),
            apia.start_of_day_utc(date("2011-12-31"))
        );
        assert_eq!(
            apia.start_of_day_utc(date("2011-12-31")),
            utc("2011-12-30 10:00:00")
        );
    }

    #[test]
    fn plain_utc_and_garbage() {
        let tz = SiteTimezone::parse("UTC").unwrap();
        assert_eq!(
            tz.local_date(utc("2024-01-01 23:59:59")),
            date("2024-01-01")
        );
        assert!(SiteTimezone::parse("UTC+abc").is_none());
        assert!(SiteTimezone::parse("Mars/Olympus").is_none());
        assert!(SiteTimezone::parse("UTC+30").is_none());
    }
}
