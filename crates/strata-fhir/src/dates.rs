//! FHIR dates and instants: parsing search values with their prefixes, and rendering DICOM
//! dates and catalog timestamps as FHIR `date`, `dateTime` and `instant`.
//!
//! DICOM dates compare as `YYYYMMDD` text in the catalog, so a FHIR date of any precision
//! (`2024`, `2024-03`, `2024-03-01`) becomes a text bound of the same precision; the catalog
//! extends an upper bound to every value starting with it. Instants (`_lastUpdated`) become
//! Unix milliseconds.

/// A FHIR search prefix (FHIR R4 §3.1.1.5.6). `ne`, `sa`, `eb` and `ap` are refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Prefix {
    Eq,
    Ge,
    Le,
    Gt,
    Lt,
}

/// Splits a search value into its prefix (default `eq`) and the rest.
pub(crate) fn split_prefix(value: &str) -> Result<(Prefix, &str), String> {
    let (head, rest) = value.split_at(value.len().min(2));
    let prefix = match head {
        "eq" => Prefix::Eq,
        "ge" => Prefix::Ge,
        "le" => Prefix::Le,
        "gt" => Prefix::Gt,
        "lt" => Prefix::Lt,
        "ne" | "sa" | "eb" | "ap" => {
            return Err(format!("the `{head}` prefix is not supported"));
        }
        _ => return Ok((Prefix::Eq, value)),
    };
    Ok((prefix, rest))
}

/// A calendar date of year, month or day precision.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct PartialDate {
    pub year: i64,
    pub month: Option<u32>,
    pub day: Option<u32>,
}

impl PartialDate {
    /// Parses `YYYY`, `YYYY-MM` or `YYYY-MM-DD`.
    pub(crate) fn parse(value: &str) -> Option<Self> {
        let parts: Vec<&str> = value.split('-').collect();
        let number = |text: &str, len: usize| {
            (text.len() == len && text.bytes().all(|byte| byte.is_ascii_digit()))
                .then(|| text.parse::<u32>().ok())
                .flatten()
        };
        let year = i64::from(number(parts.first()?, 4)?);
        let month = match parts.get(1) {
            Some(text) => Some(number(text, 2).filter(|month| (1..=12).contains(month))?),
            None => None,
        };
        let day = match (parts.get(2), month) {
            (Some(text), Some(month)) => Some(
                number(text, 2).filter(|day| *day >= 1 && *day <= days_in_month(year, month))?,
            ),
            (Some(_), None) => return None,
            (None, _) => None,
        };
        if parts.len() > 3 {
            return None;
        }
        Some(Self { year, month, day })
    }

    /// Returns the DICOM `DA` prefix of the same precision (`2024`, `202403`, `20240301`).
    pub(crate) fn dicom_prefix(&self) -> String {
        match (self.month, self.day) {
            (Some(month), Some(day)) => format!("{:04}{month:02}{day:02}", self.year),
            (Some(month), None) => format!("{:04}{month:02}", self.year),
            _ => format!("{:04}", self.year),
        }
    }

    /// Returns the period right after this one, at the same precision.
    pub(crate) fn next(&self) -> Self {
        match (self.month, self.day) {
            (Some(month), Some(day)) if day < days_in_month(self.year, month) => Self {
                day: Some(day + 1),
                ..*self
            },
            (Some(12), Some(_)) => Self {
                year: self.year + 1,
                month: Some(1),
                day: Some(1),
            },
            (Some(month), Some(_)) => Self {
                month: Some(month + 1),
                day: Some(1),
                ..*self
            },
            (Some(12), None) => Self {
                year: self.year + 1,
                month: Some(1),
                day: None,
            },
            (Some(month), None) => Self {
                month: Some(month + 1),
                ..*self
            },
            _ => Self {
                year: self.year + 1,
                ..*self
            },
        }
    }

    /// Returns the period right before this one, at the same precision.
    pub(crate) fn previous(&self) -> Self {
        match (self.month, self.day) {
            (Some(_), Some(day)) if day > 1 => Self {
                day: Some(day - 1),
                ..*self
            },
            (Some(1), Some(_)) => Self {
                year: self.year - 1,
                month: Some(12),
                day: Some(31),
            },
            (Some(month), Some(_)) => Self {
                month: Some(month - 1),
                day: Some(days_in_month(self.year, month - 1)),
                ..*self
            },
            (Some(1), None) => Self {
                year: self.year - 1,
                month: Some(12),
                day: None,
            },
            (Some(month), None) => Self {
                month: Some(month - 1),
                ..*self
            },
            _ => Self {
                year: self.year - 1,
                ..*self
            },
        }
    }

    /// Returns the first day of the period as days since 1970-01-01.
    fn first_day(&self) -> i64 {
        days_from_civil(self.year, self.month.unwrap_or(1), self.day.unwrap_or(1))
    }
}

/// Returns the inclusive DICOM date bounds `(from, to)` selecting the dates a `started`
/// search value with `prefix` matches.
pub(crate) fn study_date_bounds(
    prefix: Prefix,
    date: &PartialDate,
) -> (Option<String>, Option<String>) {
    match prefix {
        Prefix::Eq => (Some(date.dicom_prefix()), Some(date.dicom_prefix())),
        Prefix::Ge => (Some(date.dicom_prefix()), None),
        Prefix::Gt => (Some(date.next().dicom_prefix()), None),
        Prefix::Le => (None, Some(date.dicom_prefix())),
        Prefix::Lt => (None, Some(date.previous().dicom_prefix())),
    }
}

/// Parses a FHIR `instant`-like search value (`YYYY`, `YYYY-MM`, `YYYY-MM-DD`, or a date with
/// `Thh:mm[:ss[.fff]]` and `Z` or `±hh:mm`) into the half-open range `[start, end)` of Unix
/// milliseconds it stands for. A value without a time zone is read as UTC.
pub(crate) fn parse_instant_range(value: &str) -> Option<(i64, i64)> {
    let (date_text, time_text) = match value.split_once('T') {
        Some((date_text, time_text)) => (date_text, Some(time_text)),
        None => (value, None),
    };
    let date = PartialDate::parse(date_text)?;
    let Some(time_text) = time_text else {
        let start = date.first_day() * DAY_MS;
        let end = date.next().first_day() * DAY_MS;
        return Some((start, end));
    };
    date.day?;
    let (clock, offset_minutes) = if let Some(clock) = time_text.strip_suffix('Z') {
        (clock, 0)
    } else {
        let sign_position = time_text.rfind(['+', '-'])?;
        let (clock, offset) = time_text.split_at(sign_position);
        let sign = if offset.starts_with('-') { -1 } else { 1 };
        let (hours, minutes) = offset[1..].split_once(':')?;
        let hours: i64 = two_digits(hours)?;
        let minutes: i64 = two_digits(minutes)?;
        (clock, sign * (hours * 60 + minutes))
    };
    let mut fields = clock.split(':');
    let hours = two_digits(fields.next()?).filter(|hours| *hours < 24)?;
    let minutes = two_digits(fields.next()?).filter(|minutes| *minutes < 60)?;
    let (seconds, millis, precision_ms) = match fields.next() {
        None => (0, 0, 60_000),
        Some(seconds_text) => {
            let (whole, fraction) = match seconds_text.split_once('.') {
                Some((whole, fraction)) => (whole, Some(fraction)),
                None => (seconds_text, None),
            };
            let seconds = two_digits(whole).filter(|seconds| *seconds < 60)?;
            match fraction {
                None => (seconds, 0, 1_000),
                Some(fraction)
                    if !fraction.is_empty()
                        && fraction.len() <= 3
                        && fraction.bytes().all(|byte| byte.is_ascii_digit()) =>
                {
                    let padded = format!("{fraction:0<3}");
                    (seconds, padded.parse::<i64>().ok()?, 1)
                }
                Some(_) => return None,
            }
        }
    };
    if fields.next().is_some() {
        return None;
    }
    let start = date.first_day() * DAY_MS
        + ((hours * 60 + minutes - offset_minutes) * 60 + seconds) * 1_000
        + millis;
    Some((start, start + precision_ms))
}

/// Returns the inclusive millisecond bounds a `_lastUpdated` value with `prefix` selects.
pub(crate) fn instant_bounds(prefix: Prefix, start: i64, end: i64) -> (Option<i64>, Option<i64>) {
    match prefix {
        Prefix::Eq => (Some(start), Some(end - 1)),
        Prefix::Ge => (Some(start), None),
        Prefix::Gt => (Some(end), None),
        Prefix::Le => (None, Some(end - 1)),
        Prefix::Lt => (None, Some(start - 1)),
    }
}

/// Renders Unix milliseconds as a FHIR `instant` in UTC (`2024-03-01T10:30:00.000Z`).
pub(crate) fn format_instant(unix_ms: i64) -> String {
    let days = unix_ms.div_euclid(DAY_MS);
    let millis_of_day = unix_ms.rem_euclid(DAY_MS);
    let (year, month, day) = civil_from_days(days);
    let seconds_of_day = millis_of_day / 1_000;
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}.{:03}Z",
        seconds_of_day / 3_600,
        seconds_of_day / 60 % 60,
        seconds_of_day % 60,
        millis_of_day % 1_000
    )
}

/// Renders a DICOM `DA` (`YYYYMMDD`) as a FHIR `date`; `None` when it is not a valid date.
pub(crate) fn fhir_date(dicom_date: &str) -> Option<String> {
    if dicom_date.len() != 8 {
        return None;
    }
    let text = format!(
        "{}-{}-{}",
        dicom_date.get(0..4)?,
        dicom_date.get(4..6)?,
        dicom_date.get(6..8)?
    );
    PartialDate::parse(&text).map(|_| text)
}

/// Renders DICOM date, time (`HHMMSS.FFFFFF`, any precision) and Timezone Offset From UTC
/// (`+hhmm`) as a FHIR `dateTime`. FHIR requires a zone with a time, so without an offset
/// (or without a usable time) only the date is given.
pub(crate) fn fhir_date_time(dicom_date: &str, dicom_time: &str, offset: &str) -> Option<String> {
    let date = fhir_date(dicom_date)?;
    let zone = parse_offset(offset);
    let digits: String = dicom_time
        .chars()
        .take_while(|c| c.is_ascii_digit())
        .collect();
    let (Some(zone), true) = (zone, digits.len() >= 4 && digits.len().is_multiple_of(2)) else {
        return Some(date);
    };
    let hours: u32 = digits[0..2].parse().ok()?;
    let minutes: u32 = digits[2..4].parse().ok()?;
    let seconds: u32 = digits.get(4..6).map_or(Some(0), |text| text.parse().ok())?;
    if hours > 23 || minutes > 59 || seconds > 59 {
        return Some(date);
    }
    Some(format!("{date}T{hours:02}:{minutes:02}:{seconds:02}{zone}"))
}

fn parse_offset(offset: &str) -> Option<String> {
    let bytes = offset.as_bytes();
    if bytes.len() != 5 || !(bytes[0] == b'+' || bytes[0] == b'-') {
        return None;
    }
    if !bytes[1..].iter().all(u8::is_ascii_digit) {
        return None;
    }
    Some(format!(
        "{}{}:{}",
        &offset[0..1],
        &offset[1..3],
        &offset[3..5]
    ))
}

const DAY_MS: i64 = 86_400_000;

fn two_digits(text: &str) -> Option<i64> {
    (text.len() == 2 && text.bytes().all(|byte| byte.is_ascii_digit()))
        .then(|| text.parse().ok())
        .flatten()
}

fn is_leap_year(year: i64) -> bool {
    (year % 4 == 0 && year % 100 != 0) || year % 400 == 0
}

fn days_in_month(year: i64, month: u32) -> u32 {
    match month {
        2 if is_leap_year(year) => 29,
        2 => 28,
        4 | 6 | 9 | 11 => 30,
        _ => 31,
    }
}

/// Days since 1970-01-01 of a proleptic Gregorian date (H. Hinnant's algorithm).
fn days_from_civil(year: i64, month: u32, day: u32) -> i64 {
    let year = if month <= 2 { year - 1 } else { year };
    let era = year.div_euclid(400);
    let year_of_era = year - era * 400;
    let month = i64::from(month);
    let day_of_year =
        (153 * (if month > 2 { month - 3 } else { month + 9 }) + 2) / 5 + i64::from(day) - 1;
    let day_of_era = year_of_era * 365 + year_of_era / 4 - year_of_era / 100 + day_of_year;
    era * 146_097 + day_of_era - 719_468
}

/// The inverse of [`days_from_civil`].
fn civil_from_days(days: i64) -> (i64, u32, u32) {
    let days = days + 719_468;
    let era = days.div_euclid(146_097);
    let day_of_era = days - era * 146_097;
    let year_of_era =
        (day_of_era - day_of_era / 1_460 + day_of_era / 36_524 - day_of_era / 146_096) / 365;
    let day_of_year = day_of_era - (365 * year_of_era + year_of_era / 4 - year_of_era / 100);
    let month_index = (5 * day_of_year + 2) / 153;
    let day = (day_of_year - (153 * month_index + 2) / 5 + 1) as u32;
    let month = if month_index < 10 {
        month_index + 3
    } else {
        month_index - 9
    } as u32;
    let year = year_of_era + era * 400 + i64::from(month <= 2);
    (year, month, day)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn test_partial_dates_parse_and_step() {
        let date = PartialDate::parse("2024-02-29").expect("leap day");
        assert_eq!(date.next().dicom_prefix(), "20240301");
        assert_eq!(
            PartialDate::parse("2024-03-01")
                .unwrap()
                .previous()
                .dicom_prefix(),
            "20240229"
        );
        assert_eq!(
            PartialDate::parse("2024-12").unwrap().next().dicom_prefix(),
            "202501"
        );
        assert_eq!(
            PartialDate::parse("2024-01")
                .unwrap()
                .previous()
                .dicom_prefix(),
            "202312"
        );
        assert_eq!(
            PartialDate::parse("2024").unwrap().next().dicom_prefix(),
            "2025"
        );
        for malformed in [
            "2023-02-29",
            "2024-13",
            "24",
            "2024-1-01",
            "2024-01-01-01",
            "abcd",
        ] {
            assert_eq!(PartialDate::parse(malformed), None, "{malformed}");
        }
    }

    #[test]
    fn test_study_date_bounds_follow_prefixes() {
        let date = PartialDate::parse("2024-03").unwrap();
        let bounds = |prefix| study_date_bounds(prefix, &date);
        assert_eq!(
            bounds(Prefix::Eq),
            (Some("202403".into()), Some("202403".into()))
        );
        assert_eq!(bounds(Prefix::Gt), (Some("202404".into()), None));
        assert_eq!(bounds(Prefix::Lt), (None, Some("202402".into())));
        assert_eq!(split_prefix("ge2024").unwrap(), (Prefix::Ge, "2024"));
        assert_eq!(split_prefix("2024").unwrap(), (Prefix::Eq, "2024"));
        assert!(split_prefix("ne2024").is_err());
    }

    #[test]
    fn test_instants_round_trip() {
        assert_eq!(format_instant(0), "1970-01-01T00:00:00.000Z");
        assert_eq!(
            parse_instant_range("1970-01-02"),
            Some((DAY_MS, 2 * DAY_MS))
        );
        let (start, end) = parse_instant_range("2024-03-01T10:30:00.5+01:00").unwrap();
        assert_eq!(format_instant(start), "2024-03-01T09:30:00.500Z");
        assert_eq!(end - start, 1);
        let (start, end) = parse_instant_range("2024-03-01T10:30Z").unwrap();
        assert_eq!(end - start, 60_000);
        assert_eq!(
            format_instant(1_709_289_000_123),
            "2024-03-01T10:30:00.123Z"
        );
        assert_eq!(parse_instant_range("2024-03-01T25:00Z"), None);
        assert_eq!(parse_instant_range("2024-03T10:00Z"), None);
    }

    #[test]
    fn test_dicom_dates_render_as_fhir() {
        assert_eq!(fhir_date("20240301").as_deref(), Some("2024-03-01"));
        assert_eq!(fhir_date("2024"), None);
        assert_eq!(
            fhir_date_time("20240301", "103000.123", "+0100").as_deref(),
            Some("2024-03-01T10:30:00+01:00")
        );
        assert_eq!(
            fhir_date_time("20240301", "1030", "").as_deref(),
            Some("2024-03-01")
        );
    }
}
