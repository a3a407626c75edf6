//! A budget's periods: which one an instant falls in, as `[start, end)` in unix seconds,
//! computed in the budget's time zone (calendar days, weeks and months; daylight-saving
//! changes included) from its anchor.

use crate::settings::BudgetPeriod;
use jiff::civil::{Date, DateTime};
use jiff::tz::TimeZone;
use jiff::{Span, Timestamp};

/// How a budget's time is cut into periods.
#[derive(Debug, Clone, PartialEq)]
pub struct Periods {
    kind: BudgetPeriod,
    /// Local time in `tz`: its time of day, weekday, day of month or instant counts.
    anchor: DateTime,
    tz: TimeZone,
    /// A custom period's length, seconds.
    every: i64,
}

/// One period: its start and (unless lifetime) its end, unix seconds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Period {
    pub start: i64,
    pub end: Option<i64>,
}

/// Parse an anchor: `YYYY-MM-DDTHH:MM[:SS]` or `YYYY-MM-DD` (midnight).
fn parse_anchor(text: &str) -> Result<DateTime, String> {
    let text = text.trim();
    text.parse::<DateTime>()
        .or_else(|_| {
            text.parse::<Date>()
                .map(|d| d.to_datetime(jiff::civil::Time::midnight()))
        })
        .map_err(|_| format!("`{text}`: expected a local date and time, YYYY-MM-DDTHH:MM"))
}

impl Periods {
    /// The periods of a budget; an error names the field.
    pub fn new(
        kind: BudgetPeriod,
        every: Option<std::time::Duration>,
        anchor: Option<&str>,
        time_zone: Option<&str>,
    ) -> Result<Periods, (&'static str, String)> {
        let tz = match time_zone {
            None => TimeZone::UTC,
            Some(name) => TimeZone::get(name).map_err(|_| {
                (
                    "time_zone",
                    format!("`{name}`: not an IANA time zone (such as `Asia/Shanghai`)"),
                )
            })?,
        };
        let anchor = match anchor {
            Some(a) => parse_anchor(a).map_err(|e| ("anchor", e))?,
            None if kind == BudgetPeriod::Custom => {
                return Err(("anchor", "a custom period needs an anchor".into()))
            }
            // A Monday, the 1st of a month, midnight.
            None => jiff::civil::date(2024, 1, 1).to_datetime(jiff::civil::Time::midnight()),
        };
        let every = match (kind, every) {
            (BudgetPeriod::Custom, Some(d)) if d.as_secs() >= 60 => {
                i64::try_from(d.as_secs()).map_err(|_| ("every", "too long".to_string()))?
            }
            (BudgetPeriod::Custom, _) => {
                return Err((
                    "every",
                    "a custom period needs `every` of a minute or more".into(),
                ))
            }
            (_, Some(_)) => return Err(("every", "only a custom period has `every`".into())),
            (_, None) => 0,
        };
        Ok(Periods {
            kind,
            anchor,
            tz,
            every,
        })
    }

    pub fn kind(&self) -> BudgetPeriod {
        self.kind
    }

    /// Unix seconds of local date-time `dt` (a time skipped by a clock change counts as
    /// the instant after the gap).
    fn instant(&self, dt: DateTime) -> i64 {
        dt.to_zoned(self.tz.clone())
            .map(|z| z.timestamp().as_second())
            .unwrap_or(0)
    }

    /// The anchor's time of day on `date`.
    fn on(&self, date: Date) -> i64 {
        self.instant(date.to_datetime(self.anchor.time()))
    }

    /// The period `now` (unix seconds) falls in.
    pub fn at(&self, now: i64) -> Period {
        let local = Timestamp::from_second(now)
            .unwrap_or(Timestamp::UNIX_EPOCH)
            .to_zoned(self.tz.clone())
            .date();
        let days = |d: Date, n: i64| d.checked_add(Span::new().days(n)).unwrap_or(d);
        match self.kind {
            BudgetPeriod::Lifetime => Period {
                start: 0,
                end: None,
            },
            BudgetPeriod::Custom => {
                let a = self.instant(self.anchor);
                let start = a + (now - a).div_euclid(self.every) * self.every;
                Period {
                    start,
                    end: Some(start + self.every),
                }
            }
            BudgetPeriod::Day => {
                let d = if self.on(local) > now {
                    days(local, -1)
                } else {
                    local
                };
                Period {
                    start: self.on(d),
                    end: Some(self.on(days(d, 1))),
                }
            }
            BudgetPeriod::Week => {
                let want = i64::from(self.anchor.weekday().to_monday_zero_offset());
                let have = i64::from(local.weekday().to_monday_zero_offset());
                let mut d = days(local, -(have - want).rem_euclid(7));
                if self.on(d) > now {
                    d = days(d, -7);
                }
                Period {
                    start: self.on(d),
                    end: Some(self.on(days(d, 7))),
                }
            }
            BudgetPeriod::Month => {
                let mut d = self.month_day(local.year(), local.month());
                if self.on(d) > now {
                    d = self.shift_month(d, -1);
                }
                Period {
                    start: self.on(d),
                    end: Some(self.on(self.shift_month(d, 1))),
                }
            }
        }
    }

    /// The anchor's day of the month in `year`-`month` (its last day when shorter).
    fn month_day(&self, year: i16, month: i8) -> Date {
        let first = Date::new(year, month, 1).unwrap_or(Date::MIN);
        let day = self.anchor.day().min(first.days_in_month());
        Date::new(year, month, day).unwrap_or(first)
    }

    fn shift_month(&self, d: Date, n: i64) -> Date {
        let first = d.first_of_month();
        let first = first.checked_add(Span::new().months(n)).unwrap_or(first);
        self.month_day(first.year(), first.month())
    }

    /// `at` as RFC 3339 local time in the budget's time zone (for messages).
    pub fn local(&self, at: i64) -> String {
        Timestamp::from_second(at)
            .unwrap_or(Timestamp::UNIX_EPOCH)
            .to_zoned(self.tz.clone())
            .strftime("%Y-%m-%dT%H:%M:%S%:z")
            .to_string()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn secs(text: &str) -> i64 {
        text.parse::<Timestamp>().unwrap().as_second()
    }

    fn month(anchor: Option<&str>, tz: &str) -> Periods {
        Periods::new(BudgetPeriod::Month, None, anchor, Some(tz)).unwrap()
    }

    #[test]
    fn a_month_begins_at_the_anchor_in_its_time_zone() {
        let p = month(None, "Asia/Shanghai");
        // 2026-01-31T23:59 in Shanghai is 15:59 UTC; a minute later February begins there.
        let jan = p.at(secs("2026-01-31T15:59:00Z"));
        assert_eq!(jan.start, secs("2025-12-31T16:00:00Z"));
        assert_eq!(jan.end, Some(secs("2026-01-31T16:00:00Z")));
        let feb = p.at(secs("2026-01-31T16:00:00Z"));
        assert_eq!(feb.start, secs("2026-01-31T16:00:00Z"));
        assert_eq!(feb.end, Some(secs("2026-02-28T16:00:00Z")));
        assert_eq!(p.local(feb.start), "2026-02-01T00:00:00+08:00");
    }

    #[test]
    fn the_31st_falls_on_the_last_day_of_short_months() {
        let p = month(Some("2026-01-31T09:00"), "UTC");
        let feb = p.at(secs("2026-03-01T00:00:00Z"));
        assert_eq!(feb.start, secs("2026-02-28T09:00:00Z"));
        assert_eq!(feb.end, Some(secs("2026-03-31T09:00:00Z")));
        let before = p.at(secs("2026-02-28T08:59:59Z"));
        assert_eq!(before.start, secs("2026-01-31T09:00:00Z"));
    }

    #[test]
    fn days_and_weeks_follow_daylight_saving() {
        let day = Periods::new(BudgetPeriod::Day, None, None, Some("Europe/Berlin")).unwrap();
        // 2026-03-29: clocks go from 02:00 to 03:00 in Berlin; that day has 23 hours.
        let p = day.at(secs("2026-03-29T12:00:00Z"));
        assert_eq!(p.start, secs("2026-03-28T23:00:00Z"));
        assert_eq!(p.end, Some(secs("2026-03-29T22:00:00Z")));
        let week = Periods::new(
            BudgetPeriod::Week,
            None,
            Some("2026-01-07T06:00"),
            Some("UTC"),
        )
        .unwrap();
        // Anchored on Wednesdays at 06:00; 2026-03-04 is a Wednesday.
        let w = week.at(secs("2026-03-04T05:59:59Z"));
        assert_eq!(w.start, secs("2026-02-25T06:00:00Z"));
        assert_eq!(
            week.at(secs("2026-03-04T06:00:00Z")).start,
            secs("2026-03-04T06:00:00Z")
        );
    }

    #[test]
    fn custom_and_lifetime_periods() {
        let every = Some(std::time::Duration::from_secs(14 * 86_400));
        let p = Periods::new(BudgetPeriod::Custom, every, Some("2026-01-01"), None).unwrap();
        let at = p.at(secs("2026-01-20T00:00:00Z"));
        assert_eq!(at.start, secs("2026-01-15T00:00:00Z"));
        assert_eq!(at.end, Some(secs("2026-01-29T00:00:00Z")));
        // Before the anchor, periods count backwards.
        assert_eq!(
            p.at(secs("2025-12-31T00:00:00Z")).start,
            secs("2025-12-18T00:00:00Z")
        );
        let life = Periods::new(BudgetPeriod::Lifetime, None, None, None).unwrap();
        assert_eq!(
            life.at(12345),
            Period {
                start: 0,
                end: None
            }
        );
    }

    #[test]
    fn bad_settings_name_their_field() {
        let bad = |k, e: Option<u64>, a: Option<&str>, tz: Option<&str>| {
            Periods::new(k, e.map(std::time::Duration::from_secs), a, tz)
                .unwrap_err()
                .0
        };
        assert_eq!(
            bad(BudgetPeriod::Month, None, None, Some("Mars/Olympus")),
            "time_zone"
        );
        assert_eq!(bad(BudgetPeriod::Month, None, Some("soon"), None), "anchor");
        assert_eq!(
            bad(BudgetPeriod::Custom, Some(86_400), None, None),
            "anchor"
        );
        assert_eq!(
            bad(BudgetPeriod::Custom, None, Some("2026-01-01"), None),
            "every"
        );
        assert_eq!(bad(BudgetPeriod::Day, Some(86_400), None, None), "every");
    }
}
