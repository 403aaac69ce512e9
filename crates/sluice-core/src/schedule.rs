//! Schedules: standard 5-field cron expressions and `@daily`-style presets,
//! evaluated in the job's timezone.

use chrono::{DateTime, TimeZone};
use std::str::FromStr;

/// A parsed schedule.
#[derive(Debug, Clone)]
pub struct Schedule {
    /// What the user wrote, for messages.
    pub expr: String,
    cron: cron::Schedule,
}

impl Schedule {
    /// Parses a 5-field cron expression (minute hour day-of-month month
    /// day-of-week, 0 or 7 = Sunday) or a preset: `@hourly`, `@daily`,
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
                if fields.len() != 5 {
                    return Err(format!(
                        "invalid cron expression \"{expr}\": expected 5 fields (minute hour day-of-month month day-of-week), found {}",
                        fields.len()
                    ));
                }
                format!(
                    "0 {} {} {} {} {}",
                    fields[0],
                    fields[1],
                    fields[2],
                    fields[3],
                    day_of_week_names(fields[4])
                )
            }
        };
        let cron = cron::Schedule::from_str(&six)
            .map_err(|e| format!("invalid cron expression \"{expr}\": {e}"))?;
        Ok(Schedule {
            expr: expr.to_string(),
            cron,
        })
    }

    /// The first tick strictly after `after`.
    pub fn next_after<Tz: TimeZone>(&self, after: &DateTime<Tz>) -> Option<DateTime<Tz>> {
        self.cron.after(after).next()
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
}
