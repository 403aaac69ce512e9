//! Schedules: standard 5-field cron expressions and `@daily`-style presets,
//! evaluated in the job's timezone.

use chrono::{DateTime, Offset, TimeZone};
use std::str::FromStr;

/// A parsed schedule.
#[derive(Debug, Clone)]
pub struct Schedule {
    /// What the user wrote, for messages.
    pub expr: String,
    /// The ticks are those of any of these. Cron matches a day when its
    /// day-of-month OR its day-of-week field matches, if both are
    /// restricted (`0 0 1,15 * MON`: the 1st, the 15th and every Monday);
    /// the `cron` crate ANDs them, so such an expression is kept as two
    /// schedules, one per field, and their ticks merged.
    crons: Vec<cron::Schedule>,
    /// The hour field is `*`: ticks are so many minutes past every hour,
    /// evaluated at the UTC offset in force, so that a DST change neither
    /// skips nor doubles an hour (as Airflow does for such schedules).
    every_hour: bool,
}

impl Schedule {
    /// Parses a 5-field cron expression (minute hour day-of-month month
    /// day-of-week, 0 or 7 = Sunday), a 6-field one with seconds first,
    /// or a preset: `@hourly`, `@daily`,
    /// `@weekly`, `@monthly`, `@yearly`.
    pub fn parse(expr: &str) -> Result<Schedule, String> {
        let trimmed = expr.trim();
        let six = match trimmed {
            "@hourly" => "0 0 * * * *".to_string(),
            "@daily" | "@midnight" => "0 0 0 * * *".to_string(),
            "@weekly" => "0 0 0 * * SUN".to_string(),
            "@monthly" => "0 0 0 1 * *".to_string(),
            "@yearly" | "@annually" => "0 0 0 1 1 *".to_string(),
            p if p.starts_with('@') => {
                return Err(format!(
                    "unknown preset \"{p}\"; expected one of @hourly, @daily, @weekly, @monthly, @yearly or a 5-field cron expression"
                ));
            }
            _ => {
                let fields: Vec<&str> = trimmed.split_whitespace().collect();
                // Six fields put seconds first, for sub-minute schedules.
                let (seconds, rest) = match fields.len() {
                    5 => ("0", &fields[..]),
                    6 => (fields[0], &fields[1..]),
                    n => {
                        return Err(format!(
                            "invalid cron expression \"{expr}\": expected 5 fields (minute hour day-of-month month day-of-week), or 6 with seconds first; found {n}"
                        ));
                    }
                };
                format!(
                    "{seconds} {} {} {} {} {}",
                    rest[0],
                    rest[1],
                    rest[2],
                    rest[3],
                    day_of_week_names(rest[4])
                )
            }
        };
        let fields: Vec<&str> = six.split_whitespace().collect();
        let unrestricted = |f: &str| f == "*" || f == "?";
        let variants = if !unrestricted(fields[3]) && !unrestricted(fields[5]) {
            let with = |dom: &str, dow: &str| {
                format!(
                    "{} {} {} {dom} {} {dow}",
                    fields[0], fields[1], fields[2], fields[4]
                )
            };
            vec![with(fields[3], "*"), with("*", fields[5])]
        } else {
            vec![six.clone()]
        };
        let crons = variants
            .iter()
            .map(|v| cron::Schedule::from_str(v))
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| format!("invalid cron expression \"{expr}\": {e}"))?;
        let every_hour = fields[2] == "*";
        Ok(Schedule {
            expr: expr.to_string(),
            crons,
            every_hour,
        })
    }

    /// The first tick strictly after `after`.
    pub fn next_after<Tz: TimeZone>(&self, after: &DateTime<Tz>) -> Option<DateTime<Tz>> {
        self.crons
            .iter()
            .filter_map(|cron| {
                if self.every_hour {
                    let fixed = after.with_timezone(&after.offset().fix());
                    let next = cron.after(&fixed).next()?;
                    return Some(next.with_timezone(&after.timezone()));
                }
                cron.after(after).next()
            })
            .min()
    }

    /// The last tick strictly before `before`.
    pub fn prev_before<Tz: TimeZone>(&self, before: &DateTime<Tz>) -> Option<DateTime<Tz>> {
        self.crons
            .iter()
            .filter_map(|cron| {
                if self.every_hour {
                    let fixed = before.with_timezone(&before.offset().fix());
                    let prev = cron.after(&fixed).next_back()?;
                    return Some(prev.with_timezone(&before.timezone()));
                }
                cron.after(before).next_back()
            })
            .max()
    }

    /// The first tick at or after `at`.
    pub fn at_or_after<Tz: TimeZone>(&self, at: &DateTime<Tz>) -> Option<DateTime<Tz>> {
        match at
            .clone()
            .checked_sub_signed(chrono::Duration::nanoseconds(1))
        {
            Some(just_before) => self.next_after(&just_before),
            None => None,
        }
    }
}

/// One data interval, `[start, end)`: a run's logical date is `start`,
/// and the run becomes due at `end` (Airflow's semantics: the run for a
/// day is made once the day is over).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Interval<Tz: TimeZone> {
    pub start: DateTime<Tz>,
    pub end: DateTime<Tz>,
}

/// What the scheduler needs to know about one job.
pub struct Plan<'a, Tz: TimeZone> {
    pub schedule: &'a Schedule,
    /// The first interval starts at the first tick at or after this.
    pub start: DateTime<Tz>,
    /// No interval starts at or after this.
    pub end: Option<DateTime<Tz>>,
    /// Every missed interval (true) or only the latest (false).
    pub catchup: bool,
}

impl<Tz: TimeZone> Plan<'_, Tz> {
    /// The intervals due at `now` that come after the interval whose
    /// logical date is `last` (none yet: `None`), oldest first, at most
    /// `limit` of them (the rest come on a later call). Ticks are computed
    /// in the job's timezone, so "0 2 * * *" means 02:00 local time on
    /// both sides of a DST change.
    pub fn due(
        &self,
        last: Option<&DateTime<Tz>>,
        now: &DateTime<Tz>,
        limit: usize,
    ) -> Vec<Interval<Tz>> {
        let first = match last {
            Some(last) => self.schedule.next_after(last),
            None => self.schedule.at_or_after(&self.start),
        };
        let Some(mut start) = first else {
            return Vec::new();
        };
        if !self.catchup {
            return self.latest(&start, now).into_iter().collect();
        }
        let mut out = Vec::new();
        while out.len() < limit {
            if self.end.as_ref().is_some_and(|e| start >= *e) {
                break;
            }
            let Some(end) = self.schedule.next_after(&start) else {
                break;
            };
            if end > *now {
                break;
            }
            out.push(Interval {
                start,
                end: end.clone(),
            });
            start = end;
        }
        out
    }

    /// The latest complete interval that starts at or after `first`.
    fn latest(&self, first: &DateTime<Tz>, now: &DateTime<Tz>) -> Option<Interval<Tz>> {
        let after_now = now
            .clone()
            .checked_add_signed(chrono::Duration::nanoseconds(1))?;
        let mut end = self.schedule.prev_before(&after_now)?;
        let mut start = self.schedule.prev_before(&end)?;
        if let Some(limit) = &self.end
            && start >= *limit
        {
            // The last interval that starts before `end`, found at once:
            // walking back tick by tick from now took minutes for a
            // per-second schedule that ended long ago.
            start = self.schedule.prev_before(limit)?;
            end = self.schedule.next_after(&start)?;
        }
        (start >= *first).then_some(Interval { start, end })
    }
}

/// Standard cron numbers days 0–7 from Sunday; the `cron` crate numbers
/// them 1–7. Names mean the same to both, so numbers are rewritten as names.
fn day_of_week_names(field: &str) -> String {
    const NAMES: [&str; 8] = ["SUN", "MON", "TUE", "WED", "THU", "FRI", "SAT", "SUN"];
    let mut out = String::new();
    let mut number = String::new();
    let flush = |number: &mut String, out: &mut String, after_slash: bool| {
        if !number.is_empty() {
            match number.parse::<usize>() {
                Ok(n) if n < 8 && !after_slash => out.push_str(NAMES[n]),
                _ => out.push_str(number),
            }
            number.clear();
        }
    };
    let mut after_slash = false;
    for c in field.chars() {
        if c.is_ascii_digit() {
            number.push(c);
        } else {
            flush(&mut number, &mut out, after_slash);
            after_slash = c == '/';
            out.push(c);
        }
    }
    flush(&mut number, &mut out, after_slash);
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::{Datelike, Timelike, Utc};

    #[test]
    fn five_fields_and_presets() {
        let s = Schedule::parse("0 2 * * *").unwrap();
        let t = Utc.with_ymd_and_hms(2026, 11, 24, 3, 0, 0).unwrap();
        let n = s.next_after(&t).unwrap();
        assert_eq!((n.day(), n.hour()), (25, 2));
        assert!(Schedule::parse("@daily").is_ok());
        assert!(Schedule::parse("@sometimes").is_err());
        assert!(
            Schedule::parse("61 * * * *")
                .unwrap_err()
                .contains("invalid cron expression")
        );
        assert!(
            Schedule::parse("* * *")
                .unwrap_err()
                .contains("expected 5 fields")
        );
    }

    #[test]
    fn weekday_numbers_are_standard_cron() {
        // 2026-11-23 is a Monday; "1" must mean Monday, "0" and "7" Sunday.
        let t = Utc.with_ymd_and_hms(2026, 11, 22, 12, 0, 0).unwrap();
        let monday = Schedule::parse("0 0 * * 1")
            .unwrap()
            .next_after(&t)
            .unwrap();
        assert_eq!(monday.weekday(), chrono::Weekday::Mon);
        let sunday = Schedule::parse("0 0 * * 7")
            .unwrap()
            .next_after(&t)
            .unwrap();
        assert_eq!(sunday.weekday(), chrono::Weekday::Sun);
        let weekdays = Schedule::parse("30 6 * * 1-5").unwrap();
        assert_eq!(
            weekdays.next_after(&t).unwrap().weekday(),
            chrono::Weekday::Mon
        );
        assert!(Schedule::parse("*/15 * * * *").is_ok());
    }

    #[test]
    fn day_of_month_or_day_of_week_as_every_cron_does() {
        // The 1st, the 15th, and every Monday of December 2026.
        let s = Schedule::parse("0 0 1,15 * MON").unwrap();
        let mut t = Utc.with_ymd_and_hms(2026, 11, 30, 12, 0, 0).unwrap();
        let mut days = Vec::new();
        while let Some(n) = s.next_after(&t).filter(|n| n.month() == 12) {
            days.push(n.day());
            t = n;
        }
        assert_eq!(days, [1, 7, 14, 15, 21, 28]);
        // Backwards too, from the 15th: the Monday before it, then the 1st.
        let from = Utc.with_ymd_and_hms(2026, 12, 14, 12, 0, 0).unwrap();
        let prev = s.prev_before(&from).unwrap();
        assert_eq!(prev.day(), 14);
        assert_eq!(s.prev_before(&prev).unwrap().day(), 7);
        // One of them unrestricted: the other alone decides.
        let mondays = Schedule::parse("0 0 * * MON").unwrap();
        assert_eq!(
            mondays.next_after(&t).unwrap().weekday(),
            chrono::Weekday::Mon
        );
        let firsts = Schedule::parse("0 0 1 * *").unwrap();
        assert_eq!(firsts.next_after(&t).unwrap().day(), 1);
        // With seconds, the same rule.
        let six = Schedule::parse("30 0 0 13 * FRI").unwrap();
        let from = Utc.with_ymd_and_hms(2026, 12, 1, 0, 0, 0).unwrap();
        let n = six.next_after(&from).unwrap();
        assert_eq!((n.day(), n.second()), (4, 30), "Friday the 4th comes first");
    }

    /// Every tick of `s` from `from` to `to`, as local and UTC times.
    fn ticks<Tz: TimeZone>(
        s: &Schedule,
        from: DateTime<Tz>,
        to: DateTime<Tz>,
    ) -> Vec<DateTime<Tz>> {
        let mut out = Vec::new();
        let mut t = from;
        while let Some(n) = s.next_after(&t).filter(|n| *n < to) {
            out.push(n.clone());
            t = n;
        }
        out
    }

    #[test]
    fn every_two_hours_across_both_dst_changes() {
        let s = Schedule::parse("0 */2 * * *").unwrap();
        // (zone, spring day, autumn day); both change at 02:00 or 03:00 local.
        for (zone, spring, autumn) in [
            ("Europe/Berlin", (2026, 3, 29), (2026, 10, 25)),
            ("America/New_York", (2026, 3, 8), (2026, 11, 1)),
        ] {
            let tz: chrono_tz::Tz = zone.parse().unwrap();
            for (day, hours_in_day) in [(spring, 23), (autumn, 25)] {
                let start = tz.with_ymd_and_hms(day.0, day.1, day.2, 0, 0, 0).unwrap()
                    - chrono::Duration::seconds(1);
                let end = tz
                    .with_ymd_and_hms(day.0, day.1, day.2 + 1, 0, 0, 0)
                    .unwrap();
                let got = ticks(&s, start, end);
                let local: Vec<u32> = got.iter().map(|t| t.hour()).collect();
                // Each even local hour that exists ticks once: 02:00 does
                // not exist in spring in New York (nor in Berlin), and the
                // repeated 01:00/02:00 of autumn tick once.
                let expected: Vec<u32> = (0..24)
                    .step_by(2)
                    .filter(|h| {
                        let naive = chrono::NaiveDate::from_ymd_opt(day.0, day.1, day.2)
                            .unwrap()
                            .and_hms_opt(*h, 0, 0)
                            .unwrap();
                        tz.from_local_datetime(&naive).earliest().is_some()
                    })
                    .collect();
                assert_eq!(local, expected, "{zone} {day:?}: {got:?}");
                // Strictly increasing instants, none twice.
                for w in got.windows(2) {
                    assert!(w[0] < w[1], "{zone} {day:?}: {got:?}");
                }
                assert_eq!(
                    (end - (start + chrono::Duration::seconds(1))).num_hours(),
                    hours_in_day
                );
            }
        }
    }

    #[test]
    fn hourly_on_the_day_clocks_go_back_ticks_every_real_hour() {
        for (zone, day) in [
            ("Europe/Berlin", (2026, 10, 25)),
            ("America/New_York", (2026, 11, 1)),
        ] {
            let tz: chrono_tz::Tz = zone.parse().unwrap();
            let s = Schedule::parse("@hourly").unwrap();
            let start = tz.with_ymd_and_hms(day.0, day.1, day.2, 0, 0, 0).unwrap();
            let end = tz
                .with_ymd_and_hms(day.0, day.1, day.2 + 1, 0, 0, 0)
                .unwrap();
            let due = plan(&s, start, true).due(None, &end, 100);
            assert_eq!(due.len(), 25, "{zone}: {due:?}");
            for w in due.windows(2) {
                assert_eq!(w[0].end, w[1].start);
                assert_eq!((w[0].end - w[0].start).num_minutes(), 60, "{zone}: {w:?}");
            }
        }
    }

    fn plan<'a, Tz: TimeZone>(s: &'a Schedule, start: DateTime<Tz>, catchup: bool) -> Plan<'a, Tz> {
        Plan {
            schedule: s,
            start,
            end: None,
            catchup,
        }
    }

    #[test]
    fn six_fields_put_seconds_first() {
        let s = Schedule::parse("*/2 * * * * *").unwrap();
        let t = Utc.with_ymd_and_hms(2026, 1, 1, 0, 0, 1).unwrap();
        assert_eq!(s.next_after(&t).unwrap().second(), 2);
    }

    #[test]
    fn catchup_creates_every_missed_interval_in_seoul() {
        let tz: chrono_tz::Tz = "Asia/Seoul".parse().unwrap();
        let s = Schedule::parse("0 2 * * *").unwrap();
        let start = tz.with_ymd_and_hms(2026, 11, 1, 0, 0, 0).unwrap();
        let now = tz.with_ymd_and_hms(2026, 11, 5, 3, 0, 0).unwrap();
        let due = plan(&s, start, true).due(None, &now, 100);
        let starts: Vec<String> = due.iter().map(|i| i.start.to_rfc3339()).collect();
        assert_eq!(
            starts,
            [
                "2026-11-01T02:00:00+09:00",
                "2026-11-02T02:00:00+09:00",
                "2026-11-03T02:00:00+09:00",
                "2026-11-04T02:00:00+09:00"
            ]
        );
        // 02:00 in Seoul is 17:00 UTC the day before.
        assert_eq!(
            due[0].start.with_timezone(&Utc).to_rfc3339(),
            "2026-10-31T17:00:00+00:00"
        );
        assert_eq!(
            due[3].end,
            tz.with_ymd_and_hms(2026, 11, 5, 2, 0, 0).unwrap()
        );
        // Nothing is due twice, and the limit holds back the rest.
        let last = due.last().unwrap().start;
        assert!(plan(&s, start, true).due(Some(&last), &now, 100).is_empty());
        assert_eq!(plan(&s, start, true).due(None, &now, 2).len(), 2);
    }

    #[test]
    fn without_catchup_only_the_latest_interval_runs() {
        let s = Schedule::parse("*/15 * * * *").unwrap();
        let start = Utc.with_ymd_and_hms(2026, 1, 1, 0, 0, 0).unwrap();
        let now = Utc.with_ymd_and_hms(2026, 6, 1, 12, 40, 0).unwrap();
        let due = plan(&s, start, false).due(None, &now, 100);
        assert_eq!(due.len(), 1);
        assert_eq!(
            due[0].start,
            Utc.with_ymd_and_hms(2026, 6, 1, 12, 15, 0).unwrap()
        );
        assert_eq!(
            due[0].end,
            Utc.with_ymd_and_hms(2026, 6, 1, 12, 30, 0).unwrap()
        );
        // Already made: nothing more until the next interval closes.
        let last = due[0].start;
        assert!(
            plan(&s, start, false)
                .due(Some(&last), &now, 100)
                .is_empty()
        );
        let later = Utc.with_ymd_and_hms(2026, 6, 1, 12, 45, 0).unwrap();
        let next = plan(&s, start, false).due(Some(&last), &later, 100);
        assert_eq!(
            next[0].start,
            Utc.with_ymd_and_hms(2026, 6, 1, 12, 30, 0).unwrap()
        );
        // A start in the future makes nothing.
        let future = Utc.with_ymd_and_hms(2027, 1, 1, 0, 0, 0).unwrap();
        assert!(plan(&s, future, false).due(None, &now, 100).is_empty());
    }

    #[test]
    fn without_catchup_an_ended_schedule_gives_its_last_interval_at_once() {
        let s = Schedule::parse("*/2 * * * * *").unwrap();
        let start = Utc.with_ymd_and_hms(2000, 1, 1, 0, 0, 0).unwrap();
        let end = Utc.with_ymd_and_hms(2001, 1, 1, 0, 0, 1).unwrap();
        let now = Utc.with_ymd_and_hms(2026, 6, 1, 12, 40, 0).unwrap();
        let p = Plan {
            schedule: &s,
            start,
            end: Some(end),
            catchup: false,
        };
        let t0 = std::time::Instant::now();
        let due = p.due(None, &now, 100);
        assert!(
            t0.elapsed() < std::time::Duration::from_secs(1),
            "{:?}",
            t0.elapsed()
        );
        assert_eq!(due.len(), 1);
        assert_eq!(
            due[0].start,
            Utc.with_ymd_and_hms(2001, 1, 1, 0, 0, 0).unwrap()
        );
        assert_eq!(
            due[0].end,
            Utc.with_ymd_and_hms(2001, 1, 1, 0, 0, 2).unwrap()
        );
    }

    #[test]
    fn new_york_daily_keeps_local_time_across_both_dst_changes() {
        let tz: chrono_tz::Tz = "America/New_York".parse().unwrap();
        let s = Schedule::parse("0 9 * * *").unwrap();
        // Spring forward on 2026-03-08, fall back on 2026-11-01.
        for (from, to, utc_before, utc_after, short_or_long) in [
            ((2026, 3, 6), (2026, 3, 10), 14, 13, 23),
            ((2026, 10, 30), (2026, 11, 3), 13, 14, 25),
        ] {
            let start = tz
                .with_ymd_and_hms(from.0, from.1, from.2, 0, 0, 0)
                .unwrap();
            let now = tz.with_ymd_and_hms(to.0, to.1, to.2, 12, 0, 0).unwrap();
            let due = plan(&s, start, true).due(None, &now, 100);
            assert_eq!(due.len(), 4, "{due:?}");
            for i in &due {
                assert_eq!(i.start.hour(), 9, "{i:?}");
            }
            assert_eq!(due[0].start.with_timezone(&Utc).hour(), utc_before);
            assert_eq!(due[3].start.with_timezone(&Utc).hour(), utc_after);
            let hours: Vec<i64> = due.iter().map(|i| (i.end - i.start).num_hours()).collect();
            assert_eq!(hours, [24, short_or_long, 24, 24], "{due:?}");
        }
    }

    #[test]
    fn new_york_hourly_has_no_gap_or_repeat_across_dst() {
        let tz: chrono_tz::Tz = "America/New_York".parse().unwrap();
        let s = Schedule::parse("0 * * * *").unwrap();
        for (day, expected) in [((2026, 3, 8), 23), ((2026, 11, 1), 25)] {
            let start = tz.with_ymd_and_hms(day.0, day.1, day.2, 0, 0, 0).unwrap();
            let next_day = tz
                .with_ymd_and_hms(day.0, day.1, day.2 + 1, 0, 0, 0)
                .unwrap();
            let due = plan(&s, start, true).due(None, &next_day, 100);
            assert_eq!(due.len(), expected, "{day:?}: {due:?}");
            for w in due.windows(2) {
                assert_eq!(w[0].end, w[1].start);
                assert_eq!((w[0].end - w[0].start).num_minutes(), 60, "{w:?}");
            }
        }
    }
}
