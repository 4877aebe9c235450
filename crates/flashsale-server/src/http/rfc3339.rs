//! A timestamp's RFC 3339 text in UTC, written straight into a byte buffer: the same text as
//! jiff's `Display` (`2026-12-01T12:00:00.5Z`: fractional seconds only when there are any, without
//! trailing zeros; years before 1 as `-00YYYY`), without going through `fmt`. A purchase's reply
//! carries two or three of them; jiff's printer through `fmt::Write` cost about as much as the rest
//! of the reply. A property test holds the two to the same text over jiff's whole range.

use jiff::Timestamp;

const NANOS_PER_SECOND: i128 = 1_000_000_000;
const SECONDS_PER_DAY: i64 = 86_400;

/// Appends `at` as RFC 3339 text.
pub fn push(out: &mut Vec<u8>, at: Timestamp) {
    let nanos = at.as_nanosecond();
    let seconds = i64::try_from(nanos.div_euclid(NANOS_PER_SECOND)).unwrap_or(0);
    let fraction = u32::try_from(nanos.rem_euclid(NANOS_PER_SECOND)).unwrap_or(0);
    let (year, month, day) = civil_from_days(seconds.div_euclid(SECONDS_PER_DAY));
    let of_day = seconds.rem_euclid(SECONDS_PER_DAY);
    if year < 0 {
        out.extend_from_slice(b"-00");
    }
    push_digits(out, u64::from(year.unsigned_abs()), 4);
    out.push(b'-');
    push_digits(out, u64::from(month), 2);
    out.push(b'-');
    push_digits(out, u64::from(day), 2);
    out.push(b'T');
    push_digits(out, (of_day / 3600).unsigned_abs(), 2);
    out.push(b':');
    push_digits(out, (of_day / 60 % 60).unsigned_abs(), 2);
    out.push(b':');
    push_digits(out, (of_day % 60).unsigned_abs(), 2);
    if fraction != 0 {
        out.push(b'.');
        let mut digits = 9;
        let mut fraction = fraction;
        while fraction % 10 == 0 {
            fraction /= 10;
            digits -= 1;
        }
        push_digits(out, u64::from(fraction), digits);
    }
    out.push(b'Z');
}

/// Appends the low `width` decimal digits of `value`, zero-padded.
fn push_digits(out: &mut Vec<u8>, mut value: u64, width: usize) {
    let start = out.len();
    out.resize(start + width, b'0');
    for slot in out[start..].iter_mut().rev() {
        // `value % 10` is a single digit: the cast cannot truncate.
        *slot = b'0' + (value % 10) as u8;
        value /= 10;
    }
}

/// The proleptic Gregorian date of a day counted from 1970-01-01 (Howard Hinnant's
/// `civil_from_days`: eras of 400 years, each 146,097 days, years starting in March).
fn civil_from_days(days: i64) -> (i32, u32, u32) {
    let shifted = days + 719_468;
    let era = shifted.div_euclid(146_097);
    let day_of_era = shifted.rem_euclid(146_097);
    let year_of_era =
        (day_of_era - day_of_era / 1460 + day_of_era / 36_524 - day_of_era / 146_096) / 365;
    let day_of_year = day_of_era - (365 * year_of_era + year_of_era / 4 - year_of_era / 100);
    let month_from_march = (5 * day_of_year + 2) / 153;
    let day = day_of_year - (153 * month_from_march + 2) / 5 + 1;
    let month = if month_from_march < 10 {
        month_from_march + 3
    } else {
        month_from_march - 9
    };
    let year = year_of_era + era * 400 + i64::from(month <= 2);
    // jiff's range is years -9999 to 9999, so every part fits.
    (
        i32::try_from(year).unwrap_or(i32::MAX),
        u32::try_from(month).unwrap_or(0),
        u32::try_from(day).unwrap_or(0),
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn text(at: Timestamp) -> String {
        let mut out = Vec::new();
        push(&mut out, at);
        String::from_utf8(out).unwrap()
    }

    #[test]
    fn edges_read_as_jiff_writes_them() {
        let cases = [
            "1970-01-01T00:00:00Z",
            "1969-12-31T23:59:59.999999999Z",
            "1969-07-20T20:17:40.000001Z",
            "2000-02-29T12:00:00.5Z",
            "1900-03-01T00:00:00Z",
            "2100-02-28T23:59:59.1Z",
            "2026-12-01T12:00:00.123Z",
            "2026-12-01T12:00:00.120Z",
            "9999-12-30T21:59:59.999999999Z",
            "0000-01-01T00:00:00Z",
            "-000001-12-31T23:59:59.25Z",
        ];
        for case in cases {
            let at: Timestamp = case.parse().unwrap();
            assert_eq!(text(at), at.to_string(), "{case}");
        }
        assert_eq!(text(Timestamp::MIN), Timestamp::MIN.to_string());
        assert_eq!(text(Timestamp::MAX), Timestamp::MAX.to_string());
        assert_eq!(
            text("2026-12-01T12:00:00.120Z".parse().unwrap()),
            "2026-12-01T12:00:00.12Z"
        );
    }

    proptest! {
        #[test]
        fn any_timestamp_reads_as_jiff_writes_it(
            seconds in Timestamp::MIN.as_second()..=Timestamp::MAX.as_second(),
            nanos in 0i32..1_000_000_000,
            millisecond_only in any::<bool>(),
        ) {
            let nanos = if millisecond_only { nanos / 1_000_000 * 1_000_000 } else { nanos };
            let nanos = if seconds == Timestamp::MAX.as_second() { 0 } else { nanos };
            let at = Timestamp::new(seconds, nanos).unwrap();
            prop_assert_eq!(text(at), at.to_string());
        }
    }
}
