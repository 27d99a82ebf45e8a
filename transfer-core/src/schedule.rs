//! Bandwidth: rates, and rclone-style timetables such as `"08:00,512k 19:00,off"`.

use crate::units::format_rate;
use std::fmt;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::time::Timestamp;

/// A bandwidth setting.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum Bandwidth {
    /// No limit.
    Unlimited,
    /// No transfers at all.
    Paused,
    /// At most this many bytes per second.
    Limited(u64),
}

impl Bandwidth {
    /// Parses a rate as rclone's timetables write them, with Ferry's one
    /// size syntax ([`parse_size`](crate::parse_size)): `off` (unlimited),
    /// `0` (paused), or a size per second: a bare number is bytes (where
    /// rclone reads KiB), `k`, `M`, `G` (either case) powers of 1024,
    /// decimals allowed (`1.5M`).
    pub fn parse(s: &str) -> Result<Bandwidth, ScheduleError> {
        let t = s.trim();
        if t.eq_ignore_ascii_case("off") {
            return Ok(Bandwidth::Unlimited);
        }
        // Zero pauses, as in rclone's timetable; a fraction of a byte is a
        // mistake, not a pause.
        if !t.is_empty() && t.bytes().all(|b| b == b'0' || b == b'.') && t.starts_with('0') {
            return Ok(Bandwidth::Paused);
        }
        crate::parse_size(t)
            .map(Bandwidth::Limited)
            .map_err(|_| ScheduleError::BadRate(s.to_owned()))
    }

    /// The limit in bytes per second, `None` for unlimited, `Some(0)` when paused.
    pub fn bytes_per_sec(self) -> Option<u64> {
        match self {
            Bandwidth::Unlimited => None,
            Bandwidth::Paused => Some(0),
            Bandwidth::Limited(n) => Some(n),
        }
    }
}

impl fmt::Display for Bandwidth {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Bandwidth::Unlimited => f.write_str("off"),
            Bandwidth::Paused => f.write_str("0"),
            Bandwidth::Limited(n) => f.write_str(&format_rate(*n)),
        }
    }
}

/// Why a timetable or rate did not parse.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ScheduleError {
    /// A rate is not `off`, `0` or a number with an optional unit.
    #[error("bad rate {0:?}: use off, 0, or bytes per second (a number, or with k, M or G)")]
    BadRate(String),
    /// An entry is not `[Day-]HH:MM,RATE`.
    #[error("bad timetable entry {0:?}: use [Mon-]HH:MM,RATE")]
    BadEntry(String),
    /// The timetable has no entries.
    #[error("empty timetable")]
    Empty,
    /// The time zone named is not in the time zone database.
    #[error("unknown time zone {0:?}")]
    UnknownZone(String),
    /// A stored timetable's entries are not at distinct minutes of one
    /// week in increasing order (what [`Timetable::parse`] produces).
    #[error(
        "bad stored timetable: entry at minute {minute} of the week is out of range or out of order"
    )]
    BadStoredEntry {
        /// The offending entry's minute of the week.
        minute: u32,
    },
}

const MINUTES_PER_DAY: u32 = 24 * 60;
const MINUTES_PER_WEEK: u32 = 7 * MINUTES_PER_DAY;
const DAYS: [&str; 7] = ["Mon", "Tue", "Wed", "Thu", "Fri", "Sat", "Sun"];

/// A weekly bandwidth timetable, as rclone's `--bwlimit`: each entry's rate
/// holds from its time until the next entry's; before the first entry of the
/// week, the last one holds (it wraps around).
///
/// Entries are `HH:MM,RATE` (every day) or `Day-HH:MM,RATE` (`Mon`…`Sun`),
/// separated by spaces; times are read in a time zone, following its
/// daylight-saving changes ([`parse_local`](Timetable::parse_local),
/// [`parse_in`](Timetable::parse_in)), or in a fixed UTC offset
/// ([`parse`](Timetable::parse), [`parse_with_offset`](Timetable::parse_with_offset)).
/// On a day the clocks go forward, an entry in the skipped hour takes
/// effect when the hour ends; on a day they go back, the repeated hour's
/// entries take effect each time the clock shows them.
///
/// Deserializing checks what [`parse`](Timetable::parse) guarantees (at
/// least one entry, at distinct minutes of one week in increasing order)
/// and refuses anything else with a [`ScheduleError`].
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "StoredTimetable")]
pub struct Timetable {
    /// (minute of the week from Monday 00:00, rate), sorted by minute.
    entries: Vec<(u32, Bandwidth)>,
    /// Offset of the timetable's clock from UTC, in minutes (without a zone).
    utc_offset_minutes: i32,
    /// The IANA time zone its times are read in, when it follows one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    zone: Option<String>,
    /// `zone`, looked up.
    #[serde(skip)]
    tz: Option<jiff::tz::TimeZone>,
}

/// A [`Timetable`] as stored, before its entries are checked.
#[derive(Deserialize)]
struct StoredTimetable {
    entries: Vec<(u32, Bandwidth)>,
    utc_offset_minutes: i32,
    #[serde(default)]
    zone: Option<String>,
}

/// The time zone named `name` in the system's database.
fn zone(name: &str) -> Result<jiff::tz::TimeZone, ScheduleError> {
    jiff::tz::TimeZone::get(name).map_err(|_| ScheduleError::UnknownZone(name.to_owned()))
}

impl TryFrom<StoredTimetable> for Timetable {
    type Error = ScheduleError;

    fn try_from(stored: StoredTimetable) -> Result<Timetable, ScheduleError> {
        if stored.entries.is_empty() {
            return Err(ScheduleError::Empty);
        }
        let mut before = None;
        for &(minute, _) in &stored.entries {
            if minute >= MINUTES_PER_WEEK || before.is_some_and(|b| minute <= b) {
                return Err(ScheduleError::BadStoredEntry { minute });
            }
            before = Some(minute);
        }
        let tz = stored.zone.as_deref().map(zone).transpose()?;
        Ok(Timetable {
            entries: stored.entries,
            utc_offset_minutes: stored.utc_offset_minutes,
            zone: stored.zone,
            tz,
        })
    }
}

impl Timetable {
    /// Parses a timetable read in UTC.
    pub fn parse(s: &str) -> Result<Timetable, ScheduleError> {
        Timetable::parse_with_offset(s, 0)
    }

    /// Parses a timetable read in this machine's local time (`TZ`, else
    /// `/etc/localtime`), as rclone reads its timetables, following
    /// daylight-saving changes. A local zone with no name in the database
    /// (a POSIX `TZ` rule) is read at its offset now.
    pub fn parse_local(s: &str) -> Result<Timetable, ScheduleError> {
        let tz = jiff::tz::TimeZone::system();
        match tz.iana_name() {
            Some(name) => Timetable::parse_in(s, name),
            None => {
                let offset = tz.to_offset(jiff::Timestamp::now()).seconds() / 60;
                Timetable::parse_with_offset(s, offset)
            }
        }
    }

    /// Parses a timetable read in the IANA time zone `name`
    /// (`"Europe/Berlin"`), following its daylight-saving changes.
    pub fn parse_in(s: &str, name: &str) -> Result<Timetable, ScheduleError> {
        let tz = zone(name)?;
        let mut t = Timetable::parse_with_offset(s, 0)?;
        t.zone = Some(name.to_owned());
        t.tz = Some(tz);
        Ok(t)
    }

    /// The IANA time zone its times are read in, if it follows one.
    pub fn zone(&self) -> Option<&str> {
        self.zone.as_deref()
    }

    /// Parses a timetable whose times are in a clock `utc_offset_minutes` ahead of UTC.
    pub fn parse_with_offset(s: &str, utc_offset_minutes: i32) -> Result<Timetable, ScheduleError> {
        let mut entries: Vec<(u32, Bandwidth)> = Vec::new();
        for item in s.split_whitespace() {
            let bad = || ScheduleError::BadEntry(item.to_owned());
            let (when, rate) = item.split_once(',').ok_or_else(bad)?;
            let rate = Bandwidth::parse(rate)?;
            let (day, hhmm) = match when.split_once('-') {
                Some((d, t)) => {
                    let i = DAYS
                        .iter()
                        .position(|x| x.eq_ignore_ascii_case(d))
                        .ok_or_else(bad)?;
                    (Some(i as u32), t)
                }
                None => (None, when),
            };
            let (h, m) = hhmm.split_once(':').ok_or_else(bad)?;
            let digits = |x: &str| x.len() == 2 && x.bytes().all(|b| b.is_ascii_digit());
            if !digits(h) || !digits(m) {
                return Err(bad());
            }
            let (h, m): (u32, u32) = (h.parse().map_err(|_| bad())?, m.parse().map_err(|_| bad())?);
            if h > 23 || m > 59 {
                return Err(bad());
            }
            let minute = h * 60 + m;
            match day {
                Some(d) => entries.push((d * MINUTES_PER_DAY + minute, rate)),
                None => entries.extend((0..7).map(|d| (d * MINUTES_PER_DAY + minute, rate))),
            }
        }
        if entries.is_empty() {
            return Err(ScheduleError::Empty);
        }
        // Stable sort keeps the later entry last among equal minutes; it wins.
        entries.sort_by_key(|e| e.0);
        let mut dedup: Vec<(u32, Bandwidth)> = Vec::with_capacity(entries.len());
        for e in entries {
            match dedup.last_mut() {
                Some(last) if last.0 == e.0 => *last = e,
                _ => dedup.push(e),
            }
        }
        Ok(Timetable {
            entries: dedup,
            utc_offset_minutes,
            zone: None,
            tz: None,
        })
    }

    /// `now` in the timetable's zone, to the minute.
    fn civil(&self, tz: &jiff::tz::TimeZone, now: Timestamp) -> Option<jiff::civil::DateTime> {
        let ms = i64::try_from(now.as_millis()).ok()?;
        let ts = jiff::Timestamp::from_millisecond(ms).ok()?;
        Some(tz.to_datetime(ts))
    }

    fn minute_of_week(&self, now: Timestamp) -> (u32, u64) {
        if let Some(dt) = self.tz.as_ref().and_then(|tz| self.civil(tz, now)) {
            let day = u32::try_from(dt.weekday().to_monday_zero_offset()).unwrap_or(0);
            let minute = u32::try_from(dt.hour()).unwrap_or(0) * 60
                + u32::try_from(dt.minute()).unwrap_or(0);
            let ms = u64::try_from(dt.second()).unwrap_or(0) * 1000
                + u64::try_from(dt.millisecond()).unwrap_or(0);
            return (day * MINUTES_PER_DAY + minute, ms);
        }
        let local_ms = i128::from(now.as_millis()) + i128::from(self.utc_offset_minutes) * 60_000;
        let minutes = local_ms.div_euclid(60_000);
        let ms_into_minute = u64::try_from(local_ms.rem_euclid(60_000)).unwrap_or(0);
        // 1970-01-01 was a Thursday: day 0 is index 3 with Monday as 0.
        let mow =
            (minutes + 3 * i128::from(MINUTES_PER_DAY)).rem_euclid(i128::from(MINUTES_PER_WEEK));
        (u32::try_from(mow).unwrap_or(0), ms_into_minute)
    }

    /// The bandwidth at `now`, and when it next changes. Total: a table
    /// with no entries (which parsing and deserializing refuse) is no
    /// limit that never changes, and the next change is always later than
    /// `now` (unless `now` is the end of time).
    pub fn at(&self, now: Timestamp) -> (Bandwidth, Timestamp) {
        let (Some(&first), Some(&last)) = (self.entries.first(), self.entries.last()) else {
            return (Bandwidth::Unlimited, Timestamp::MAX);
        };
        let (mow, ms_into_minute) = self.minute_of_week(now);
        let idx = self.entries.partition_point(|e| e.0 <= mow);
        // Before the week's first entry, the last one holds (it wraps).
        let current = idx
            .checked_sub(1)
            .and_then(|i| self.entries.get(i))
            .copied()
            .unwrap_or(last);
        let next_minute = self
            .entries
            .get(idx)
            .map_or(first.0.saturating_add(MINUTES_PER_WEEK), |e| e.0);
        // At least to the end of this minute, so a caller waiting for the
        // change always moves on.
        let wait_ms = u64::from(next_minute.saturating_sub(mow))
            .saturating_mul(60_000)
            .saturating_sub(ms_into_minute)
            .max(60_000 - ms_into_minute);
        let at_least = now.saturating_add(Duration::from_millis(60_000 - ms_into_minute));
        let next = match self.tz.as_ref() {
            // The next entry's wall-clock time, as an instant: across a
            // daylight-saving change the wait is an hour longer or shorter
            // than the clock's difference.
            Some(tz) => self
                .next_in(tz, now, next_minute - mow, ms_into_minute)
                .map_or(at_least, |t| t.max(at_least)),
            None => now.saturating_add(Duration::from_millis(wait_ms)),
        };
        (current.1, next)
    }

    /// The instant when the wall clock in `tz`, now `minutes` (and
    /// `ms_into_minute`) before the next entry, reaches it.
    fn next_in(
        &self,
        tz: &jiff::tz::TimeZone,
        now: Timestamp,
        minutes: u32,
        ms_into_minute: u64,
    ) -> Option<Timestamp> {
        let dt = self.civil(tz, now)?;
        let start_of_minute = dt.checked_sub(Duration::from_millis(ms_into_minute)).ok()?;
        let wall = start_of_minute
            .checked_add(Duration::from_secs(u64::from(minutes) * 60))
            .ok()?;
        let instant = tz.to_ambiguous_timestamp(wall).compatible().ok()?;
        u64::try_from(instant.as_millisecond())
            .ok()
            .map(Timestamp::from_millis)
    }
}

impl fmt::Display for Timetable {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, (m, rate)) in self.entries.iter().enumerate() {
            if i > 0 {
                f.write_str(" ")?;
            }
            let m = m % MINUTES_PER_WEEK;
            let day = DAYS
                .get(usize::try_from(m / MINUTES_PER_DAY).unwrap_or(0))
                .unwrap_or(&"Mon");
            let mm = m % MINUTES_PER_DAY;
            write!(f, "{day}-{:02}:{:02},{rate}", mm / 60, mm % 60)?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_rates_like_rclone() {
        assert_eq!(Bandwidth::parse("off"), Ok(Bandwidth::Unlimited));
        assert_eq!(Bandwidth::parse("0"), Ok(Bandwidth::Paused));
        assert_eq!(Bandwidth::parse("512k"), Ok(Bandwidth::Limited(512 * 1024)));
        // A bare number is bytes, as everywhere in Ferry (rclone reads KiB).
        assert_eq!(Bandwidth::parse("10"), Ok(Bandwidth::Limited(10)));
        assert_eq!(Bandwidth::parse("1.5M"), Ok(Bandwidth::Limited(1_572_864)));
        assert_eq!(Bandwidth::parse("100B"), Ok(Bandwidth::Limited(100)));
        for bad in ["", "k", "-1M", "1X", "1e9", "nan", "99999999999G"] {
            assert!(Bandwidth::parse(bad).is_err(), "{bad}");
        }
    }

    // Tue, 24 Nov 2026 00:00:00 UTC
    const TUE: u64 = 1_795_478_400_000;

    #[test]
    fn daily_timetable_wraps_around_midnight() {
        let t = Timetable::parse("08:00,512k 19:00,off").unwrap();
        let at = |h: u64, m: u64| Timestamp::from_millis(TUE + (h * 60 + m) * 60_000);
        assert_eq!(t.at(at(7, 59)), (Bandwidth::Unlimited, at(8, 0)));
        assert_eq!(t.at(at(8, 0)), (Bandwidth::Limited(512 * 1024), at(19, 0)));
        assert_eq!(t.at(at(18, 30)).0, Bandwidth::Limited(512 * 1024));
        assert_eq!(t.at(at(23, 0)), (Bandwidth::Unlimited, at(32, 0)));
    }

    #[test]
    fn weekday_entries_and_offsets() {
        let t = Timetable::parse("Mon-00:00,0 Tue-09:00,1M").unwrap();
        let tue = Timestamp::from_millis(TUE);
        assert_eq!(t.at(tue).0, Bandwidth::Paused);
        let (b, next) = t.at(Timestamp::from_millis(TUE + 10 * 3_600_000));
        assert_eq!(b, Bandwidth::Limited(1 << 20));
        assert_eq!(next, Timestamp::from_millis(TUE + 6 * 86_400_000)); // next Monday
        // At UTC+10 it is already 10:00 on Tuesday at 00:00 UTC.
        let east = Timetable::parse_with_offset("Mon-00:00,0 Tue-09:00,1M", 600).unwrap();
        assert_eq!(east.at(tue).0, Bandwidth::Limited(1 << 20));
        assert_eq!(t.to_string(), "Mon-00:00,0 Tue-09:00,1M");
    }

    /// A timetable read back from a store holds what `parse` would accept,
    /// or is refused with the reason.
    #[test]
    fn deserializing_checks_what_parsing_checks() {
        let read = |json: &str| serde_json::from_str::<Timetable>(json);
        for bad in [
            r#"{"entries":[],"utc_offset_minutes":0}"#,
            r#"{"entries":[[10080,"Unlimited"]],"utc_offset_minutes":0}"#,
            r#"{"entries":[[60,"Paused"],[0,"Unlimited"]],"utc_offset_minutes":0}"#,
            r#"{"entries":[[60,"Paused"],[60,"Unlimited"]],"utc_offset_minutes":0}"#,
        ] {
            assert!(read(bad).is_err(), "{bad}");
        }
        assert!(
            read(r#"{"entries":[],"utc_offset_minutes":0}"#)
                .unwrap_err()
                .to_string()
                .contains("empty timetable")
        );
        let t = Timetable::parse_with_offset("Mon-08:00,512k 19:00,off", -300).unwrap();
        let json = serde_json::to_string(&t).unwrap();
        assert_eq!(read(&json).unwrap(), t, "{json}");
    }

    /// Milliseconds since the epoch of an RFC 3339 instant.
    fn ms(rfc3339: &str) -> u64 {
        let t: jiff::Timestamp = rfc3339.parse().unwrap();
        u64::try_from(t.as_millisecond()).unwrap()
    }

    /// Times are read in the zone, and the next change is the instant the
    /// zone's wall clock reaches the next entry, daylight saving included.
    #[test]
    fn a_zone_follows_its_daylight_saving_changes() {
        let t = Timetable::parse_in("08:00,512k 20:00,off", "America/New_York").unwrap();
        assert_eq!(t.zone(), Some("America/New_York"));
        // Winter (EST, UTC-5): 08:00 is 13:00Z.
        let (rate, next) = t.at(Timestamp::from_millis(ms("2026-01-15T12:59:00Z")));
        assert_eq!(rate, Bandwidth::Unlimited);
        assert_eq!(next.as_millis(), ms("2026-01-15T13:00:00Z"));
        assert_eq!(
            t.at(Timestamp::from_millis(ms("2026-01-15T13:00:00Z"))).0,
            Bandwidth::Limited(512 << 10)
        );
        // Summer (EDT, UTC-4): 08:00 is 12:00Z.
        let (rate, next) = t.at(Timestamp::from_millis(ms("2026-07-15T11:59:30Z")));
        assert_eq!(rate, Bandwidth::Unlimited);
        assert_eq!(next.as_millis(), ms("2026-07-15T12:00:00Z"));
        // 2026-03-08: 02:00 EST becomes 03:00 EDT. From 00:00 EST (05:00Z)
        // to 08:00 EDT (12:00Z) is 7 hours of real time, not 8.
        let (_, next) = t.at(Timestamp::from_millis(ms("2026-03-08T05:00:00Z")));
        assert_eq!(next.as_millis(), ms("2026-03-08T12:00:00Z"));
        // 2026-11-01: 02:00 EDT becomes 01:00 EST: 9 hours, not 8.
        let (_, next) = t.at(Timestamp::from_millis(ms("2026-11-01T04:00:00Z")));
        assert_eq!(next.as_millis(), ms("2026-11-01T13:00:00Z"));
    }

    /// An entry in the hour skipped when clocks go forward takes effect
    /// when that hour ends; one in the hour repeated when they go back
    /// takes effect when the clock first shows it.
    #[test]
    fn entries_in_skipped_or_repeated_hours_take_effect_once() {
        let t = Timetable::parse_in("00:00,off 02:30,1M 05:00,off", "America/New_York").unwrap();
        let (rate, next) = t.at(Timestamp::from_millis(ms("2026-03-08T06:00:00Z")));
        assert_eq!(rate, Bandwidth::Unlimited, "01:00 EST");
        assert_eq!(next.as_millis(), ms("2026-03-08T07:30:00Z"), "03:30 EDT");
        assert_eq!(
            t.at(Timestamp::from_millis(ms("2026-03-08T07:30:00Z"))).0,
            Bandwidth::Limited(1 << 20)
        );
        let t = Timetable::parse_in("00:00,off 01:30,1M 05:00,off", "America/New_York").unwrap();
        // 01:30 EDT is 05:30Z; 01:30 EST (an hour later) is 06:30Z.
        let (_, next) = t.at(Timestamp::from_millis(ms("2026-11-01T05:00:00Z")));
        assert_eq!(next.as_millis(), ms("2026-11-01T05:30:00Z"));
        assert_eq!(
            t.at(Timestamp::from_millis(ms("2026-11-01T05:30:00Z"))).0,
            Bandwidth::Limited(1 << 20)
        );
    }

    #[test]
    fn a_zone_is_kept_when_stored_and_an_unknown_one_is_refused() {
        let t = Timetable::parse_in("Mon-08:00,512k 19:00,off", "Europe/Berlin").unwrap();
        let json = serde_json::to_string(&t).unwrap();
        let back: Timetable = serde_json::from_str(&json).unwrap();
        assert_eq!(back, t, "{json}");
        assert_eq!(back.zone(), Some("Europe/Berlin"));
        assert_eq!(
            Timetable::parse_in("08:00,off", "Mars/Olympus_Mons"),
            Err(ScheduleError::UnknownZone("Mars/Olympus_Mons".to_owned()))
        );
        let stored =
            r#"{"entries":[[0,"Unlimited"]],"utc_offset_minutes":0,"zone":"Nowhere/Else"}"#;
        assert!(serde_json::from_str::<Timetable>(stored).is_err());
    }

    /// `at` answers for every timestamp and offset, and for a table that
    /// somehow holds nothing (or nonsense), never panicking.
    #[test]
    fn at_is_total() {
        let odd = [
            Timetable {
                entries: Vec::new(),
                utc_offset_minutes: 0,
                zone: None,
                tz: None,
            },
            Timetable {
                entries: vec![(u32::MAX, Bandwidth::Paused), (3, Bandwidth::Unlimited)],
                utc_offset_minutes: i32::MIN,
                zone: None,
                tz: None,
            },
            Timetable::parse_with_offset("Sun-23:59,1M 00:00,0", i32::MAX).unwrap(),
            Timetable::parse_in("Sun-23:59,1M 00:00,0 02:30,5M", "America/New_York").unwrap(),
        ];
        for t in &odd {
            for now in [0, 1, TUE, u64::MAX / 2, u64::MAX - 1, u64::MAX] {
                let now = Timestamp::from_millis(now);
                let (_, next) = t.at(now);
                assert!(next > now || now == Timestamp::MAX, "{t:?} at {now:?}");
            }
            let _ = t.to_string();
        }
        assert_eq!(
            odd[0].at(Timestamp::from_millis(TUE)),
            (Bandwidth::Unlimited, Timestamp::MAX)
        );
    }

    #[test]
    fn refuses_bad_entries() {
        for bad in [
            "",
            "8:00,1M",
            "24:00,1M",
            "08:60,1M",
            "Xyz-08:00,1M",
            "08:00",
            "08:00,fast",
        ] {
            assert!(Timetable::parse(bad).is_err(), "{bad}");
        }
    }
}
